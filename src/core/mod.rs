//! The sans-IO core: plain data structures and arithmetic with no futures,
//! no wakers, no clocks and no host calls. Everything here takes `now` and
//! its inputs as arguments, so it is tested without a runtime.
//!
//! It may use the top-level value types (`crate::types`, `crate::error`,
//! `crate::config`) and nothing from [`crate::edge`].

pub(crate) mod admission;
pub(crate) mod bans;
pub mod cost;
pub mod groups;
pub(crate) mod hashing;
pub mod merkle;
pub(crate) mod meter;
pub(crate) mod noise;
pub(crate) mod outbox;
pub mod status;
pub(crate) mod subscriptions;
pub(crate) mod sync;
pub(crate) mod tip;
pub mod tx;
