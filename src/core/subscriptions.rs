//! The subscription index: script → one shared entry (its subscribers, the
//! last status they were all sent, whether that status involved the
//! mempool), the same for outpoints, and, only where a client used an
//! unusual spelling (or a scriptPubKey), the alias it used. What each
//! session subscribed to ([`SessionSubs`]: its scripts' slots and its
//! outpoints) is kept by the session itself and handed to the index's
//! operations, so the index holds no per-session map.
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
//! O(1) (a session's scripts and outpoints are short lists, then hash
//! sets), plus the entry's subscribers when its status changed; `update` is
//! O(subscribers of the entry); `targets` is O(min(touched, subscribed
//! entries)), plus the entries whose status involved the mempool on a tip
//! change; `remove_session` is O(subscriptions of that session).
//!
//! Outpoint subscriptions count toward the same limits and totals as
//! script subscriptions.

use crate::core::hashing::{HashMap, HashSet};
use crate::core::outbox::StatusPrint;
use crate::error::{Error, SubscriptionScope};
use crate::types::{HASHX_LEN, HashX, OutPoint, SessionId, encode_hex};
use ipnetwork::IpNetwork;
use scripts::Scripts;

mod scripts;

/// Most subscriptions the index holds, whatever the configured global
/// limit: the script slab numbers its slots with `u32`.
const MAX_SUBSCRIPTIONS: usize = u32::MAX as usize;

/// What the index needs of a subscriber.
pub(crate) trait Subscriber: Clone {
    fn id(&self) -> SessionId;

    /// Reads (plain loads, no change) what a notification to this
    /// subscriber will update, so that a pass about to notify many has
    /// their cache misses overlap instead of waiting for each in turn.
    fn warm(&self) {}
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

struct OutpointEntry<S> {
    status: StatusPrint,
    mempool: bool,
    subscribers: Subscribers<S>,
}

/// How a session named a script, and so how it is notified.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Alias {
    /// `blockchain.scripthash.subscribe` with this scripthash string.
    ScriptHash(String),
    /// `blockchain.scriptpubkey.subscribe` with this scriptPubKey hex.
    ScriptPubKey(String),
}

impl Default for Alias {
    fn default() -> Self {
        Alias::ScriptHash(String::new())
    }
}

/// How a notification names a script: the canonical scripthash spelling of
/// the script's hash (its text is built at delivery), or the session's own
/// alias when it used another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScriptName {
    /// The scripthash, internal byte order: sent reversed, lowercase hex.
    Canonical([u8; 32]),
    /// As the session named the script.
    Alias(Alias),
}

impl ScriptName {
    /// The scripthash text of a [`ScriptName::Canonical`] or a scripthash
    /// alias (a scriptPubKey's hex for [`Alias::ScriptPubKey`]).
    pub(crate) fn scripthash_text(&self) -> String {
        match self {
            ScriptName::Canonical(hash) => {
                let mut bytes = *hash;
                bytes.reverse();
                encode_hex(&bytes)
            }
            ScriptName::Alias(Alias::ScriptHash(text) | Alias::ScriptPubKey(text)) => text.clone(),
        }
    }

    /// The name as an [`Alias`] (test support).
    #[cfg(test)]
    pub(crate) fn alias(&self) -> Alias {
        match self {
            ScriptName::Canonical(_) => Alias::ScriptHash(self.scripthash_text()),
            ScriptName::Alias(alias) => alias.clone(),
        }
    }
}

/// No slot: [`SubscriptionIndex::update_at`] looks the script up.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// Keys a session may hold in a plain list before they move to a hash set.
const SMALL_SCRIPTS: usize = 16;

/// A session's scripts (or outpoints): a short unsorted slice while it
/// holds at most [`SMALL_SCRIPTS`] (exactly as long as it must be, scanned
/// in a few nanoseconds), a hash set beyond, so inserting and removing one
/// stays O(1) at any size. A set that shrinks to half the threshold becomes
/// a slice again (the gap keeps a session at the edge from switching back
/// and forth).
enum KeySet<K> {
    /// No duplicates, at most [`SMALL_SCRIPTS`]; a boxed slice (16 bytes,
    /// no spare capacity).
    Small(Box<[K]>),
    /// More than `SMALL_SCRIPTS / 2`.
    Large(Box<HashSet<K>>),
}

/// Appends `key` to a slice of exact length.
fn push_exact<K: Copy>(list: &mut Box<[K]>, key: K) {
    let mut grown = Vec::with_capacity(list.len() + 1);
    grown.extend_from_slice(list);
    grown.push(key);
    *list = grown.into_boxed_slice();
}

/// Removes `key` from a slice of exact length; false if it was not there.
fn remove_exact<K: Copy + Eq>(list: &mut Box<[K]>, key: &K) -> bool {
    let Some(at) = list.iter().position(|k| k == key) else {
        return false;
    };
    let mut shrunk = Vec::with_capacity(list.len() - 1);
    shrunk.extend_from_slice(&list[..at]);
    shrunk.extend_from_slice(&list[at + 1..]);
    *list = shrunk.into_boxed_slice();
    true
}

impl<K> Default for KeySet<K> {
    fn default() -> Self {
        KeySet::Small(Box::default())
    }
}

impl<K: Copy + Eq + std::hash::Hash> KeySet<K> {
    fn len(&self) -> usize {
        match self {
            KeySet::Small(list) => list.len(),
            KeySet::Large(set) => set.len(),
        }
    }

    fn contains(&self, key: &K) -> bool {
        match self {
            KeySet::Small(list) => list.contains(key),
            KeySet::Large(set) => set.contains(key),
        }
    }

    /// Adds `key`; false if it was there.
    fn insert(&mut self, key: K) -> bool {
        match self {
            KeySet::Small(list) if list.contains(&key) => false,
            KeySet::Small(list) if list.len() < SMALL_SCRIPTS => {
                push_exact(list, key);
                true
            }
            KeySet::Small(list) => {
                let mut set = HashSet::with_capacity_and_hasher(2 * SMALL_SCRIPTS, Default::default());
                set.extend(list.iter().copied());
                set.insert(key);
                *self = KeySet::Large(Box::new(set));
                true
            }
            KeySet::Large(set) => set.insert(key),
        }
    }

    /// Removes `key`; false if it was not there.
    fn remove(&mut self, key: &K) -> bool {
        match self {
            KeySet::Small(list) => remove_exact(list, key),
            KeySet::Large(set) => {
                let removed = set.remove(key);
                if set.len() <= SMALL_SCRIPTS / 2 {
                    *self = KeySet::Small(set.iter().copied().collect());
                }
                removed
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &K> {
        let (list, set) = match self {
            KeySet::Small(list) => (&list[..], None),
            KeySet::Large(set) => (&[][..], Some(&**set)),
        };
        list.iter().chain(set.into_iter().flatten())
    }
}

/// What one session subscribed to: kept by the session (beside its other
/// state, 16 bytes) rather than in a map of the index, and changed only
/// through the index's operations, under the index's lock. Header and
/// noise subscriptions are the index's own (few sessions hold them).
pub(crate) enum SessionSubs {
    /// Scripts alone, at most [`SMALL_SCRIPTS`]: their slots in
    /// [`Scripts`], no duplicates, exactly as many as there are.
    Scripts(Box<[u32]>),
    /// More scripts, or outpoints too (never an empty outpoint set with
    /// a short script list: that is [`SessionSubs::Scripts`]).
    Mixed(Box<Mixed>),
}

/// A session's subscriptions past [`SessionSubs::Scripts`].
#[derive(Default)]
pub(crate) struct Mixed {
    scripts: KeySet<u32>,
    outpoints: KeySet<OutPoint>,
}

impl Default for SessionSubs {
    fn default() -> Self {
        SessionSubs::Scripts(Box::default())
    }
}

impl SessionSubs {
    /// Script and outpoint subscriptions.
    pub(crate) fn count(&self) -> usize {
        match self {
            SessionSubs::Scripts(list) => list.len(),
            SessionSubs::Mixed(mixed) => mixed.scripts.len() + mixed.outpoints.len(),
        }
    }

    fn has_outpoint(&self, outpoint: &OutPoint) -> bool {
        match self {
            SessionSubs::Scripts(_) => false,
            SessionSubs::Mixed(mixed) => mixed.outpoints.contains(outpoint),
        }
    }

    /// The slots of the session's scripts.
    fn scripts(&self) -> impl Iterator<Item = &u32> {
        let (list, mixed) = match self {
            SessionSubs::Scripts(list) => (&list[..], None),
            SessionSubs::Mixed(mixed) => (&[][..], Some(&mixed.scripts)),
        };
        list.iter().chain(mixed.into_iter().flat_map(KeySet::iter))
    }

    fn outpoints(&self) -> impl Iterator<Item = &OutPoint> {
        match self {
            SessionSubs::Scripts(_) => None,
            SessionSubs::Mixed(mixed) => Some(mixed.outpoints.iter()),
        }
        .into_iter()
        .flatten()
    }

    /// The mixed form, converted to if need be.
    fn mixed(&mut self) -> &mut Mixed {
        if let SessionSubs::Scripts(list) = self {
            let scripts = KeySet::Small(std::mem::take(list));
            *self = SessionSubs::Mixed(Box::new(Mixed {
                scripts,
                outpoints: KeySet::default(),
            }));
        }
        match self {
            SessionSubs::Mixed(mixed) => mixed,
            SessionSubs::Scripts(_) => unreachable!("converted above"),
        }
    }

    /// Back to [`SessionSubs::Scripts`] when the mixed form is not needed.
    fn compact(&mut self) {
        if let SessionSubs::Mixed(mixed) = self
            && mixed.outpoints.len() == 0
            && let KeySet::Small(list) = &mut mixed.scripts
        {
            *self = SessionSubs::Scripts(std::mem::take(list));
        }
    }

    /// Adds the script at `slot`; false if it was there.
    fn insert_script(&mut self, slot: u32) -> bool {
        match self {
            SessionSubs::Scripts(list) if list.contains(&slot) => false,
            SessionSubs::Scripts(list) if list.len() < SMALL_SCRIPTS => {
                push_exact(list, slot);
                true
            }
            _ => self.mixed().scripts.insert(slot),
        }
    }

    /// Removes the script at `slot`; false if it was not there.
    fn remove_script(&mut self, slot: u32) -> bool {
        let removed = match self {
            SessionSubs::Scripts(list) => remove_exact(list, &slot),
            SessionSubs::Mixed(mixed) => mixed.scripts.remove(&slot),
        };
        self.compact();
        removed
    }

    /// Adds `outpoint`; false if it was there.
    fn insert_outpoint(&mut self, outpoint: OutPoint) -> bool {
        self.mixed().outpoints.insert(outpoint)
    }

    /// Removes `outpoint`; false if it was not there.
    fn remove_outpoint(&mut self, outpoint: &OutPoint) -> bool {
        let removed = match self {
            SessionSubs::Scripts(_) => false,
            SessionSubs::Mixed(mixed) => mixed.outpoints.remove(outpoint),
        };
        self.compact();
        removed
    }
}

/// Subscription limits applied by [`SubscriptionIndex::subscribe`] and
/// [`SubscriptionIndex::subscribe_outpoint`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SubLimits {
    pub(crate) per_session: Option<usize>,
    pub(crate) per_group: Option<usize>,
    pub(crate) global: Option<usize>,
}

/// A script status change to deliver: to `subscriber`, for `hashx`, from
/// `base` to the new status, named as `name`.
pub(crate) struct Delivery<S> {
    pub(crate) subscriber: S,
    pub(crate) hashx: HashX,
    pub(crate) name: ScriptName,
    pub(crate) base: StatusPrint,
}

/// An outpoint status change to deliver: to `subscriber`, for `outpoint`,
/// from `base` to the new status.
pub(crate) struct OutpointDelivery<S> {
    pub(crate) subscriber: S,
    pub(crate) outpoint: OutPoint,
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

/// Splits a script hash (internal byte order) into hashX and the remaining bytes.
pub(crate) fn split_scripthash(hash: &[u8; 32]) -> (HashX, [u8; 32 - HASHX_LEN]) {
    let mut rest = [0u8; 32 - HASHX_LEN];
    rest.copy_from_slice(&hash[HASHX_LEN..]);
    (HashX::from_scripthash(hash), rest)
}

pub(crate) struct SubscriptionIndex<S> {
    scripts: Scripts<S>,
    /// Scripts whose last status involved the mempool.
    mempool_scripts: HashSet<HashX>,
    outpoints: HashMap<OutPoint, OutpointEntry<S>>,
    /// Outpoints whose last status involved the mempool.
    mempool_outpoints: HashSet<OutPoint>,
    /// Aliases other than the entry's canonical scripthash spelling, by
    /// session: only of entries marked unusual in [`Scripts`].
    aliases: HashMap<(SessionId, HashX), Alias>,
    per_group: HashMap<IpNetwork, usize>,
    header_subscribers: HashMap<SessionId, S>,
    /// Sessions that asked for noise pings.
    noise: HashMap<SessionId, S>,
    /// Script and outpoint subscriptions.
    total: usize,
}

impl<S> Default for SubscriptionIndex<S> {
    fn default() -> Self {
        SubscriptionIndex {
            scripts: Scripts::default(),
            mempool_scripts: HashSet::default(),
            outpoints: HashMap::default(),
            mempool_outpoints: HashSet::default(),
            aliases: HashMap::default(),
            per_group: HashMap::default(),
            header_subscribers: HashMap::default(),
            noise: HashMap::default(),
            total: 0,
        }
    }
}

/// The outcome of [`SubscriptionIndex::subscribe`] (`D`: [`Delivery`]) or
/// [`SubscriptionIndex::subscribe_outpoint`] (`D`: [`OutpointDelivery`]).
pub(crate) struct Subscribed<D> {
    /// Other subscribers that must be sent the new status (it differed from the entry's).
    pub(crate) deliveries: Vec<D>,
}

/// Keeps `set` ∋ `key` exactly when `present`.
fn mark<K: Eq + std::hash::Hash>(set: &mut HashSet<K>, key: K, present: bool) {
    if present {
        set.insert(key);
    } else {
        set.remove(&key);
    }
}

/// The keys to recompute for an event: `touched ∩ subscribed` (iterating
/// the smaller side), plus, on a tip change, every key of `mempool`.
fn targets_of<K: Copy + Eq + std::hash::Hash, V>(
    subscribed: &HashMap<K, V>,
    mempool: &HashSet<K>,
    touched: &HashSet<K>,
    tip_changed: bool,
) -> Vec<K> {
    let mut out: Vec<K> = if touched.len() <= subscribed.len() {
        touched
            .iter()
            .filter(|k| subscribed.contains_key(*k))
            .copied()
            .collect()
    } else {
        subscribed
            .keys()
            .filter(|k| touched.contains(*k))
            .copied()
            .collect()
    };
    if tip_changed {
        out.extend(mempool.iter().filter(|k| !touched.contains(*k)).copied());
    }
    out
}

impl<S: Subscriber> SubscriptionIndex<S> {
    /// Total script and outpoint subscriptions.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Distinct scripts subscribed.
    pub(crate) fn distinct(&self) -> usize {
        self.scripts.len()
    }

    /// Distinct outpoints subscribed.
    pub(crate) fn distinct_outpoints(&self) -> usize {
        self.outpoints.len()
    }

    pub(crate) fn header_subscriber_count(&self) -> usize {
        self.header_subscribers.len()
    }

    pub(crate) fn is_subscribed(&self, id: SessionId, hashx: &HashX) -> bool {
        self.scripts
            .find(hashx)
            .is_some_and(|slot| self.scripts.contains_subscriber(slot, id))
    }

    /// Checks the limits for one more script subscription of `id`, which
    /// holds `subs`.
    pub(crate) fn check_limits(
        &self,
        subs: &SessionSubs,
        id: SessionId,
        group: Option<IpNetwork>,
        hashx: &HashX,
        limits: SubLimits,
    ) -> Result<(), Error> {
        self.check_new(subs, group, self.is_subscribed(id, hashx), limits)
    }

    /// Checks the limits for one more outpoint subscription of a session
    /// that holds `subs`.
    pub(crate) fn check_outpoint_limits(
        &self,
        subs: &SessionSubs,
        group: Option<IpNetwork>,
        outpoint: &OutPoint,
        limits: SubLimits,
    ) -> Result<(), Error> {
        self.check_new(subs, group, subs.has_outpoint(outpoint), limits)
    }

    fn check_new(
        &self,
        subs: &SessionSubs,
        group: Option<IpNetwork>,
        already: bool,
        limits: SubLimits,
    ) -> Result<(), Error> {
        if already {
            return Ok(());
        }
        let refuse = |scope, max| Err(Error::SubscriptionLimit { scope, max });
        if let Some(max) = limits.per_session
            && subs.count() >= max
        {
            return refuse(SubscriptionScope::Session, max);
        }
        if let (Some(max), Some(group)) = (limits.per_group, group)
            && self.per_group.get(&group).copied().unwrap_or(0) >= max
        {
            return refuse(SubscriptionScope::Group, max);
        }
        // The script slab's slots are `u32`: whatever the configured limit,
        // the index holds fewer than 2^32 subscriptions (so fewer distinct
        // scripts), and a slot can always be numbered.
        let max = limits
            .global
            .map_or(MAX_SUBSCRIPTIONS, |max| max.min(MAX_SUBSCRIPTIONS));
        if self.total >= max {
            return refuse(SubscriptionScope::Global, max);
        }
        Ok(())
    }

    /// Counts one new subscription of a session in `group`.
    fn count_new(&mut self, group: Option<IpNetwork>) {
        self.total += 1;
        if let Some(group) = group {
            *self.per_group.entry(group).or_insert(0) += 1;
        }
    }

    /// Subscribes `subscriber` (which holds `subs`, and is in `group`) to
    /// the script `hashx` (the rest of its scripthash: `rest`), named as
    /// `alias`, with the freshly computed status `status` (`mempool`:
    /// whether it involves unconfirmed transactions). If the entry held a
    /// different status, the other subscribers are returned to be sent the
    /// new one. A session holds one subscription per script: subscribing
    /// again (by either alias) keeps it and makes `alias` the one it is
    /// notified with.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn subscribe(
        &mut self,
        subs: &mut SessionSubs,
        subscriber: S,
        group: Option<IpNetwork>,
        hashx: HashX,
        rest: [u8; 32 - HASHX_LEN],
        alias: Alias,
        status: StatusPrint,
        mempool: bool,
        limits: SubLimits,
    ) -> Result<Subscribed<Delivery<S>>, Error> {
        let id = subscriber.id();
        self.check_limits(subs, id, group, &hashx, limits)?;
        let mut deliveries = Vec::new();
        let slot = match self.scripts.find(&hashx) {
            Some(slot) => {
                let base = self.scripts.get(slot).status;
                if base != status {
                    self.scripts.for_each_subscriber(slot, |other| {
                        if other.id() != id {
                            deliveries.push(Delivery {
                                subscriber: other.clone(),
                                hashx,
                                name: ScriptName::Canonical([0; 32]),
                                base,
                            });
                        }
                    });
                    self.scripts.get_mut(slot).status = status;
                }
                self.scripts.insert_subscriber(slot, subscriber);
                slot
            }
            None => self.scripts.insert(hashx, rest, status, subscriber),
        };
        let entry = self.scripts.get(slot);
        let canonical = match &alias {
            Alias::ScriptHash(text) => {
                text.len() == 64
                    && text
                        .bytes()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                    && entry.rest() == rest
            }
            Alias::ScriptPubKey(_) => false,
        };
        if canonical {
            // Only an unusual entry has per-session aliases.
            if self.scripts.unusual(slot) {
                self.aliases.remove(&(id, hashx));
            }
        } else {
            self.scripts.mark_unusual(slot);
            self.aliases.insert((id, hashx), alias);
        }
        mark(&mut self.mempool_scripts, hashx, mempool);
        if subs.insert_script(slot) {
            self.count_new(group);
        }
        self.fill_aliases(slot, &hashx, &mut deliveries);
        Ok(Subscribed { deliveries })
    }

    /// Subscribes `subscriber` (which holds `subs`, and is in `group`) to
    /// `outpoint` with the freshly computed status `status` (`mempool`:
    /// whether it involves unconfirmed transactions). If the entry held a
    /// different status, the other subscribers are returned to be sent the
    /// new one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn subscribe_outpoint(
        &mut self,
        subs: &mut SessionSubs,
        subscriber: S,
        group: Option<IpNetwork>,
        outpoint: OutPoint,
        status: StatusPrint,
        mempool: bool,
        limits: SubLimits,
    ) -> Result<Subscribed<OutpointDelivery<S>>, Error> {
        let id = subscriber.id();
        self.check_outpoint_limits(subs, group, &outpoint, limits)?;
        let mut deliveries = Vec::new();
        match self.outpoints.entry(outpoint) {
            hashbrown::hash_map::Entry::Occupied(occupied) => {
                let entry = occupied.into_mut();
                if entry.status != status {
                    let base = entry.status;
                    entry.subscribers.for_each(|other| {
                        if other.id() != id {
                            deliveries.push(OutpointDelivery {
                                subscriber: other.clone(),
                                outpoint,
                                base,
                            });
                        }
                    });
                    entry.status = status;
                }
                entry.mempool = mempool;
                entry.subscribers.insert(subscriber);
            }
            hashbrown::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(OutpointEntry {
                    status,
                    mempool,
                    subscribers: Subscribers::One(subscriber),
                });
            }
        }
        mark(&mut self.mempool_outpoints, outpoint, mempool);
        if subs.insert_outpoint(outpoint) {
            self.count_new(group);
        }
        Ok(Subscribed { deliveries })
    }

    /// Drops subscriber `id` of the script at `slot` (and its alias), and
    /// the entry if it was the last.
    fn drop_subscriber(&mut self, id: SessionId, slot: u32) {
        let hashx = self.scripts.get(slot).hashx();
        if self.scripts.unusual(slot) {
            self.aliases.remove(&(id, hashx));
        }
        if self.scripts.remove_subscriber(slot, id) {
            self.mempool_scripts.remove(&hashx);
        }
    }

    fn drop_outpoint_subscriber(&mut self, id: SessionId, outpoint: &OutPoint) {
        if let Some(entry) = self.outpoints.get_mut(outpoint)
            && entry.subscribers.contains(id)
            && entry.subscribers.remove(id)
        {
            self.outpoints.remove(outpoint);
            self.mempool_outpoints.remove(outpoint);
        }
    }

    /// Counts one subscription of a session in `group` less.
    fn count_removed(&mut self, group: Option<IpNetwork>) {
        self.total -= 1;
        if let Some(group) = group {
            self.decrement_group(group, 1);
        }
    }

    /// Unsubscribes session `id` (which holds `subs`, and is in `group`)
    /// from a script (however it was named); returns the session's
    /// remaining count, or `None` if it was not subscribed.
    pub(crate) fn unsubscribe(
        &mut self,
        subs: &mut SessionSubs,
        id: SessionId,
        group: Option<IpNetwork>,
        hashx: &HashX,
    ) -> Option<usize> {
        let slot = self.scripts.find(hashx)?;
        if !subs.remove_script(slot) {
            return None;
        }
        self.count_removed(group);
        self.drop_subscriber(id, slot);
        Some(subs.count())
    }

    /// Unsubscribes session `id` (which holds `subs`, and is in `group`)
    /// from an outpoint; returns the session's remaining count, or `None`
    /// if it was not subscribed.
    pub(crate) fn unsubscribe_outpoint(
        &mut self,
        subs: &mut SessionSubs,
        id: SessionId,
        group: Option<IpNetwork>,
        outpoint: &OutPoint,
    ) -> Option<usize> {
        if !subs.remove_outpoint(outpoint) {
            return None;
        }
        self.count_removed(group);
        self.drop_outpoint_subscriber(id, outpoint);
        Some(subs.count())
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
        self.header_subscribers.insert(id, subscriber).is_none()
    }

    /// Undoes a header subscription; returns whether the session was subscribed.
    pub(crate) fn unsubscribe_headers(&mut self, id: SessionId) -> bool {
        self.header_subscribers.remove(&id).is_some()
    }

    /// Every header subscriber.
    pub(crate) fn header_subscribers(&self) -> Vec<S> {
        self.header_subscribers.values().cloned().collect()
    }

    /// Turns noise pings on or off for a session; returns whether it changed.
    pub(crate) fn set_noise(&mut self, subscriber: S, on: bool) -> bool {
        let id = subscriber.id();
        if on {
            self.noise.insert(id, subscriber).is_none()
        } else {
            self.noise.remove(&id).is_some()
        }
    }

    /// Every session that asked for noise pings.
    pub(crate) fn noise_sessions(&self) -> Vec<S> {
        self.noise.values().cloned().collect()
    }

    /// Drops every subscription of session `id` (which held `subs`, and is
    /// in `group`).
    pub(crate) fn remove_session(&mut self, subs: SessionSubs, id: SessionId, group: Option<IpNetwork>) {
        if !self.header_subscribers.is_empty() {
            self.header_subscribers.remove(&id);
        }
        if !self.noise.is_empty() {
            self.noise.remove(&id);
        }
        let count = subs.count();
        if count == 0 {
            return;
        }
        self.total -= count;
        if let Some(group) = group {
            self.decrement_group(group, count);
        }
        for &slot in subs.scripts() {
            self.drop_subscriber(id, slot);
        }
        for outpoint in subs.outpoints() {
            self.drop_outpoint_subscriber(id, outpoint);
        }
    }

    /// The scripts to recompute for an event: `touched ∩ subscribed`
    /// (iterating the smaller side), plus, on a tip change, every script
    /// whose last status involved the mempool.
    #[cfg(test)]
    pub(crate) fn targets(&self, touched: &HashSet<HashX>, tip_changed: bool) -> Vec<HashX> {
        self.targets_at(touched, tip_changed).0
    }

    /// [`Self::targets`], with the slot each was found at (for
    /// [`Self::update_at`]; [`NO_SLOT`] if none).
    pub(crate) fn targets_at(&self, touched: &HashSet<HashX>, tip_changed: bool) -> (Vec<HashX>, Vec<u32>) {
        let most =
            touched.len().min(self.scripts.len()) + usize::from(tip_changed) * self.mempool_scripts.len();
        let mut hashxs = Vec::with_capacity(most);
        let mut slots = Vec::with_capacity(most);
        if touched.len() <= self.scripts.len() {
            // In groups: each group's table lines and entries are read
            // first (their cache misses overlap), then looked up.
            const GROUP: usize = 64;
            let mut group: Vec<(&HashX, u64)> = Vec::with_capacity(touched.len().min(GROUP));
            let mut touched = touched.iter().peekable();
            while touched.peek().is_some() {
                group.clear();
                group.extend(touched.by_ref().take(GROUP).map(|h| (h, self.scripts.hash_of(h))));
                for &(_, hash) in &group {
                    self.scripts.warm_find(hash);
                }
                for &(hashx, hash) in &group {
                    if let Some(slot) = self.scripts.find_hashed(hashx, hash) {
                        hashxs.push(*hashx);
                        slots.push(slot);
                    }
                }
            }
        } else {
            for slot in self.scripts.slots() {
                let hashx = self.scripts.get(slot).hashx();
                if touched.contains(&hashx) {
                    hashxs.push(hashx);
                    slots.push(slot);
                }
            }
        }
        if tip_changed {
            for hashx in self.mempool_scripts.iter().filter(|k| !touched.contains(*k)) {
                hashxs.push(*hashx);
                slots.push(self.scripts.find(hashx).unwrap_or(NO_SLOT));
            }
        }
        (hashxs, slots)
    }

    /// The outpoints to recompute for an event, as [`Self::targets`].
    pub(crate) fn outpoint_targets(&self, touched: &HashSet<OutPoint>, tip_changed: bool) -> Vec<OutPoint> {
        targets_of(&self.outpoints, &self.mempool_outpoints, touched, tip_changed)
    }

    /// Records a newly computed status. If it differs from the entry's, the
    /// entry takes it and every subscriber is returned to be sent it
    /// (test support: a pass uses [`Self::update_at`]).
    #[cfg(test)]
    pub(crate) fn update(&mut self, hashx: &HashX, status: StatusPrint, mempool: bool) -> Vec<Delivery<S>> {
        let mut deliveries = Vec::new();
        self.update_at(hashx, NO_SLOT, status, mempool, &mut deliveries);
        deliveries
    }

    /// Reads the entry of a script [`Self::targets_at`] found at `slot`,
    /// and its subscriber ([`Subscriber::warm`]), changing nothing: a pass
    /// calls it for a batch before [`Self::update_at`] so that their cache
    /// misses overlap.
    pub(crate) fn warm(&self, hashx: &HashX, slot: u32) {
        if let Some(slot) = self.scripts.check(slot, hashx) {
            self.scripts.warm(slot);
        }
    }

    /// [`Self::update`] for a script [`Self::targets_at`] found at `slot`
    /// (checked again, and looked up if it no longer holds the script),
    /// appending the deliveries to `out`. Returns how many it appended.
    #[cfg(test)]
    pub(crate) fn update_at(
        &mut self,
        hashx: &HashX,
        slot: u32,
        status: StatusPrint,
        mempool: bool,
        out: &mut Vec<Delivery<S>>,
    ) -> usize {
        let Some((slot, base)) = self.record_at(hashx, slot, status, mempool) else {
            return 0;
        };
        let start = out.len();
        self.for_each_delivery(slot, hashx, |subscriber, name| {
            out.push(Delivery {
                subscriber: subscriber.clone(),
                hashx: *hashx,
                name,
                base,
            })
        });
        out.len() - start
    }

    /// Records a newly computed status of a script [`Self::targets_at`]
    /// found at `slot` (checked again, and looked up if it no longer holds
    /// the script). If it differs from the entry's, the entry takes it and
    /// this returns the entry's slot and the status it held (what the
    /// subscribers were sent last), for [`Self::for_each_delivery`].
    pub(crate) fn record_at(
        &mut self,
        hashx: &HashX,
        slot: u32,
        status: StatusPrint,
        mempool: bool,
    ) -> Option<(u32, StatusPrint)> {
        let slot = self
            .scripts
            .check(slot, hashx)
            .or_else(|| self.scripts.find(hashx))?;
        mark(&mut self.mempool_scripts, *hashx, mempool);
        let entry = self.scripts.get_mut(slot);
        if entry.status == status {
            return None;
        }
        let base = entry.status;
        entry.status = status;
        Some((slot, base))
    }

    /// Calls `f` with each subscriber of `hashx`'s entry at `slot` (as
    /// [`Self::record_at`] gave it) and the name it subscribed under.
    pub(crate) fn for_each_delivery(&self, slot: u32, hashx: &HashX, mut f: impl FnMut(&S, ScriptName)) {
        let hash = self.scripts.get(slot).scripthash();
        let unusual = self.scripts.unusual(slot);
        self.scripts.for_each_subscriber(slot, |subscriber| {
            f(subscriber, self.name_in(unusual, subscriber, hashx, hash))
        });
    }

    /// As [`Self::update`], for an outpoint.
    pub(crate) fn update_outpoint(
        &mut self,
        outpoint: &OutPoint,
        status: StatusPrint,
        mempool: bool,
    ) -> Vec<OutpointDelivery<S>> {
        let Some(entry) = self.outpoints.get_mut(outpoint) else {
            return Vec::new();
        };
        if mempool != entry.mempool {
            entry.mempool = mempool;
            mark(&mut self.mempool_outpoints, *outpoint, mempool);
        }
        if entry.status == status {
            return Vec::new();
        }
        let base = entry.status;
        entry.status = status;
        let mut deliveries = Vec::with_capacity(entry.subscribers.len());
        entry.subscribers.for_each(|s| {
            deliveries.push(OutpointDelivery {
                subscriber: s.clone(),
                outpoint: *outpoint,
                base,
            })
        });
        deliveries
    }

    /// Sets each delivery's name, as [`Self::for_each_delivery`] names
    /// them.
    fn fill_aliases(&self, slot: u32, hashx: &HashX, deliveries: &mut [Delivery<S>]) {
        let hash = self.scripts.get(slot).scripthash();
        let unusual = self.scripts.unusual(slot);
        for delivery in deliveries {
            delivery.name = self.name_in(unusual, &delivery.subscriber, hashx, hash);
        }
    }

    /// The name `subscriber` gets `hashx` (scripthash `hash`) under: the
    /// canonical scripthash (its text is built at delivery), unless some
    /// subscriber of the script used another spelling (`unusual`), then the
    /// subscriber's own. Its id (a read of its state, likely a cache miss
    /// in a notification pass) is read only then.
    fn name_in(&self, unusual: bool, subscriber: &S, hashx: &HashX, hash: [u8; 32]) -> ScriptName {
        match unusual {
            true => self.name_of(subscriber.id(), hashx, hash),
            false => ScriptName::Canonical(hash),
        }
    }

    /// How session `id` named `hashx` (scripthash `hash`).
    fn name_of(&self, id: SessionId, hashx: &HashX, hash: [u8; 32]) -> ScriptName {
        match self.aliases.get(&(id, *hashx)) {
            Some(alias) => ScriptName::Alias(alias.clone()),
            None => ScriptName::Canonical(hash),
        }
    }

    /// The status fingerprint the entry holds (test support).
    #[cfg(test)]
    pub(crate) fn status_of(&self, hashx: &HashX) -> Option<StatusPrint> {
        self.scripts.find(hashx).map(|slot| self.scripts.get(slot).status)
    }

    /// The status fingerprint the outpoint's entry holds (test support).
    #[cfg(test)]
    pub(crate) fn outpoint_status_of(&self, outpoint: &OutPoint) -> Option<StatusPrint> {
        self.outpoints.get(outpoint).map(|e| e.status)
    }

    /// Checks every internal count against a recount, with every session's
    /// id, group and subscriptions (test support).
    #[cfg(test)]
    pub(crate) fn check_consistency<'a>(
        &self,
        sessions: impl IntoIterator<Item = (SessionId, Option<IpNetwork>, &'a SessionSubs)>,
    ) {
        fn check_set<K: Copy + Eq + std::hash::Hash>(set: &KeySet<K>) {
            match set {
                KeySet::Small(list) => {
                    assert!(list.len() <= SMALL_SCRIPTS);
                    let distinct: HashSet<&K> = list.iter().collect();
                    assert_eq!(distinct.len(), list.len());
                }
                KeySet::Large(large) => assert!(large.len() > SMALL_SCRIPTS / 2),
            }
            assert_eq!(set.iter().count(), set.len());
        }
        let mut total = 0;
        let mut per_group: HashMap<IpNetwork, usize> = HashMap::default();
        let mut aliases = 0;
        for (id, group, subs) in sessions {
            match subs {
                SessionSubs::Scripts(list) => check_set(&KeySet::Small(list.clone())),
                SessionSubs::Mixed(mixed) => {
                    check_set(&mixed.scripts);
                    check_set(&mixed.outpoints);
                    assert!(
                        mixed.outpoints.len() > 0 || matches!(mixed.scripts, KeySet::Large(_)),
                        "a mixed form that is not needed is kept"
                    );
                }
            }
            total += subs.count();
            if let Some(group) = group {
                *per_group.entry(group).or_insert(0) += subs.count();
            }
            for &slot in subs.scripts() {
                assert!(self.scripts.contains_subscriber(slot, id));
                let hashx = self.scripts.get(slot).hashx();
                if self.aliases.contains_key(&(id, hashx)) {
                    assert!(self.scripts.unusual(slot), "an alias of a usual entry");
                    aliases += 1;
                }
            }
            for outpoint in subs.outpoints() {
                assert!(self.outpoints[outpoint].subscribers.contains(id));
            }
        }
        assert_eq!(aliases, self.aliases.len(), "an alias of no subscription");
        per_group.retain(|_, n| *n > 0);
        assert_eq!(total, self.total);
        assert_eq!(per_group, self.per_group);
        self.scripts.check_consistency();
        let mut from_entries = 0;
        for slot in self.scripts.slots() {
            from_entries += self.scripts.subscriber_count(slot);
        }
        assert_eq!(
            self.mempool_scripts.len(),
            self.mempool_scripts
                .iter()
                .filter(|h| self.scripts.find(h).is_some())
                .count()
        );
        for (outpoint, entry) in &self.outpoints {
            from_entries += entry.subscribers.len();
            assert_eq!(entry.mempool, self.mempool_outpoints.contains(outpoint));
        }
        assert_eq!(
            self.mempool_outpoints.len(),
            self.mempool_outpoints
                .iter()
                .filter(|o| self.outpoints.contains_key(*o))
                .count()
        );
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

    /// The index with each session's [`SessionSubs`] and group beside it,
    /// as the manager keeps them in its sessions: the old by-id interface.
    #[derive(Default)]
    struct TestIndex {
        index: SubscriptionIndex<Sub>,
        sessions: std::collections::HashMap<u64, (Option<IpNetwork>, SessionSubs)>,
    }

    impl std::ops::Deref for TestIndex {
        type Target = SubscriptionIndex<Sub>;
        fn deref(&self) -> &Self::Target {
            &self.index
        }
    }

    impl std::ops::DerefMut for TestIndex {
        fn deref_mut(&mut self) -> &mut Self::Target {
            &mut self.index
        }
    }

    impl TestIndex {
        #[allow(clippy::too_many_arguments)]
        fn subscribe(
            &mut self,
            subscriber: Sub,
            group: Option<IpNetwork>,
            hashx: HashX,
            rest: [u8; 32 - HASHX_LEN],
            alias: Alias,
            status: StatusPrint,
            mempool: bool,
            limits: SubLimits,
        ) -> Result<Subscribed<Delivery<Sub>>, Error> {
            let (kept, subs) = self.sessions.entry(subscriber.0).or_default();
            *kept = group;
            self.index.subscribe(
                subs, subscriber, group, hashx, rest, alias, status, mempool, limits,
            )
        }

        /// Subscribes by a scripthash string.
        fn subscribe_alias(
            &mut self,
            subscriber: Sub,
            group: Option<IpNetwork>,
            alias: &str,
            status: StatusPrint,
            mempool: bool,
            limits: SubLimits,
        ) -> Result<Subscribed<Delivery<Sub>>, Error> {
            let (hashx, rest) = parse_scripthash(alias).unwrap();
            let alias = Alias::ScriptHash(alias.to_owned());
            self.subscribe(subscriber, group, hashx, rest, alias, status, mempool, limits)
        }

        fn subscribe_outpoint(
            &mut self,
            subscriber: Sub,
            group: Option<IpNetwork>,
            outpoint: OutPoint,
            status: StatusPrint,
            mempool: bool,
            limits: SubLimits,
        ) -> Result<Subscribed<OutpointDelivery<Sub>>, Error> {
            let (kept, subs) = self.sessions.entry(subscriber.0).or_default();
            *kept = group;
            self.index
                .subscribe_outpoint(subs, subscriber, group, outpoint, status, mempool, limits)
        }

        fn unsubscribe(&mut self, id: SessionId, hashx: &HashX) -> Option<usize> {
            let (group, subs) = self.sessions.get_mut(&id.0)?;
            self.index.unsubscribe(subs, id, *group, hashx)
        }

        fn unsubscribe_outpoint(&mut self, id: SessionId, outpoint: &OutPoint) -> Option<usize> {
            let (group, subs) = self.sessions.get_mut(&id.0)?;
            self.index.unsubscribe_outpoint(subs, id, *group, outpoint)
        }

        fn remove_session(&mut self, id: SessionId) {
            let (group, subs) = self.sessions.remove(&id.0).unwrap_or_default();
            self.index.remove_session(subs, id, group);
        }

        fn session_count(&self, id: SessionId) -> usize {
            self.sessions.get(&id.0).map_or(0, |(_, subs)| subs.count())
        }

        fn check_consistency(&self) {
            self.index.check_consistency(
                self.sessions
                    .iter()
                    .map(|(id, (group, subs))| (SessionId(*id), *group, subs)),
            );
        }
    }

    #[test]
    fn a_changed_status_on_subscribe_goes_to_the_others() {
        let mut index = TestIndex::default();
        let limits = SubLimits::default();
        index
            .subscribe_alias(Sub(1), None, &alias(1), 10, false, limits)
            .unwrap();
        let same = index
            .subscribe_alias(Sub(2), None, &alias(1), 10, false, limits)
            .unwrap();
        assert!(same.deliveries.is_empty());
        let changed = index
            .subscribe_alias(Sub(3), None, &alias(1), 11, true, limits)
            .unwrap();
        let mut to: Vec<u64> = changed.deliveries.iter().map(|d| d.subscriber.0).collect();
        to.sort();
        assert_eq!(to, vec![1, 2]);
        assert_eq!(changed.deliveries[0].name.alias(), Alias::ScriptHash(alias(1)));
        assert_eq!(changed.deliveries[0].base, 10);
        index.check_consistency();
    }

    #[test]
    fn unusual_aliases_are_kept_per_session() {
        let mut index = TestIndex::default();
        let upper = alias(0xab).to_uppercase();
        index
            .subscribe_alias(Sub(1), None, &alias(0xab), 0, false, SubLimits::default())
            .unwrap();
        index
            .subscribe_alias(Sub(2), None, &upper, 0, false, SubLimits::default())
            .unwrap();
        let deliveries = index.update(&hx(0xab), 5, false);
        let mut aliases: Vec<(u64, Alias)> = deliveries
            .into_iter()
            .map(|d| (d.subscriber.0, d.name.alias()))
            .collect();
        aliases.sort();
        assert_eq!(
            aliases,
            vec![(1, Alias::ScriptHash(alias(0xab))), (2, Alias::ScriptHash(upper))]
        );
    }

    #[test]
    fn limits_refuse_with_their_scope() {
        let mut index = TestIndex::default();
        let group: IpNetwork = "8.8.8.0/24".parse().unwrap();
        let limits = SubLimits {
            per_session: Some(2),
            per_group: Some(3),
            global: Some(4),
        };
        index
            .subscribe_alias(Sub(1), Some(group), &alias(1), 0, false, limits)
            .unwrap();
        index
            .subscribe_alias(Sub(1), Some(group), &alias(2), 0, false, limits)
            .unwrap();
        // Re-subscribing is not a new subscription.
        index
            .subscribe_alias(Sub(1), Some(group), &alias(2), 0, false, limits)
            .unwrap();
        let err = index
            .subscribe_alias(Sub(1), Some(group), &alias(3), 0, false, limits)
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
            .subscribe_alias(Sub(2), Some(group), &alias(3), 0, false, limits)
            .unwrap();
        let err = index
            .subscribe_alias(Sub(2), Some(group), &alias(4), 0, false, limits)
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
            .subscribe_alias(Sub(3), None, &alias(4), 0, false, limits)
            .unwrap();
        let err = index
            .subscribe_alias(Sub(4), None, &alias(5), 0, false, limits)
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
        let mut index = TestIndex::default();
        for n in 0..10 {
            index
                .subscribe_alias(Sub(1), None, &alias(n), 0, n == 9, SubLimits::default())
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
        let mut set = KeySet::default();
        let n = SMALL_SCRIPTS as u8;
        for i in 0..=n {
            assert!(set.insert(hx(i)));
            assert!(!set.insert(hx(i)));
            assert_eq!(matches!(set, KeySet::Large(_)), i == n, "after {i}");
        }
        assert_eq!(set.len(), SMALL_SCRIPTS + 1);
        // Down to half the threshold it stays a set, then becomes a list.
        for i in 0..=n / 2 {
            assert!(set.remove(&hx(i)));
            assert!(!set.remove(&hx(i)));
            assert_eq!(matches!(set, KeySet::Small(_)), i == n / 2, "after {i}");
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
            let mut index = TestIndex::default();
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
                        let out = index.subscribe_alias(Sub(s), Some(group), &alias(h), st, st == 2, SubLimits::default()).unwrap();
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
                let mut subscribed = std::collections::HashSet::new();
                let mut mempool = std::collections::HashSet::new();
                for (s, subs) in &model {
                    prop_assert_eq!(index.session_count(SessionId(*s)), subs.len());
                    for (h, st) in subs {
                        prop_assert_eq!(index.status_of(&hx(*h)), Some(*st));
                        prop_assert!(index.is_subscribed(SessionId(*s), &hx(*h)));
                        subscribed.insert(*h);
                        if *st == 2 {
                            mempool.insert(*h);
                        }
                    }
                }
                prop_assert_eq!(index.distinct(), subscribed.len());
                // Both sides of the intersection: a few touched scripts, and more than are subscribed.
                for step in [5, 1] {
                    let touched: HashSet<HashX> = (0..SCRIPTS).step_by(step).map(hx).collect();
                    for tip_changed in [false, true] {
                        let mut got = index.targets(&touched, tip_changed);
                        got.sort();
                        let mut expect: Vec<HashX> = subscribed
                            .iter()
                            .filter(|h| *h % step as u8 == 0 || (tip_changed && mempool.contains(*h)))
                            .map(|h| hx(*h))
                            .collect();
                        expect.sort();
                        prop_assert_eq!(got, expect);
                    }
                }
                let total: usize = model.values().map(|m| m.len()).sum();
                prop_assert_eq!(index.total(), total);
            }
        }
    }

    fn op_of(n: u8) -> OutPoint {
        OutPoint {
            txid: crate::types::TxHash([n / 4; 32]),
            vout: u32::from(n % 4),
        }
    }

    #[test]
    fn outpoints_share_entries_and_count_toward_limits() {
        let mut index = TestIndex::default();
        let group: IpNetwork = "8.8.8.0/24".parse().unwrap();
        let limits = SubLimits {
            per_session: Some(2),
            per_group: None,
            global: None,
        };
        index
            .subscribe_alias(Sub(1), Some(group), &alias(1), 0, false, limits)
            .unwrap();
        index
            .subscribe_outpoint(Sub(1), Some(group), op_of(1), 5, true, limits)
            .unwrap();
        let err = index
            .subscribe_outpoint(Sub(1), Some(group), op_of(2), 5, false, limits)
            .err()
            .unwrap();
        assert!(matches!(
            err,
            Error::SubscriptionLimit {
                scope: SubscriptionScope::Session,
                max: 2
            }
        ));
        // Re-subscribing is not a new subscription.
        index
            .subscribe_outpoint(Sub(1), Some(group), op_of(1), 5, true, limits)
            .unwrap();
        assert_eq!(index.session_count(SessionId(1)), 2);
        let other = index
            .subscribe_outpoint(Sub(2), None, op_of(1), 6, false, limits)
            .unwrap();
        assert_eq!(other.deliveries.len(), 1);
        assert_eq!(other.deliveries[0].base, 5);
        assert_eq!(index.distinct_outpoints(), 1);
        assert_eq!(index.total(), 3);
        let touched: HashSet<OutPoint> = [op_of(1), op_of(9)].into_iter().collect();
        assert_eq!(index.outpoint_targets(&touched, false), vec![op_of(1)]);
        assert!(index.outpoint_targets(&HashSet::default(), true).is_empty());
        assert_eq!(index.update_outpoint(&op_of(1), 6, true).len(), 0);
        assert_eq!(index.outpoint_targets(&HashSet::default(), true), vec![op_of(1)]);
        assert_eq!(index.update_outpoint(&op_of(1), 7, false).len(), 2);
        assert_eq!(index.unsubscribe_outpoint(SessionId(1), &op_of(1)), Some(1));
        assert_eq!(index.unsubscribe_outpoint(SessionId(1), &op_of(1)), None);
        index.remove_session(SessionId(2));
        assert_eq!(index.distinct_outpoints(), 0);
        index.check_consistency();
    }

    #[test]
    fn a_script_subscribed_both_ways_is_one_subscription_notified_the_last_way() {
        let mut index = TestIndex::default();
        let limits = SubLimits::default();
        index
            .subscribe_alias(Sub(1), None, &alias(1), 0, false, limits)
            .unwrap();
        let (hashx, rest) = parse_scripthash(&alias(1)).unwrap();
        let spk = Alias::ScriptPubKey("51".into());
        index
            .subscribe(Sub(1), None, hashx, rest, spk.clone(), 0, false, limits)
            .unwrap();
        assert_eq!(index.session_count(SessionId(1)), 1);
        let told = index.update(&hashx, 3, false);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].name.alias(), spk);
        index
            .subscribe_alias(Sub(1), None, &alias(1), 3, false, limits)
            .unwrap();
        assert_eq!(
            index.update(&hashx, 4, false)[0].name.alias(),
            Alias::ScriptHash(alias(1))
        );
        assert_eq!(index.unsubscribe(SessionId(1), &hashx), Some(0));
        index.check_consistency();
    }

    #[derive(Debug, Clone)]
    enum OutpointOp {
        Subscribe(u64, u8, u64),
        Unsubscribe(u64, u8),
        Update(u8, u64),
        SubscribeScript(u64, u8),
        RemoveSession(u64),
    }

    /// Outpoints the outpoint model test uses (a few per transaction).
    const OUTPOINTS: u8 = 24;

    fn outpoint_op() -> impl Strategy<Value = OutpointOp> {
        prop_oneof![
            3 => (0..4u64, 0..OUTPOINTS, 0..3u64).prop_map(|(s, o, st)| OutpointOp::Subscribe(s, o, st)),
            2 => (0..4u64, 0..OUTPOINTS).prop_map(|(s, o)| OutpointOp::Unsubscribe(s, o)),
            3 => (0..OUTPOINTS, 0..3u64).prop_map(|(o, st)| OutpointOp::Update(o, st)),
            1 => (0..4u64, 0..8u8).prop_map(|(s, h)| OutpointOp::SubscribeScript(s, h)),
            1 => (0..4u64).prop_map(OutpointOp::RemoveSession),
        ]
    }

    proptest! {
        /// The outpoint part of the index against a model (per session:
        /// outpoint → last status sent; scripts → count): deliveries go
        /// exactly to subscribers whose status changed, with the status
        /// they had as base; targets are `touched ∩ subscribed` plus the
        /// mempool outpoints on a tip change; the per-session limit counts
        /// scripts and outpoints together.
        #[test]
        fn outpoint_index_matches_a_model(ops in proptest::collection::vec(outpoint_op(), 1..120)) {
            const MAX: usize = 6;
            let limits = SubLimits { per_session: Some(MAX), per_group: None, global: None };
            let mut index = TestIndex::default();
            let mut model: std::collections::HashMap<u64, std::collections::HashMap<u8, u64>> = Default::default();
            let mut scripts: std::collections::HashMap<u64, std::collections::HashSet<u8>> = Default::default();
            let group: IpNetwork = "9.9.9.0/24".parse().unwrap();
            let count = |model: &std::collections::HashMap<u64, std::collections::HashMap<u8, u64>>,
                         scripts: &std::collections::HashMap<u64, std::collections::HashSet<u8>>,
                         s: u64| {
                model.get(&s).map_or(0, |m| m.len()) + scripts.get(&s).map_or(0, |m| m.len())
            };
            for op in ops {
                match op {
                    OutpointOp::Subscribe(s, o, st) => {
                        let known = model.get(&s).is_some_and(|m| m.contains_key(&o));
                        let result = index.subscribe_outpoint(Sub(s), Some(group), op_of(o), st, st == 2, limits);
                        if !known && count(&model, &scripts, s) >= MAX {
                            prop_assert!(result.is_err());
                            continue;
                        }
                        let out = result.unwrap();
                        for d in out.deliveries {
                            prop_assert_ne!(d.subscriber.0, s);
                            let last = model.get_mut(&d.subscriber.0).unwrap().get_mut(&o).unwrap();
                            prop_assert_ne!(*last, st);
                            prop_assert_eq!(d.base, *last);
                            *last = st;
                        }
                        model.entry(s).or_default().insert(o, st);
                        prop_assert_eq!(index.session_count(SessionId(s)), count(&model, &scripts, s));
                    }
                    OutpointOp::Unsubscribe(s, o) => {
                        let was = model.get_mut(&s).and_then(|m| m.remove(&o)).is_some();
                        prop_assert_eq!(index.unsubscribe_outpoint(SessionId(s), &op_of(o)).is_some(), was);
                    }
                    OutpointOp::Update(o, st) => {
                        let mut told: Vec<u64> = index
                            .update_outpoint(&op_of(o), st, st == 2)
                            .into_iter()
                            .map(|d| d.subscriber.0)
                            .collect();
                        told.sort();
                        let mut expect = Vec::new();
                        for (s, subs) in model.iter_mut() {
                            if let Some(last) = subs.get_mut(&o) && *last != st {
                                *last = st;
                                expect.push(*s);
                            }
                        }
                        expect.sort();
                        prop_assert_eq!(told, expect);
                    }
                    OutpointOp::SubscribeScript(s, h) => {
                        let known = scripts.get(&s).is_some_and(|m| m.contains(&h));
                        let result = index.subscribe_alias(Sub(s), Some(group), &alias(h), 0, false, limits);
                        if !known && count(&model, &scripts, s) >= MAX {
                            prop_assert!(result.is_err());
                        } else {
                            prop_assert!(result.is_ok());
                            scripts.entry(s).or_default().insert(h);
                        }
                    }
                    OutpointOp::RemoveSession(s) => {
                        index.remove_session(SessionId(s));
                        model.remove(&s);
                        scripts.remove(&s);
                    }
                }
                index.check_consistency();
                let mut subscribed = std::collections::HashSet::new();
                let mut mempool = std::collections::HashSet::new();
                for (s, subs) in &model {
                    prop_assert_eq!(index.session_count(SessionId(*s)), count(&model, &scripts, *s));
                    for (o, st) in subs {
                        prop_assert_eq!(index.outpoint_status_of(&op_of(*o)), Some(*st));
                        subscribed.insert(*o);
                        if *st == 2 {
                            mempool.insert(*o);
                        }
                    }
                }
                prop_assert_eq!(index.distinct_outpoints(), subscribed.len());
                let touched: HashSet<OutPoint> = (0..OUTPOINTS).step_by(3).map(op_of).collect();
                for tip_changed in [false, true] {
                    let mut got = index.outpoint_targets(&touched, tip_changed);
                    got.sort();
                    let mut expect: Vec<OutPoint> = subscribed
                        .iter()
                        .filter(|o| *o % 3 == 0 || (tip_changed && mempool.contains(*o)))
                        .map(|o| op_of(*o))
                        .collect();
                    expect.sort();
                    prop_assert_eq!(got, expect);
                }
                let total: usize = model.keys().chain(scripts.keys()).collect::<std::collections::HashSet<_>>()
                    .into_iter().map(|s| count(&model, &scripts, *s)).sum();
                prop_assert_eq!(index.total(), total);
            }
        }
    }
}
