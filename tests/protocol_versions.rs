//! The example server's protocol versions, through a raw newline JSON-RPC
//! client: negotiation from 1.4 to 1.7 as ElectrumX does it, methods
//! offered or refused ("unknown method") by the negotiated version, and the
//! 1.6 and 1.7 methods on the regtest chain: header arrays,
//! `mempool.get_info`, package broadcast (all or nothing), `testmempoolaccept`
//! (the mempool left as it was), `mempool.recent`, `server.ping`'s pong.
#![cfg(feature = "tokio")]

include!("support/example_server.rs");

use bitcoin::consensus::deserialize;
use bitcoin::hashes::Hash;
use serde_json::{Value, json};

use crate::support::{LineClient, blocking, start};
use crate::wallet::TestKey;

/// A raw client that negotiated `version` (a string or `[min, max]`).
async fn client(addr: std::net::SocketAddr, version: Value) -> (LineClient, Value) {
    let mut client = LineClient::connect_from("127.0.0.1", addr).await;
    blocking(move || {
        let reply = client.call(0, "server.version", json!(["protocol test", version]));
        (client, reply)
    })
    .await
}

fn negotiated(reply: &Value) -> &str {
    reply["result"][1]
        .as_str()
        .unwrap_or_else(|| panic!("negotiated: {reply}"))
}

fn is_unknown_method(reply: &Value) -> bool {
    reply["error"]["code"] == -32601
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_negotiated_and_gate_methods() {
    let server = start(&["--blocks", "105"]).await;
    let addr = server.listen_addr();
    for (asked, expected) in [
        (json!("1.4"), Some("1.4")),
        (json!(["1.4", "1.6"]), Some("1.6")),
        (json!(["1.4", "1.9"]), Some("1.7")),
        (json!(["1.2", "1.4.2"]), Some("1.4.2")),
        (json!("1.7"), Some("1.7")),
        (json!(["1.8", "2.0"]), None),
        (json!("1.3"), None),
    ] {
        let (_, reply) = client(addr, asked.clone()).await;
        match expected {
            Some(version) => assert_eq!(negotiated(&reply), version, "{asked}: {reply}"),
            None => assert!(
                reply["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("unsupported protocol version"),
                "{asked}: {reply}"
            ),
        }
    }

    let hash = "0".repeat(64);
    let (mut v14, _) = client(addr, json!("1.4")).await;
    let (mut v16, _) = client(addr, json!("1.6")).await;
    let (mut v17, _) = client(addr, json!("1.7")).await;
    blocking(move || {
        // 1.4: relayfee, scripthash.*, no unsubscribe before 1.4.2, no 1.6/1.7 methods.
        assert!(v14.call(1, "blockchain.relayfee", json!([]))["result"].is_number());
        assert!(v14.call(2, "blockchain.scripthash.get_balance", json!([hash]))["result"].is_object());
        assert!(is_unknown_method(&v14.call(
            3,
            "blockchain.scripthash.unsubscribe",
            json!([hash])
        )));
        assert!(is_unknown_method(&v14.call(4, "mempool.get_info", json!([]))));
        assert!(is_unknown_method(&v14.call(5, "mempool.recent", json!([]))));
        let headers = v14.call(6, "blockchain.block.headers", json!([0, 3]));
        assert_eq!(
            headers["result"]["hex"].as_str().unwrap().len(),
            3 * 160,
            "{headers}"
        );
        let features = v14.call(7, "server.features", json!([]));
        assert_eq!(features["result"]["hash_function"], "sha256");
        assert_eq!(features["result"]["protocol_min"], "1.4");
        assert_eq!(features["result"]["protocol_max"], "1.7");
        assert_eq!(v14.call(8, "server.ping", json!([]))["result"], Value::Null);

        // 1.6: no relayfee; mempool.get_info; headers as an array.
        assert!(is_unknown_method(&v16.call(1, "blockchain.relayfee", json!([]))));
        let info = v16.call(2, "mempool.get_info", json!([]));
        assert_eq!(
            info["result"],
            json!({ "mempoolminfee": 0.00001, "minrelaytxfee": 0.00001, "incrementalrelayfee": 0.00001 })
        );
        let headers = v16.call(3, "blockchain.block.headers", json!([0, 3]));
        let array = headers["result"]["headers"]
            .as_array()
            .expect("an array of headers");
        assert_eq!((array.len(), headers["result"]["count"].clone()), (3, json!(3)));
        assert!(array.iter().all(|header| header.as_str().unwrap().len() == 160));
        assert!(headers["result"].get("hex").is_none());
        assert!(v16.call(4, "blockchain.scripthash.get_balance", json!([hash]))["result"].is_object());
        assert!(is_unknown_method(&v16.call(5, "mempool.recent", json!([]))));

        // 1.7: scripthash.* are gone; ping pongs; features drop hash_function.
        for method in [
            "blockchain.scripthash.get_balance",
            "blockchain.scripthash.get_history",
            "blockchain.scripthash.get_mempool",
            "blockchain.scripthash.listunspent",
            "blockchain.scripthash.subscribe",
            "blockchain.scripthash.unsubscribe",
        ] {
            assert!(
                is_unknown_method(&v17.call(1, method, json!([hash]))),
                "{method} in 1.7"
            );
        }
        let pong = v17.call(2, "server.ping", json!([5, "abcd"]));
        assert_eq!(pong["result"], json!({ "data": "00000" }), "{pong}");
        assert!(v17.call(3, "server.ping", json!([0, "xyz"]))["error"].is_object());
        let features = v17.call(4, "server.features", json!([]));
        assert!(features["result"].get("hash_function").is_none(), "{features}");
        assert_eq!(v17.call(5, "mempool.recent", json!([]))["result"], json!([]));
        (v14, v16, v17)
    })
    .await;
    server.shutdown().await;
}

/// A spend of one P2WPKH output of `key` back to `key`, `fee` sat fee; the
/// raw transaction and its txid (internal byte order).
fn spend(key: &TestKey, txid: [u8; 32], vout: u32, value: u64, fee: u64) -> (Vec<u8>, [u8; 32]) {
    let raw = key.sign_p2wpkh_spend(&[(txid, vout, value)], &[(key.script_pubkey(), value - fee)]);
    let tx: bitcoin::Transaction = deserialize(&raw).unwrap();
    (raw, tx.compute_txid().to_byte_array())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_and_test_accepts_use_the_chains_mempool_rules() {
    let key = TestKey::from_seed([40; 32]);
    let pay = format!("{}:1", key.address());
    let server = start(&["--blocks", "105", "--pay-to", &pay]).await;
    let addr = server.listen_addr();
    let coin = {
        let chain = server.node().chain();
        let sh = crate::chain::script_hash(&key.script_pubkey());
        chain.utxos(&sh)[0]
    };
    let (parent, parent_txid) = spend(&key, coin.txid, coin.vout, coin.value, 1_000);
    let (child, _) = spend(&key, parent_txid, 0, coin.value - 1_000, 1_000);
    // Pays out more than it spends.
    let greedy_child = key.sign_p2wpkh_spend(
        &[(parent_txid, 0, coin.value - 1_000)],
        &[(key.script_pubkey(), coin.value)],
    );
    let hex = |raw: &Vec<u8>| indexer_sessions::encode_hex(raw);
    let (mut client, _) = client(addr, json!("1.7")).await;
    let node = server.node().clone();
    blocking(move || {
        // testmempoolaccept: the child is tested after its parent; nothing stays.
        let tested = client.call(
            1,
            "blockchain.transaction.testmempoolaccept",
            json!([[hex(&parent), hex(&child)]]),
        );
        let results = tested["result"].as_array().unwrap_or_else(|| panic!("{tested}"));
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|item| item["allowed"] == true), "{tested}");
        assert_eq!(results[0]["txid"].as_str().unwrap().len(), 64);
        assert_eq!(
            node.chain().mempool_len(),
            0,
            "a test leaves the mempool as it was"
        );
        let refused = client.call(
            2,
            "blockchain.transaction.testmempoolaccept",
            json!([[hex(&child)]]),
        );
        assert_eq!(refused["result"][0]["allowed"], false, "{refused}");
        assert!(
            refused["result"][0]["reason"]
                .as_str()
                .unwrap()
                .starts_with("bad-txns-inputs-missingorspent"),
            "{refused}"
        );

        // A package whose child overspends: nothing is accepted.
        let failed = client.call(
            3,
            "blockchain.transaction.broadcast_package",
            json!([[hex(&parent), hex(&greedy_child)]]),
        );
        assert_eq!(failed["result"]["success"], false, "{failed}");
        assert_eq!(
            failed["result"]["errors"].as_array().unwrap().len(),
            1,
            "{failed}"
        );
        assert_eq!(node.chain().mempool_len(), 0, "all or nothing");
        // A child alone is not a package; two unrelated transactions neither.
        let shape = client.call(
            4,
            "blockchain.transaction.broadcast_package",
            json!([[hex(&child)]]),
        );
        assert!(
            shape["error"]["message"]
                .as_str()
                .unwrap()
                .contains("rejected by network rules"),
            "{shape}"
        );

        // The package: accepted, and listed by mempool.recent, newest first.
        let sent = client.call(
            5,
            "blockchain.transaction.broadcast_package",
            json!([[hex(&parent), hex(&child)]]),
        );
        assert_eq!(sent["result"], json!({ "success": true }), "{sent}");
        assert_eq!(node.chain().mempool_len(), 2);
        let recent = client.call(6, "mempool.recent", json!([]));
        let recent = recent["result"].as_array().unwrap().clone();
        assert_eq!(recent.len(), 2);
        assert_eq!(
            recent[1]["txid"],
            bitcoin::Txid::from_byte_array(parent_txid).to_string()
        );
        assert_eq!(recent[0]["fee"], 1_000);
        assert!(recent[0]["vsize"].as_u64().unwrap() > 100);
        client
    })
    .await;
    server.shutdown().await;
}

/// Sends a version request, a warm-up and a mix of small and large
/// requests on a raw socket; returns each read's (offset, length) and the
/// replies, padding stripped.
fn padded_exchange(addr: std::net::SocketAddr) -> (Vec<(usize, usize)>, Vec<Value>) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(crate::support::TIMEOUT)).unwrap();
    let mut reads = Vec::new();
    let mut received = Vec::new();
    warm_up(&mut stream, &mut reads, &mut received);
    let mut requests = String::new();
    for id in 2..7 {
        requests += &request_line(id, "server.ping", json!([]));
    }
    requests += &request_line(7, "blockchain.block.headers", json!([0, 20]));
    for id in 8..11 {
        requests += &request_line(id, "server.ping", json!([]));
    }
    stream.write_all(requests.as_bytes()).unwrap();
    let replies = read_replies(&mut stream, 11, &mut reads, &mut received);
    (reads, replies)
}

/// One line of JSON-RPC.
fn request_line(id: u64, method: &str, params: Value) -> String {
    let mut line = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string();
    line.push('\n');
    line
}

/// Sends the version and a header batch, more than the padding's warm-up
/// in replies, and reads both replies.
fn warm_up(stream: &mut std::net::TcpStream, reads: &mut Vec<(usize, usize)>, received: &mut Vec<u8>) {
    use std::io::Write;
    let mut requests = request_line(0, "server.version", json!(["padding test", "1.7"]));
    requests += &request_line(1, "blockchain.block.headers", json!([0, 8]));
    stream.write_all(requests.as_bytes()).unwrap();
    read_replies(stream, 2, reads, received);
}

/// Reads until `count` replies have arrived in all; records each read as
/// (bytes received before it, its length).
fn read_replies(
    stream: &mut std::net::TcpStream,
    count: usize,
    reads: &mut Vec<(usize, usize)>,
    received: &mut Vec<u8>,
) -> Vec<Value> {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let replies: Vec<Value> = received
            .split(|&byte| byte == b'\n')
            .filter(|line: &&[u8]| !line.iter().all(u8::is_ascii_whitespace))
            .map(|line| serde_json::from_slice(line).expect("padded replies are JSON"))
            .collect();
        if replies.len() >= count {
            return replies;
        }
        let n = stream.read(&mut buf).expect("the replies arrive");
        assert!(n > 0, "closed after {} replies", replies.len());
        reads.push((received.len(), n));
        received.extend_from_slice(&buf[..n]);
    }
}

/// After the warm-up, one ping with nothing else in flight: the reads that
/// bring its reply (so no other reply can share them).
fn lone_ping_reads(addr: std::net::SocketAddr) -> Vec<usize> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(crate::support::TIMEOUT)).unwrap();
    let (mut reads, mut received) = (Vec::new(), Vec::new());
    warm_up(&mut stream, &mut reads, &mut received);
    let before = reads.len();
    stream
        .write_all(request_line(2, "server.ping", json!([])).as_bytes())
        .unwrap();
    read_replies(&mut stream, 3, &mut reads, &mut received);
    reads[before..].iter().map(|&(_, n)| n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padding_leaves_no_packet_under_the_minimum_after_the_warm_up() {
    use crate::padding::{MIN_PACKET, WARMUP};
    let server = start(&["--blocks", "30", "--padding", "on"]).await;
    let addr = server.listen_addr();
    let (reads, replies) = blocking(move || padded_exchange(addr)).await;
    let ids: Vec<u64> = replies
        .iter()
        .map(|reply| reply["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 11);
    assert!(
        replies.iter().all(|reply| reply.get("error").is_none()),
        "{replies:?}"
    );
    let after_warm_up: Vec<usize> = reads
        .iter()
        .filter(|(at, _)| *at >= WARMUP)
        .map(|(_, n)| *n)
        .collect();
    assert!(!after_warm_up.is_empty(), "{reads:?}");
    assert!(
        after_warm_up.iter().all(|&n| n >= MIN_PACKET),
        "reads after the warm-up: {reads:?}"
    );
    server.shutdown().await;

    // A lone small reply is padded too.
    let server = start(&["--blocks", "30", "--padding", "on"]).await;
    let addr = server.listen_addr();
    let reads = blocking(move || lone_ping_reads(addr)).await;
    assert!(
        reads.iter().all(|&n| n >= MIN_PACKET),
        "padded lone ping: {reads:?}"
    );
    server.shutdown().await;

    // Without padding, it goes out as it is.
    let server = start(&["--blocks", "30", "--padding", "off"]).await;
    let addr = server.listen_addr();
    let reads = blocking(move || lone_ping_reads(addr)).await;
    assert!(
        reads.iter().sum::<usize>() < MIN_PACKET,
        "unpadded, the lone ping's reply is small: {reads:?}"
    );
    server.shutdown().await;
}

/// Calls `method` and returns its reply; the notifications that arrive
/// before it (a broadcast's own notifications may) are kept in `seen`.
fn call_keeping(
    client: &mut LineClient,
    id: u64,
    method: &str,
    params: Value,
    seen: &mut Vec<Value>,
) -> Value {
    client.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
    loop {
        let message = client
            .recv()
            .unwrap_or_else(|| panic!("closed while waiting for the reply to {method}"));
        if message.get("id") == Some(&json!(id)) {
            return message;
        }
        seen.push(message);
    }
}

/// The first message satisfying `wanted`: from `seen` if it came already,
/// else read from the client.
fn notification(
    client: &mut LineClient,
    seen: &mut Vec<Value>,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    match seen.iter().position(&wanted) {
        Some(at) => seen.remove(at),
        None => read_until(client, what, wanted).0,
    }
}

/// Reads messages until one satisfies `wanted`; the others are returned too.
fn read_until(client: &mut LineClient, what: &str, wanted: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
    let mut others = Vec::new();
    loop {
        let message = client
            .recv()
            .unwrap_or_else(|| panic!("closed while waiting for {what}; got {others:?}"));
        if wanted(&message) {
            return (message, others);
        }
        others.push(message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outpoint_is_followed_from_unspent_to_spent_to_confirmed() {
    let key = TestKey::from_seed([41; 32]);
    let pay = format!("{}:1", key.address());
    let server = start(&["--blocks", "105", "--pay-to", &pay]).await;
    let addr = server.listen_addr();
    let coin = {
        let chain = server.node().chain();
        chain.utxos(&crate::chain::script_hash(&key.script_pubkey()))[0]
    };
    let tx_hash = bitcoin::Txid::from_byte_array(coin.txid).to_string();
    let (spend_raw, spend_txid) = spend(&key, coin.txid, coin.vout, coin.value, 1_000);
    let spender = bitcoin::Txid::from_byte_array(spend_txid).to_string();
    let spk = indexer_sessions::encode_hex(&key.script_pubkey());
    let (mut client, _) = client(addr, json!(["1.4", "1.7"])).await;
    let client = blocking(move || {
        let subscribed = client.call(1, "blockchain.outpoint.subscribe", json!([tx_hash, coin.vout, spk]));
        assert_eq!(subscribed["result"], json!({ "funder_height": coin.height }), "{subscribed}");
        // An outpoint that never existed: {}.
        let unknown = client.call(2, "blockchain.outpoint.get_status", json!(["11".repeat(32), 0]));
        assert_eq!(unknown["result"], json!({}), "{unknown}");
        let bad = client.call(3, "blockchain.outpoint.get_status", json!(["zz", 0]));
        assert!(bad["error"].is_object(), "{bad}");

        // Spent by a broadcast: notified with spender height 0.
        let mut seen = Vec::new();
        let raw = indexer_sessions::encode_hex(&spend_raw);
        let sent = call_keeping(&mut client, 4, "blockchain.transaction.broadcast", json!([raw]), &mut seen);
        assert_eq!(sent["result"], spender.as_str(), "{sent}");
        let note = notification(&mut client, &mut seen, "the outpoint's notification", |m| {
            m["method"] == "blockchain.outpoint.subscribe"
        });
        assert_eq!(
            note["params"],
            json!([tx_hash, coin.vout, { "funder_height": coin.height, "spender_txhash": spender, "spender_height": 0 }])
        );
        let status = client.call(5, "blockchain.outpoint.get_status", json!([tx_hash, coin.vout]));
        assert_eq!(status["result"]["spender_height"], 0, "{status}");
        (client, tx_hash, spender, coin)
    })
    .await;

    // Confirmed by a mined block: notified with the block's height.
    let tip = server.generate(1).await;
    let (mut client, tx_hash, spender, coin) = client;
    blocking(move || {
        let (note, _) = read_until(&mut client, "the confirmation", |m| {
            m["method"] == "blockchain.outpoint.subscribe"
        });
        assert_eq!(
            note["params"][2],
            json!({ "funder_height": coin.height, "spender_txhash": spender, "spender_height": tip.height.0 })
        );
        let unsubscribed = client.call(6, "blockchain.outpoint.unsubscribe", json!([tx_hash, coin.vout]));
        assert_eq!(unsubscribed["result"], true);
        let again = client.call(7, "blockchain.outpoint.unsubscribe", json!([tx_hash, coin.vout]));
        assert_eq!(again["result"], false);
        client
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_on_1_7_uses_scriptpubkey_methods_and_gets_noise() {
    let key = TestKey::from_seed([42; 32]);
    let pay = format!("{}:1", key.address());
    let server = start(&["--blocks", "105", "--pay-to", &pay]).await;
    let addr = server.listen_addr();
    let spk = indexer_sessions::encode_hex(&key.script_pubkey());
    let scripthash = indexer_sessions::scripthash_of_scriptpubkey(&spk).unwrap();
    let (mut old, _) = client(addr, json!(["1.4", "1.6"])).await;
    let (mut client, reply) = client(addr, json!(["1.4", "1.7"])).await;
    assert_eq!(negotiated(&reply), "1.7");
    let clients = blocking(move || {
        let balance = client.call(1, "blockchain.scriptpubkey.get_balance", json!([spk]));
        assert_eq!(
            balance["result"],
            json!({ "confirmed": 100_000_000, "unconfirmed": 0 }),
            "{balance}"
        );
        let history = client.call(2, "blockchain.scriptpubkey.get_history", json!([spk]));
        assert_eq!(
            history["result"]["history"].as_array().unwrap().len(),
            1,
            "{history}"
        );
        let unspent = client.call(3, "blockchain.scriptpubkey.listunspent", json!([spk]));
        let coin = unspent["result"]["utxos"][0].clone();
        assert_eq!(coin["value"], 100_000_000, "{unspent}");
        let status = client.call(4, "blockchain.scriptpubkey.subscribe", json!([spk]));
        let before = status["result"].as_str().expect("a status").to_owned();
        assert!(client.call(5, "blockchain.headers.subscribe", json!([]))["result"].is_object());
        assert!(old.call(1, "blockchain.headers.subscribe", json!([]))["result"].is_object());
        let bad = client.call(6, "blockchain.scriptpubkey.get_balance", json!(["not hex"]));
        assert!(bad["error"].is_object(), "{bad}");

        // A payment: notified under the scriptpubkey method with the scripthash.
        let mut txid: [u8; 32] = indexer_sessions::decode_hex(coin["tx_hash"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        txid.reverse();
        let (raw, _) = spend(
            &key,
            txid,
            coin["tx_pos"].as_u64().unwrap() as u32,
            100_000_000,
            1_000,
        );
        let mut seen = Vec::new();
        let raw = indexer_sessions::encode_hex(&raw);
        let sent = call_keeping(
            &mut client,
            7,
            "blockchain.transaction.broadcast",
            json!([raw]),
            &mut seen,
        );
        assert!(sent["result"].is_string(), "{sent}");
        let note = notification(&mut client, &mut seen, "the status", |m| {
            m["method"] == "blockchain.scriptpubkey.subscribe"
        });
        assert_eq!(note["params"][0], scripthash.as_str(), "{note}");
        assert_ne!(note["params"][1], before.as_str());
        let mempool = client.call(8, "blockchain.scriptpubkey.get_mempool", json!([spk]));
        assert_eq!(
            mempool["result"]["history"].as_array().unwrap().len(),
            1,
            "{mempool}"
        );
        let unsubscribed = client.call(9, "blockchain.scriptpubkey.unsubscribe", json!([spk]));
        assert_eq!(unsubscribed["result"], true);
        (client, old)
    })
    .await;

    // A block: the 1.7 client, sent fewer than two notifications since the
    // last event, gets a padded server.ping after the header; the 1.6 one
    // gets the header and no ping.
    server.generate(1).await;
    let (mut client, mut old) = clients;
    blocking(move || {
        let (ping, _) = read_until(&mut client, "a noise ping", |m| m["method"] == "server.ping");
        assert!(ping.get("id").is_none(), "a notification: {ping}");
        assert_eq!(ping["params"][0].as_str().unwrap(), "0".repeat(128));
        let (header, _) = read_until(&mut old, "the header", |m| {
            m["method"] == "blockchain.headers.subscribe"
        });
        assert_eq!(header["params"][0]["height"], 106);
        let pong = old.call(9, "server.ping", json!([]));
        assert_eq!(pong["result"], Value::Null);
        // Nothing but replies reached the 1.6 client after the header.
        assert!(old.call(10, "server.ping", json!([])).get("id").is_some());
    })
    .await;
    server.shutdown().await;
}
