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
//! ## The model
//!
//! - **Sessions and groups.** [`SessionManager::add_session`] admits a
//!   connection or refuses it (at `max_sessions`, a banned network, a full
//!   group). Sessions are grouped by subnet (IPv4 /24, IPv6 /48; loopback
//!   and private networks are exempt by default) so one operator with many
//!   connections shares one budget. Dropping the [`SessionHandle`] ends the
//!   session; its cost stays with its group as *retained* cost, refunded over time.
//! - **Cost.** Every request, byte and error has a cost ([`cost`] holds
//!   ElectrumX's per-method numbers). A session's cost plus the rest of its
//!   group's cost, above the soft limit (1000), throttles it: fewer
//!   concurrent requests and a sleep before each, growing to the hard limit
//!   (10000) where its next request fails with [`Error::ExcessiveCost`]
//!   (JSON-RPC −101). Cost decays at `hard / (10000 + 5 × subscriptions)`
//!   per second. The meter is pure ([`CostMeter`]): it takes `now` and never
//!   reads a clock.
//! - **Admission.** [`SessionHandle::admit`] returns a [`Permit`] once the
//!   session may run one more request (after its throttle sleep); the
//!   request timeout covers queueing, sleep and the handler ([`Permit::run`]).
//! - **Chain data.** Histories, block txids, merkle branches and fee
//!   estimates are served through byte-bounded caches ([`caches`]), charged
//!   as ElectrumX charges them, and invalidated when the tip *hash* changes,
//!   so a reorg to the same height is seen.
//! - **Subscriptions and notifications.** [`SessionHandle::subscribe`]
//!   returns a script's status; [`SessionManager::notify`] takes the new tip
//!   and the scripts a block or mempool refresh touched, computes each
//!   affected status once, and queues it for each subscriber whose status
//!   differs. Each session's outbox coalesces (one pending status per script,
//!   one header) and is drained in order by [`SessionHandle::deliver`], a
//!   future the host runs beside its read loop: a client that stops reading
//!   delays nobody and is disconnected after `max_send_delay`.
//! - **Housekeeping and control.** [`SessionManager::run_housekeeping`] is a
//!   future the host runs: stale sweeps and cost recalculation.
//!   [`SessionManager::listener_state`] says when to pause and resume
//!   accepting. Admin reports ([`SessionManager::info`],
//!   [`SessionManager::sessions`], [`SessionManager::groups`]) and actions
//!   (disconnect, ban, limits at run time) are methods on the manager.
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
//! [`SessionHandle::subscribe`], [`SessionHandle::subscribe_headers`] and
//! [`SessionHandle::broadcast_transaction`] leave no slot, cost,
//! subscription or index entry behind.
//!
//! Time comes from a [`Timer`] the builder requires: [`TokioTimer`] with the
//! `tokio` feature, `testing::ManualTimer` with `test-util`, or your own.
//!
//! ## Example
//!
//! ```
//! # #[cfg(feature = "test-util")] {
//! use indexer_sessions::testing::{ManualTimer, MemoryDaemon, MemoryDb, MemoryMempool, MemoryTransport};
//! use indexer_sessions::{Config, Error, SessionManager, cost};
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
//!     permit.charge(cost::PING)?;
//!     session.record_sent(reply.len());
//!     Ok::<_, Error>(())
//! })?;
//!
//! assert_eq!(manager.sessions()[0].counters.requests, 1);
//! assert_eq!(manager.groups()[0].name, "203.0.113.0/24");
//! # }
//! # Ok::<(), indexer_sessions::Error>(())
//! ```
//!
//! ## Features
//!
//! - `tokio`: [`TokioTimer`].
//! - `test-util`: `testing`, a manual clock and in-memory hosts.
//! - `serde`: admin reports implement `Serialize`.

pub mod admin;
mod bans;
mod broadcast;
pub mod caches;
mod chain;
mod checkpoint;
mod config;
pub mod cost;
mod error;
pub mod fees;
pub mod groups;
mod hashing;
mod host;
mod listener;
mod manager;
pub mod merkle;
mod meter;
mod notify;
mod outbox;
mod session;
pub mod status;
mod subscriptions;
mod sync;
#[cfg(feature = "test-util")]
pub mod testing;
mod timer;
mod tip;
pub mod tx;
mod types;
mod watch;

pub use admin::{BanRow, GroupRow, Info, Selector, SessionRow};
pub use bans::Ban;
pub use chain::{
    BlockHeader, HeaderChunk, HeaderProof, HistoryItem, MAX_HEADERS_PER_CALL, MerkleProof, TxAtPosition,
};
pub use config::{Config, Limits, default_exempt_networks};
pub use error::{Error, HostError, Result, SubscriptionScope, codes};
pub use groups::{GroupLedger, InProcessLedger};
pub use host::{BroadcastFailure, Daemon, Db, FeeMode, HistoryEntry, Mempool, MempoolEntry, Transport};
pub use listener::{ListenerEvents, ListenerState};
pub use manager::{SessionManager, SessionManagerBuilder};
pub use meter::{CostMeter, Throttle};
pub use notify::NotifyReport;
pub use session::{Counters, Permit, SessionHandle};
pub use timer::Timer;
#[cfg(feature = "tokio")]
pub use timer::TokioTimer;
pub use tx::{StructuralValidator, TxValidator};
pub use types::{
    BlockHash, DisconnectReason, HASHX_LEN, HashX, Height, Notification, PeerInfo, SessionId, Tip,
    TransportKind, TxHash, decode_hex, encode_hex,
};
