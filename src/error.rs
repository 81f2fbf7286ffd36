//! The errors, by what the caller must do: [`Refusal`] (close the
//! connection), [`Error`] (answer the request with its JSON-RPC code),
//! [`ConfigError`] (fix the configuration) and [`InvalidCost`].

use crate::types::{Ban, Height, SessionId};
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// An error raised by a host implementation ([`crate::Db`], [`crate::Daemon`],
/// [`crate::Mempool`], [`crate::Transport`]), carried inside [`Error::Host`].
pub type HostError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// JSON-RPC error codes used by Electrum servers.
pub mod codes {
    /// ElectrumX's `BAD_REQUEST`: a request the server understood but refuses.
    pub const BAD_REQUEST: i32 = 1;
    /// ElectrumX's `DAEMON_ERROR`: the node failed or refused.
    pub const DAEMON_ERROR: i32 = 2;
    /// A history too large to send (cached so it is refused cheaply).
    pub const HISTORY_TOO_LARGE: i32 = 10001;
    /// aiorpcX's excessive resource usage: the client is disconnected after it.
    pub const EXCESSIVE_RESOURCE_USAGE: i32 = -101;
    /// aiorpcX's server busy: the request timed out.
    pub const SERVER_BUSY: i32 = -102;
    /// JSON-RPC invalid request.
    pub const INVALID_REQUEST: i32 = -32600;
    /// JSON-RPC method not found.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// JSON-RPC invalid params.
    pub const INVALID_PARAMS: i32 = -32602;
    /// JSON-RPC internal error.
    pub const INTERNAL_ERROR: i32 = -32603;
    /// JSON-RPC parse error.
    pub const PARSE_ERROR: i32 = -32700;
}

/// Which subscription limit refused a new subscription.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SubscriptionScope {
    /// `max_subs_per_session`.
    Session,
    /// `max_subs_per_group`.
    Group,
    /// `max_subs`, across the whole manager.
    Global,
}

impl std::fmt::Display for SubscriptionScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SubscriptionScope::Session => "session",
            SubscriptionScope::Group => "group",
            SubscriptionScope::Global => "server",
        })
    }
}

/// A configuration value out of range ([`crate::Config::validate`],
/// [`crate::Limits::validate`], the builder, `set_limits`, `ban`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}

/// A cost that is not finite and non-negative ([`crate::Cost::new`]).
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("invalid cost {0}: costs must be finite and non-negative")]
pub struct InvalidCost(pub f64);

/// Why [`crate::SessionManager::add_session`] refused a connection. The
/// host closes the connection (it may first tell the client why); the
/// manager keeps no trace of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The server holds `max_sessions` sessions. The listener is paused
    /// until it falls to 95 % ([`crate::SessionManager::listener_state`]).
    #[error("server at capacity ({max} sessions)")]
    AtCapacity {
        /// The configured maximum.
        max: usize,
    },
    /// The client's address lies in a banned network.
    #[error("address {addr} is banned ({})", ban.network)]
    Banned {
        /// The client's address.
        addr: IpAddr,
        /// The ban that matched, with its expiry.
        ban: Ban,
    },
    /// The client's group already has `max_sessions_per_group` sessions.
    #[error("too many sessions from {group} (limit {max})")]
    GroupFull {
        /// The group (its subnet).
        group: IpNetwork,
        /// The configured maximum.
        max: usize,
    },
    /// [`crate::SessionManager::shutdown`] was called.
    #[error("server shutting down")]
    ShuttingDown,
}

impl Refusal {
    /// The JSON-RPC code a host can send before closing: −102 (server
    /// busy) for capacity and shutdown, 1 (bad request) otherwise.
    pub fn rpc_code(&self) -> i32 {
        match self {
            Refusal::AtCapacity { .. } | Refusal::ShuttingDown => codes::SERVER_BUSY,
            Refusal::Banned { .. } | Refusal::GroupFull { .. } => codes::BAD_REQUEST,
        }
    }
}

/// A request parameter that cannot be what the method expects, named as
/// the Electrum protocol names it. Carried in [`Error::BadParam`] (JSON-RPC
/// code 1, as ElectrumX answers a bad request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// Not hex: a character other than `0-9a-fA-F`, or an odd length.
    #[error("{param} should be a hex string")]
    NotHex {
        /// The parameter.
        param: &'static str,
    },
    /// Hex of the wrong length.
    #[error("{param} should be {expected} hex digits, not {found}")]
    Length {
        /// The parameter.
        param: &'static str,
        /// Hex digits expected.
        expected: usize,
        /// Hex digits given.
        found: usize,
    },
    /// Hex longer than accepted.
    #[error("{param} is {found} hex digits, over the limit of {max}")]
    TooLong {
        /// The parameter.
        param: &'static str,
        /// Most hex digits accepted.
        max: usize,
        /// Hex digits given.
        found: usize,
    },
    /// An index below 0 or too large for its type.
    #[error("{param} {index} is out of range")]
    IndexOutOfRange {
        /// The parameter.
        param: &'static str,
        /// The index given.
        index: i64,
    },
}

/// The error a host trait's default method returns for an operation the
/// host does not implement (such as [`crate::Db::outpoint`]). The manager
/// answers the request with [`Error::Unsupported`], which a host maps to
/// "unknown method".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation} is not supported by this host")]
pub struct Unsupported {
    /// The host operation.
    pub operation: &'static str,
}

/// A host error shared by everyone waiting on the call that failed (one
/// cache load serves many requests): the host's error itself, not a copy
/// of its text. [`Error::host_source`] reaches it for downcasting.
pub type SharedHostError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong with one request, with the JSON-RPC code a host
/// answers with ([`Error::rpc_code`]). A returned error never leaves the
/// manager in a changed state unless its documentation says so.
///
/// It is `Clone`: a host error inside is shared, not turned into text.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No session has this id (it never existed or has ended).
    #[error("unknown session {0}")]
    UnknownSession(SessionId),
    /// The session has been closed; nothing more is served for it.
    #[error("session {0} is closed")]
    SessionClosed(SessionId),
    /// The session, with its group, used more than the hard cost limit.
    #[error("excessive resource usage")]
    ExcessiveCost,
    /// The request did not finish within the request timeout.
    #[error("server busy - request timed out after {0:?}")]
    ServerBusy(Duration),
    /// A subscription limit refused the new subscription.
    #[error("too many subscriptions for this {scope} (limit {max})")]
    SubscriptionLimit {
        /// Which limit.
        scope: SubscriptionScope,
        /// Its value.
        max: usize,
    },
    /// A height beyond the chain tip (or otherwise out of range).
    #[error("height {height} out of range (tip {tip})")]
    HeightOutOfRange {
        /// The height asked for.
        height: Height,
        /// The current tip height.
        tip: Height,
    },
    /// A request parameter is invalid.
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// A request parameter is malformed (typed).
    #[error("invalid request: {0}")]
    BadParam(#[from] ParamError),
    /// The host does not implement what the request needs (a host trait's
    /// default method answered [`Unsupported`]): answer it as an unknown
    /// method (JSON-RPC −32601).
    #[error("{operation} is not supported by this server")]
    Unsupported {
        /// The host operation.
        operation: &'static str,
    },
    /// The history of a script is too large to send.
    #[error("history too large ({len} entries, limit {limit})")]
    HistoryTooLarge {
        /// Entries found (at least the limit).
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A transaction validator refused the transaction before the daemon saw it.
    #[error("the transaction was rejected: {0}")]
    TxRejected(String),
    /// The daemon refused the transaction; its message is kept.
    #[error("the transaction was rejected by network rules: {0}")]
    DaemonRejected(String),
    /// A host call failed.
    #[error("{operation} failed: {source}")]
    Host {
        /// Which host operation.
        operation: &'static str,
        /// The host's error (its `source()` chain is kept).
        #[source]
        source: SharedHostError,
    },
    /// A host call did not answer in time.
    #[error("{operation} did not answer within {after:?}")]
    HostTimeout {
        /// Which host operation.
        operation: &'static str,
        /// The time allowed.
        after: Duration,
    },
}

impl Error {
    /// The JSON-RPC error code an Electrum server answers with.
    ///
    /// ```
    /// use indexer_sessions::Error;
    /// assert_eq!(Error::ExcessiveCost.rpc_code(), -101);
    /// ```
    pub fn rpc_code(&self) -> i32 {
        match self {
            Error::ExcessiveCost => codes::EXCESSIVE_RESOURCE_USAGE,
            Error::ServerBusy(_) => codes::SERVER_BUSY,
            Error::HistoryTooLarge { .. } => codes::HISTORY_TOO_LARGE,
            Error::Host { .. } | Error::HostTimeout { .. } => codes::DAEMON_ERROR,
            Error::UnknownSession(_) => codes::INTERNAL_ERROR,
            Error::Unsupported { .. } => codes::METHOD_NOT_FOUND,
            _ => codes::BAD_REQUEST,
        }
    }

    /// Whether the host should close the connection after answering.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::ExcessiveCost | Error::SessionClosed(_))
    }

    /// The host's own error inside [`Error::Host`], to downcast to the
    /// host's error type.
    ///
    /// ```
    /// # use indexer_sessions::Error;
    /// fn is_io(error: &Error) -> bool {
    ///     error.host_source().is_some_and(|e| e.downcast_ref::<std::io::Error>().is_some())
    /// }
    /// ```
    pub fn host_source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Error::Host { source, .. } => Some(&**source),
            _ => None,
        }
    }

    pub(crate) fn host(operation: &'static str, source: HostError) -> Self {
        if let Some(unsupported) = source.downcast_ref::<Unsupported>() {
            return Error::Unsupported {
                operation: unsupported.operation,
            };
        }
        Error::Host {
            operation,
            source: Arc::from(source),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
