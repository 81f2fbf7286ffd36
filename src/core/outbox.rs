//! A session's coalescing outbox: what the manager has to tell the client
//! and the client has not yet been sent.
//!
//! The manager only ever fills it (never awaits the client); the session's
//! delivery future drains it in order. Pending notifications coalesce: at
//! most one header (the newest) and one status per subscribed script (the
//! newest), so a client that stops reading holds bounded memory. A status
//! that changes back to what the client already has before it was sent is
//! dropped, so the client never receives the same status twice in a row.
//!
//! Delivery is *peek, send, acknowledge*: a notification leaves the outbox
//! only once [`Outbox::acknowledge`] says its send completed. A delivery
//! future dropped mid-send leaves the notification at the front, and the
//! next delivery future sends it (the newest version of it, if it was
//! replaced meanwhile).

use crate::core::hashing::HashMap;
use crate::types::{BlockHash, HashX, Height, Notification};
use std::collections::VecDeque;
use std::time::Instant;

/// A status as the index stores it: a fingerprint of the status hash (0
/// for "no history").
pub(crate) type StatusPrint = u64;

/// A tip change as the manager counts them: 1 for the first tip recorded,
/// then one more per change. Header notifications carry it so that a
/// client is never sent a header older than, or equal to, one it has.
pub(crate) type TipGeneration = u64;

#[derive(Debug)]
struct PendingStatus {
    alias: String,
    status: Option<String>,
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
    /// The pending status of this script, at this version.
    Status {
        hashx: HashX,
        version: u64,
        print: StatusPrint,
    },
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
    order: VecDeque<HashX>,
    statuses: HashMap<HashX, PendingStatus>,
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
        self.header.is_none() && self.order.is_empty()
    }

    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    fn is_in_flight(&self, hashx: &HashX) -> bool {
        matches!(self.in_flight, Some(Taken::Status { hashx: h, .. }) if h == *hashx)
    }

    fn remove_status(&mut self, hashx: &HashX) {
        if self.statuses.remove(hashx).is_some() {
            if self.order.front() == Some(hashx) {
                self.order.pop_front();
            } else {
                self.order.retain(|h| h != hashx);
            }
        }
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

    /// Queues a status change from `base` to `print`. A pending status for
    /// the same script is replaced; if the result is what the client already
    /// has, the pending status is dropped. Returns true when a notification
    /// was added (the delivery future has something new to wait for).
    pub(crate) fn push_status(
        &mut self,
        hashx: HashX,
        alias: String,
        status: Option<String>,
        print: StatusPrint,
        base: StatusPrint,
        now: Instant,
    ) -> bool {
        if self.closed {
            return false;
        }
        let version = self.version();
        let in_flight = self.is_in_flight(&hashx);
        match self.statuses.get_mut(&hashx) {
            // Back to what the client has, and not possibly on its way:
            // nothing to send.
            Some(pending) if pending.base == print && !in_flight => {
                self.remove_status(&hashx);
                return false;
            }
            Some(pending) => {
                pending.status = status;
                pending.print = print;
                pending.version = version;
                return false;
            }
            None => {
                if base == print {
                    return false;
                }
                self.statuses.insert(
                    hashx,
                    PendingStatus {
                        alias,
                        status,
                        print,
                        base,
                        version,
                    },
                );
                self.order.push_back(hashx);
                self.pending_since.get_or_insert(now);
            }
        }
        true
    }

    /// Drops a pending header (the header subscription was undone).
    pub(crate) fn forget_header(&mut self) {
        self.header = None;
        if self.is_empty() {
            self.pending_since = None;
        }
    }

    /// Records that the client was given `status` (fingerprint `print`) for
    /// `hashx` directly, in a subscribe reply: a pending status for it is
    /// dropped, unless it may be on its way to the client, in which case
    /// the given status is sent after it.
    pub(crate) fn status_given(&mut self, hashx: HashX, status: &Option<String>, print: StatusPrint) {
        let in_flight = self.is_in_flight(&hashx);
        if !self.statuses.contains_key(&hashx) {
            return;
        }
        if in_flight {
            // Sent after the one on its way if that one arrives (it is then
            // based on it); dropped at the next peek if that send was abandoned.
            let version = self.version();
            if let Some(pending) = self.statuses.get_mut(&hashx) {
                pending.status.clone_from(status);
                pending.print = print;
                pending.base = print;
                pending.version = version;
            }
        } else {
            self.remove_status(&hashx);
        }
    }

    /// Drops a pending status (the script was unsubscribed).
    pub(crate) fn forget(&mut self, hashx: HashX) {
        self.remove_status(&hashx);
    }

    /// Number of undelivered notifications.
    pub(crate) fn len(&self) -> usize {
        self.order.len() + usize::from(self.header.is_some())
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
    pub(crate) fn next(&mut self) -> Option<(Taken, Notification)> {
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
            let notification = Notification::Header {
                height: pending.height,
                header: pending.header.clone(),
            };
            let taken = Taken::Header {
                generation: pending.generation,
                hash: pending.hash,
            };
            self.in_flight = Some(taken);
            return Some((taken, notification));
        }
        while let Some(hashx) = self.order.front().copied() {
            if self
                .statuses
                .get(&hashx)
                .is_some_and(|pending| pending.print == pending.base)
            {
                self.remove_status(&hashx);
                continue;
            }
            if let Some(pending) = self.statuses.get(&hashx) {
                let notification = Notification::ScriptHashStatus {
                    alias: pending.alias.clone(),
                    status: pending.status.clone(),
                };
                let taken = Taken::Status {
                    hashx,
                    version: pending.version,
                    print: pending.print,
                };
                self.in_flight = Some(taken);
                return Some((taken, notification));
            }
            self.order.pop_front();
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
            Taken::Status {
                hashx,
                version,
                print,
            } => {
                if let Some(pending) = self.statuses.get_mut(&hashx) {
                    if pending.version == version {
                        self.remove_status(&hashx);
                    } else if pending.print == print {
                        // Replaced by an equal status while being sent.
                        self.remove_status(&hashx);
                    } else {
                        pending.base = print;
                    }
                }
            }
        }
        self.pending_since = if self.is_empty() { None } else { Some(now) };
    }

    /// Drops everything pending; nothing is queued after this.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.header = None;
        self.order.clear();
        self.statuses.clear();
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
        outbox.next()
    }

    fn status_of(notification: &Notification) -> Option<String> {
        match notification {
            Notification::ScriptHashStatus { status, .. } => status.clone(),
            Notification::Header { .. } => panic!("expected a status"),
        }
    }

    #[test]
    fn a_peeked_notification_stays_until_acknowledged() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.push_status(hx(1), "a".into(), Some("s1".into()), 1, 0, now);
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
        outbox.push_status(hx(1), "a".into(), Some("s1".into()), 1, 0, now);
        let (taken, _) = peek(&mut outbox).unwrap();
        outbox.push_status(hx(1), "a".into(), Some("s2".into()), 2, 1, now);
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
        outbox.push_status(hx(1), "a".into(), Some("s1".into()), 1, 0, now);
        let (taken, _) = peek(&mut outbox).unwrap();
        outbox.push_status(hx(1), "a".into(), None, 0, 1, now);
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
        outbox.push_status(hx(1), "a".into(), Some("s1".into()), 1, 0, now);
        let (_abandoned, _) = peek(&mut outbox).unwrap();
        outbox.push_status(hx(1), "a".into(), None, 0, 1, now);
        assert!(peek(&mut outbox).is_none());
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn a_reply_during_a_send_is_followed_only_if_the_send_arrives() {
        let now = Instant::now();
        for arrives in [true, false] {
            let mut outbox = Outbox::default();
            outbox.push_status(hx(1), "a".into(), Some("s1".into()), 1, 0, now);
            let (taken, _) = peek(&mut outbox).unwrap();
            outbox.status_given(hx(1), &Some("s2".into()), 2);
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
        outbox.push_status(hx(1), "a".into(), Some("s1".into()), 1, 0, now);
        outbox.push_status(hx(1), "a".into(), None, 0, 1, now);
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
}
