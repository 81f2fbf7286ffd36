#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! indexer-sessions (crate docs written below).

pub mod admin;
mod bans;
pub mod caches;
mod chain;
mod config;
pub mod cost;
mod error;
pub mod groups;
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
pub mod tx;
mod types;
mod watch;

pub use admin::{BanRow, GroupRow, Info, Selector, SessionRow};
pub use bans::Ban;
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
