//! The operator's JSON-RPC interface on `--admin`, newline-delimited like
//! ElectrumX's local RPC (keep it on a loopback address: it is not
//! authenticated and not cost-limited).
//!
//! ```text
//! $ echo '{"id":1,"method":"generate","params":[3]}' | nc -q1 127.0.0.1 8000
//! {"id":1,"jsonrpc":"2.0","result":{"hash":"…","height":113}}
//! ```
//!
//! Methods: `getinfo`, `sessions`, `groups`, `disconnect [selector…]`
//! (`all`, a session id, a group such as `203.0.113.0/24`, or an address),
//! `ban [network, seconds]`, `unban [network]`, `generate [n]`.
//!
//! With `--redis`, `groups` is cluster-wide (each row's cost and sessions
//! count every server, and `nodes` lists each server's share), `getinfo`'s
//! `ledger` names this server and says whether its last sync with Redis
//! worked, and `ban` and `unban` reach every server.

use std::sync::Arc;
use std::time::Duration;

use indexer_sessions::caches::CacheStats;
use indexer_sessions::{Counters, ListenerState, Selector, TransportKind, codes};
use ipnetwork::IpNetwork;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::jsonrpc::{MAX_ERROR_CHARS, clip, quote, quote_json};
use crate::server::Shared;

/// Most blocks one `generate` call mines.
pub const MAX_GENERATE: u32 = 1000;
/// Longest admin request line.
const MAX_LINE: usize = 64 * 1024;

/// Accepts admin connections until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, shared.clone()));
            }
            Err(error) => {
                shared.warn(format_args!("admin accept failed: {error}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut lines)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() > MAX_LINE {
            let reply = error(Value::Null, codes::INVALID_REQUEST, "request too long");
            let _ = write_line(&mut write, &reply).await;
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = match serde_json::from_slice::<Value>(&line) {
            Ok(request) => handle(&shared, request).await,
            Err(e) => error(Value::Null, codes::PARSE_ERROR, format!("invalid JSON: {e}")),
        };
        if write_line(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

async fn write_line(write: &mut tokio::net::tcp::OwnedWriteHalf, value: &Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).expect("JSON values serialise");
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

fn error(id: Value, code: i32, message: impl Into<String>) -> Value {
    let message = clip(&message.into(), MAX_ERROR_CHARS).into_owned();
    json!({ "jsonrpc": "2.0", "error": { "code": code, "message": message }, "id": id })
}

async fn handle(shared: &Shared, request: Value) -> Value {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return error(id, codes::INVALID_REQUEST, "method must be a string");
    };
    let params = match request.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values.clone(),
        Some(_) => return error(id, codes::INVALID_PARAMS, "params must be an array"),
    };
    match call(shared, method, &params).await {
        Ok(result) => json!({ "jsonrpc": "2.0", "result": result, "id": id }),
        Err((code, message)) => error(id, code, message),
    }
}

type AdminResult = Result<Value, (i32, String)>;

fn bad_params(message: impl Into<String>) -> (i32, String) {
    (codes::INVALID_PARAMS, message.into())
}

/// A parameter as text (numbers are accepted for session ids and counts).
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A ban's length: a positive number of seconds that fits a `Duration`
/// (any JSON number is answered, never a panic).
fn ban_duration(value: &Value) -> Result<Duration, (i32, String)> {
    let seconds = value
        .as_f64()
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| {
            bad_params(format!(
                "seconds must be a positive number, got {}",
                quote_json(value)
            ))
        })?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| bad_params(format!("seconds {} is too long for a ban", quote_json(value))))
}

fn network(value: Option<&Value>) -> Result<IpNetwork, (i32, String)> {
    let value =
        value.ok_or_else(|| bad_params("expected a network, e.g. 203.0.113.0/24 or 2001:db8::/48"))?;
    let text = text(value);
    text.parse::<IpNetwork>()
        .map_err(|e| bad_params(format!("{} is not an address or network: {e}", quote(&text))))
}

async fn call(shared: &Shared, method: &str, params: &[Value]) -> AdminResult {
    let manager = &shared.manager;
    match method {
        "getinfo" => {
            let info = manager.info();
            let tip = shared.node.tip();
            let mempool = shared.node.chain().mempool_len();
            Ok(json!({
                "tip": { "height": tip.height.0, "hash": tip.hash.to_hex() },
                "mempool_txs": mempool,
                "sessions": info.sessions,
                "sessions_with_subs": info.sessions_with_subs,
                "sessions_ended": info.sessions_ended,
                "groups": info.groups,
                "subs": info.subs,
                "distinct_subs": info.distinct_subs,
                "header_subs": info.header_subs,
                "in_flight": info.in_flight,
                "counters": counters(&info.counters),
                "logged": info.logged,
                "bans": info.bans,
                "listener": match info.listener {
                    ListenerState::Accepting => "accepting",
                    ListenerState::Paused => "paused",
                    ListenerState::Stopped => "stopped",
                },
                "uptime_secs": info.uptime.as_secs_f64(),
                "ledger": ledger_info(shared),
                "caches": {
                    "history": cache(&info.caches.history),
                    "txids": cache(&info.caches.txids),
                    "merkle": cache(&info.caches.merkle),
                    "checkpoints": cache(&info.caches.checkpoints),
                    "fees": cache(&info.caches.fees),
                },
            }))
        }
        "sessions" => Ok(Value::Array(
            manager
                .sessions()
                .iter()
                .map(|row| {
                    json!({
                        "id": row.id.0,
                        "kind": transport_name(row.kind),
                        "flags": row.flags,
                        "client": row.client,
                        "protocol": row.protocol,
                        "cost": row.cost,
                        "extra_cost": row.extra_cost,
                        "in_flight": row.in_flight,
                        "subs": row.subs,
                        "pending_notifications": row.pending_notifications,
                        "counters": counters(&row.counters),
                        "age_secs": row.age.as_secs_f64(),
                        "peer": row.peer.to_string(),
                        "group": row.group.map(|group| group.to_string()),
                        "log": row.log,
                    })
                })
                .collect(),
        )),
        "groups" => {
            #[cfg(feature = "redis")]
            let cluster = shared.redis.as_ref().map(|ledger| ledger.cluster_groups());
            Ok(Value::Array(
                manager
                    .groups()
                    .iter()
                    .map(|row| {
                        #[allow(unused_mut)] // only a shared ledger adds to it
                        let mut value = json!({
                            "name": row.network.to_string(),
                            "sessions": row.sessions,
                            "cost": row.cost,
                            "retained_cost": row.retained_cost,
                            "subs": row.subs,
                            "counters": counters(&row.counters),
                        });
                        #[cfg(feature = "redis")]
                        if let Some(cluster) = &cluster {
                            add_shares(
                                &mut value,
                                cluster.iter().find(|group| group.network == row.network),
                            );
                        }
                        value
                    })
                    .collect(),
            ))
        }
        "disconnect" => {
            if params.is_empty() {
                return Err(bad_params(
                    "expected selectors: all, a session id, a group or an address",
                ));
            }
            let mut closed = 0;
            for param in params {
                let selector: Selector = text(param).parse().map_err(|e: indexer_sessions::Error| {
                    bad_params(clip(&e.to_string(), MAX_ERROR_CHARS))
                })?;
                closed += manager
                    .disconnect(selector)
                    .await
                    .map_err(|e| (codes::BAD_REQUEST, e.to_string()))?;
            }
            Ok(json!({ "disconnected": closed }))
        }
        "ban" => {
            if params.len() > 2 {
                return Err(bad_params("expected [network, seconds]"));
            }
            let network = network(params.first())?;
            let duration = match params.get(1) {
                None | Some(Value::Null) => None,
                Some(value) => Some(ban_duration(value)?),
            };
            let closed = manager
                .ban(network, duration)
                .await
                .map_err(|e| (codes::BAD_REQUEST, e.to_string()))?;
            Ok(json!({ "banned": network.to_string(), "disconnected": closed }))
        }
        "unban" => {
            if params.len() != 1 {
                return Err(bad_params("expected [network]"));
            }
            Ok(json!(manager.unban(network(params.first())?)))
        }
        "generate" => {
            let count = match params {
                [] => 1,
                [value] => value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=MAX_GENERATE).contains(n))
                    .ok_or_else(|| {
                        bad_params(format!("n must be a whole number from 1 to {MAX_GENERATE}"))
                    })?,
                _ => return Err(bad_params("expected [n]")),
            };
            let tip = shared.generate(count).await;
            Ok(json!({ "height": tip.height.0, "hash": tip.hash.to_hex() }))
        }
        other => Err((
            codes::METHOD_NOT_FOUND,
            format!(
                "unknown method {}; try getinfo, sessions, groups, disconnect, ban, unban, generate",
                quote(other)
            ),
        )),
    }
}

/// `getinfo`'s `ledger`: where group costs are kept and, when shared, this
/// server's name and whether its last sync with Redis worked.
#[cfg_attr(not(feature = "redis"), allow(unused_variables))]
fn ledger_info(shared: &Shared) -> Value {
    #[cfg(feature = "redis")]
    if let Some(ledger) = &shared.redis {
        let health = ledger.health();
        return json!({
            "kind": "redis",
            "node": ledger.node(),
            "healthy": health.is_ok(),
            "error": health.err().map(|error| error.to_string()),
            "syncs": ledger.syncs(),
        });
    }
    json!({ "kind": "in-process", "healthy": true })
}

/// A `groups` row on a shared ledger: the cluster-wide cost and each
/// server's share, from one snapshot (`RedisLedger::cluster_groups`), so
/// `cost` is `retained_cost` plus the shares' `live_cost`.
#[cfg(feature = "redis")]
fn add_shares(row: &mut Value, group: Option<&indexer_sessions::redis_ledger::ClusterGroup>) {
    let Some(group) = group else {
        // Only this server's unsent retained cost: no server has a share.
        row["nodes"] = json!([]);
        return;
    };
    row["cost"] = json!(group.cost);
    row["retained_cost"] = json!(group.retained_cost);
    row["sessions"] = json!(group.nodes.iter().map(|share| share.sessions).sum::<usize>());
    row["nodes"] = group
        .nodes
        .iter()
        .map(|share| {
            json!({
                "node": share.node,
                "sessions": share.sessions,
                "live_cost": share.live_cost,
            })
        })
        .collect();
}

fn counters(counters: &Counters) -> Value {
    json!({
        "requests": counters.requests,
        "errors": counters.errors,
        "recv_count": counters.recv_count,
        "recv_bytes": counters.recv_bytes,
        "send_count": counters.send_count,
        "send_bytes": counters.send_bytes,
        "txs_sent": counters.txs_sent,
    })
}

fn cache(stats: &CacheStats) -> Value {
    json!({
        "hits": stats.hits,
        "misses": stats.misses,
        "entries": stats.entries,
        "bytes": stats.bytes,
        "budget": stats.budget,
    })
}

/// A transport kind as the `sessions` table names it (`tcp`, `ssl`, `ws`,
/// `wss`, `http`; as `SERVICES` names its listeners).
pub fn transport_name(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Tcp => "tcp",
        TransportKind::Ssl => "ssl",
        TransportKind::Ws => "ws",
        TransportKind::Wss => "wss",
        TransportKind::Http => "http",
        TransportKind::Rpc => "rpc",
        _ => "other",
    }
}
