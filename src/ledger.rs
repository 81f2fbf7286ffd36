//! The group ledger: where the costs and membership of IP groups are kept.
//!
//! This is the one seam a multi-node deployment replaces. The in-process
//! implementation is [`crate::InProcessLedger`]; a shared store can
//! implement [`GroupLedger`] for several nodes, and the cost meter and the
//! manager do not change.

use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// A ban a ledger shares between nodes ([`GroupLedger::shared_ban`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedBan {
    /// The banned network.
    pub network: IpNetwork,
    /// Time left, `None` for permanent.
    pub remaining: Option<Duration>,
}

/// One group as the ledger sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupEntry {
    /// The subnet.
    pub network: IpNetwork,
    /// Live sessions in the group.
    pub sessions: usize,
    /// Sum of the live members' costs as last reported.
    pub live_cost: f64,
    /// Cost left behind by ended sessions, refunded over time.
    pub retained_cost: f64,
}

impl GroupEntry {
    /// Retained plus live cost.
    pub fn cost(&self) -> f64 {
        self.retained_cost + self.live_cost
    }
}

/// Why a session could not join its group.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GroupFull {
    /// The limit reached.
    pub max: usize,
}

/// Group costs and membership. The in-process implementation is
/// [`crate::InProcessLedger`]; a shared store can implement this for several nodes.
pub trait GroupLedger: Send + Sync + 'static {
    /// Adds a member whose cost is `initial_cost`, unless the group already
    /// has `max_sessions` members, and returns the group's total cost after.
    /// A new group starts with no retained cost.
    fn join(
        &self,
        group: IpNetwork,
        initial_cost: f64,
        max_sessions: Option<usize>,
    ) -> Result<f64, GroupFull>;
    /// A member's cost changed by `delta`; returns the group's total cost after.
    fn report(&self, group: IpNetwork, delta: f64) -> f64;
    /// A member left: its last reported cost `reported` leaves the live
    /// cost, and its final cost `cost` joins the retained cost.
    fn leave(&self, group: IpNetwork, reported: f64, cost: f64);
    /// Lowers every group's retained cost by `amount` (not below zero), and
    /// deletes groups with no members and nothing retained.
    fn refund(&self, amount: f64);
    /// The group's total cost (0 for an unknown group).
    fn cost(&self, group: IpNetwork) -> f64;
    /// Every group, in no particular order.
    fn entries(&self) -> Vec<GroupEntry>;
    /// One group.
    fn entry(&self, group: IpNetwork) -> Option<GroupEntry>;

    /// Whether this ledger keeps bans for every node. When it does, the
    /// manager keeps none of its own: [`crate::SessionManager::ban`] and
    /// `unban` go to [`GroupLedger::share_ban`] and
    /// [`GroupLedger::share_unban`], which must take effect on this node at
    /// once (and on the others as soon as they learn of it), so a ban made
    /// on one node can be lifted on another. The default is `false`: the
    /// manager keeps its bans itself.
    fn shares_bans(&self) -> bool {
        false
    }
    /// Shares a ban made on this node with every other node (the manager
    /// calls it from [`crate::SessionManager::ban`] when
    /// [`GroupLedger::shares_bans`]). The default does nothing.
    fn share_ban(&self, network: IpNetwork, duration: Option<Duration>) {
        let _ = (network, duration);
    }
    /// Shares the lifting of a ban ([`crate::SessionManager::unban`]).
    fn share_unban(&self, network: IpNetwork) {
        let _ = network;
    }
    /// A ban made on any node that covers `addr` (already canonical). The
    /// manager refuses such a connection and closes such sessions at its
    /// sweeps. Called on every new connection: it must not wait on I/O.
    /// The default has none.
    fn shared_ban(&self, addr: IpAddr) -> Option<SharedBan> {
        let _ = addr;
        None
    }
    /// Every ban shared by other nodes, for reports. The default has none.
    fn shared_bans(&self) -> Vec<SharedBan> {
        Vec::new()
    }
}

impl<T: GroupLedger + ?Sized> GroupLedger for Arc<T> {
    fn join(
        &self,
        group: IpNetwork,
        initial_cost: f64,
        max_sessions: Option<usize>,
    ) -> Result<f64, GroupFull> {
        (**self).join(group, initial_cost, max_sessions)
    }
    fn report(&self, group: IpNetwork, delta: f64) -> f64 {
        (**self).report(group, delta)
    }
    fn leave(&self, group: IpNetwork, reported: f64, cost: f64) {
        (**self).leave(group, reported, cost)
    }
    fn refund(&self, amount: f64) {
        (**self).refund(amount)
    }
    fn cost(&self, group: IpNetwork) -> f64 {
        (**self).cost(group)
    }
    fn entries(&self) -> Vec<GroupEntry> {
        (**self).entries()
    }
    fn entry(&self, group: IpNetwork) -> Option<GroupEntry> {
        (**self).entry(group)
    }
    fn shares_bans(&self) -> bool {
        (**self).shares_bans()
    }
    fn share_ban(&self, network: IpNetwork, duration: Option<Duration>) {
        (**self).share_ban(network, duration)
    }
    fn share_unban(&self, network: IpNetwork) {
        (**self).share_unban(network)
    }
    fn shared_ban(&self, addr: IpAddr) -> Option<SharedBan> {
        (**self).shared_ban(addr)
    }
    fn shared_bans(&self) -> Vec<SharedBan> {
        (**self).shared_bans()
    }
}
