//! End-to-end tests of `examples/electrum_server`: the server runs in-process
//! on 127.0.0.1:0 (started through its own command-line parser) and real
//! Electrum clients talk to it over TCP — the `electrum-client` crate, and a
//! raw line client where byte-level control matters.
#![cfg(feature = "tokio")]

include!("support/example_server.rs");

use crate::support::{TIMEOUT, blocking, start};

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bitcoin::blockdata::constants::genesis_block;
use bitcoin::consensus::deserialize;
use bitcoin::hashes::{Hash, HashEngine, sha256, sha256d};
use bitcoin::{Address, CompactTarget, Network, ScriptBuf, Transaction, block};
use electrum_client::raw_client::RawClient;
use electrum_client::{ElectrumApi, GetHistoryRes, Param};
use serde_json::{Value, json};

use crate::wallet::TestKey;

// ---------------------------------------------------------------------------
// Helpers

fn client(addr: SocketAddr) -> RawClient<TcpStream> {
    RawClient::new(addr, Some(TIMEOUT), None).expect("electrum-client connects and negotiates")
}

/// One admin JSON-RPC call; the `result`, panicking on an error.
fn admin(addr: SocketAddr, method: &str, params: Value) -> Value {
    let mut line = LineClient::connect(addr);
    let reply = line.call(json!({ "id": 1, "method": method, "params": params }));
    assert!(reply.get("error").is_none(), "admin {method}: {reply}");
    reply["result"].clone()
}

/// A newline JSON client over a blocking socket, for byte-level control.
struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).expect("connects"))
    }

    fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        LineClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("writes");
    }

    fn send(&mut self, message: &Value) {
        let mut bytes = serde_json::to_vec(message).unwrap();
        bytes.push(b'\n');
        self.send_raw(&bytes);
    }

    /// The next message; `None` at end of stream.
    fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("the server sends JSON")),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    fn call(&mut self, message: Value) -> Value {
        self.send(&message);
        self.recv().expect("a reply")
    }

    /// `server.version`, as every Electrum client starts.
    fn handshake(&mut self) {
        let reply = self
            .call(json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": ["test", "1.4"]}));
        assert_eq!(reply["result"][1], "1.4", "{reply}");
    }

    /// Whether the server closed the connection (EOF) within `wait`.
    fn closed_within(&mut self, wait: Duration) -> bool {
        self.writer.set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        let closed = match self.reader.read_line(&mut line) {
            Ok(0) => true,
            Ok(_) => panic!("unexpected message {line}"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            Err(_) => false,
        };
        self.writer.set_read_timeout(Some(TIMEOUT)).unwrap();
        closed
    }
}

fn error_code(reply: &Value) -> i64 {
    reply["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error, got {reply}"))
}

/// The message of an electrum-client protocol error.
fn protocol_error(result: Result<impl std::fmt::Debug, electrum_client::Error>) -> String {
    match result {
        Err(electrum_client::Error::Protocol(error)) => {
            error["message"].as_str().unwrap_or_default().to_owned()
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// The Electrum status a client computes from `get_history`.
fn status_of(history: &[GetHistoryRes]) -> Option<[u8; 32]> {
    if history.is_empty() {
        return None;
    }
    let preimage: String = history
        .iter()
        .map(|h| format!("{}:{}:", h.tx_hash, h.height))
        .collect();
    Some(sha256::Hash::hash(preimage.as_bytes()).to_byte_array())
}

/// Hashes `leaf` up a branch of display-order (reversed hex) siblings.
fn root_from_branch(leaf: [u8; 32], mut pos: usize, branch: &[[u8; 32]]) -> [u8; 32] {
    let mut hash = leaf;
    for sibling in branch {
        let mut sibling = *sibling;
        sibling.reverse();
        let mut engine = sha256d::Hash::engine();
        if pos & 1 == 0 {
            engine.input(&hash);
            engine.input(&sibling);
        } else {
            engine.input(&sibling);
            engine.input(&hash);
        }
        hash = sha256d::Hash::from_engine(engine).to_byte_array();
        pos >>= 1;
    }
    hash
}

/// Merkle root of `leaves` (internal order), computed independently of the crate.
fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            level.push(*level.last().unwrap());
        }
        level = level
            .chunks(2)
            .map(|pair| {
                let mut engine = sha256d::Hash::engine();
                engine.input(&pair[0]);
                engine.input(&pair[1]);
                sha256d::Hash::from_engine(engine).to_byte_array()
            })
            .collect();
    }
    level[0]
}

fn hex_reversed(text: &str) -> [u8; 32] {
    let mut bytes: [u8; 32] = indexer_sessions::decode_hex(text).unwrap().try_into().unwrap();
    bytes.reverse();
    bytes
}

/// Waits (pinging so the client reads) for a status notification on `script`.
fn wait_for_status(client: &RawClient<TcpStream>, script: &ScriptBuf) -> [u8; 32] {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        client.ping().unwrap();
        if let Some(status) = client.script_pop(script).unwrap() {
            return *status;
        }
        assert!(Instant::now() < deadline, "no notification for {script}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Chain data

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_chain_links_from_genesis_and_meets_its_target() {
    let server = start(&["--blocks", "40"]).await;
    let addr = server.listen_addr();
    blocking(move || {
        let client = client(addr);
        // electrum-client asks for 1.4–1.6 and gets the highest both speak;
        // in 1.6 the chunk below comes as an array of headers.
        assert_eq!(client.protocol_version().unwrap(), "1.6");
        let tip = client.block_headers_subscribe().unwrap();
        assert_eq!(tip.height, 40);

        let chunk = client.block_headers(0, 2016).unwrap();
        assert_eq!((chunk.count, chunk.max), (41, 2016));
        let headers = chunk.headers;
        assert_eq!(
            headers[0],
            genesis_block(Network::Regtest).header,
            "starts at the regtest genesis"
        );
        assert_eq!(
            headers[0].block_hash().to_string(),
            "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
        let mut previous: Option<&block::Header> = None;
        for (height, header) in headers.iter().enumerate() {
            assert_eq!(
                header.bits,
                CompactTarget::from_consensus(0x207f_ffff),
                "bits at {height}"
            );
            let target = header.target();
            assert!(target.is_met_by(header.block_hash()), "proof of work at {height}");
            header.validate_pow(target).expect("valid proof of work");
            if let Some(previous) = previous {
                assert_eq!(header.prev_blockhash, previous.block_hash(), "link at {height}");
                assert!(header.time > previous.time);
            }
            previous = Some(header);
        }
        assert_eq!(headers[40], tip.header, "the chunk ends at the subscribed tip");
        assert_eq!(client.block_header(17).unwrap(), headers[17]);

        // A chunk running past the tip is cut there.
        let tail = client.block_headers(35, 10).unwrap();
        assert_eq!(tail.count, 6);
        assert_eq!(tail.headers, headers[35..].to_vec());

        // Checkpoint proof: header 7 in the tree of block hashes 0..=40.
        let proof = client
            .raw_call("blockchain.block.header", [Param::Usize(7), Param::Usize(40)])
            .unwrap();
        assert_eq!(
            proof["header"],
            bitcoin::consensus::encode::serialize_hex(&headers[7])
        );
        let hashes: Vec<[u8; 32]> = headers.iter().map(|h| h.block_hash().to_byte_array()).collect();
        let branch: Vec<[u8; 32]> = proof["branch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let mut bytes = hex_reversed(h.as_str().unwrap());
                bytes.reverse();
                bytes
            })
            .collect();
        let root = root_from_branch(hashes[7], 7, &branch);
        assert_eq!(root, merkle_root(&hashes));
        assert_eq!(hex_reversed(proof["root"].as_str().unwrap()), root);

        // Heights above the tip are refused.
        let error = protocol_error(client.block_header_raw(41));
        assert!(error.contains("out of range"), "{error}");
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_to_balance_history_unspent_merkle_and_transactions_are_exact() {
    let key = TestKey::from_seed([1; 32]);
    let other = TestKey::from_seed([2; 32]);
    let pay_key = format!("{}:1.5", key.address());
    let pay_key_sats = format!("{}:250000sat", key.address());
    let pay_other = format!("{}:0.001", other.address());
    let server = start(&[
        "--blocks",
        "105",
        "--pay-to",
        &pay_key,
        "--pay-to",
        &pay_key_sats,
        "--pay-to",
        &pay_other,
    ])
    .await;
    let addr = server.listen_addr();
    blocking(move || {
        let client = client(addr);
        let script = ScriptBuf::from_bytes(key.script_pubkey());

        let balance = client.script_get_balance(&script).unwrap();
        assert_eq!((balance.confirmed, balance.unconfirmed), (150_250_000, 0));
        let other_script = ScriptBuf::from_bytes(other.script_pubkey());
        assert_eq!(
            client.script_get_balance(&other_script).unwrap().confirmed,
            100_000
        );

        let history = client.script_get_history(&script).unwrap();
        assert_eq!(history.len(), 2, "{history:?}");
        let mut unspent = client.script_list_unspent(&script).unwrap();
        unspent.sort_by_key(|u| u.value);
        assert_eq!(
            unspent.iter().map(|u| u.value).collect::<Vec<_>>(),
            vec![250_000, 150_000_000]
        );
        for item in &history {
            assert!(item.height > 0 && item.height <= 105, "confirmed: {item:?}");
            assert_eq!(item.fee, None);
            assert!(
                unspent
                    .iter()
                    .any(|u| u.tx_hash == item.tx_hash && u.height == item.height as usize)
            );
        }

        for item in &history {
            let height = item.height as usize;
            // transaction.get hashes to its txid, and pays the script what listunspent says.
            let raw = client.transaction_get_raw(&item.tx_hash).unwrap();
            let tx: Transaction = deserialize(&raw).unwrap();
            assert_eq!(tx.compute_txid(), item.tx_hash);
            let utxo = unspent.iter().find(|u| u.tx_hash == item.tx_hash).unwrap();
            assert_eq!(tx.output[utxo.tx_pos].script_pubkey, script);
            assert_eq!(tx.output[utxo.tx_pos].value.to_sat(), utxo.value);

            // get_merkle hashes up to the merkle root in the block's header.
            let merkle = client.transaction_get_merkle(&item.tx_hash, height).unwrap();
            assert_eq!(merkle.block_height, height);
            let header = client.block_header(height).unwrap();
            let root = root_from_branch(item.tx_hash.to_byte_array(), merkle.pos, &merkle.merkle);
            assert_eq!(
                root,
                header.merkle_root.to_byte_array(),
                "merkle root of block {height}"
            );
            assert!(electrum_client::utils::validate_merkle_proof(
                &item.tx_hash,
                &header.merkle_root,
                &merkle
            ));

            // id_from_pos agrees, with the same branch.
            let at = client.txid_from_pos_with_merkle(height, merkle.pos).unwrap();
            assert_eq!(at.tx_hash, item.tx_hash);
            assert_eq!(at.merkle, merkle.merkle);
        }

        // Every transaction of a block (coinbase included) proves against its header.
        let height = history[0].height as usize;
        let header = client.block_header(height).unwrap();
        for pos in 0.. {
            let Ok(txid) = client.txid_from_pos(height, pos) else {
                break;
            };
            let merkle = client.transaction_get_merkle(&txid, height).unwrap();
            assert_eq!(merkle.pos, pos);
            assert_eq!(
                root_from_branch(txid.to_byte_array(), pos, &merkle.merkle),
                header.merkle_root.to_byte_array()
            );
            let tx: Transaction = deserialize(&client.transaction_get_raw(&txid).unwrap()).unwrap();
            assert_eq!(tx.compute_txid(), txid);
        }
        // A transaction is not in another block.
        let error = protocol_error(client.transaction_get_merkle(&history[0].tx_hash, height - 1));
        assert!(error.contains("not in block"), "{error}");

        // The status hashes the history as the client sees it.
        let status = client.script_subscribe(&script).unwrap().expect("a status");
        assert_eq!(Some(*status), status_of(&history));
        assert_eq!(
            client
                .script_subscribe(&ScriptBuf::from_bytes(vec![0x51]))
                .unwrap(),
            None
        );
    })
    .await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Broadcast and notifications

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_enters_mempool_notifies_confirms_and_notifies_again() {
    let key = TestKey::from_seed([3; 32]);
    let payee = TestKey::from_seed([4; 32]);
    let pay = format!("{}:2", key.address());
    let server = start(&["--blocks", "102", "--pay-to", &pay]).await;
    let (addr, admin_addr) = (server.listen_addr(), server.admin_addr());
    blocking(move || {
        let client = client(addr);
        let script = ScriptBuf::from_bytes(key.script_pubkey());
        let payee_script = ScriptBuf::from_bytes(payee.script_pubkey());
        let tip = client.block_headers_subscribe().unwrap();
        let status = client.script_subscribe(&script).unwrap().expect("paid");
        assert_eq!(client.script_subscribe(&payee_script).unwrap(), None);

        let utxo = client.script_list_unspent(&script).unwrap().remove(0);
        assert_eq!(utxo.value, 200_000_000);
        let outpoint = (utxo.tx_hash.to_byte_array(), utxo.tx_pos as u32, utxo.value);

        // Malformed bytes are refused by the validator before the node sees them.
        let error = protocol_error(client.transaction_broadcast_raw(&[0x02, 0x00, 0x00, 0x00, 0x01, 0xff]));
        assert!(error.contains("rejected"), "{error}");
        let error =
            protocol_error(client.raw_call("blockchain.transaction.broadcast", [Param::String("zz".into())]));
        assert!(error.contains("not hex"), "{error}");
        // A transaction spending an output that does not exist.
        let bogus = key.sign_p2wpkh_spend(&[([7; 32], 0, 1000)], &[(payee.script_pubkey(), 500)]);
        let error = protocol_error(client.transaction_broadcast_raw(&bogus));
        assert!(error.contains("does not exist"), "{error}");

        let raw = key.sign_p2wpkh_spend(
            &[outpoint],
            &[
                (payee.script_pubkey(), 150_000_000),
                (key.script_pubkey(), 49_990_000),
            ],
        );
        let expected: Transaction = deserialize(&raw).unwrap();
        let txid = client.transaction_broadcast_raw(&raw).unwrap();
        assert_eq!(txid, expected.compute_txid());

        // In the mempool, with its fee, and in the history at height 0.
        let mempool = client
            .raw_call(
                "blockchain.scripthash.get_mempool",
                [Param::String(script_hash_hex(&script))],
            )
            .unwrap();
        assert_eq!(
            mempool,
            json!([{ "tx_hash": txid.to_string(), "height": 0, "fee": 10_000 }])
        );
        let history = client.script_get_history(&script).unwrap();
        assert_eq!(
            history.last().map(|h| (h.tx_hash, h.height, h.fee)),
            Some((txid, 0, Some(10_000)))
        );
        let balance = client.script_get_balance(&script).unwrap();
        assert_eq!(
            (balance.confirmed, balance.unconfirmed),
            (200_000_000, -150_010_000)
        );
        assert_eq!(
            client.script_get_balance(&payee_script).unwrap().unconfirmed,
            150_000_000
        );
        assert_eq!(client.transaction_get_raw(&txid).unwrap(), raw);
        let histogram = client.raw_call("mempool.get_fee_histogram", []).unwrap();
        assert_eq!(histogram.as_array().map(Vec::len), Some(1), "{histogram}");

        // Both subscribed scripts are told, with the status of their new history.
        let mempool_status = wait_for_status(&client, &script);
        assert_ne!(mempool_status, *status);
        assert_eq!(Some(mempool_status), status_of(&history));
        let payee_status = wait_for_status(&client, &payee_script);
        assert_eq!(
            Some(payee_status),
            status_of(&client.script_get_history(&payee_script).unwrap())
        );

        // A double spend of the same output is refused, naming the spender.
        let double = key.sign_p2wpkh_spend(&[outpoint], &[(key.script_pubkey(), 199_000_000)]);
        let error = protocol_error(client.transaction_broadcast_raw(&double));
        assert!(
            error.contains("already spent") && error.contains(&txid.to_string()) && error.contains("mempool"),
            "{error}"
        );
        let error = protocol_error(client.transaction_broadcast_raw(&raw));
        assert!(error.contains("already"), "{error}");

        // Mined by the admin interface: confirmed, and told again.
        let mined = admin(admin_addr, "generate", json!([1]));
        let height = mined["height"].as_u64().unwrap() as usize;
        assert_eq!(height, tip.height + 1);
        let confirmed_status = wait_for_status(&client, &script);
        let history = client.script_get_history(&script).unwrap();
        assert_eq!(
            history.last().map(|h| (h.tx_hash, h.height, h.fee)),
            Some((txid, height as i32, None))
        );
        assert_eq!(Some(confirmed_status), status_of(&history));
        assert_ne!(confirmed_status, mempool_status);
        wait_for_status(&client, &payee_script);
        let mempool = client
            .raw_call(
                "blockchain.scripthash.get_mempool",
                [Param::String(script_hash_hex(&script))],
            )
            .unwrap();
        assert_eq!(mempool, json!([]));
        let balance = client.script_get_balance(&script).unwrap();
        assert_eq!((balance.confirmed, balance.unconfirmed), (49_990_000, 0));
        let merkle = client.transaction_get_merkle(&txid, height).unwrap();
        let header = client.block_header(height).unwrap();
        assert!(electrum_client::utils::validate_merkle_proof(
            &txid,
            &header.merkle_root,
            &merkle
        ));
        let mut new_tip = None;
        while let Some(notification) = client.block_headers_pop().unwrap() {
            new_tip = Some(notification);
        }
        let new_tip = new_tip.expect("a header notification");
        assert_eq!(
            (new_tip.height, new_tip.header.block_hash()),
            (height, header.block_hash())
        );

        // Now the double spend conflicts with a confirmed spend.
        let error = protocol_error(client.transaction_broadcast_raw(&double));
        assert!(error.contains(&format!("in block {height}")), "{error}");
        assert_eq!(admin(admin_addr, "getinfo", json!([]))["counters"]["txs_sent"], 1);
    })
    .await;
    server.shutdown().await;
}

fn script_hash_hex(script: &ScriptBuf) -> String {
    let mut hash = sha256::Hash::hash(script.as_bytes()).to_byte_array();
    hash.reverse();
    indexer_sessions::encode_hex(&hash)
}

// ---------------------------------------------------------------------------
// Limits

/// Connects from `local` (any 127.0.0.0/8 address is local on Linux).
async fn connect_from(local: &str, server: SocketAddr) -> LineClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server).await.unwrap().into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    LineClient::from_stream(stream)
}

/// Each refusal starts with the reason Bitcoin Core gives, then `, ` and
/// this server's explanation: the Electrum wallet shows a refusal's reason
/// only when the message holds Core's words for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_refusals_carry_bitcoin_cores_reasons() {
    let key = TestKey::from_seed([5; 32]);
    let payee = TestKey::from_seed([6; 32]);
    let pay = format!("{}:2", key.address());
    let server = start(&["--blocks", "102", "--pay-to", &pay]).await;
    let (addr, admin_addr) = (server.listen_addr(), server.admin_addr());
    blocking(move || {
        let client = client(addr);
        let refusal = |raw: &[u8], reason: &str| {
            let error = protocol_error(client.transaction_broadcast_raw(raw));
            let prefix = format!("the transaction was rejected by network rules: {reason}, ");
            assert!(error.starts_with(&prefix), "expected {reason:?}: {error}");
            error
        };
        let script = ScriptBuf::from_bytes(key.script_pubkey());
        let utxo = client.script_list_unspent(&script).unwrap().remove(0);
        let outpoint = (utxo.tx_hash.to_byte_array(), utxo.tx_pos as u32, utxo.value);

        let missing = key.sign_p2wpkh_spend(&[([7; 32], 0, 1000)], &[(payee.script_pubkey(), 500)]);
        let error = refusal(&missing, "bad-txns-inputs-missingorspent");
        assert!(error.ends_with("which does not exist"), "{error}");

        let too_much = key.sign_p2wpkh_spend(&[outpoint], &[(payee.script_pubkey(), 200_000_001)]);
        refusal(&too_much, "bad-txns-in-belowout");

        // One input, two outputs: 141 vB, so 141 sat at 1 sat/vB; 100 is too little.
        let cheap = key.sign_p2wpkh_spend(
            &[outpoint],
            &[
                (payee.script_pubkey(), 100_000_000),
                (key.script_pubkey(), 99_999_900),
            ],
        );
        let vsize = deserialize::<Transaction>(&cheap).unwrap().vsize();
        let error = refusal(&cheap, "min relay fee not met");
        assert!(error.contains(&format!("100 < {vsize}")), "{error}");

        // The payee cannot sign for the key's coins.
        let stolen = payee.sign_p2wpkh_spend(&[outpoint], &[(payee.script_pubkey(), 199_000_000)]);
        refusal(
            &stolen,
            "mandatory-script-verify-flag-failed (Script failed an OP_EQUALVERIFY operation)",
        );

        let raw = key.sign_p2wpkh_spend(&[outpoint], &[(payee.script_pubkey(), 199_990_000)]);
        let txid = client.transaction_broadcast_raw(&raw).unwrap();
        refusal(&raw, "txn-already-in-mempool");
        let conflict = key.sign_p2wpkh_spend(&[outpoint], &[(key.script_pubkey(), 199_000_000)]);
        let error = refusal(&conflict, "txn-mempool-conflict");
        assert!(error.contains(&txid.to_string()), "{error}");

        admin(admin_addr, "generate", json!([1]));
        refusal(&raw, "txn-already-known");
        let error = refusal(&conflict, "bad-txns-inputs-missingorspent");
        assert!(error.contains(&txid.to_string()), "{error}");
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_client_is_throttled_then_refused_while_another_group_is_served() {
    let server = start(&[
        "--blocks",
        "100",
        "--exempt-networks",
        "none",
        "--cost-soft-limit",
        "200",
        "--cost-hard-limit",
        "1000",
        "--request-sleep-ms",
        "100",
    ])
    .await;
    let addr = server.listen_addr();
    let manager = server.manager().clone();
    let mut flooder = connect_from("127.0.1.1", addr).await;
    let flooder_addr = flooder.writer.local_addr().unwrap();

    // The well-behaved client, from 127.0.0.1 (group 127.0.0.0/24), keeps asking throughout.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (ready, is_ready) = std::sync::mpsc::channel::<()>();
    let steady = tokio::task::spawn_blocking(move || {
        let client = client(addr);
        client.ping().unwrap();
        ready.send(()).unwrap();
        let mut served = 0;
        let mut slowest = Duration::ZERO;
        while stopped.try_recv().is_err() {
            let started = Instant::now();
            client.ping().unwrap();
            assert_eq!(client.block_headers_subscribe().unwrap().height, 100);
            slowest = slowest.max(started.elapsed());
            served += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        (client, served, slowest)
    });

    blocking(move || is_ready.recv().unwrap()).await;
    let flood = blocking(move || {
        flooder.handshake();
        let mut targets = Vec::new();
        let mut throttled_sleeps = Duration::ZERO;
        for i in 0..500 {
            let started = Instant::now();
            let reply = flooder.call(
                json!({"jsonrpc": "2.0", "id": i, "method": "blockchain.block.headers", "params": [0, 2016]}),
            );
            if reply.get("error").is_some() {
                assert_eq!(error_code(&reply), -101, "{reply}");
                assert!(
                    flooder.closed_within(Duration::from_secs(5)),
                    "disconnected after -101"
                );
                return (i, targets, throttled_sleeps);
            }
            assert_eq!(reply["result"]["count"], 101);
            let row = manager
                .sessions()
                .into_iter()
                .find(|row| row.peer == flooder_addr)
                .expect("flooder's session");
            let target: u32 = row.flags[1..].parse().unwrap();
            if target < 10 {
                throttled_sleeps += started.elapsed();
            }
            targets.push(target);
            assert_eq!(row.group, Some("127.0.1.0/24".parse().unwrap()));
        }
        panic!("the flooder was never disconnected");
    });
    let (requests, targets, throttled_sleeps) = flood.await;
    assert!(requests > 5, "served {requests} requests before -101");
    // Concurrency went down step by step (throttled) before reaching 0 (cut off).
    assert!(
        targets.iter().any(|t| (1..10).contains(t)),
        "throttled before the cut: {targets:?}"
    );
    assert!(
        targets.windows(2).all(|w| w[1] <= w[0]),
        "only ever tightened: {targets:?}"
    );
    assert!(
        throttled_sleeps >= Duration::from_millis(100),
        "throttled requests slept {throttled_sleeps:?}"
    );

    stop.send(()).unwrap();
    let (client, served, slowest) = steady.await.unwrap();
    assert!(
        served >= 3,
        "the other client was served {served} times during the flood"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "the other client waited {slowest:?}"
    );
    let rows = server.manager().sessions();
    assert_eq!(rows.len(), 1, "only the steady client is left: {rows:?}");
    assert_eq!(rows[0].group, Some("127.0.0.0/24".parse().unwrap()));
    assert!(
        rows[0].flags.ends_with("10"),
        "the other group is not throttled: {}",
        rows[0].flags
    );
    let groups = blocking({
        let admin_addr = server.admin_addr();
        move || admin(admin_addr, "groups", json!([]))
    })
    .await;
    let flood_group = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "127.0.1.0/24")
        .expect("the flooder's group");
    assert!(
        flood_group["retained_cost"].as_f64().unwrap() >= 1000.0,
        "{flood_group}"
    );
    blocking(move || client.ping().unwrap()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_is_disconnected_after_session_timeout() {
    let server = start(&[
        "--blocks",
        "1",
        "--session-timeout",
        "1",
        "--sweep-interval",
        "0.25",
    ])
    .await;
    let addr = server.listen_addr();
    let manager = server.manager().clone();
    blocking(move || {
        let mut idle = LineClient::connect(addr);
        idle.handshake();
        let mut active = LineClient::connect(addr);
        active.handshake();
        let started = Instant::now();
        assert!(
            !idle.closed_within(Duration::from_millis(600)),
            "still open before the timeout"
        );
        // The active client keeps talking past the timeout.
        for i in 0..6 {
            let reply = active.call(json!({"jsonrpc": "2.0", "id": i, "method": "server.ping"}));
            assert_eq!(reply["result"], Value::Null);
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(idle.closed_within(Duration::from_secs(3)), "idle session closed");
        assert_eq!(manager.session_count(), 1, "only the active session is left");
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(900), "closed after {elapsed:?}");
        let reply = active.call(json!({"jsonrpc": "2.0", "id": 9, "method": "server.ping"}));
        assert_eq!(reply["result"], Value::Null);
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_sessions_new_connections_wait_and_are_accepted_below_95_percent() {
    let server = start(&["--blocks", "1", "--max-sessions", "4"]).await;
    let (addr, admin_addr) = (server.listen_addr(), server.admin_addr());
    let manager = server.manager().clone();
    blocking(move || {
        let mut clients: Vec<LineClient> = (0..4)
            .map(|_| {
                let mut c = LineClient::connect(addr);
                c.handshake();
                c
            })
            .collect();
        assert_eq!(manager.session_count(), 4);
        assert_eq!(admin(admin_addr, "getinfo", json!([]))["listener"], "paused");

        // A fifth connection waits (the listener does not accept) or is refused.
        let mut waiting = LineClient::connect(addr);
        waiting
            .send(&json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": ["late", "1.4"]}));
        waiting
            .writer
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut line = String::new();
        let refused = match waiting.reader.read_line(&mut line) {
            Ok(0) => true,
            Ok(_) => panic!("served above max-sessions: {line}"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            Err(_) => false,
        };
        waiting.writer.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(manager.session_count(), 4);

        // 4 → 3 sessions is 75 % (≤ 95 %): the listener resumes.
        drop(clients.pop());
        if refused {
            let mut again = LineClient::connect(addr);
            again.handshake();
        } else {
            let reply = waiting.recv().expect("the waiting connection is served");
            assert_eq!(reply["result"][1], "1.4", "{reply}");
        }
        assert_eq!(manager.session_count(), 4);
        for client in &mut clients {
            assert_eq!(
                client.call(json!({"jsonrpc": "2.0", "id": 1, "method": "server.ping"}))["result"],
                Value::Null
            );
        }
    })
    .await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_and_never_disturbs_other_clients() {
    let server = start(&[
        "--blocks",
        "60",
        "--max-recv",
        "1000",
        "--max-send",
        "4000",
        "--request-sleep-ms",
        "20",
    ])
    .await;
    let addr = server.listen_addr();
    let manager = server.manager().clone();
    blocking(move || {
        let good = client(addr);
        let check_good = || {
            good.ping().unwrap();
            assert_eq!(good.block_headers_subscribe().unwrap().height, 60);
        };
        let mut bad = LineClient::connect(addr);

        // Before server.version, nothing else is served.
        let reply = bad.call(json!({"jsonrpc": "2.0", "id": 1, "method": "server.ping"}));
        assert_eq!(error_code(&reply), 1);
        assert!(reply["error"]["message"].as_str().unwrap().contains("server.version"));
        bad.handshake();
        check_good();

        let expect = |bad: &mut LineClient, bytes: &[u8], code: i64| {
            bad.send_raw(bytes);
            let reply = bad.recv().expect("a reply");
            assert_eq!(error_code(&reply), code, "for {:?}: {reply}", String::from_utf8_lossy(bytes));
            check_good();
            reply
        };
        // Garbage bytes and invalid JSON: parse errors.
        expect(&mut bad, b"\x00\xff\xfe\x07garbage\x1b[0m\n", -32700);
        expect(&mut bad, b"{\"jsonrpc\": \"2.0\", \"id\": 2, \"method\": \n", -32700);
        // Valid JSON that is not a request.
        expect(&mut bad, b"42\n", -32600);
        expect(&mut bad, b"{\"id\": 3}\n", -32600);
        expect(&mut bad, b"[]\n", -32600);
        // Unknown methods.
        let reply = expect(&mut bad, b"{\"jsonrpc\": \"2.0\", \"id\": 4, \"method\": \"blockchain.nope\"}\n", -32601);
        assert_eq!(reply["id"], 4);
        // Wrong parameters: type, count, malformed hashes.
        expect(&mut bad, b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"blockchain.block.header\",\"params\":[\"ten\"]}\n", -32602);
        expect(&mut bad, b"{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"blockchain.block.header\",\"params\":[1,2,3]}\n", -32602);
        expect(&mut bad, b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"blockchain.scripthash.get_balance\",\"params\":[\"zz\"]}\n", -32602);
        expect(&mut bad, b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"blockchain.transaction.get\",\"params\":{\"txid\":\"00\"}}\n", -32602);
        expect(&mut bad, b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"blockchain.estimatefee\",\"params\":[2,\"FAST\"]}\n", 1);
        expect(&mut bad, b"{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"blockchain.block.header\",\"params\":[61]}\n", 1);
        expect(&mut bad, b"{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"server.version\",\"params\":[\"again\",\"1.4\"]}\n", 1);
        // An over-long line, sent in pieces, is dropped; the stream resynchronises.
        let mut long = b"{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"server.ping\",\"params\":[\"".to_vec();
        long.extend(std::iter::repeat_n(b'x', 3000));
        bad.send_raw(&long[..1500]);
        std::thread::sleep(Duration::from_millis(50));
        long.extend_from_slice(b"\"]}\n");
        expect(&mut bad, &long[1500..], -32600);
        // A response over --max-send becomes an error.
        let reply = expect(&mut bad, b"{\"jsonrpc\":\"2.0\",\"id\":13,\"method\":\"blockchain.block.headers\",\"params\":[0,50]}\n", 1);
        assert!(reply["error"]["message"].as_str().unwrap().contains("too large"), "{reply}");

        // The same connection still works, singly and in a batch.
        let reply = bad.call(json!({"jsonrpc": "2.0", "id": 14, "method": "blockchain.block.headers", "params": [0, 5]}));
        assert_eq!(reply["result"]["count"], 5);
        let reply = bad.call(json!([
            {"jsonrpc": "2.0", "id": 15, "method": "server.ping"},
            {"jsonrpc": "2.0", "id": 16, "method": "nope"},
            {"jsonrpc": "2.0", "method": "server.ping"},
            {"jsonrpc": "2.0", "id": 17, "method": "blockchain.relayfee"},
        ]));
        let replies = reply.as_array().expect("a batch reply");
        assert_eq!(replies.len(), 3, "no reply to the notification: {reply}");
        assert_eq!(replies[0]["result"], Value::Null);
        assert_eq!(error_code(&replies[1]), -32601);
        assert_eq!(replies[2]["result"], 0.00001);
        check_good();
        let rows = manager.sessions();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().any(|row| row.counters.errors >= 15), "errors are counted: {rows:?}");
    })
    .await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Command line

#[test]
fn every_flag_maps_onto_the_configuration() {
    let p2sh = Address::p2sh(&ScriptBuf::from_bytes(vec![0x51]), Network::Regtest)
        .unwrap()
        .to_string();
    let p2sh_pay = format!("{p2sh}:1500sat");
    let args = [
        "--listen=127.0.0.1:0",
        "--admin",
        "[::1]:0",
        "--blocks",
        "120",
        "--pay-to",
        "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080:1.5",
        "--pay-to",
        &p2sh_pay,
        "--block-interval",
        "2.5",
        "--max-recv",
        "5000",
        "--max-send",
        "6000",
        "--max-queued",
        "70000",
        "--max-send-delay",
        "1.5",
        "--max-sessions",
        "7",
        "--max-sessions-per-group",
        "3",
        "--cost-soft-limit",
        "10",
        "--cost-hard-limit",
        "20.5",
        "--initial-concurrent",
        "4",
        "--request-sleep-ms",
        "30",
        "--request-timeout",
        "5",
        "--session-timeout",
        "9",
        "--sweep-interval",
        "0.5",
        "--exempt-networks",
        "10.0.0.0/8, ::1/128",
        "--max-subs-per-session",
        "50",
        "--bandwidth-unit-cost",
        "100",
        "--metrics",
        "127.0.0.1:9100",
        "--status=[::1]:8080",
        "--log-format",
        "json",
    ];
    let cli::Command::Run(options) = cli::parse(args).unwrap() else {
        panic!()
    };
    let limits = &options.config.limits;
    assert_eq!(options.blocks, 120);
    assert_eq!(options.pay_to[0].1, 150_000_000);
    assert_eq!(options.pay_to[1], (p2sh, 1500));
    assert_eq!(options.block_interval, Duration::from_millis(2500));
    assert_eq!((options.max_recv, options.config.max_send), (5000, 6000));
    assert_eq!(options.max_queued, 70000);
    assert_eq!(limits.max_send_delay, Duration::from_millis(1500));
    assert_eq!((limits.max_sessions, limits.max_sessions_per_group), (7, Some(3)));
    assert_eq!((limits.cost_soft_limit, limits.cost_hard_limit), (10.0, 20.5));
    assert_eq!(limits.initial_concurrent, 4);
    assert_eq!(limits.request_sleep, Duration::from_millis(30));
    assert_eq!(limits.request_timeout, Duration::from_secs(5));
    assert_eq!(limits.session_timeout, Duration::from_secs(9));
    assert_eq!(options.config.sweep_interval, Duration::from_millis(500));
    assert_eq!(options.config.exempt_networks.len(), 2);
    assert_eq!(limits.max_subs_per_session, Some(50));
    assert_eq!(limits.bandwidth_unit_cost, 100.0);
    assert_eq!(options.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(options.status, Some("[::1]:8080".parse().unwrap()));
    assert_eq!(options.log_format, server::LogFormat::Json);

    let cli::Command::Run(none) = cli::parse(["--exempt-networks", "none"]).unwrap() else {
        panic!()
    };
    assert!(none.config.exempt_networks.is_empty());
    let cli::Command::Run(default) = cli::parse(Vec::<String>::new()).unwrap() else {
        panic!()
    };
    assert_eq!(default.config, indexer_sessions::Config::default());
    let listeners: Vec<String> = default.services.iter().map(ToString::to_string).collect();
    assert_eq!(listeners, ["tcp://127.0.0.1:50001", "ssl://127.0.0.1:50002"]);
    assert_eq!(default.admin, "127.0.0.1:8000".parse().unwrap());
    assert_eq!((default.metrics, default.status), (None, None));
    assert_eq!(default.log_format, server::LogFormat::Text);

    for bad in [
        &["--pay-to", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4:1"][..],
        &["--pay-to", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"],
        &["--cost-soft-limit", "50", "--cost-hard-limit", "10"],
        &["--max-sessions", "0"],
        &["--max-queued", "0"],
        &["--max-send-delay", "0"],
        &["--exempt-networks", "10.0.0.0/33"],
        &["--listen"],
        &["--frobnicate", "1"],
        &["--log-format", "xml"],
        &["--metrics", "localhost"],
    ] {
        assert!(cli::parse(bad.iter().copied()).is_err(), "{bad:?} is refused");
    }
    let help = cli::help();
    for flag in [
        "--listen",
        "--admin",
        "--blocks",
        "--pay-to",
        "--block-interval",
        "--max-recv",
        "--max-send",
        "--max-queued",
        "--max-send-delay",
        "--max-sessions",
        "--max-sessions-per-group",
        "--cost-soft-limit",
        "--cost-hard-limit",
        "--initial-concurrent",
        "--request-sleep-ms",
        "--request-timeout",
        "--session-timeout",
        "--sweep-interval",
        "--exempt-networks",
        "--max-subs-per-session",
        "--bandwidth-unit-cost",
        "--metrics",
        "--status",
        "--log-format",
    ] {
        assert!(help.contains(&format!("{flag} ")), "--help lists {flag}");
    }
    assert!(matches!(cli::parse(["--help"]), Ok(cli::Command::Help)));
}

/// Mistakes on the command line are named the way `clap` names them: the
/// unknown flag, the flag whose value is wrong, and why.
#[test]
fn cli_errors_name_the_flag_and_the_reason() {
    let error = |args: &[&str]| cli::parse(args.iter().copied()).expect_err("refused");

    let message = error(&["--frobnicate", "1"]);
    assert!(
        message.contains("unexpected argument '--frobnicate' found"),
        "{message}"
    );
    let message = error(&["--max-sessions", "many"]);
    assert!(
        message.contains("invalid value 'many' for '--max-sessions <N>': expected a whole number"),
        "{message}"
    );
    let message = error(&["--request-timeout=0"]);
    assert!(message.contains("must be more than 0 seconds"), "{message}");
    let message = error(&["--listen"]);
    assert!(
        message.contains("a value is required for '--listen <ADDR>'"),
        "{message}"
    );

    // No amount, and no sum of amounts, above the 21 million BTC there can ever be.
    let address = TestKey::from_seed([1; 32]).address();
    for amount in [
        "21000000.00000001",
        "2100000000000001sat",
        "18446744073709551615sat",
    ] {
        let message = error(&["--pay-to", &format!("{address}:{amount}")]);
        assert!(
            message.contains("more than 21,000,000 BTC"),
            "{amount}: {message}"
        );
    }
    let message = error(&[
        "--pay-to",
        &format!("{address}:20000000"),
        "--pay-to",
        &format!("{address}:1000000.00000001"),
    ]);
    assert!(
        message.contains("the --pay-to amounts total more than 21,000,000 BTC"),
        "{message}"
    );
    let cli::Command::Run(options) = cli::parse(["--pay-to", &format!("{address}:21000000")]).unwrap() else {
        panic!()
    };
    assert_eq!(options.pay_to[0].1, 2_100_000_000_000_000);
}

/// ElectrumX's environment variables set the flags of the same meaning; a
/// flag on the command line wins over its variable.
#[test]
fn electrumx_environment_variables_set_the_limits() {
    let environment = [
        ("MAX_SESSIONS", "7"),
        ("COST_SOFT_LIMIT", "10"),
        ("COST_HARD_LIMIT", "20.5"),
        ("BANDWIDTH_UNIT_COST", "100"),
        ("INITIAL_CONCURRENT", "4"),
        ("REQUEST_SLEEP", "30"),
        ("REQUEST_TIMEOUT", "5"),
        ("SESSION_TIMEOUT", "9"),
        ("MAX_SEND", "6000"),
        ("MAX_RECV", "5000"),
    ];
    let env = |name: &str| {
        environment
            .iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| value.into())
    };
    let cli::Command::Run(options) = cli::parse_with_env(Vec::<String>::new(), env).unwrap() else {
        panic!()
    };
    let limits = &options.config.limits;
    assert_eq!(limits.max_sessions, 7);
    assert_eq!((limits.cost_soft_limit, limits.cost_hard_limit), (10.0, 20.5));
    assert_eq!(limits.bandwidth_unit_cost, 100.0);
    assert_eq!(limits.initial_concurrent, 4);
    assert_eq!(limits.request_sleep, Duration::from_millis(30));
    assert_eq!(limits.request_timeout, Duration::from_secs(5));
    assert_eq!(limits.session_timeout, Duration::from_secs(9));
    assert_eq!((options.max_recv, options.config.max_send), (5000, 6000));

    let cli::Command::Run(options) = cli::parse_with_env(["--max-sessions", "9"], env).unwrap() else {
        panic!()
    };
    assert_eq!(options.config.limits.max_sessions, 9);

    // A variable's value is checked as its flag's is, and the limits together.
    let message = cli::parse_with_env(Vec::<String>::new(), |name| {
        (name == "MAX_SESSIONS").then(|| "0".into())
    })
    .expect_err("refused");
    assert!(
        message.contains("--max-sessions <N>': must be at least 1"),
        "{message}"
    );
    let message = cli::parse_with_env(["--cost-hard-limit", "50"], |name| {
        (name == "COST_SOFT_LIMIT").then(|| "100".into())
    })
    .expect_err("refused");
    assert!(message.contains("soft"), "{message}");

    let help = cli::help();
    for (variable, _) in environment {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "--help names {variable}"
        );
    }
}

/// `--redis` and its companions map onto `Options::redis`; the companions
/// need `--redis`, and the TTL must outlast the sync interval.
#[cfg(feature = "redis")]
#[test]
fn redis_flags_map_onto_the_shared_ledger() {
    let run = |args: &[&str]| match cli::parse(args.iter().copied()) {
        Ok(cli::Command::Run(options)) => Ok(*options),
        Ok(cli::Command::Help) => panic!("not a help request"),
        Err(message) => Err(message),
    };
    let options = run(&[
        "--redis",
        "redis://127.0.0.1:6379/",
        "--node-name",
        "node-1",
        "--redis-sync-ms",
        "50",
        "--redis-node-ttl",
        "2.5",
        "--cost-hard-limit",
        "2000",
    ])
    .unwrap();
    let config = options
        .redis
        .ledger_config(options.config.limits.cost_hard_limit)
        .expect("a shared ledger");
    assert_eq!(config.url, "redis://127.0.0.1:6379/");
    assert_eq!(config.node, "node-1");
    assert_eq!(config.sync_interval, Duration::from_millis(50));
    assert_eq!(config.node_ttl, Duration::from_millis(2500));
    // Redis refunds retained cost at the manager's rate, hard limit / 5000 per second.
    assert_eq!(config.refund_per_sec, 0.4);

    // The defaults: the ledger's own, and a name unique to this process.
    let options = run(&["--redis=redis://127.0.0.1:6379/"]).unwrap();
    let config = options.redis.ledger_config(10000.0).unwrap();
    let defaults = indexer_sessions::redis_ledger::RedisLedgerConfig::new("", "");
    assert_eq!(
        (config.sync_interval, config.node_ttl),
        (defaults.sync_interval, defaults.node_ttl)
    );
    assert!(
        config.node.ends_with(&format!("-{}", std::process::id())),
        "{}",
        config.node
    );
    // Without --redis the ledger stays in the process.
    assert!(run(&[]).unwrap().redis.ledger_config(10000.0).is_none());

    for (bad, why) in [
        (&["--node-name", "a"][..], "need --redis"),
        (&["--redis-sync-ms", "50"], "need --redis"),
        (
            &[
                "--redis",
                "redis://127.0.0.1/",
                "--redis-sync-ms",
                "500",
                "--redis-node-ttl",
                "0.5",
            ],
            "longer",
        ),
        (
            &["--redis", "redis://127.0.0.1/", "--redis-sync-ms", "0"],
            "at least 1",
        ),
        (&["--redis", "not a url"], "invalid"),
        (
            &["--redis", "redis://127.0.0.1/", "--node-name", "{a}"],
            "node name",
        ),
    ] {
        let message = run(bad).expect_err("refused");
        assert!(message.contains(why), "{bad:?}: {message}");
    }
    let help = cli::help();
    for flag in ["--redis", "--node-name", "--redis-sync-ms", "--redis-node-ttl"] {
        assert!(help.contains(&format!("{flag} ")), "--help lists {flag}");
    }
}

/// Built without the `redis` feature, the `--redis` flags are refused with
/// the way to get them, never ignored.
#[cfg(not(feature = "redis"))]
#[test]
fn redis_flags_without_the_redis_feature_say_how_to_rebuild() {
    for args in [
        &["--redis", "redis://127.0.0.1:6379/"][..],
        &["--node-name", "node-1"],
        &["--redis-sync-ms", "50"],
        &["--redis-node-ttl", "2"],
    ] {
        let message = cli::parse(args.iter().copied()).expect_err("refused");
        assert!(message.contains("--features redis"), "{args:?}: {message}");
    }
    assert!(cli::help().contains("--features redis"));
}
