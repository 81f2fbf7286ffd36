#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! # indexer-sessions
//!
//! The client-facing half of an Electrum-style indexer server: every
//! connected session, what it costs, what it is subscribed to, and what it
//! must be told when the chain moves. The host owns sockets, TLS, framing,
//! its index and its node connection, and implements four traits:
//! [`Transport`] (one connection), [`Daemon`] (the node), [`Db`] (the index)
//! and [`Mempool`]. A [`SessionManager`] does the rest, on any async runtime.
//!
//! ## The host and the builder
//!
//! A [`SessionManager<H>`](SessionManager) is generic over one [`Host`]: the
//! db, daemon and mempool, a [`Timer`] (the clock: [`TokioTimer`] with the
//! `tokio` feature, `testing::ManualTimer` with `test-util`, or your own),
//! a [`TxValidator`] (default [`StructuralValidator`]) and a
//! [`GroupLedger`] (default [`InProcessLedger`]). Every host call is
//! statically dispatched, and the handles carry that one parameter:
//! [`SessionHandle<H>`](SessionHandle), [`Permit<'_, H>`](Permit).
//!
//! [`SessionManager::builder`] collects the parts; its `build` exists only
//! once it has a timer, db, daemon and mempool, so a missing one is a
//! compile error. It returns a `SessionManager<HostParts<Db, Daemon,
//! Mempool, Timer>>`; name that type once in your host. A host can instead
//! implement [`Host`] on a type of its own and call
//! [`SessionManager::new`], or call `build_dyn` for a
//! [`DynSessionManager`], one type whatever the parts (each behind an
//! `Arc<dyn …>` in a named wrapper, [`DynDb`] and so on, which keeps every
//! future `Send`). [`Transport`] stays per connection:
//! [`SessionManager::add_session`] takes any.
//!
//! ## The model
//!
//! - **Sessions and groups.** [`SessionManager::add_session`] admits a
//!   connection or refuses it with a [`Refusal`] (at `max_sessions`, a
//!   banned network, a full group, shutting down). Sessions are grouped by
//!   subnet (IPv4 /24, IPv6 /48; loopback and private networks are exempt by
//!   default) so one operator with many connections shares one budget.
//! - **Cost.** Every request, byte and error has a [`Cost`] ([`cost`] holds
//!   ElectrumX's per-method numbers as constants; a `Cost` is finite and
//!   non-negative by construction, so charging one cannot fail). A
//!   session's cost plus the rest of its group's cost ([`SessionCost`]),
//!   above the soft limit (1000), throttles it: fewer concurrent requests and
//!   a sleep before each, growing to the hard limit (10000) where its next
//!   request fails with [`Error::ExcessiveCost`] (JSON-RPC −101). Cost decays
//!   at `hard / (10000 + 5 × subscriptions)` per second. The meter is pure
//!   ([`CostMeter`]): it takes `now` and never reads a clock.
//! - **Admission.** [`SessionHandle::admit`] returns a [`Permit`] once the
//!   session may run one more request (after its throttle sleep); the
//!   request timeout covers queueing, sleep and the handler ([`Permit::run`]).
//!   The permit borrows the handle; [`SessionHandle::admit_owned`] gives an
//!   [`OwnedPermit`] for a request handled on another task.
//! - **Chain data.** Histories, block txids, merkle branches and fee
//!   estimates are served through byte-bounded caches ([`caches`]), charged
//!   as ElectrumX charges them, and invalidated when the tip *hash* changes,
//!   so a reorg to the same height is seen.
//! - **Subscriptions and notifications.** [`SessionHandle::subscribe`]
//!   returns a script's status; [`SessionManager::notify`] takes the new tip
//!   and the scripts a block or mempool refresh touched, computes each
//!   affected status once (its histories and mempool entries read in
//!   batches, [`Db::histories`] and [`Mempool::entries_batch`], written
//!   into [`Answers`] buffers the pass reuses), and queues it for each
//!   subscriber whose status differs. Each session's outbox coalesces (one pending status per script,
//!   one header) and is drained in order by [`SessionHandle::deliver`], a
//!   future the host runs beside its read loop: a client that stops reading
//!   delays nobody and is disconnected after `max_send_delay`.
//! - **Protocol 1.7.** Outpoints are subscribed like scripts
//!   ([`SessionHandle::subscribe_outpoint`]; `notify` takes touched
//!   outpoints in a [`Changes`]): one shared entry per outpoint, each status
//!   computed once per event from [`Db::outpoint`] (cached for
//!   requests) and [`Mempool::outpoint`], one pending status per outpoint, counted by the
//!   same limits. Scripts can be subscribed by scriptPubKey
//!   ([`SessionHandle::subscribe_scriptpubkey`]) and are then notified with
//!   the client's spelling and method. A [`NoisePolicy`] adds `server.ping`
//!   notifications against traffic analysis. These notifications
//!   ([`ExtendedNotification`]) go through [`Transport::send_extended`], so
//!   a host that speaks only protocols 1.4 to 1.6 implements nothing new.
//! - **Housekeeping and control.** [`SessionManager::run_housekeeping`] is a
//!   future the host runs: stale sweeps and cost recalculation.
//!   [`SessionManager::listener_state`] says when to pause and resume
//!   accepting. Admin reports ([`SessionManager::info`],
//!   [`SessionManager::sessions`], [`SessionManager::groups`]; networks and
//!   groups as [`ipnetwork::IpNetwork`], re-exported) and actions
//!   (disconnect, ban, limits at run time) are methods on the manager.
//!
//! ## A session's life
//!
//! A session lives from `add_session` until one of three things ends it:
//!
//! - the host calls [`SessionHandle::close`] with a [`DisconnectReason`]: the
//!   session ends at once and [`Transport::close`] is called once (within
//!   `close_timeout`);
//! - the manager closes it (stale, excessive cost, a client that stopped
//!   reading, an operator's disconnect or ban, shutdown): the same, with the
//!   manager's reason;
//! - the host drops the [`SessionHandle`] (its client went away): the
//!   session ends at once and `Transport::close` is *not* called, since the
//!   host already owns the closed connection.
//!
//! In each case the session's subscriptions and queued notifications go,
//! and its cost stays with its group as *retained* cost, refunded over
//! time. [`SessionHandle::closed`] completes when the session has ended,
//! whichever way.
//!
//! ## Errors
//!
//! Each error type says what the caller must do: a [`Refusal`] closes the
//! connection (with [`Refusal::rpc_code`] if the host answers first); an
//! [`Error`] answers one request with [`Error::rpc_code`] and, when
//! [`Error::is_fatal`], closes; a [`ConfigError`] is a setting to fix. A
//! host's own error stays inside [`Error::Host`] as itself (shared, not
//! turned into text): [`Error::host_source`] downcasts it.
//!
//! ## Dropping futures
//!
//! Hosts drop futures in `select!`, behind timeouts and when a client
//! leaves. Every public future is cancel-safe and documents it in a
//! `# Cancel safety` section: [`SessionHandle::deliver`] removes a
//! notification from the outbox only once [`Transport::send`] completed;
//! [`SessionManager::notify`] records its event when called, and a pass
//! dropped anywhere is redone by the next call without sending anything
//! twice; [`SessionHandle::admit`], [`Permit::run`],
//! [`SessionHandle::subscribe`], [`SessionHandle::subscribe_scriptpubkey`],
//! [`SessionHandle::subscribe_outpoint`], [`SessionHandle::subscribe_headers`]
//! and [`SessionHandle::broadcast_transaction`] leave no slot, cost,
//! subscription or index entry behind.
//!
//! ## Example
//!
//! ```
//! # #[cfg(feature = "test-util")] {
//! use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
//! use indexer_sessions::{Config, SessionManager, cost};
//! use futures::executor::block_on;
//!
//! let manager = SessionManager::builder(Config::default())   // ElectrumX's numbers
//!     .timer(ManualTimer::new())
//!     .db(MemoryDb::new())
//!     .daemon(MemoryDaemon::new())
//!     .mempool(MemoryMempool::new())
//!     .build()?;
//!
//! // One accepted connection.
//! let (transport, _client) = MemoryTransport::new("203.0.113.7:50001".parse().unwrap());
//! let session = manager.add_session(transport)?;
//!
//! // One request: admission, the handler, its cost.
//! block_on(async {
//!     session.record_received(64);
//!     let mut permit = session.admit().await?;
//!     let reply = permit.run(async { "pong" }).await?;
//!     permit.charge(cost::PING);
//!     session.record_sent(reply.len());
//!     Ok::<_, indexer_sessions::Error>(())
//! })?;
//!
//! assert_eq!(manager.sessions()[0].counters.requests, 1);
//! assert_eq!(manager.groups()[0].network.to_string(), "203.0.113.0/24");
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Observability
//!
//! Two features tell an operator what the manager does. Both are off by
//! default, and off they compile to nothing: no event is built, no counter
//! touched, no clock read. On, `tracing` formats nothing unless a subscriber
//! enables the event's level, and a metric with no recorder installed costs
//! an atomic load.
//!
//! ### `tracing`
//!
//! Each session gets a span named `session` with the fields `id`, `peer`
//! (address and port), `group` (absent when exempt) and `kind` (`Tcp`,
//! `Ssl`, …), created at `info` level; events about a session belong to it,
//! and `SessionHandle::span` hands it to the host for its own futures.
//! Events (target `indexer_sessions::observe`):
//!
//! | message | level | fields |
//! | --- | --- | --- |
//! | `session opened` | debug | `sessions` (live now) |
//! | `session refused` | info | `peer`, `kind`, `reason` (the [`Error`]) |
//! | `session closed` | info | `reason` (a `disconnects_total` label), `detail` (the [`DisconnectReason`]; absent when the host dropped the handle), `requests`, `errors`, `recv_bytes`, `send_bytes` |
//! | `throttle changed` | info | `target_before`, `target`, `cost`, `group_extra_cost` |
//! | `excessive resource usage` | info | `code` (−101), `cost`, `group_extra_cost` |
//! | `network banned` | info | `network`, `duration` (`None`: until unbanned), `closed` |
//! | `network unbanned` | info | `network`, `existed` |
//! | `operator disconnect` | info | `selector`, `closed` |
//! | `listener state changed` | info | `state`, `sessions`, `max_sessions` |
//! | `limits changed` | info | `limits` |
//! | `notify pass` | debug | `statuses_computed`, `statuses_changed`, `status_notifications`, `header_notifications`, `outpoints_computed`, `outpoint_notifications`, `noise_pings`, `failures`, `duration` |
//! | `ledger unreachable, serving on the local view` | warn (later failures: debug) | `node`, `reason` |
//! | `ledger reconnected` | info | `node` |
//! | `cache cleared` | debug | `cache`, `cause` (`tip`, `first_tip`, `reorg`) |
//! | `host call failed` | warn | `operation`, `error` |
//! | `slow consumer cut off` | warn | `reason` (`send_timeout`), `detail`, `pending` |
//!
//! A host installs any subscriber, for instance `tracing-subscriber`'s
//! formatter filtered by `RUST_LOG` (its `env-filter` feature):
//!
//! ```
//! # #[cfg(feature = "tracing")] {
//! // In the host's `main`, before the manager is built. With the
//! // `env-filter` feature: `.with_env_filter(EnvFilter::from_default_env())`
//! // and `RUST_LOG=indexer_sessions=info`.
//! let subscriber = tracing_subscriber::fmt()
//!     .with_max_level(tracing::Level::INFO)
//!     .finish();
//! tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
//! # }
//! ```
//!
//! ### `metrics`
//!
//! Metrics go through the [`metrics`](https://docs.rs/metrics) facade, so
//! any exporter works. Install a recorder, then call `describe_metrics()`
//! once for units and help texts. Labels take only the values listed (never
//! a session id or an address).
//!
//! | name | type | unit | labels | what |
//! | --- | --- | --- | --- | --- |
//! | `indexer_sessions_sessions` | gauge | count | | live sessions (set at every open and close) |
//! | `indexer_sessions_sessions_opened_total` | counter | count | | sessions admitted |
//! | `indexer_sessions_refusals_total` | counter | count | `reason`: `banned`, `at_capacity`, `group_full`, `shutting_down` | connections refused by [`SessionManager::add_session`] |
//! | `indexer_sessions_disconnects_total` | counter | count | `reason`: `dropped` (the host dropped the handle), `stale`, `excessive_cost`, `send_timeout`, `admin`, `banned`, `shutdown`, `transport_error` | sessions ended |
//! | `indexer_sessions_groups` | gauge | count | | groups held by the ledger (sampled) |
//! | `indexer_sessions_subscriptions` | gauge | count | | script and outpoint subscriptions (sampled) |
//! | `indexer_sessions_subscribed_scripts` | gauge | count | | distinct scripts subscribed (sampled) |
//! | `indexer_sessions_header_subscribers` | gauge | count | | sessions subscribed to headers (sampled) |
//! | `indexer_sessions_queued_notifications` | gauge | count | | notifications waiting in outboxes (sampled) |
//! | `indexer_sessions_requests_total` | counter | count | | requests admitted |
//! | `indexer_sessions_errors_total` | counter | count | `code`: `-101` (excessive cost), `-102` (admission or handler past the request timeout), `-32700` ([`SessionHandle::record_parse_error`]), `host` ([`SessionHandle::record_error`]) | request errors |
//! | `indexer_sessions_throttled_admissions_total` | counter | count | | admissions that waited for a slot or slept |
//! | `indexer_sessions_throttle_sleep_seconds` | histogram | seconds | | the throttle sleep of each throttled admission |
//! | `indexer_sessions_request_seconds` | histogram | seconds | | handler time inside [`Permit::run`] |
//! | `indexer_sessions_cost_charged_milli_total` | counter | count | | cost charged to sessions, in thousandths of a cost unit |
//! | `indexer_sessions_received_bytes_total` | counter | bytes | | bytes passed to [`SessionHandle::record_received`] |
//! | `indexer_sessions_sent_bytes_total` | counter | bytes | | bytes passed to [`SessionHandle::record_sent`] |
//! | `indexer_sessions_notify_passes_total` | counter | count | | notification passes run |
//! | `indexer_sessions_notify_pass_seconds` | histogram | seconds | | duration of each pass, on the manager's [`Timer`] |
//! | `indexer_sessions_statuses_computed_total` | counter | count | | script statuses computed by passes |
//! | `indexer_sessions_statuses_changed_total` | counter | count | | statuses found changed |
//! | `indexer_sessions_notifications_queued_total` | counter | count | `kind`: `status`, `header`, `outpoint`, `ping` | notifications queued by passes |
//! | `indexer_sessions_notifications_sent_total` | counter | count | `kind`: `status` (by scripthash or scriptPubKey), `outpoint`, `header`, `ping` | notifications sent by [`SessionHandle::deliver`] |
//! | `indexer_sessions_host_errors_total` | counter | count | `operation`: the host call, one of a fixed set (`history`, `header`, `headers`, `tip`, `block txids`, `mempool entries`, `outpoint`, `mempool outpoint`, `fee histogram`, `estimatefee`, `relayfee`, `getrawtransaction`, `validate transaction`, `broadcast`) | failed or timed-out host calls |
//! | `indexer_sessions_cache_hits_total` | counter | count | `cache`: `history`, `txids`, `merkle`, `checkpoints`, `fees`, `outpoints` | lookups answered from the cache |
//! | `indexer_sessions_cache_misses_total` | counter | count | `cache` | lookups that went to the host |
//! | `indexer_sessions_cache_evictions_total` | counter | count | `cache` (the five byte-bounded ones) | entries evicted to hold the byte budget |
//! | `indexer_sessions_cache_clears_total` | counter | count | `cache` | whole-cache clears on a tip change, the first tip or a reorg |
//! | `indexer_sessions_cache_bytes` | gauge | bytes | `cache` | bytes held (sampled) |
//! | `indexer_sessions_cache_entries` | gauge | count | `cache` | entries held (sampled) |
//! | `indexer_sessions_ledger_connected` | gauge | count | | 1 while a shared ledger's last sync succeeded (`redis` feature), 0 while it serves on its local view |
//! | `indexer_sessions_ledger_sync_failures_total` | counter | count | | failed syncs of a shared ledger, each retried with backoff |
//!
//! *Sampled* gauges are set from [`SessionManager::info`]: by every call to
//! it, and by [`SessionManager::run_housekeeping`] once per `sweep_interval`
//! (after the caches' pending evictions are applied), so they cost nothing
//! on the request and notification paths. A host that wants them fresher
//! calls `info()` before each scrape.
//!
//! A Prometheus endpoint is one exporter away; with the
//! `metrics-exporter-prometheus` crate in the host:
//!
//! ```ignore
//! metrics_exporter_prometheus::PrometheusBuilder::new()
//!     .with_http_listener(([127, 0, 0, 1], 9100))
//!     .install()?; // serves /metrics; needs a tokio runtime
//! indexer_sessions::describe_metrics();
//! ```
//!
//! ## Features
//!
//! - `tokio`: [`TokioTimer`].
//! - `test-util`: `testing`, a manual clock and in-memory hosts.
//! - `serde`: admin reports implement `Serialize`.
//! - `tracing`: a span per session and events (see [Observability](#observability)).
//! - `metrics`: counters, gauges and histograms (see [Observability](#observability)).
//! - `redis`: [`redis_ledger::RedisLedger`], one budget per IP group (and
//!   shared bans) across many servers; implies `tokio`. Its module
//!   documentation gives the consistency model.

// The layers, each importing only from those below it:
//
// - `edge/`: the async manager (sessions, caches, notification passes,
//   housekeeping, admin), over the host's traits and clock;
// - `core/`: sans-IO data structures and arithmetic (cost meter, groups,
//   bans, subscription index, outbox, merkle, status, transaction parsing);
// - this folder: the host traits (`host`, `timer`), value types (`types`),
//   `error` and `config`.
//
// `testing` (feature `test-util`) is a user of the crate, not a layer.

mod answers;
mod config;
pub mod core;
pub mod edge;
mod error;
mod host;
mod ledger;
#[cfg(feature = "test-util")]
pub mod testing;
mod timer;
mod types;

pub use crate::core::{cost, groups, merkle, status, tx};
pub use edge::{admin, caches, fees};

pub use crate::core::meter::{CostMeter, Throttle};
pub use admin::{BanRow, GroupRow, Info, Selector, SessionRow};
pub use answers::Answers;
pub use config::{Config, Limits, NoisePolicy, default_exempt_networks};
pub use edge::builder::{
    DynHost, DynSessionManager, HostParts, NoDaemon, NoDb, NoMempool, NoTimer, SessionManagerBuilder,
};
pub use edge::chain::{
    BlockHeader, HeaderChunk, HeaderProof, HistoryItem, MAX_HEADERS_PER_CALL, MerkleProof, TxAtPosition,
};
pub use edge::dyn_host::{DynDaemon, DynDb, DynLedger, DynMempool, DynTimer, DynValidator};
pub use edge::listener::{ListenerEvents, ListenerState};
pub use edge::manager::SessionManager;
pub use edge::notify::{Changes, NotifyReport, Touched};
#[cfg(feature = "metrics")]
pub use edge::observe::describe_metrics;
#[cfg(feature = "redis")]
pub use edge::redis_ledger;
pub use edge::session::{Counters, MAX_CLIENT_CHARS, OwnedPermit, Permit, SessionCost, SessionHandle};
pub use error::{
    ConfigError, Error, HostError, InvalidCost, ParamError, Refusal, Result, SharedHostError,
    SubscriptionScope, Unsupported, codes,
};
pub use groups::InProcessLedger;
pub use host::{BroadcastFailure, Daemon, Db, FeeMode, Host, Mempool, Transport, TxValidator};
/// The `ipnetwork` crate this one uses in its API (groups, bans, exempt
/// networks), so a host need not depend on the same version itself.
pub use ipnetwork;
pub use ledger::{GroupEntry, GroupFull, GroupLedger, SharedBan};
pub use timer::Timer;
#[cfg(feature = "tokio")]
pub use timer::TokioTimer;
pub use tx::StructuralValidator;
pub use types::{
    Ban, BlockHash, ConfirmedOutpoint, ConfirmedSpender, Cost, DisconnectReason, ExtendedNotification,
    HASHX_LEN, HashX, Height, HistoryEntry, MAX_SCRIPT_LEN, MempoolEntry, MempoolFunder, MempoolOutpoint,
    MempoolSpender, Notification, OutPoint, OutpointSpender, OutpointStatus, PeerInfo, SessionId, Tip,
    TransportKind, TxHash, decode_hex, encode_hex, scripthash_of_scriptpubkey,
};
