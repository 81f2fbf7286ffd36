//! The subscription index: script → one shared entry (its subscribers, the
//! last status they were all sent, whether that status involved the
//! mempool), and per session the scripts it subscribed to and, only where
//! the client used an unusual spelling, the alias it used.
//!
//! Invariant: every subscriber of an entry has been sent (or has pending in
//! its outbox) the entry's status. So a new status goes to exactly the
//! subscribers of an entry whose status differs, computed once per entry.
//!
//! The index is a plain data structure (no locks, no I/O), generic over the
//! subscriber handle so it can be tested on its own.
//!
//! The manager holds it under one lock, so every operation is bounded by
//! what it touches, never by the index's size: subscribe and unsubscribe are
//! O(1) (a session's scripts are a short list, then a hash set), plus the
//! script's subscribers when its status changed; `update` is O(subscribers of
//! the script); `targets` is O(min(touched, subscribed scripts)), plus the
//! scripts whose status involved the mempool on a tip change;
//! `remove_session` is O(scripts of that session).

use crate::core::hashing::{HashMap, HashSet};
use crate::core::outbox::StatusPrint;
use crate::error::{Error, SubscriptionScope};
use crate::types::{HASHX_LEN, HashX, SessionId, encode_hex};
use ipnetwork::IpNetwork;

/// What the index needs of a subscriber.
pub(crate) trait Subscriber: Clone {
    fn id(&self) -> SessionId;
}

enum Subscribers<S> {
    One(S),
    Many(Box<HashMap<SessionId, S>>),
}

impl<S: Subscriber> Subscribers<S> {
    fn contains(&self, id: SessionId) -> bool {
        match self {
            Subscribers::One(s) => s.id() == id,
            Subscribers::Many(map) => map.contains_key(&id),
        }
    }

    fn insert(&mut self, subscriber: S) {
        match self {
            Subscribers::One(existing) if existing.id() == subscriber.id() => {}
            Subscribers::One(existing) => {
                let mut map = HashMap::with_capacity_and_hasher(2, Default::default());
                map.insert(existing.id(), existing.clone());
                map.insert(subscriber.id(), subscriber);
                *self = Subscribers::Many(Box::new(map));
            }
            Subscribers::Many(map) => {
                map.insert(subscriber.id(), subscriber);
            }
        }
    }

    /// Removes `id`; returns whether the set is now empty.
    fn remove(&mut self, id: SessionId) -> bool {
        match self {
            Subscribers::One(s) => s.id() == id,
            Subscribers::Many(map) => {
                map.remove(&id);
                if map.len() == 1
                    && let Some(last) = map.values().next().cloned()
                {
                    *self = Subscribers::One(last);
                }
                false
            }
        }
    }

    fn for_each(&self, mut f: impl FnMut(&S)) {
        match self {
            Subscribers::One(s) => f(s),
            Subscribers::Many(map) => map.values().for_each(f),
        }
    }

    fn len(&self) -> usize {
        match self {
            Subscribers::One(_) => 1,
            Subscribers::Many(map) => map.len(),
        }
    }
}

struct Entry<S> {
    /// The scripthash bytes after the hashX (the first subscriber's).
    rest: [u8; 32 - HASHX_LEN],
    status: StatusPrint,
    mempool: bool,
    /// Whether some subscriber used a spelling other than the canonical one
    /// (only then are per-session aliases looked up).
    unusual_aliases: bool,
    subscribers: Subscribers<S>,
}

/// Scripts a session may hold in a plain list before they move to a hash set.
const SMALL_SCRIPTS: usize = 16;

/// A session's scripts: a short unsorted list while it holds at most
/// [`SMALL_SCRIPTS`] (as much memory as a sorted `Vec`, scanned in a few
/// nanoseconds), a hash set beyond, so inserting and removing one stays
/// O(1) at any size. A set that shrinks to half the threshold becomes a
/// list again (the gap keeps a session at the edge from switching back and
/// forth).
enum ScriptSet {
    /// No duplicates, at most [`SMALL_SCRIPTS`].
    Small(Vec<HashX>),
    /// More than `SMALL_SCRIPTS / 2`.
    Large(Box<HashSet<HashX>>),
}

impl Default for ScriptSet {
    fn default() -> Self {
        ScriptSet::Small(Vec::new())
    }
}

impl ScriptSet {
    fn len(&self) -> usize {
        match self {
            ScriptSet::Small(list) => list.len(),
            ScriptSet::Large(set) => set.len(),
        }
    }

    fn contains(&self, hashx: &HashX) -> bool {
        match self {
            ScriptSet::Small(list) => list.contains(hashx),
            ScriptSet::Large(set) => set.contains(hashx),
        }
    }

    /// Adds `hashx`; false if it was there.
    fn insert(&mut self, hashx: HashX) -> bool {
        match self {
            ScriptSet::Small(list) if list.contains(&hashx) => false,
            ScriptSet::Small(list) if list.len() < SMALL_SCRIPTS => {
                list.push(hashx);
                true
            }
            ScriptSet::Small(list) => {
                let mut set = HashSet::with_capacity_and_hasher(2 * SMALL_SCRIPTS, Default::default());
                set.extend(list.drain(..));
                set.insert(hashx);
                *self = ScriptSet::Large(Box::new(set));
                true
            }
            ScriptSet::Large(set) => set.insert(hashx),
        }
    }

    /// Removes `hashx`; false if it was not there.
    fn remove(&mut self, hashx: &HashX) -> bool {
        match self {
            ScriptSet::Small(list) => match list.iter().position(|h| h == hashx) {
                Some(at) => {
                    list.swap_remove(at);
                    true
                }
                None => false,
            },
            ScriptSet::Large(set) => {
                let removed = set.remove(hashx);
                if set.len() <= SMALL_SCRIPTS / 2 {
                    let mut list = Vec::with_capacity(SMALL_SCRIPTS);
                    list.extend(set.iter().copied());
                    *self = ScriptSet::Small(list);
                }
                removed
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &HashX> {
        let (list, set) = match self {
            ScriptSet::Small(list) => (&list[..], None),
            ScriptSet::Large(set) => (&[][..], Some(&**set)),
        };
        list.iter().chain(set.into_iter().flatten())
    }
}

#[derive(Default)]
struct SessionSubs {
    scripts: ScriptSet,
    /// Aliases that differ from the entry's canonical spelling.
    aliases: Option<Box<HashMap<HashX, String>>>,
    group: Option<IpNetwork>,
    headers: bool,
}

/// Subscription limits applied by [`SubscriptionIndex::subscribe`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SubLimits {
    pub(crate) per_session: Option<usize>,
    pub(crate) per_group: Option<usize>,
    pub(crate) global: Option<usize>,
}

/// A status change to deliver: to `subscriber`, for `hashx`, from `base` to the new status.
pub(crate) struct Delivery<S> {
    pub(crate) subscriber: S,
    pub(crate) hashx: HashX,
    pub(crate) alias: String,
    pub(crate) base: StatusPrint,
}

/// Splits a scripthash string into hashX and the remaining bytes; `None`
/// unless it is 64 hex digits.
pub(crate) fn parse_scripthash(alias: &str) -> Option<(HashX, [u8; 32 - HASHX_LEN])> {
    let hashx = HashX::from_scripthash_hex(alias)?;
    let mut bytes: [u8; 32] = crate::types::parse_hex_array(alias)?;
    bytes.reverse();
    let mut rest = [0u8; 32 - HASHX_LEN];
    rest.copy_from_slice(&bytes[HASHX_LEN..]);
    Some((hashx, rest))
}

fn canonical_alias(hashx: &HashX, rest: &[u8; 32 - HASHX_LEN]) -> String {
    let mut bytes = [0u8; 32];
    bytes[..HASHX_LEN].copy_from_slice(hashx.as_bytes());
    bytes[HASHX_LEN..].copy_from_slice(rest);
    bytes.reverse();
    encode_hex(&bytes)
}

pub(crate) struct SubscriptionIndex<S> {
    entries: HashMap<HashX, Entry<S>>,
    /// Scripts whose last status involved the mempool.
    mempool_scripts: HashSet<HashX>,
    sessions: HashMap<SessionId, SessionSubs>,
    per_group: HashMap<IpNetwork, usize>,
    header_subscribers: HashMap<SessionId, S>,
    total: usize,
}

impl<S> Default for SubscriptionIndex<S> {
    fn default() -> Self {
        SubscriptionIndex {
            entries: HashMap::default(),
            mempool_scripts: HashSet::default(),
            sessions: HashMap::default(),
            per_group: HashMap::default(),
            header_subscribers: HashMap::default(),
            total: 0,
        }
    }
}

/// The outcome of [`SubscriptionIndex::subscribe`].
pub(crate) struct Subscribed<S> {
    /// Subscriptions the session now has.
    pub(crate) count: usize,
    /// Other subscribers that must be sent the new status (it differed from the entry's).
    pub(crate) deliveries: Vec<Delivery<S>>,
}

impl<S: Subscriber> SubscriptionIndex<S> {
    /// Total script subscriptions.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Distinct scripts subscribed.
    pub(crate) fn distinct(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn header_subscriber_count(&self) -> usize {
        self.header_subscribers.len()
    }

    /// Subscriptions of one session.
    pub(crate) fn session_count(&self, id: SessionId) -> usize {
        self.sessions.get(&id).map_or(0, |s| s.scripts.len())
    }

    pub(crate) fn is_subscribed(&self, id: SessionId, hashx: &HashX) -> bool {
        self.sessions.get(&id).is_some_and(|s| s.scripts.contains(hashx))
    }

    /// Checks the limits for one more subscription of `id`.
    pub(crate) fn check_limits(
        &self,
        id: SessionId,
        group: Option<IpNetwork>,
        hashx: &HashX,
        limits: SubLimits,
    ) -> Result<(), Error> {
        if self.is_subscribed(id, hashx) {
            return Ok(());
        }
        let refuse = |scope, max| Err(Error::SubscriptionLimit { scope, max });
        if let Some(max) = limits.per_session
            && self.session_count(id) >= max
        {
            return refuse(SubscriptionScope::Session, max);
        }
        if let (Some(max), Some(group)) = (limits.per_group, group)
            && self.per_group.get(&group).copied().unwrap_or(0) >= max
        {
            return refuse(SubscriptionScope::Group, max);
        }
        if let Some(max) = limits.global
            && self.total >= max
        {
            return refuse(SubscriptionScope::Global, max);
        }
        Ok(())
    }

    /// Subscribes `subscriber` to `hashx` with the freshly computed status
    /// `status` (`mempool`: whether it involves unconfirmed transactions).
    /// If the entry held a different status, the other subscribers are
    /// returned to be sent the new one.
    pub(crate) fn subscribe(
        &mut self,
        subscriber: S,
        group: Option<IpNetwork>,
        alias: &str,
        status: StatusPrint,
        mempool: bool,
        limits: SubLimits,
    ) -> Result<Subscribed<S>, Error> {
        let (hashx, rest) = parse_scripthash(alias)
            .ok_or_else(|| Error::BadRequest(format!("invalid scripthash {alias:?}")))?;
        let id = subscriber.id();
        self.check_limits(id, group, &hashx, limits)?;
        let mut deliveries = Vec::new();
        let entry = match self.entries.entry(hashx) {
            hashbrown::hash_map::Entry::Occupied(occupied) => {
                let entry = occupied.into_mut();
                if entry.status != status {
                    let base = entry.status;
                    entry.subscribers.for_each(|other| {
                        if other.id() != id {
                            deliveries.push(Delivery {
                                subscriber: other.clone(),
                                hashx,
                                alias: String::new(),
                                base,
                            });
                        }
                    });
                    entry.status = status;
                }
                entry.mempool = mempool;
                entry.subscribers.insert(subscriber);
                entry
            }
            hashbrown::hash_map::Entry::Vacant(vacant) => vacant.insert(Entry {
                rest,
                status,
                mempool,
                unusual_aliases: false,
                subscribers: Subscribers::One(subscriber),
            }),
        };
        let canonical = alias.len() == 64
            && alias
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            && entry.rest == rest;
        entry.unusual_aliases |= !canonical;
        if mempool {
            self.mempool_scripts.insert(hashx);
        } else {
            self.mempool_scripts.remove(&hashx);
        }
        let subs = self.sessions.entry(id).or_default();
        subs.group = group;
        if subs.scripts.insert(hashx) {
            self.total += 1;
            if let Some(group) = group {
                *self.per_group.entry(group).or_insert(0) += 1;
            }
        }
        if canonical {
            if let Some(aliases) = subs.aliases.as_mut() {
                aliases.remove(&hashx);
            }
        } else {
            subs.aliases
                .get_or_insert_default()
                .insert(hashx, alias.to_owned());
        }
        let count = subs.scripts.len();
        self.fill_aliases(&hashx, &mut deliveries);
        Ok(Subscribed { count, deliveries })
    }

    /// The alias session `id` used for `hashx`.
    pub(crate) fn alias_of(&self, id: SessionId, hashx: &HashX) -> String {
        if let Some(alias) = self
            .sessions
            .get(&id)
            .and_then(|s| s.aliases.as_ref())
            .and_then(|aliases| aliases.get(hashx))
        {
            return alias.clone();
        }
        match self.entries.get(hashx) {
            Some(entry) => canonical_alias(hashx, &entry.rest),
            None => String::new(),
        }
    }

    fn drop_subscriber(&mut self, id: SessionId, hashx: &HashX) {
        if let Some(entry) = self.entries.get_mut(hashx)
            && entry.subscribers.contains(id)
            && entry.subscribers.remove(id)
        {
            self.entries.remove(hashx);
            self.mempool_scripts.remove(hashx);
        }
    }

    /// Unsubscribes; returns the session's remaining count, or `None` if it
    /// was not subscribed.
    pub(crate) fn unsubscribe(&mut self, id: SessionId, hashx: &HashX) -> Option<usize> {
        let subs = self.sessions.get_mut(&id)?;
        if !subs.scripts.remove(hashx) {
            return None;
        }
        if let Some(aliases) = subs.aliases.as_mut() {
            aliases.remove(hashx);
        }
        let (count, group) = (subs.scripts.len(), subs.group);
        if count == 0 && !subs.headers {
            self.sessions.remove(&id);
        }
        self.total -= 1;
        if let Some(group) = group {
            self.decrement_group(group, 1);
        }
        self.drop_subscriber(id, hashx);
        Some(count)
    }

    fn decrement_group(&mut self, group: IpNetwork, by: usize) {
        if let Some(count) = self.per_group.get_mut(&group) {
            *count = count.saturating_sub(by);
            if *count == 0 {
                self.per_group.remove(&group);
            }
        }
    }

    /// Subscribes a session to headers; returns false if it already was.
    pub(crate) fn subscribe_headers(&mut self, subscriber: S) -> bool {
        let id = subscriber.id();
        self.sessions.entry(id).or_default().headers = true;
        self.header_subscribers.insert(id, subscriber).is_none()
    }

    /// Undoes a header subscription; returns whether the session was subscribed.
    pub(crate) fn unsubscribe_headers(&mut self, id: SessionId) -> bool {
        if self.header_subscribers.remove(&id).is_none() {
            return false;
        }
        if let Some(subs) = self.sessions.get_mut(&id) {
            subs.headers = false;
            if subs.scripts.len() == 0 {
                self.sessions.remove(&id);
            }
        }
        true
    }

    /// Every header subscriber.
    pub(crate) fn header_subscribers(&self) -> Vec<S> {
        self.header_subscribers.values().cloned().collect()
    }

    /// Drops every subscription of a session.
    pub(crate) fn remove_session(&mut self, id: SessionId) {
        self.header_subscribers.remove(&id);
        let Some(subs) = self.sessions.remove(&id) else {
            return;
        };
        self.total -= subs.scripts.len();
        if let Some(group) = subs.group {
            self.decrement_group(group, subs.scripts.len());
        }
        for hashx in subs.scripts.iter() {
            self.drop_subscriber(id, hashx);
        }
    }

    /// The scripts to recompute for an event: `touched ∩ subscribed`
    /// (iterating the smaller side), plus, on a tip change, every script
    /// whose last status involved the mempool.
    pub(crate) fn targets(&self, touched: &HashSet<HashX>, tip_changed: bool) -> Vec<HashX> {
        let mut out: Vec<HashX> = if touched.len() <= self.entries.len() {
            touched
                .iter()
                .filter(|h| self.entries.contains_key(*h))
                .copied()
                .collect()
        } else {
            self.entries
                .keys()
                .filter(|h| touched.contains(*h))
                .copied()
                .collect()
        };
        if tip_changed {
            out.extend(
                self.mempool_scripts
                    .iter()
                    .filter(|h| !touched.contains(*h))
                    .copied(),
            );
        }
        out
    }

    /// Records a newly computed status. If it differs from the entry's, the
    /// entry takes it and every subscriber is returned to be sent it.
    pub(crate) fn update(&mut self, hashx: &HashX, status: StatusPrint, mempool: bool) -> Vec<Delivery<S>> {
        let Some(entry) = self.entries.get_mut(hashx) else {
            return Vec::new();
        };
        if mempool != entry.mempool {
            entry.mempool = mempool;
            if mempool {
                self.mempool_scripts.insert(*hashx);
            } else {
                self.mempool_scripts.remove(hashx);
            }
        }
        if entry.status == status {
            return Vec::new();
        }
        let base = entry.status;
        entry.status = status;
        let mut deliveries = Vec::with_capacity(entry.subscribers.len());
        entry.subscribers.for_each(|s| {
            deliveries.push(Delivery {
                subscriber: s.clone(),
                hashx: *hashx,
                alias: String::new(),
                base,
            })
        });
        self.fill_aliases(hashx, &mut deliveries);
        deliveries
    }

    /// Sets each delivery's alias: the canonical spelling, built once, unless
    /// some subscriber of the script used another.
    fn fill_aliases(&self, hashx: &HashX, deliveries: &mut [Delivery<S>]) {
        let Some(entry) = self.entries.get(hashx) else {
            return;
        };
        if entry.unusual_aliases {
            for delivery in deliveries {
                delivery.alias = self.alias_of(delivery.subscriber.id(), hashx);
            }
        } else if let Some((last, rest)) = deliveries.split_last_mut() {
            let canonical = canonical_alias(hashx, &entry.rest);
            for delivery in rest {
                delivery.alias.clone_from(&canonical);
            }
            last.alias = canonical;
        }
    }

    /// The status fingerprint the entry holds (test support).
    #[cfg(test)]
    pub(crate) fn status_of(&self, hashx: &HashX) -> Option<StatusPrint> {
        self.entries.get(hashx).map(|e| e.status)
    }

    /// Checks every internal count against a recount (test support).
    #[cfg(test)]
    pub(crate) fn check_consistency(&self) {
        let mut total = 0;
        let mut per_group: HashMap<IpNetwork, usize> = HashMap::default();
        for (id, subs) in &self.sessions {
            match &subs.scripts {
                ScriptSet::Small(list) => {
                    assert!(list.len() <= SMALL_SCRIPTS);
                    let distinct: HashSet<&HashX> = list.iter().collect();
                    assert_eq!(distinct.len(), list.len());
                }
                ScriptSet::Large(set) => assert!(set.len() > SMALL_SCRIPTS / 2),
            }
            assert_eq!(subs.scripts.iter().count(), subs.scripts.len());
            total += subs.scripts.len();
            if let Some(group) = subs.group {
                *per_group.entry(group).or_insert(0) += subs.scripts.len();
            }
            for hashx in subs.scripts.iter() {
                assert!(self.entries[hashx].subscribers.contains(*id));
            }
        }
        per_group.retain(|_, n| *n > 0);
        assert_eq!(total, self.total);
        assert_eq!(per_group, self.per_group);
        let mut from_entries = 0;
        for (hashx, entry) in &self.entries {
            from_entries += entry.subscribers.len();
            assert_eq!(entry.mempool, self.mempool_scripts.contains(hashx));
        }
        assert_eq!(from_entries, total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Sub(u64);
    impl Subscriber for Sub {
        fn id(&self) -> SessionId {
            SessionId(self.0)
        }
    }

    fn alias(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn hx(n: u8) -> HashX {
        parse_scripthash(&alias(n)).unwrap().0
    }

    #[test]
    fn a_changed_status_on_subscribe_goes_to_the_others() {
        let mut index = SubscriptionIndex::default();
        let limits = SubLimits::default();
        index
            .subscribe(Sub(1), None, &alias(1), 10, false, limits)
            .unwrap();
        let same = index
            .subscribe(Sub(2), None, &alias(1), 10, false, limits)
            .unwrap();
        assert!(same.deliveries.is_empty());
        let changed = index
            .subscribe(Sub(3), None, &alias(1), 11, true, limits)
            .unwrap();
        let mut to: Vec<u64> = changed.deliveries.iter().map(|d| d.subscriber.0).collect();
        to.sort();
        assert_eq!(to, vec![1, 2]);
        assert_eq!(changed.deliveries[0].alias, alias(1));
        assert_eq!(changed.deliveries[0].base, 10);
        index.check_consistency();
    }

    #[test]
    fn unusual_aliases_are_kept_per_session() {
        let mut index = SubscriptionIndex::default();
        let upper = alias(0xab).to_uppercase();
        index
            .subscribe(Sub(1), None, &alias(0xab), 0, false, SubLimits::default())
            .unwrap();
        index
            .subscribe(Sub(2), None, &upper, 0, false, SubLimits::default())
            .unwrap();
        let deliveries = index.update(&hx(0xab), 5, false);
        let mut aliases: Vec<(u64, String)> = deliveries
            .into_iter()
            .map(|d| (d.subscriber.0, d.alias))
            .collect();
        aliases.sort();
        assert_eq!(aliases, vec![(1, alias(0xab)), (2, upper)]);
    }

    #[test]
    fn limits_refuse_with_their_scope() {
        let mut index = SubscriptionIndex::default();
        let group: IpNetwork = "8.8.8.0/24".parse().unwrap();
        let limits = SubLimits {
            per_session: Some(2),
            per_group: Some(3),
            global: Some(4),
        };
        index
            .subscribe(Sub(1), Some(group), &alias(1), 0, false, limits)
            .unwrap();
        index
            .subscribe(Sub(1), Some(group), &alias(2), 0, false, limits)
            .unwrap();
        // Re-subscribing is not a new subscription.
        index
            .subscribe(Sub(1), Some(group), &alias(2), 0, false, limits)
            .unwrap();
        let err = index
            .subscribe(Sub(1), Some(group), &alias(3), 0, false, limits)
            .err()
            .unwrap();
        assert!(matches!(
            err,
            Error::SubscriptionLimit {
                scope: SubscriptionScope::Session,
                max: 2
            }
        ));
        index
            .subscribe(Sub(2), Some(group), &alias(3), 0, false, limits)
            .unwrap();
        let err = index
            .subscribe(Sub(2), Some(group), &alias(4), 0, false, limits)
            .err()
            .unwrap();
        assert!(matches!(
            err,
            Error::SubscriptionLimit {
                scope: SubscriptionScope::Group,
                max: 3
            }
        ));
        index
            .subscribe(Sub(3), None, &alias(4), 0, false, limits)
            .unwrap();
        let err = index
            .subscribe(Sub(4), None, &alias(5), 0, false, limits)
            .err()
            .unwrap();
        assert!(matches!(
            err,
            Error::SubscriptionLimit {
                scope: SubscriptionScope::Global,
                max: 4
            }
        ));
        assert_eq!(index.total(), 4);
        index.check_consistency();
    }

    #[test]
    fn targets_iterate_the_smaller_side_and_add_mempool_scripts_on_tip_change() {
        let mut index = SubscriptionIndex::default();
        for n in 0..10 {
            index
                .subscribe(Sub(1), None, &alias(n), 0, n == 9, SubLimits::default())
                .unwrap();
        }
        let touched: HashSet<HashX> = [hx(1), hx(2), hx(200)].into_iter().collect();
        let mut t = index.targets(&touched, false);
        t.sort();
        assert_eq!(t, vec![hx(1), hx(2)]);
        let big: HashSet<HashX> = (0..=255).map(hx).collect();
        assert_eq!(index.targets(&big, false).len(), 10);
        let mut t = index.targets(&touched, true);
        t.sort();
        assert_eq!(t, vec![hx(1), hx(2), hx(9)]);
    }

    #[test]
    fn script_sets_switch_between_list_and_set() {
        let mut set = ScriptSet::default();
        let n = SMALL_SCRIPTS as u8;
        for i in 0..=n {
            assert!(set.insert(hx(i)));
            assert!(!set.insert(hx(i)));
            assert_eq!(matches!(set, ScriptSet::Large(_)), i == n, "after {i}");
        }
        assert_eq!(set.len(), SMALL_SCRIPTS + 1);
        // Down to half the threshold it stays a set, then becomes a list.
        for i in 0..=n / 2 {
            assert!(set.remove(&hx(i)));
            assert!(!set.remove(&hx(i)));
            assert_eq!(matches!(set, ScriptSet::Small(_)), i == n / 2, "after {i}");
        }
        let mut left: Vec<HashX> = set.iter().copied().collect();
        left.sort();
        let mut expect: Vec<HashX> = (n / 2 + 1..=n).map(hx).collect();
        expect.sort();
        assert_eq!(left, expect);
        assert!(set.contains(&hx(n)) && !set.contains(&hx(0)));
    }

    /// Scripts the model test uses: enough for a session to pass
    /// [`SMALL_SCRIPTS`] and come back.
    const SCRIPTS: u8 = 3 * SMALL_SCRIPTS as u8;
    /// Longest run of scripts one op subscribes or unsubscribes.
    const RUN: u8 = SMALL_SCRIPTS as u8 + 4;

    #[derive(Debug, Clone)]
    enum Op {
        Subscribe(u64, u8, u64),
        Unsubscribe(u64, u8),
        /// `len` scripts from the first, wrapping.
        SubscribeRun(u64, u8, u8, u64),
        UnsubscribeRun(u64, u8, u8),
        Update(u8, u64),
        RemoveSession(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..5u64, 0..SCRIPTS, 0..3u64).prop_map(|(s, h, st)| Op::Subscribe(s, h, st)),
            (0..5u64, 0..SCRIPTS).prop_map(|(s, h)| Op::Unsubscribe(s, h)),
            (0..5u64, 0..SCRIPTS, 1..RUN, 0..3u64).prop_map(|(s, h, n, st)| Op::SubscribeRun(s, h, n, st)),
            (0..5u64, 0..SCRIPTS, 1..RUN).prop_map(|(s, h, n)| Op::UnsubscribeRun(s, h, n)),
            (0..SCRIPTS, 0..3u64).prop_map(|(h, st)| Op::Update(h, st)),
            (0..5u64).prop_map(Op::RemoveSession),
        ]
    }

    fn run(first: u8, len: u8) -> impl Iterator<Item = u8> {
        (0..len).map(move |i| ((u16::from(first) + u16::from(i)) % u16::from(SCRIPTS)) as u8)
    }

    proptest! {
        /// Against a model (per session: script → last status sent), every
        /// subscriber's last status equals the entry's, deliveries go exactly
        /// to subscribers whose status changed, and counts stay consistent.
        #[test]
        fn index_matches_a_model(ops in proptest::collection::vec(op(), 1..80)) {
            let mut index = SubscriptionIndex::default();
            let mut model: std::collections::HashMap<u64, std::collections::HashMap<u8, u64>> = Default::default();
            let group: IpNetwork = "8.8.8.0/24".parse().unwrap();
            let ops = ops.into_iter().flat_map(|op| match op {
                Op::SubscribeRun(s, h, n, st) => run(h, n).map(|h| Op::Subscribe(s, h, st)).collect(),
                Op::UnsubscribeRun(s, h, n) => run(h, n).map(|h| Op::Unsubscribe(s, h)).collect(),
                op => vec![op],
            });
            for op in ops {
                match op {
                    Op::SubscribeRun(..) | Op::UnsubscribeRun(..) => unreachable!("expanded above"),
                    Op::Subscribe(s, h, st) => {
                        let out = index.subscribe(Sub(s), Some(group), &alias(h), st, st == 2, SubLimits::default()).unwrap();
                        for d in out.deliveries {
                            let last = model.get_mut(&d.subscriber.0).unwrap().get_mut(&h).unwrap();
                            prop_assert_ne!(*last, st);
                            prop_assert_eq!(d.base, *last);
                            *last = st;
                        }
                        model.entry(s).or_default().insert(h, st);
                    }
                    Op::Unsubscribe(s, h) => {
                        let was = model.get_mut(&s).and_then(|m| m.remove(&h)).is_some();
                        prop_assert_eq!(index.unsubscribe(SessionId(s), &hx(h)).is_some(), was);
                    }
                    Op::Update(h, st) => {
                        let mut told: Vec<u64> = index.update(&hx(h), st, st == 2).into_iter().map(|d| d.subscriber.0).collect();
                        told.sort();
                        let mut expect = Vec::new();
                        for (s, subs) in model.iter_mut() {
                            if let Some(last) = subs.get_mut(&h) && *last != st {
                                *last = st;
                                expect.push(*s);
                            }
                        }
                        expect.sort();
                        prop_assert_eq!(told, expect);
                    }
                    Op::RemoveSession(s) => {
                        index.remove_session(SessionId(s));
                        model.remove(&s);
                    }
                }
                index.check_consistency();
                for (s, subs) in &model {
                    prop_assert_eq!(index.session_count(SessionId(*s)), subs.len());
                    for (h, st) in subs {
                        prop_assert_eq!(index.status_of(&hx(*h)), Some(*st));
                    }
                }
                let total: usize = model.values().map(|m| m.len()).sum();
                prop_assert_eq!(index.total(), total);
            }
        }
    }
}
