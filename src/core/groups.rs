//! IP-subnet groups and the group ledger.
//!
//! Clients are grouped by subnet (IPv4 /24 and IPv6 /48 by default) so that
//! one operator opening many connections shares one budget. A group's cost
//! is its *retained* cost (left behind by sessions that ended, refunded over
//! time) plus the costs of its live members; a member's *extra cost* is the
//! group cost minus its own, and counts toward its throttle.
//!
//! The ledger is the one seam a multi-node deployment replaces: implement
//! [`GroupLedger`] over a shared store and pass it to the builder; the cost
//! meter and the manager do not change. The manager reports each session's
//! cost to the ledger only at recalculation (drift > 100 or the periodic
//! pass) and when the session ends, never per request.

use crate::core::hashing::MapHasher;
use crate::core::sync::lock;
pub use crate::ledger::{GroupEntry, GroupFull, GroupLedger};
use hashbrown::HashTable;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

/// An address with IPv4-mapped IPv6 (`::ffff:a.b.c.d`) turned into IPv4.
#[inline]
pub fn canonical_ip(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

/// The group of `addr`: its subnet at the configured prefix, or `None` when
/// the (canonical) address lies in an exempt network.
///
/// ```
/// use indexer_sessions::groups::group_of;
/// let group = group_of("203.0.113.77".parse().unwrap(), 24, 48, &[]).unwrap();
/// assert_eq!(group.to_string(), "203.0.113.0/24");
/// let mapped = group_of("::ffff:203.0.113.9".parse().unwrap(), 24, 48, &[]).unwrap();
/// assert_eq!(mapped, group);
/// ```
#[inline]
pub fn group_of(addr: IpAddr, v4_prefix: u8, v6_prefix: u8, exempt: &[IpNetwork]) -> Option<IpNetwork> {
    let addr = canonical_ip(addr);
    if exempt.iter().any(|net| net.contains(addr)) {
        return None;
    }
    // The address masked to the prefix, in one step (a prefix past the
    // address's length is no group, as `IpNetwork::new` refuses it).
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32u32.checked_sub(u32::from(v4_prefix))?)
                .unwrap_or(0);
            let network = Ipv4Addr::from_bits(v4.to_bits() & mask);
            Ipv4Network::new(network, v4_prefix).ok().map(IpNetwork::V4)
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128u32.checked_sub(u32::from(v6_prefix))?)
                .unwrap_or(0);
            let network = Ipv6Addr::from_bits(v6.to_bits() & mask);
            Ipv6Network::new(network, v6_prefix).ok().map(IpNetwork::V6)
        }
    }
}

/// The ledger of one process: a map under one lock, O(1) per operation.
#[derive(Debug, Default)]
pub struct InProcessLedger {
    groups: Mutex<Groups>,
}

/// The groups, by network: a table of 40-byte entries (a
/// `HashMap<IpNetwork, GroupEntry>` bucket is 72 bytes, the network twice).
#[derive(Debug, Default)]
struct Groups {
    table: HashTable<Group>,
    hasher: MapHasher,
}

/// A network's hash: its address and prefix as one integer (the derived
/// `Hash` of `IpNetwork` feeds the hasher three times).
#[inline]
fn hash_network(hasher: &MapHasher, network: &IpNetwork) -> u64 {
    match network {
        IpNetwork::V4(net) => hasher.hash_one(u64::from(net.ip().to_bits()) << 8 | u64::from(net.prefix())),
        IpNetwork::V6(net) => hasher.hash_one((net.ip().to_bits(), net.prefix())),
    }
}

impl Groups {
    fn get(&self, network: &IpNetwork) -> Option<&Group> {
        self.table
            .find(hash_network(&self.hasher, network), |g| g.network == *network)
    }

    fn get_mut(&mut self, network: &IpNetwork) -> Option<&mut Group> {
        self.table
            .find_mut(hash_network(&self.hasher, network), |g| g.network == *network)
    }

    /// The group of `network`, added empty if there was none.
    fn entry(&mut self, network: IpNetwork) -> &mut Group {
        let hasher = &self.hasher;
        self.table
            .entry(
                hash_network(hasher, &network),
                |g| g.network == network,
                |g| hash_network(hasher, &g.network),
            )
            .or_insert_with(|| Group {
                network,
                sessions: 0,
                live_cost: 0.0,
                retained_cost: 0.0,
            })
            .into_mut()
    }
}

/// A [`GroupEntry`] packed: 40 bytes instead of 48.
#[derive(Clone, Copy, Debug)]
struct Group {
    network: IpNetwork,
    /// Live members: a `u32`, as no process holds 2^32 connections; a
    /// join past `u32::MAX` is refused as a full group rather than counted.
    sessions: u32,
    live_cost: f64,
    retained_cost: f64,
}

impl Group {
    fn cost(&self) -> f64 {
        self.retained_cost + self.live_cost
    }

    fn entry(&self) -> GroupEntry {
        GroupEntry {
            network: self.network,
            sessions: self.sessions as usize,
            live_cost: self.live_cost,
            retained_cost: self.retained_cost,
        }
    }
}

impl InProcessLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }
}

impl GroupLedger for InProcessLedger {
    fn join(
        &self,
        group: IpNetwork,
        initial_cost: f64,
        max_sessions: Option<usize>,
    ) -> Result<f64, GroupFull> {
        let mut groups = lock(&self.groups);
        let entry = groups.entry(group);
        if let Some(max) = max_sessions
            && entry.sessions as usize >= max
        {
            return Err(GroupFull { max });
        }
        entry.sessions = entry.sessions.checked_add(1).ok_or(GroupFull {
            max: u32::MAX as usize,
        })?;
        entry.live_cost += initial_cost;
        Ok(entry.cost())
    }

    fn report(&self, group: IpNetwork, delta: f64) -> f64 {
        let mut groups = lock(&self.groups);
        match groups.get_mut(&group) {
            Some(entry) => {
                entry.live_cost = (entry.live_cost + delta).max(0.0);
                entry.cost()
            }
            None => 0.0,
        }
    }

    fn leave(&self, group: IpNetwork, reported: f64, cost: f64) {
        let mut groups = lock(&self.groups);
        if let Some(entry) = groups.get_mut(&group) {
            entry.sessions = entry.sessions.saturating_sub(1);
            entry.retained_cost += cost;
            entry.live_cost = if entry.sessions == 0 {
                0.0
            } else {
                (entry.live_cost - reported).max(0.0)
            };
        }
    }

    fn refund(&self, amount: f64) {
        let mut groups = lock(&self.groups);
        groups.table.retain(|entry| {
            entry.retained_cost = (entry.retained_cost - amount).max(0.0);
            entry.sessions > 0 || entry.retained_cost > 0.0
        });
    }

    fn cost(&self, group: IpNetwork) -> f64 {
        lock(&self.groups).get(&group).map_or(0.0, Group::cost)
    }

    fn entries(&self) -> Vec<GroupEntry> {
        lock(&self.groups).table.iter().map(Group::entry).collect()
    }

    fn entry(&self, group: IpNetwork) -> Option<GroupEntry> {
        lock(&self.groups).get(&group).map(Group::entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_exempt_networks;

    fn net(text: &str) -> IpNetwork {
        text.parse().unwrap()
    }

    #[test]
    fn groups_by_24_and_48() {
        let exempt = default_exempt_networks();
        assert_eq!(
            group_of("8.8.4.4".parse().unwrap(), 24, 48, &exempt),
            Some(net("8.8.4.0/24"))
        );
        assert_eq!(
            group_of("2001:db8:abcd:12::1".parse().unwrap(), 24, 48, &exempt),
            Some(net("2001:db8:abcd::/48"))
        );
        assert_eq!(
            group_of("8.8.4.4".parse().unwrap(), 16, 48, &exempt),
            Some(net("8.8.0.0/16"))
        );
    }

    #[test]
    fn mapped_addresses_group_as_ipv4_and_exemptions_apply() {
        let exempt = default_exempt_networks();
        assert_eq!(
            group_of("::ffff:8.8.4.4".parse().unwrap(), 24, 48, &exempt),
            Some(net("8.8.4.0/24"))
        );
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.20.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(
                group_of(private.parse().unwrap(), 24, 48, &exempt),
                None,
                "{private}"
            );
        }
        assert_eq!(
            group_of("127.0.0.1".parse().unwrap(), 24, 48, &[]),
            Some(net("127.0.0.0/24"))
        );
    }

    #[test]
    fn group_of_masks_at_every_prefix() {
        for (text, v4, v6) in [
            ("203.0.113.77", 0, 48),
            ("203.0.113.77", 1, 48),
            ("203.0.113.77", 31, 48),
            ("203.0.113.77", 32, 48),
            ("203.0.113.77", 33, 48),
            ("2001:db8:abcd:12::1", 24, 0),
            ("2001:db8:abcd:12::1", 24, 1),
            ("2001:db8:abcd:12::1", 24, 127),
            ("2001:db8:abcd:12::1", 24, 128),
            ("2001:db8:abcd:12::1", 24, 129),
        ] {
            let addr: IpAddr = text.parse().unwrap();
            let prefix = if addr.is_ipv4() { v4 } else { v6 };
            let expected = IpNetwork::new(addr, prefix)
                .ok()
                .and_then(|net| IpNetwork::new(net.network(), prefix).ok());
            assert_eq!(group_of(addr, v4, v6, &[]), expected, "{text} /{prefix}");
        }
    }

    #[test]
    fn ledger_moves_cost_to_retained_refunds_and_deletes() {
        let ledger = InProcessLedger::new();
        let g = net("8.8.4.0/24");
        assert_eq!(ledger.join(g, 5.0, None), Ok(5.0));
        assert_eq!(ledger.join(g, 5.0, Some(2)), Ok(10.0));
        assert_eq!(ledger.join(g, 5.0, Some(2)), Err(GroupFull { max: 2 }));
        assert_eq!(ledger.report(g, 95.0), 105.0);
        ledger.leave(g, 100.0, 100.0);
        let e = ledger.entry(g).unwrap();
        assert_eq!((e.sessions, e.live_cost, e.retained_cost), (1, 5.0, 100.0));
        ledger.leave(g, 5.0, 5.0);
        ledger.refund(60.0);
        assert_eq!(ledger.cost(g), 45.0);
        ledger.refund(60.0);
        assert!(ledger.entry(g).is_none());
    }
}
