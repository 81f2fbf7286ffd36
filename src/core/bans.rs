//! Banned networks, each with an optional expiry.

use crate::core::groups::canonical_ip;
use crate::types::Ban;
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::time::Instant;

/// The ban list: a few CIDR entries checked on every new session.
#[derive(Clone, Debug, Default)]
pub struct BanList {
    bans: Vec<Ban>,
}

impl BanList {
    /// Adds or replaces the ban of `network`.
    pub fn ban(&mut self, network: IpNetwork, until: Option<Instant>) {
        self.bans.retain(|ban| ban.network != network);
        self.bans.push(Ban { network, until });
    }

    /// Lifts the ban of exactly `network`; returns whether there was one.
    /// Whether there is no ban (expired ones included until pruned).
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    pub fn unban(&mut self, network: IpNetwork) -> bool {
        let before = self.bans.len();
        self.bans.retain(|ban| ban.network != network);
        self.bans.len() != before
    }

    /// The ban covering `addr` at `now`, if any (IPv4-mapped addresses
    /// match IPv4 bans).
    pub fn matching(&self, addr: IpAddr, now: Instant) -> Option<Ban> {
        let addr = canonical_ip(addr);
        self.bans
            .iter()
            .find(|ban| ban.until.is_none_or(|until| now < until) && ban.network.contains(addr))
            .copied()
    }

    /// Drops expired bans.
    pub fn prune(&mut self, now: Instant) {
        self.bans.retain(|ban| ban.until.is_none_or(|until| now < until));
    }

    /// The bans in force at `now`.
    pub fn active(&self, now: Instant) -> Vec<Ban> {
        self.bans
            .iter()
            .filter(|ban| ban.until.is_none_or(|until| now < until))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bans_match_cidr_and_expire() {
        let now = Instant::now();
        let mut bans = BanList::default();
        bans.ban(
            "203.0.113.0/24".parse().unwrap(),
            Some(now + Duration::from_secs(10)),
        );
        let inside: IpAddr = "203.0.113.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert!(bans.matching(inside, now).is_some());
        assert!(bans.matching(mapped, now).is_some());
        assert!(bans.matching("203.0.114.9".parse().unwrap(), now).is_none());
        assert!(bans.matching(inside, now + Duration::from_secs(10)).is_none());
        bans.prune(now + Duration::from_secs(11));
        assert!(bans.active(now).is_empty());
        bans.ban("2001:db8::/32".parse().unwrap(), None);
        assert!(bans.unban("2001:db8::/32".parse().unwrap()));
        assert!(!bans.unban("2001:db8::/32".parse().unwrap()));
    }
}
