//! The manager's async edge: where the core meets the host's traits, its
//! clock and the futures the host runs. The [`crate::SessionManager`],
//! its sessions and requests, caches over host calls, notification passes
//! and delivery, housekeeping and admin reports.
//!
//! It uses [`crate::core`] and the top-level traits and types; nothing
//! below it imports from here.

pub mod admin;
pub(crate) mod broadcast;
pub(crate) mod builder;
pub mod caches;
pub(crate) mod chain;
pub(crate) mod checkpoint;
pub(crate) mod deadline;
pub(crate) mod dyn_host;
pub mod fees;
pub(crate) mod listener;
pub(crate) mod mailbox;
pub(crate) mod manager;
pub(crate) mod notify;
pub(crate) mod observe;
#[cfg(feature = "redis")]
pub mod redis_ledger;
pub(crate) mod session;
pub(crate) mod watch;
