#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! indexer-sessions (crate docs written below).

mod error;
mod host;
pub mod merkle;
pub mod status;
pub mod tx;
mod types;

pub use error::{Error, HostError, Result, SubscriptionScope, codes};
pub use host::{BroadcastFailure, Daemon, Db, FeeMode, HistoryEntry, Mempool, MempoolEntry, Transport};
pub use types::{
    BlockHash, DisconnectReason, HASHX_LEN, HashX, Height, Notification, PeerInfo, SessionId, Tip,
    TransportKind, TxHash, decode_hex, encode_hex,
};
