//! A session's coalescing outbox: what the manager has to tell the client
//! and the client has not yet been sent.
//!
//! The manager only ever fills it (never awaits the client); the session's
//! delivery future drains it in order: the header, then statuses in the
//! order they were first queued, then noise pings. Pending notifications
//! coalesce: at most one header (the newest), one status per subscribed
//! script or outpoint (the newest) and [`MAX_PENDING_PINGS`] pings, so a
//! client that stops reading holds bounded memory. A status that changes
//! back to what the client already has before it was sent is dropped, so
//! the client never receives the same status twice in a row.
//!
//! Delivery is *peek, send, acknowledge*: a notification leaves the outbox
//! only once [`Outbox::acknowledge`] says its send completed. A delivery
//! future dropped mid-send leaves the notification at the front, and the
//! next delivery future sends it (the newest version of it, if it was
//! replaced meanwhile).

use crate::core::hashing::HashMap;
use crate::core::subscriptions::{Alias, ScriptName};
use crate::types::{
    BlockHash, ExtendedNotification, HashX, Height, Notification, OutPoint, OutpointStatus, encode_hex,
};
use std::collections::VecDeque;
use std::time::Instant;

/// A status as the index stores it: a fingerprint of the status hash (0
/// for "no history").
pub(crate) type StatusPrint = u64;

/// A tip change as the manager counts them: 1 for the first tip recorded,
/// then one more per change. Header notifications carry it so that a
/// client is never sent a header older than, or equal to, one it has.
pub(crate) type TipGeneration = u64;

/// Most noise pings an outbox holds: more are dropped (a client that does
/// not read gains nothing from more noise).
pub(crate) const MAX_PENDING_PINGS: u32 = 4;

/// What a status is about: a script or an outpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StatusKey {
    Script(HashX),
    Outpoint(OutPoint),
}

/// A status as it is sent, kept as bytes: the text (hex) is built when
/// the delivery future takes it ([`Outbox::next`]), so queueing a status
/// allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A script's status (the status hash, `None` for no history), named
    /// as the session named the script.
    Script {
        name: ScriptName,
        status: Option<[u8; 32]>,
    },
    /// An outpoint's status.
    Outpoint {
        outpoint: OutPoint,
        status: OutpointStatus,
    },
}

impl Payload {
    fn to_message(&self) -> Outgoing {
        match self {
            Payload::Script { name, status } => {
                // Lowercase hex, in hash order (not reversed).
                let status = status.as_ref().map(|status| encode_hex(status));
                match name {
                    ScriptName::Canonical(_) | ScriptName::Alias(Alias::ScriptHash(_)) => {
                        Outgoing::Notification(Notification::ScriptHashStatus {
                            alias: name.scripthash_text(),
                            status,
                        })
                    }
                    ScriptName::Alias(Alias::ScriptPubKey(script)) => {
                        Outgoing::Extended(ExtendedNotification::ScriptPubKeyStatus {
                            script: script.clone(),
                            status,
                        })
                    }
                }
            }
            Payload::Outpoint { outpoint, status } => {
                Outgoing::Extended(ExtendedNotification::OutpointStatus {
                    outpoint: *outpoint,
                    status: *status,
                })
            }
        }
    }
}

/// A notification on its way out: through `Transport::send` or
/// `Transport::send_extended`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    Notification(Notification),
    Extended(ExtendedNotification),
}

#[derive(Debug)]
struct PendingStatus {
    payload: Payload,
    /// Fingerprint of `status`.
    print: StatusPrint,
    /// Fingerprint of the status the client has (sent and acknowledged).
    base: StatusPrint,
    /// Changes on every replacement, so an acknowledgement of an older
    /// version does not remove a newer one.
    version: u64,
}

#[derive(Debug)]
struct PendingHeader {
    generation: TipGeneration,
    hash: BlockHash,
    height: Height,
    header: Vec<u8>,
}

/// What a delivery future took to send: acknowledged by [`Outbox::acknowledge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// The pending header of this generation, of the block with this hash.
    Header {
        generation: TipGeneration,
        hash: BlockHash,
    },
    /// The pending status of this script or outpoint, at this version.
    Status {
        key: StatusKey,
        version: u64,
        print: StatusPrint,
    },
    /// One pending noise ping.
    Ping,
}

/// Pending statuses this many or fewer are found by a linear scan of the
/// queue (the common case: one or a few, in one or two cache lines, no
/// hashing); past it, through an index by key.
const SCAN: usize = 8;

/// The pending statuses, in the order first queued, each found by its key.
#[derive(Debug, Default)]
struct Statuses {
    /// In queue order, each with its sequence number (increasing along
    /// the queue, so an index hit is found by binary search).
    queue: VecDeque<(StatusKey, u64, PendingStatus)>,
    next_seq: u64,
    /// Key → sequence number, while the queue is longer than [`SCAN`]
    /// (built past it, dropped again at half of it).
    index: Option<HashMap<StatusKey, u64>>,
}

impl Statuses {
    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn position(&self, key: &StatusKey) -> Option<usize> {
        match &self.index {
            None => self.queue.iter().position(|(k, _, _)| k == key),
            Some(index) => {
                let seq = *index.get(key)?;
                self.queue.binary_search_by_key(&seq, |(_, s, _)| *s).ok()
            }
        }
    }

    fn contains_key(&self, key: &StatusKey) -> bool {
        self.position(key).is_some()
    }

    fn get_mut(&mut self, key: &StatusKey) -> Option<&mut PendingStatus> {
        let at = self.position(key)?;
        self.queue.get_mut(at).map(|(_, _, pending)| pending)
    }

    fn front(&self) -> Option<(StatusKey, &PendingStatus)> {
        self.queue.front().map(|(key, _, pending)| (*key, pending))
    }

    /// Queues a status for a key not queued.
    fn push_back(&mut self, key: StatusKey, pending: PendingStatus) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back((key, seq, pending));
        match &mut self.index {
            Some(index) => {
                index.insert(key, seq);
            }
            None if self.queue.len() > SCAN => {
                self.index = Some(self.queue.iter().map(|(k, s, _)| (*k, *s)).collect());
            }
            None => {}
        }
    }

    fn remove_at(&mut self, at: usize) {
        if let Some((key, _, _)) = self.queue.remove(at)
            && let Some(index) = &mut self.index
        {
            index.remove(&key);
            if self.queue.len() <= SCAN / 2 {
                self.index = None;
            }
        }
    }

    /// Removes `key`'s status; returns whether it was queued.
    fn remove(&mut self, key: &StatusKey) -> bool {
        match self.position(key) {
            Some(at) => {
                self.remove_at(at);
                true
            }
            None => false,
        }
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.index = None;
    }
}

/// The pending notifications of one session, as plain data: the edge
/// (`edge::mailbox`) puts it behind a lock and wakes the delivery future.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    header: Option<PendingHeader>,
    /// The newest header generation the client has or has queued.
    header_seen: TipGeneration,
    /// The block whose header the client has (sent or given in a reply).
    header_has: Option<BlockHash>,
    statuses: Statuses,
    /// Noise pings to send after everything else, and their padding.
    pings: u32,
    ping_padding: usize,
    next_version: u64,
    /// What the delivery future last took and has not acknowledged: it may
    /// be on its way to the client.
    in_flight: Option<Taken>,
    /// When the oldest undelivered notification was queued.
    pending_since: Option<Instant>,
    closed: bool,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.header.is_none() && self.statuses.is_empty() && self.pings == 0
    }

    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    fn is_in_flight(&self, key: &StatusKey) -> bool {
        matches!(self.in_flight, Some(Taken::Status { key: k, .. }) if k == *key)
    }

    fn remove_status(&mut self, key: &StatusKey) {
        self.statuses.remove(key);
        if self.is_empty() {
            self.pending_since = None;
        }
    }

    /// Drops the status at `at` in the queue.
    fn remove_status_at(&mut self, at: usize) {
        self.statuses.remove_at(at);
        if self.is_empty() {
            self.pending_since = None;
        }
    }
}

impl Outbox {
    /// Queues the header of tip `generation` (block `hash`), replacing an
    /// undelivered older one. Returns false, and queues nothing, if the
    /// client has or has queued this generation or a newer one, or already
    /// has this block's header (a pending older header is then dropped).
    pub(crate) fn push_header(
        &mut self,
        generation: TipGeneration,
        hash: BlockHash,
        height: Height,
        header: Vec<u8>,
        now: Instant,
    ) -> bool {
        if self.closed || generation <= self.header_seen {
            return false;
        }
        self.header_seen = generation;
        let header_in_flight = matches!(self.in_flight, Some(Taken::Header { .. }));
        // Back to the block the client has: nothing to send, unless
        // another header may be on its way (then this one follows it).
        if self.header_has == Some(hash) && !header_in_flight {
            self.header = None;
            if self.is_empty() {
                self.pending_since = None;
            }
            return false;
        }
        self.header = Some(PendingHeader {
            generation,
            hash,
            height,
            header,
        });
        self.pending_since.get_or_insert(now);
        true
    }

    /// Records that the client was given the header of tip `generation`
    /// (block `hash`) directly, in a `blockchain.headers.subscribe` reply: a
    /// queued header of that generation or older is dropped, and none that
    /// old, nor of that block, is queued again. If an older header may be
    /// on its way to the client, the given one is queued to follow it (and
    /// dropped at the next peek if that send was abandoned).
    pub(crate) fn header_given(
        &mut self,
        generation: TipGeneration,
        hash: BlockHash,
        height: Height,
        header: &[u8],
    ) {
        let header_in_flight = matches!(self.in_flight, Some(Taken::Header { .. }));
        if self
            .header
            .as_ref()
            .is_some_and(|pending| pending.generation <= generation)
        {
            self.header = header_in_flight.then(|| PendingHeader {
                generation,
                hash,
                height,
                header: header.to_vec(),
            });
            if self.is_empty() {
                self.pending_since = None;
            }
        }
        self.header_seen = self.header_seen.max(generation);
        self.header_has = Some(hash);
    }

    /// Queues a status change from `base` to `print` (sent as `payload`).
    /// A pending status for the same script or outpoint is replaced; if the
    /// result is what the client already has, the pending status is
    /// dropped. Returns true when a notification was added (the delivery
    /// future has something new to wait for).
    pub(crate) fn push_status(
        &mut self,
        key: StatusKey,
        payload: Payload,
        print: StatusPrint,
        base: StatusPrint,
        now: Instant,
    ) -> bool {
        if self.closed {
            return false;
        }
        let version = self.version();
        let in_flight = self.is_in_flight(&key);
        // One lookup.
        match self.statuses.position(&key) {
            Some(at) => {
                let Some((_, _, pending)) = self.statuses.queue.get_mut(at) else {
                    return false;
                };
                if pending.base == print && !in_flight {
                    // Back to what the client has, and not possibly on its
                    // way: nothing to send.
                    self.remove_status_at(at);
                } else {
                    pending.payload = payload;
                    pending.print = print;
                    pending.version = version;
                }
                false
            }
            None if base == print => false,
            None => {
                let pending = PendingStatus {
                    payload,
                    print,
                    base,
                    version,
                };
                self.statuses.push_back(key, pending);
                self.pending_since.get_or_insert(now);
                true
            }
        }
    }

    /// Queues `count` noise pings of `padding` characters, up to
    /// [`MAX_PENDING_PINGS`] pending. Returns true when one was added.
    pub(crate) fn push_pings(&mut self, count: u32, padding: usize, now: Instant) -> bool {
        if self.closed || count == 0 || self.pings >= MAX_PENDING_PINGS {
            return false;
        }
        self.pings = (self.pings + count).min(MAX_PENDING_PINGS);
        self.ping_padding = padding;
        self.pending_since.get_or_insert(now);
        true
    }

    /// Drops a pending header (the header subscription was undone).
    pub(crate) fn forget_header(&mut self) {
        self.header = None;
        if self.is_empty() {
            self.pending_since = None;
        }
    }

    /// Records that the client was given the status `payload` (fingerprint
    /// `print`) for `key` directly, in a subscribe reply: a pending status
    /// for it is dropped, unless it may be on its way to the client, in
    /// which case the given status is sent after it.
    pub(crate) fn status_given(&mut self, key: StatusKey, payload: Payload, print: StatusPrint) {
        let in_flight = self.is_in_flight(&key);
        if !self.statuses.contains_key(&key) {
            return;
        }
        if in_flight {
            // Sent after the one on its way if that one arrives (it is then
            // based on it); dropped at the next peek if that send was abandoned.
            let version = self.version();
            if let Some(pending) = self.statuses.get_mut(&key) {
                pending.payload = payload;
                pending.print = print;
                pending.base = print;
                pending.version = version;
            }
        } else {
            self.remove_status(&key);
        }
    }

    /// Drops a pending status (the script or outpoint was unsubscribed).
    pub(crate) fn forget(&mut self, key: StatusKey) {
        self.remove_status(&key);
    }

    /// Number of undelivered notifications.
    pub(crate) fn len(&self) -> usize {
        self.statuses.len() + usize::from(self.header.is_some()) + self.pings as usize
    }

    /// When the oldest undelivered notification was queued.
    pub(crate) fn pending_since(&self) -> Option<Instant> {
        self.pending_since
    }

    /// The next notification, as a copy: it stays queued until
    /// [`Outbox::acknowledge`]. `None` when nothing is pending or the outbox
    /// is closed.
    ///
    /// A call means that what the previous one returned, if it was not
    /// acknowledged, was abandoned (its delivery future was dropped): what
    /// was kept only to follow it, and now equals what the client has, is
    /// dropped instead of sent.
    pub(crate) fn next(&mut self) -> Option<(Taken, Outgoing)> {
        if self.closed {
            return None;
        }
        self.in_flight = None;
        if self
            .header
            .as_ref()
            .is_some_and(|pending| self.header_has == Some(pending.hash))
        {
            self.header = None;
        }
        if let Some(pending) = &self.header {
            let notification = Outgoing::Notification(Notification::Header {
                height: pending.height,
                header: pending.header.clone(),
            });
            let taken = Taken::Header {
                generation: pending.generation,
                hash: pending.hash,
            };
            self.in_flight = Some(taken);
            return Some((taken, notification));
        }
        while let Some((key, pending)) = self.statuses.front() {
            if pending.print == pending.base {
                self.remove_status_at(0);
                continue;
            }
            let notification = pending.payload.to_message();
            let taken = Taken::Status {
                key,
                version: pending.version,
                print: pending.print,
            };
            self.in_flight = Some(taken);
            return Some((taken, notification));
        }
        if self.pings > 0 {
            self.in_flight = Some(Taken::Ping);
            let ping = ExtendedNotification::Ping {
                padding: self.ping_padding,
            };
            return Some((Taken::Ping, Outgoing::Extended(ping)));
        }
        self.pending_since = None;
        None
    }

    /// Records that the notification `taken` was sent: it leaves the outbox
    /// unless it was replaced while being sent, in which case the
    /// replacement stays, based on what was sent (and is dropped if it
    /// equals it). Restarts the stuck-client clock at `now`.
    pub(crate) fn acknowledge(&mut self, taken: Taken, now: Instant) {
        self.in_flight = None;
        match taken {
            Taken::Header { generation, hash } => {
                self.header_has = Some(hash);
                if self
                    .header
                    .as_ref()
                    .is_some_and(|pending| pending.generation == generation || pending.hash == hash)
                {
                    self.header = None;
                }
            }
            Taken::Status { key, version, print } => {
                if let Some(pending) = self.statuses.get_mut(&key) {
                    if pending.version == version {
                        self.remove_status(&key);
                    } else if pending.print == print {
                        // Replaced by an equal status while being sent.
                        self.remove_status(&key);
                    } else {
                        pending.base = print;
                    }
                }
            }
            Taken::Ping => self.pings = self.pings.saturating_sub(1),
        }
        self.pending_since = if self.is_empty() { None } else { Some(now) };
    }

    /// Drops everything pending; nothing is queued after this.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.header = None;
        self.statuses.clear();
        self.pings = 0;
        self.pending_since = None;
    }

    /// Whether [`Outbox::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hx(n: u8) -> HashX {
        HashX([n; crate::types::HASHX_LEN])
    }

    fn peek(outbox: &mut Outbox) -> Option<(Taken, Notification)> {
        outbox.next().map(|(taken, outgoing)| match outgoing {
            Outgoing::Notification(notification) => (taken, notification),
            Outgoing::Extended(other) => panic!("expected a 1.4 notification, got {other:?}"),
        })
    }

    /// The status a test named `text`: its bytes, then zeros.
    fn status_bytes(text: &str) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        bytes
    }

    /// The name of the status sent ([`status_bytes`] back).
    fn status_of(notification: &Notification) -> Option<String> {
        match notification {
            Notification::ScriptHashStatus { status, .. } => status.as_ref().map(|hex| {
                let bytes: [u8; 32] = crate::types::parse_hex_array(hex).unwrap();
                let text: Vec<u8> = bytes.iter().copied().take_while(|&b| b != 0).collect();
                String::from_utf8(text).unwrap()
            }),
            Notification::Header { .. } => panic!("expected a status"),
        }
    }

    fn script(alias: &str, status: Option<&str>) -> Payload {
        Payload::Script {
            name: ScriptName::Alias(Alias::ScriptHash(alias.into())),
            status: status.map(status_bytes),
        }
    }

    #[test]
    fn a_script_status_is_written_out_when_taken() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        let mut hash = [0u8; 32];
        hash[0] = 0xab;
        hash[31] = 0x01;
        let canonical = Payload::Script {
            name: ScriptName::Canonical(hash),
            status: Some(status_bytes("s")),
        };
        outbox.push_status(StatusKey::Script(hx(1)), canonical, 1, 0, now);
        let spk = Payload::Script {
            name: ScriptName::Alias(Alias::ScriptPubKey("51".into())),
            status: None,
        };
        outbox.push_status(StatusKey::Script(hx(2)), spk, 2, 0, now);
        let (taken, first) = outbox.next().unwrap();
        // The scripthash reversed (display order), the status in hash order.
        let alias = format!("01{}ab", "00".repeat(30));
        let status = format!("73{}", "00".repeat(31));
        assert_eq!(
            first,
            Outgoing::Notification(Notification::ScriptHashStatus {
                alias,
                status: Some(status)
            })
        );
        outbox.acknowledge(taken, now);
        let (_, second) = outbox.next().unwrap();
        assert_eq!(
            second,
            Outgoing::Extended(ExtendedNotification::ScriptPubKeyStatus {
                script: "51".into(),
                status: None
            })
        );
    }

    #[test]
    fn a_peeked_notification_stays_until_acknowledged() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.push_status(StatusKey::Script(hx(1)), script("a", Some("s1")), 1, 0, now);
        let (taken, first) = peek(&mut outbox).unwrap();
        // The send was dropped: the next peek returns the same notification.
        let (again, second) = peek(&mut outbox).unwrap();
        assert_eq!(taken, again);
        assert_eq!(first, second);
        outbox.acknowledge(taken, now);
        assert!(peek(&mut outbox).is_none());
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn a_replacement_during_the_send_is_sent_next() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.push_status(StatusKey::Script(hx(1)), script("a", Some("s1")), 1, 0, now);
        let (taken, _) = peek(&mut outbox).unwrap();
        outbox.push_status(StatusKey::Script(hx(1)), script("a", Some("s2")), 2, 1, now);
        outbox.acknowledge(taken, now);
        let (_, next) = peek(&mut outbox).unwrap();
        assert_eq!(status_of(&next).as_deref(), Some("s2"));
    }

    #[test]
    fn a_revert_during_the_send_is_sent_back() {
        // The client had status 0; status 1 is being sent when the script
        // reverts to 0. After the send the client has 1, so 0 must follow.
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.push_status(StatusKey::Script(hx(1)), script("a", Some("s1")), 1, 0, now);
        let (taken, _) = peek(&mut outbox).unwrap();
        outbox.push_status(StatusKey::Script(hx(1)), script("a", None), 0, 1, now);
        outbox.acknowledge(taken, now);
        let (_, next) = peek(&mut outbox).unwrap();
        assert_eq!(status_of(&next), None);
    }

    #[test]
    fn a_revert_during_an_abandoned_send_is_dropped() {
        // As above, but the send of status 1 is abandoned (its delivery
        // future dropped): the client still has 0, so nothing is sent.
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.push_status(StatusKey::Script(hx(1)), script("a", Some("s1")), 1, 0, now);
        let (_abandoned, _) = peek(&mut outbox).unwrap();
        outbox.push_status(StatusKey::Script(hx(1)), script("a", None), 0, 1, now);
        assert!(peek(&mut outbox).is_none());
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn a_reply_during_a_send_is_followed_only_if_the_send_arrives() {
        let now = Instant::now();
        for arrives in [true, false] {
            let mut outbox = Outbox::default();
            outbox.push_status(StatusKey::Script(hx(1)), script("a", Some("s1")), 1, 0, now);
            let (taken, _) = peek(&mut outbox).unwrap();
            outbox.status_given(StatusKey::Script(hx(1)), script("a", Some("s2")), 2);
            if arrives {
                outbox.acknowledge(taken, now);
                let (_, next) = peek(&mut outbox).unwrap();
                assert_eq!(status_of(&next).as_deref(), Some("s2"));
            } else {
                assert!(peek(&mut outbox).is_none(), "the reply already told the client");
            }
        }
    }

    #[test]
    fn a_revert_before_the_send_is_dropped() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.push_status(StatusKey::Script(hx(1)), script("a", Some("s1")), 1, 0, now);
        outbox.push_status(StatusKey::Script(hx(1)), script("a", None), 0, 1, now);
        assert!(peek(&mut outbox).is_none());
    }

    fn block(n: u8) -> BlockHash {
        BlockHash([n; 32])
    }

    #[test]
    fn headers_never_go_backwards_nor_repeat() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.header_given(2, block(2), Height(2), &[2]);
        assert!(!outbox.push_header(2, block(2), Height(2), vec![2], now));
        assert!(!outbox.push_header(1, block(1), Height(1), vec![1], now));
        assert!(outbox.push_header(3, block(3), Height(3), vec![3], now));
        outbox.header_given(3, block(3), Height(3), &[3]);
        assert!(peek(&mut outbox).is_none());
        assert!(outbox.push_header(4, block(4), Height(4), vec![4], now));
        let (taken, _) = peek(&mut outbox).unwrap();
        assert!(outbox.push_header(5, block(5), Height(5), vec![5], now));
        outbox.acknowledge(taken, now);
        let (taken, next) = peek(&mut outbox).unwrap();
        assert_eq!(
            next,
            Notification::Header {
                height: Height(5),
                header: vec![5]
            }
        );
        outbox.acknowledge(taken, now);
        // A reorg back to a block the client has is not sent again.
        assert!(!outbox.push_header(6, block(5), Height(5), vec![5], now));
        assert!(peek(&mut outbox).is_none());
    }

    #[test]
    fn the_tip_given_before_any_generation_is_not_sent_again() {
        // A subscription before the first recorded tip gets generation 0;
        // the first notify of the same block is generation 1.
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.header_given(0, block(9), Height(9), &[9]);
        assert!(!outbox.push_header(1, block(9), Height(9), vec![9], now));
        assert!(peek(&mut outbox).is_none());
    }

    #[test]
    fn a_reply_newer_than_a_header_on_its_way_follows_it() {
        let now = Instant::now();
        for arrives in [true, false] {
            let mut outbox = Outbox::default();
            assert!(outbox.push_header(1, block(1), Height(1), vec![1], now));
            let (taken, _) = peek(&mut outbox).unwrap();
            outbox.header_given(2, block(2), Height(2), &[2]);
            if arrives {
                outbox.acknowledge(taken, now);
                let (_, next) = peek(&mut outbox).unwrap();
                assert_eq!(
                    next,
                    Notification::Header {
                        height: Height(2),
                        header: vec![2]
                    }
                );
            } else {
                assert!(peek(&mut outbox).is_none(), "the reply already told the client");
            }
        }
    }

    #[test]
    fn a_reorg_back_drops_the_pending_header() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.header_given(1, block(1), Height(1), &[1]);
        assert!(outbox.push_header(2, block(2), Height(2), vec![2], now));
        assert!(!outbox.push_header(3, block(1), Height(1), vec![1], now));
        assert!(peek(&mut outbox).is_none());
        assert_eq!(outbox.len(), 0);
    }

    fn outpoint_payload(n: u8, funder_height: Option<i64>) -> (StatusKey, Payload) {
        let outpoint = OutPoint {
            txid: crate::types::TxHash([n; 32]),
            vout: 1,
        };
        let status = OutpointStatus {
            funder_height,
            spender: None,
        };
        (
            StatusKey::Outpoint(outpoint),
            Payload::Outpoint { outpoint, status },
        )
    }

    #[test]
    fn outpoint_statuses_coalesce_per_outpoint_and_keep_their_order() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        let (a, first) = outpoint_payload(1, Some(0));
        let (b, other) = outpoint_payload(2, Some(7));
        assert!(outbox.push_status(a, first, 1, 0, now));
        assert!(outbox.push_status(StatusKey::Script(hx(1)), script("s", Some("x")), 9, 0, now));
        assert!(outbox.push_status(b, other, 3, 0, now));
        // A newer status of the first outpoint replaces the unsent one, in place.
        let (_, newer) = outpoint_payload(1, Some(5));
        assert!(!outbox.push_status(a, newer.clone(), 2, 1, now));
        assert_eq!(outbox.len(), 3);
        let (taken, sent) = outbox.next().unwrap();
        assert_eq!(sent, newer.to_message());
        outbox.acknowledge(taken, now);
        let (taken, sent) = outbox.next().unwrap();
        assert!(matches!(
            sent,
            Outgoing::Notification(Notification::ScriptHashStatus { .. })
        ));
        outbox.acknowledge(taken, now);
        // Back to what the client has: the pending status is dropped.
        let (_, back) = outpoint_payload(2, None);
        assert!(!outbox.push_status(b, back, 0, 3, now));
        assert!(outbox.next().is_none());
        outbox.forget(a);
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn many_pending_statuses_keep_their_order_and_coalesce() {
        // Past SCAN pending statuses they are found through the index; the
        // rules are the same either way.
        let mut outbox = Outbox::default();
        let now = Instant::now();
        let key = |n: u8| StatusKey::Script(hx(n));
        for n in 0..20 {
            assert!(outbox.push_status(key(n), script("a", Some("s1")), 1, 0, now));
        }
        assert!(outbox.statuses.index.is_some());
        assert!(
            !outbox.push_status(key(5), script("a", None), 0, 1, now),
            "reverted"
        );
        assert!(
            !outbox.push_status(key(15), script("a", Some("s2")), 2, 1, now),
            "replaced"
        );
        outbox.forget(key(7));
        assert!(
            outbox.push_status(key(5), script("a", Some("s3")), 3, 0, now),
            "queued again, last"
        );
        assert_eq!(outbox.len(), 19);
        let mut sent = Vec::new();
        while let Some((taken, _)) = outbox.next() {
            let Taken::Status { key, print, .. } = taken else {
                panic!("{taken:?}")
            };
            let StatusKey::Script(hashx) = key else { panic!() };
            sent.push((hashx.0[0], print));
            outbox.acknowledge(taken, now);
            if outbox.len() <= SCAN / 2 {
                assert!(outbox.statuses.index.is_none());
            }
        }
        let mut expected: Vec<(u8, u64)> = (0..20)
            .filter(|n| *n != 5 && *n != 7)
            .map(|n| (n, if n == 15 { 2 } else { 1 }))
            .collect();
        expected.push((5, 3));
        assert_eq!(sent, expected);
        assert_eq!(outbox.len(), 0);
        assert_eq!(outbox.pending_since(), None);
    }

    #[test]
    fn pings_follow_everything_else_and_stay_bounded() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        assert!(outbox.push_pings(3, 128, now));
        assert!(outbox.push_pings(9, 128, now));
        assert!(!outbox.push_pings(1, 128, now), "already at the cap");
        assert!(!outbox.push_pings(0, 128, now));
        assert_eq!(outbox.len(), MAX_PENDING_PINGS as usize);
        outbox.push_status(StatusKey::Script(hx(1)), script("s", Some("x")), 9, 0, now);
        let (taken, first) = outbox.next().unwrap();
        assert!(matches!(first, Outgoing::Notification(_)));
        outbox.acknowledge(taken, now);
        for _ in 0..MAX_PENDING_PINGS {
            let (taken, ping) = outbox.next().unwrap();
            // Dropped mid-send: the same ping again.
            assert_eq!(outbox.next().unwrap().1, ping);
            assert_eq!(
                ping,
                Outgoing::Extended(ExtendedNotification::Ping { padding: 128 })
            );
            outbox.acknowledge(taken, now);
        }
        assert!(outbox.next().is_none());
        assert_eq!(outbox.pending_since(), None);
        outbox.push_pings(2, 1, now);
        outbox.close();
        assert_eq!(outbox.len(), 0);
    }
}
