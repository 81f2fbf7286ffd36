//! The dynamic form: each host part behind an `Arc<dyn …>`, wrapped in a
//! named type.
//!
//! Why wrappers and not `Arc<dyn Db>` itself as the part: rustc cannot
//! prove that a future whose type mentions a trait object's lifetime
//! through a generic parameter is `Send` for every lifetime (it reports
//! "implementation of `Send` is not general enough"), so a manager over
//! `Arc<dyn Db>` parts works but some of its futures cannot be given to
//! `tokio::spawn`. A named wrapper keeps the trait object out of the
//! manager's type; `tests/runtimes.rs` spawns every public future of the
//! dynamic form on tokio.

use crate::answers::Answers;
use crate::error::HostError;
use crate::host::{BroadcastFailure, Daemon, Db, FeeMode, Mempool, TxValidator};
use crate::ledger::{GroupEntry, GroupFull, GroupLedger, SharedBan};
use crate::timer::Timer;
use crate::types::{
    ConfirmedOutpoint, HashX, Height, HistoryEntry, MempoolEntry, MempoolOutpoint, OutPoint, Tip, TxHash,
};
use async_trait::async_trait;
use futures::future::BoxFuture;
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An index behind a trait object ([`crate::DynHost`]).
#[derive(Clone)]
pub struct DynDb(pub Arc<dyn Db>);

/// A node behind a trait object ([`crate::DynHost`]).
#[derive(Clone)]
pub struct DynDaemon(pub Arc<dyn Daemon>);

/// A mempool behind a trait object ([`crate::DynHost`]).
#[derive(Clone)]
pub struct DynMempool(pub Arc<dyn Mempool>);

/// A clock behind a trait object ([`crate::DynHost`]).
#[derive(Clone)]
pub struct DynTimer(pub Arc<dyn Timer>);

/// A transaction check behind a trait object ([`crate::DynHost`]).
#[derive(Clone)]
pub struct DynValidator(pub Arc<dyn TxValidator>);

/// A group ledger behind a trait object ([`crate::DynHost`]).
#[derive(Clone)]
pub struct DynLedger(pub Arc<dyn GroupLedger>);

macro_rules! debug_as {
    ($($name:ident),*) => {$(
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    )*};
}

debug_as!(DynDb, DynDaemon, DynMempool, DynTimer, DynValidator, DynLedger);

#[async_trait]
impl Db for DynDb {
    async fn tip(&self) -> Result<Tip, HostError> {
        self.0.tip().await
    }
    async fn header(&self, height: Height) -> Result<Option<Vec<u8>>, HostError> {
        self.0.header(height).await
    }
    async fn headers(&self, start: Height, count: u32) -> Result<Vec<Vec<u8>>, HostError> {
        self.0.headers(start, count).await
    }
    async fn history(&self, hashx: HashX, limit: usize) -> Result<Vec<HistoryEntry>, HostError> {
        self.0.history(hashx, limit).await
    }
    async fn block_txids(&self, height: Height) -> Result<Option<Vec<TxHash>>, HostError> {
        self.0.block_txids(height).await
    }
    async fn outpoint(&self, outpoint: OutPoint) -> Result<Option<ConfirmedOutpoint>, HostError> {
        self.0.outpoint(outpoint).await
    }
    async fn histories(
        &self,
        hashxs: &[HashX],
        limit: usize,
        answers: &mut Answers<HistoryEntry>,
    ) -> Result<(), HostError> {
        self.0.histories(hashxs, limit, answers).await
    }
}

#[async_trait]
impl Daemon for DynDaemon {
    async fn broadcast_transaction(&self, raw: &[u8]) -> Result<TxHash, BroadcastFailure> {
        self.0.broadcast_transaction(raw).await
    }
    async fn estimate_fee(&self, blocks: u32, mode: Option<FeeMode>) -> Result<Option<f64>, HostError> {
        self.0.estimate_fee(blocks, mode).await
    }
    async fn relay_fee(&self) -> Result<f64, HostError> {
        self.0.relay_fee().await
    }
    async fn raw_transaction(&self, txid: TxHash) -> Result<Option<Vec<u8>>, HostError> {
        self.0.raw_transaction(txid).await
    }
}

#[async_trait]
impl Mempool for DynMempool {
    async fn entries(&self, hashx: HashX) -> Result<Vec<MempoolEntry>, HostError> {
        self.0.entries(hashx).await
    }
    async fn fee_histogram(&self) -> Result<Vec<(f64, u64)>, HostError> {
        self.0.fee_histogram().await
    }
    async fn outpoint(&self, outpoint: OutPoint) -> Result<MempoolOutpoint, HostError> {
        self.0.outpoint(outpoint).await
    }
    async fn entries_batch(
        &self,
        hashxs: &[HashX],
        answers: &mut Answers<MempoolEntry>,
    ) -> Result<(), HostError> {
        self.0.entries_batch(hashxs, answers).await
    }
}

impl Timer for DynTimer {
    fn now(&self) -> Instant {
        self.0.now()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.0.sleep(duration)
    }
}

#[async_trait]
impl TxValidator for DynValidator {
    async fn validate(&self, raw: &[u8]) -> Result<(), String> {
        self.0.validate(raw).await
    }
}

impl GroupLedger for DynLedger {
    fn join(
        &self,
        group: IpNetwork,
        initial_cost: f64,
        max_sessions: Option<usize>,
    ) -> Result<f64, GroupFull> {
        self.0.join(group, initial_cost, max_sessions)
    }
    fn report(&self, group: IpNetwork, delta: f64) -> f64 {
        self.0.report(group, delta)
    }
    fn leave(&self, group: IpNetwork, reported: f64, cost: f64) {
        self.0.leave(group, reported, cost)
    }
    fn refund(&self, amount: f64) {
        self.0.refund(amount)
    }
    fn cost(&self, group: IpNetwork) -> f64 {
        self.0.cost(group)
    }
    fn entries(&self) -> Vec<GroupEntry> {
        self.0.entries()
    }
    fn entry(&self, group: IpNetwork) -> Option<GroupEntry> {
        self.0.entry(group)
    }
    fn shares_bans(&self) -> bool {
        self.0.shares_bans()
    }
    fn share_ban(&self, network: IpNetwork, duration: Option<Duration>) {
        self.0.share_ban(network, duration)
    }
    fn share_unban(&self, network: IpNetwork) {
        self.0.share_unban(network)
    }
    fn shared_ban(&self, addr: IpAddr) -> Option<SharedBan> {
        self.0.shared_ban(addr)
    }
    fn shared_bans(&self) -> Vec<SharedBan> {
        self.0.shared_bans()
    }
}
