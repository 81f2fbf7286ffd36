//! The group ledger: where the costs and membership of IP groups are kept.
//!
//! This is the one seam a multi-node deployment replaces. The in-process
//! implementation is [`crate::InProcessLedger`]; a shared store can
//! implement [`GroupLedger`] for several nodes, and the cost meter and the
//! manager do not change.

use ipnetwork::IpNetwork;
use std::sync::Arc;

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
}
