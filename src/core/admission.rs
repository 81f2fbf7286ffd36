//! The lock-free part of a session's request path: one `AtomicU64` that
//! admits a request with one compare-and-swap and releases it, with its
//! charge, with another. The session's lock is taken only when this word
//! says the fast path cannot decide.
//!
//! The word packs:
//!
//! - bits 0–15, **in flight**: every request holding a slot, admitted by
//!   either path (so at most 65,535 per session);
//! - bits 16–31, **open**: how many requests the lock-free admission may
//!   hold, the session's concurrency target while it is unthrottled
//!   (no sleep, target > 0, not closed), else 0;
//! - bit 32, **waiters**: an admission is queued on the session's lock and
//!   wants a wake-up on release, so every release takes the lock;
//! - bits 33–47, **admitted**: requests admitted since the lock holder last
//!   took them into the session's counters (the lock-free admission takes
//!   the lock when this is full);
//! - bits 48–63, **allowance**: the cost, in units of 2⁻⁸, that releases
//!   may still charge without the lock. The lock holder grants it from the
//!   meter's distance to its next recalculation (less one unit) and takes
//!   back what is left; `granted − allowance` is the cost charged on the
//!   fast path and not yet in the meter.
//!
//! A charge that is not a whole number of units, or more than the
//! allowance, goes through the lock, as does every release while the
//! waiters bit is set. Charges on the fast path are summed in integers, so
//! none is lost or counted twice, and the meter learns their exact sum in
//! one addition.

use std::sync::atomic::{AtomicU64, Ordering};

/// Requests in flight at most, per session.
pub(crate) const MAX_IN_FLIGHT: u32 = 0xFFFF;
const IN_FLIGHT: u64 = 0xFFFF;
const OPEN_SHIFT: u32 = 16;
const OPEN: u64 = 0xFFFF << OPEN_SHIFT;
const WAITERS: u64 = 1 << 32;
const ADMITTED_SHIFT: u32 = 33;
const ADMITTED_ONE: u64 = 1 << ADMITTED_SHIFT;
const MAX_ADMITTED: u64 = (1 << 15) - 1;
const ADMITTED: u64 = MAX_ADMITTED << ADMITTED_SHIFT;
const ALLOWANCE_SHIFT: u32 = 48;
const MAX_ALLOWANCE: u64 = (1 << 16) - 1;
const ALLOWANCE: u64 = MAX_ALLOWANCE << ALLOWANCE_SHIFT;
/// Allowance units per cost unit (the allowance reaches 255.99, past the
/// recalculation drift of 100).
const UNITS: f64 = 256.0;
/// Past this cost an f64 addition may round by more than half a unit: the
/// allowance is 0 and every charge takes the lock.
const EXACT_BELOW: f64 = 4_294_967_296.0;

/// A charge in allowance units, if it is a whole number of them that fits.
pub(crate) fn units(charge: f64) -> Option<u64> {
    let scaled = charge * UNITS;
    if !(scaled >= 0.0 && scaled <= MAX_ALLOWANCE as f64) {
        return None;
    }
    // A truncating cast and a compare, not `fract()` (a libm call without SSE4.1).
    let units = scaled as u64;
    (units as f64 == scaled).then_some(units)
}

/// The cost of `units`.
pub(crate) fn cost_of(units: u64) -> f64 {
    units as f64 / UNITS
}

/// The allowance for a meter `headroom` short of its next recalculation at
/// `cost`: strictly less than `headroom`, so charges within it never make a
/// recalculation due.
pub(crate) fn allowance_for(headroom: f64, cost: f64) -> u64 {
    if !(cost.abs() < EXACT_BELOW && headroom > 0.0) {
        return 0;
    }
    ((headroom * UNITS).floor() as u64)
        .saturating_sub(1)
        .min(MAX_ALLOWANCE)
}

/// The packed word (see the module documentation).
#[derive(Debug)]
pub(crate) struct RequestWord(AtomicU64);

impl RequestWord {
    /// Nothing in flight, `open` lock-free slots and `allowance` units.
    pub(crate) fn new(open: u32, allowance: u64) -> Self {
        RequestWord(AtomicU64::new(
            pack_open(open) | allowance.min(MAX_ALLOWANCE) << ALLOWANCE_SHIFT,
        ))
    }

    /// The lock-free admission: takes a slot, and counts the request, if
    /// fewer than `open` are held.
    #[inline]
    pub(crate) fn try_admit(&self) -> bool {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            if word & IN_FLIGHT >= (word & OPEN) >> OPEN_SHIFT || word & ADMITTED == ADMITTED {
                return false;
            }
            match self.0.compare_exchange_weak(
                word,
                word + 1 + ADMITTED_ONE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }

    /// Admission under the session's lock: takes a slot if fewer than
    /// `target` are held (the caller counts the request). Otherwise, with `wait`, sets the waiters bit in
    /// the same step (so a release that frees a slot after this check
    /// takes the lock and wakes the caller).
    pub(crate) fn admit_locked(&self, target: u32, wait: bool) -> bool {
        let limit = u64::from(target.min(MAX_IN_FLIGHT));
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            let next = if word & IN_FLIGHT < limit {
                word + 1
            } else if wait {
                word | WAITERS
            } else {
                return false;
            };
            match self
                .0
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next & IN_FLIGHT != word & IN_FLIGHT,
                Err(now) => word = now,
            }
        }
    }

    /// The lock-free release: frees a slot and charges `units` if no
    /// admission waits and the allowance covers them.
    #[inline]
    pub(crate) fn try_release(&self, units: u64) -> bool {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            if word & WAITERS != 0 || word & IN_FLIGHT == 0 || word >> ALLOWANCE_SHIFT < units {
                return false;
            }
            let next = word - 1 - (units << ALLOWANCE_SHIFT);
            match self
                .0
                .compare_exchange_weak(word, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }

    /// A lock-free charge outside a permit: `units` if the allowance covers them.
    #[inline]
    pub(crate) fn try_charge(&self, units: u64) -> bool {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            if word >> ALLOWANCE_SHIFT < units {
                return false;
            }
            match self.0.compare_exchange_weak(
                word,
                word - (units << ALLOWANCE_SHIFT),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }

    /// A release under the session's lock (the caller wakes the waiters
    /// and charges the meter): frees a slot and clears the waiters bit.
    pub(crate) fn release_locked(&self) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |word| {
            Some((word & !WAITERS) - u64::from(word & IN_FLIGHT > 0))
        });
    }

    /// Clears the waiters bit (the caller, holding the lock, takes the wakers).
    pub(crate) fn clear_waiters(&self) {
        self.0.fetch_and(!WAITERS, Ordering::AcqRel);
    }

    /// Takes back the allowance and the admitted count (under the lock);
    /// returns the allowance left and the requests admitted.
    pub(crate) fn take_allowance(&self) -> (u64, u64) {
        let word = self.0.fetch_and(!(ALLOWANCE | ADMITTED), Ordering::AcqRel);
        (word >> ALLOWANCE_SHIFT, (word & ADMITTED) >> ADMITTED_SHIFT)
    }

    /// Takes the admitted count (under the lock, when it is full).
    pub(crate) fn take_admitted(&self) -> u64 {
        (self.0.fetch_and(!ADMITTED, Ordering::AcqRel) & ADMITTED) >> ADMITTED_SHIFT
    }

    /// Closes the lock-free path for good (under the lock, as the session
    /// ends): no slots, no allowance, no waiters. Returns what
    /// [`Self::take_allowance`] does.
    pub(crate) fn close(&self) -> (u64, u64) {
        let word = self
            .0
            .fetch_and(!(OPEN | WAITERS | ALLOWANCE | ADMITTED), Ordering::AcqRel);
        (word >> ALLOWANCE_SHIFT, (word & ADMITTED) >> ADMITTED_SHIFT)
    }

    /// Sets the lock-free slots and grants `allowance` (under the lock,
    /// after [`Self::take_allowance`]).
    pub(crate) fn set(&self, open: u32, allowance: u64) {
        let allowance = allowance.min(MAX_ALLOWANCE) << ALLOWANCE_SHIFT;
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |word| {
            Some(word & !(OPEN | ALLOWANCE) | pack_open(open) | allowance)
        });
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> u32 {
        (self.0.load(Ordering::Acquire) & IN_FLIGHT) as u32
    }

    /// The allowance left, in units, and the requests admitted since the
    /// last [`Self::take_allowance`].
    pub(crate) fn pending(&self) -> (u64, u64) {
        let word = self.0.load(Ordering::Acquire);
        (word >> ALLOWANCE_SHIFT, (word & ADMITTED) >> ADMITTED_SHIFT)
    }
}

fn pack_open(open: u32) -> u64 {
    u64::from(open.min(MAX_IN_FLIGHT)) << OPEN_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units_are_exact_or_refused() {
        assert_eq!(units(1.0), Some(256));
        assert_eq!(units(0.0), Some(0));
        assert_eq!(units(0.5), Some(128));
        assert_eq!(units(0.1), None);
        assert_eq!(units(f64::MAX), None);
        assert_eq!(units(1e9), None);
        assert_eq!(cost_of(256 * 3 + 64), 3.25);
    }

    #[test]
    fn allowance_stays_below_the_headroom() {
        assert_eq!(allowance_for(100.0, 5.0), 100 * 256 - 1);
        assert_eq!(allowance_for(0.0, 5.0), 0);
        assert_eq!(allowance_for(100.0, 5e9), 0);
        assert!(cost_of(allowance_for(0.3, 7.0)) < 0.3);
    }

    #[test]
    fn open_slots_gate_the_fast_admission() {
        let word = RequestWord::new(2, 0);
        assert!(word.try_admit() && word.try_admit());
        assert!(!word.try_admit());
        assert_eq!(word.in_flight(), 2);
        assert_eq!(word.pending(), (0, 2));
        // The locked path admits up to the real target.
        assert!(word.admit_locked(3, false));
        assert!(!word.admit_locked(3, true), "full: sets the waiters bit");
        assert!(!word.try_release(0), "waiters: the release takes the lock");
        word.release_locked();
        assert!(word.try_release(0));
        assert_eq!(word.in_flight(), 1);
        word.set(0, 0);
        assert!(!word.try_admit(), "closed gate");
        assert_eq!(word.close(), (0, 2));
    }

    /// What each thread does: admit (lock-free or locked), then release
    /// with a charge (lock-free or, past the allowance, locked).
    #[derive(Clone, Debug)]
    enum Step {
        Admit,
        Release(u64),
        Regrant(u32, u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Admit),
            3 => (0u64..3_000).prop_map(Step::Release),
            1 => (0u32..5, 0u64..60_000).prop_map(|(open, allowance)| Step::Regrant(open, allowance)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Threads admitting, releasing with charges and regranting (the
        /// lock holder's part, under a mutex as in a session) never hold
        /// more than the target, and the meter plus what is pending sums
        /// to exactly what was charged.
        #[test]
        fn concurrent_interleavings_keep_exact_costs_and_the_target(
            threads in proptest::collection::vec(proptest::collection::vec(step(), 1..60), 2..4),
            target in 1u32..4,
        ) {
            use std::sync::Mutex;
            use std::sync::atomic::AtomicU32;
            struct Locked { meter: u64, granted: u64, admitted: u64 }
            let word = RequestWord::new(target, 1000);
            let locked = Mutex::new(Locked { meter: 0, granted: 1000, admitted: 0 });
            let held = AtomicU32::new(0);
            let charged: Vec<(u64, u64)> = std::thread::scope(|scope| {
                let handles: Vec<_> = threads.iter().map(|steps| {
                    let (word, locked, held) = (&word, &locked, &held);
                    scope.spawn(move || {
                        let (mut mine, mut charged, mut admissions) = (0u32, 0u64, 0u64);
                        for step in steps {
                            match *step {
                                Step::Admit => {
                                    let admitted = word.try_admit() || {
                                        let mut state = locked.lock().unwrap();
                                        let admitted = word.admit_locked(target, false);
                                        state.admitted += u64::from(admitted);
                                        admitted
                                    };
                                    if admitted {
                                        mine += 1;
                                        admissions += 1;
                                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                                        assert!(now <= target, "{now} held, target {target}");
                                    }
                                }
                                Step::Release(units) if mine > 0 => {
                                    mine -= 1;
                                    held.fetch_sub(1, Ordering::SeqCst);
                                    charged += units;
                                    if !word.try_release(units) {
                                        let mut state = locked.lock().unwrap();
                                        word.release_locked();
                                        let (left, admitted) = word.take_allowance();
                                        state.admitted += admitted;
                                        state.meter += state.granted - left + units;
                                        state.granted = 500;
                                        word.set(target, 500);
                                    }
                                }
                                // No slot: a charge outside a permit.
                                Step::Release(units) => {
                                    charged += units;
                                    if !word.try_charge(units) {
                                        let mut state = locked.lock().unwrap();
                                        let (left, admitted) = word.take_allowance();
                                        state.admitted += admitted;
                                        state.meter += state.granted - left + units;
                                        state.granted = 300;
                                        word.set(target, 300);
                                    }
                                }
                                Step::Regrant(open, allowance) => {
                                    let mut state = locked.lock().unwrap();
                                    let (left, admitted) = word.take_allowance();
                                    state.admitted += admitted;
                                    state.meter += state.granted - left;
                                    state.granted = allowance;
                                    word.set(open.min(target), allowance);
                                }
                            }
                        }
                        for _ in 0..mine {
                            held.fetch_sub(1, Ordering::SeqCst);
                            if !word.try_release(0) {
                                let _guard = locked.lock().unwrap();
                                word.release_locked();
                            }
                        }
                        (charged, admissions)
                    })
                }).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let state = locked.lock().unwrap();
            let (left, admitted) = word.pending();
            prop_assert_eq!(state.meter + state.granted - left, charged.iter().map(|c| c.0).sum::<u64>());
            prop_assert_eq!(state.admitted + admitted, charged.iter().map(|c| c.1).sum::<u64>());
            prop_assert_eq!(word.in_flight(), 0);
        }
    }
}
