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
//! - bits 33–41, **admitted**: requests admitted since the lock holder last
//!   took them into the session's counters (the lock-free admission takes
//!   the lock when this is full, every 511 admissions at most);
//! - bits 42–47, **tenths**: charges of exactly 0.1 (a notification, a
//!   ping) taken since the lock holder last settled, at most 63;
//! - bits 48–63, **allowance**: the cost, in units of 2⁻⁸, that releases
//!   may still charge without the lock. The lock holder grants it from the
//!   meter's distance to its next recalculation (less one unit) and takes
//!   back what is left; `granted − allowance` is the cost charged on the
//!   fast path and not yet in the meter.
//!
//! A charge of 0.1 is not a whole number of units: the fast path counts it
//! in **tenths** and takes 26 units (0.1016) of the allowance for it, so
//! the allowance still bounds what the fast path charged from above. The
//! lock holder, settling, charges the meter the exact units
//! (`granted − allowance − 26 × tenths`) in one addition, then 0.1 once per
//! tenth, as the locked path would have.
//!
//! Any other charge that is not a whole number of units, or more than the
//! allowance, goes through the lock, as does every release while the
//! waiters bit is set. Charges on the fast path are summed in integers, so
//! none is lost or counted twice.

use std::sync::atomic::{AtomicU64, Ordering};

/// Requests in flight at most, per session.
pub(crate) const MAX_IN_FLIGHT: u32 = 0xFFFF;
const IN_FLIGHT: u64 = 0xFFFF;
const OPEN_SHIFT: u32 = 16;
const OPEN: u64 = 0xFFFF << OPEN_SHIFT;
const WAITERS: u64 = 1 << 32;
const ADMITTED_SHIFT: u32 = 33;
const ADMITTED_ONE: u64 = 1 << ADMITTED_SHIFT;
const MAX_ADMITTED: u64 = (1 << 9) - 1;
const ADMITTED: u64 = MAX_ADMITTED << ADMITTED_SHIFT;
const TENTHS_SHIFT: u32 = 42;
const TENTH_ONE: u64 = 1 << TENTHS_SHIFT;
const MAX_TENTHS: u64 = (1 << 6) - 1;
const TENTHS: u64 = MAX_TENTHS << TENTHS_SHIFT;
/// The charge counted in tenths.
pub(crate) const TENTH: f64 = 0.1;
/// Allowance units a tenth takes: the fewest whose cost is at least 0.1.
const TENTH_UNITS: u64 = 26;
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

/// A charge the lock-free path can take: `units` of the allowance, and
/// `tenths` charges of exactly [`TENTH`] that `units` includes
/// [`TENTH_UNITS`] each for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FastCharge {
    units: u64,
    tenths: u64,
}

impl FastCharge {
    /// No charge.
    #[cfg(test)]
    pub(crate) const NONE: FastCharge = FastCharge { units: 0, tenths: 0 };

    /// `charge` as the fast path takes it: a whole number of units, or
    /// exactly 0.1; `None` for anything else (the lock takes it).
    #[inline]
    pub(crate) fn of(charge: f64) -> Option<FastCharge> {
        if charge == TENTH {
            return Some(FastCharge {
                units: TENTH_UNITS,
                tenths: 1,
            });
        }
        units(charge).map(|units| FastCharge { units, tenths: 0 })
    }
}

/// What the lock holder takes back from the word: the allowance left, the
/// requests admitted and the tenths charged since it last did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) left: u64,
    pub(crate) admitted: u64,
    pub(crate) tenths: u64,
}

impl Taken {
    fn of(word: u64) -> Taken {
        Taken {
            left: word >> ALLOWANCE_SHIFT,
            admitted: (word & ADMITTED) >> ADMITTED_SHIFT,
            tenths: (word & TENTHS) >> TENTHS_SHIFT,
        }
    }

    /// The cost the fast path charged against a grant of `granted` units,
    /// added to `cost` by the same additions [`Self::settle`] makes to a
    /// meter.
    pub(crate) fn added_to(&self, granted: u64, mut cost: f64) -> f64 {
        self.each_charge(granted, |amount| {
            cost += amount;
            false
        });
        cost
    }

    /// Charges `meter` what the fast path charged against a grant of
    /// `granted` units. Returns whether a recalculation is due.
    pub(crate) fn settle(&self, granted: u64, meter: &mut crate::core::meter::CostMeter) -> bool {
        self.each_charge(granted, |amount| meter.charge(amount))
    }

    /// Calls `charge` with what the fast path charged against a grant of
    /// `granted` units, as the locked path would have charged it: the
    /// whole units in one addition, then 0.1 per tenth. Returns whether
    /// any call returned true.
    fn each_charge(&self, granted: u64, mut charge: impl FnMut(f64) -> bool) -> bool {
        let (units, tenths) = self.charged(granted);
        let mut due = units > 0 && charge(cost_of(units));
        for _ in 0..tenths {
            due |= charge(TENTH);
        }
        due
    }

    /// (whole units, tenths) charged against a grant of `granted`.
    fn charged(&self, granted: u64) -> (u64, u64) {
        let taken = granted.saturating_sub(self.left);
        (taken.saturating_sub(self.tenths * TENTH_UNITS), self.tenths)
    }
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

    /// The lock-free release: frees a slot and takes `charge` if no
    /// admission waits and the allowance (and the tenths count) cover it.
    #[inline]
    pub(crate) fn try_release(&self, charge: FastCharge) -> bool {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            if word & WAITERS != 0 || word & IN_FLIGHT == 0 || !covers(word, charge) {
                return false;
            }
            let next = word - 1 - (charge.units << ALLOWANCE_SHIFT) + charge.tenths * TENTH_ONE;
            match self
                .0
                .compare_exchange_weak(word, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }

    /// A lock-free charge outside a permit: `charge` if the allowance (and
    /// the tenths count) cover it.
    #[inline]
    pub(crate) fn try_charge(&self, charge: FastCharge) -> bool {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            if !covers(word, charge) {
                return false;
            }
            match self.0.compare_exchange_weak(
                word,
                word - (charge.units << ALLOWANCE_SHIFT) + charge.tenths * TENTH_ONE,
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

    /// Takes back the allowance, the admitted count and the tenths (under
    /// the lock).
    pub(crate) fn take_allowance(&self) -> Taken {
        Taken::of(
            self.0
                .fetch_and(!(ALLOWANCE | ADMITTED | TENTHS), Ordering::AcqRel),
        )
    }

    /// Takes the admitted count (under the lock, when it is full).
    pub(crate) fn take_admitted(&self) -> u64 {
        (self.0.fetch_and(!ADMITTED, Ordering::AcqRel) & ADMITTED) >> ADMITTED_SHIFT
    }

    /// Closes the lock-free path for good (under the lock, as the session
    /// ends): no slots, no allowance, no waiters. Returns what
    /// [`Self::take_allowance`] does.
    pub(crate) fn close(&self) -> Taken {
        Taken::of(self.0.fetch_and(
            !(OPEN | WAITERS | ALLOWANCE | ADMITTED | TENTHS),
            Ordering::AcqRel,
        ))
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

    /// What [`Self::take_allowance`] would take now, leaving it.
    pub(crate) fn pending(&self) -> Taken {
        Taken::of(self.0.load(Ordering::Acquire))
    }
}

fn pack_open(open: u32) -> u64 {
    u64::from(open.min(MAX_IN_FLIGHT)) << OPEN_SHIFT
}

/// Whether `word`'s allowance and tenths count can take `charge`.
#[inline]
fn covers(word: u64, charge: FastCharge) -> bool {
    word >> ALLOWANCE_SHIFT >= charge.units && (word & TENTHS) >> TENTHS_SHIFT <= MAX_TENTHS - charge.tenths
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

    fn units_charge(units: u64) -> FastCharge {
        FastCharge { units, tenths: 0 }
    }

    #[test]
    fn open_slots_gate_the_fast_admission() {
        let word = RequestWord::new(2, 0);
        assert!(word.try_admit() && word.try_admit());
        assert!(!word.try_admit());
        assert_eq!(word.in_flight(), 2);
        assert_eq!(word.pending().admitted, 2);
        // The locked path admits up to the real target.
        assert!(word.admit_locked(3, false));
        assert!(!word.admit_locked(3, true), "full: sets the waiters bit");
        assert!(
            !word.try_release(FastCharge::NONE),
            "waiters: the release takes the lock"
        );
        word.release_locked();
        assert!(word.try_release(FastCharge::NONE));
        assert_eq!(word.in_flight(), 1);
        word.set(0, 0);
        assert!(!word.try_admit(), "closed gate");
        assert_eq!(
            word.close(),
            Taken {
                left: 0,
                admitted: 2,
                tenths: 0
            }
        );
    }

    #[test]
    fn the_admitted_count_is_taken_when_full() {
        let word = RequestWord::new(2, 0);
        for _ in 0..MAX_ADMITTED {
            assert!(word.try_admit());
            assert!(word.try_release(FastCharge::NONE));
        }
        assert!(!word.try_admit(), "the count is full: the lock takes it");
        assert_eq!(word.take_admitted(), MAX_ADMITTED);
        assert!(word.try_admit());
    }

    #[test]
    fn tenths_take_26_units_each_and_settle_as_the_locked_path_charges() {
        assert_eq!(FastCharge::of(0.1), Some(FastCharge { units: 26, tenths: 1 }));
        assert_eq!(FastCharge::of(0.25), Some(units_charge(64)));
        assert_eq!(FastCharge::of(0.2), None, "two tenths summed: the lock");
        assert!(cost_of(TENTH_UNITS) >= TENTH && cost_of(TENTH_UNITS - 1) < TENTH);

        let tenth = FastCharge::of(TENTH).unwrap();
        let word = RequestWord::new(1, 100);
        // 100 units cover three tenths (78) and 22 more units, not a fourth tenth.
        assert!(word.try_charge(tenth) && word.try_charge(tenth) && word.try_charge(tenth));
        assert!(word.try_charge(units_charge(22)));
        assert!(!word.try_charge(tenth), "22 units left, a tenth takes 26");
        let taken = word.take_allowance();
        assert_eq!(
            taken,
            Taken {
                left: 0,
                admitted: 0,
                tenths: 3
            }
        );
        // The meter learns 22 units, then 0.1 three times: what three
        // locked charges of 0.1 after one of 22/256 give.
        let mut locked = 5.0_f64 + cost_of(22);
        for _ in 0..3 {
            locked += 0.1;
        }
        assert_eq!(taken.added_to(100, 5.0), locked);
        let mut meter =
            crate::core::meter::CostMeter::new(std::time::Instant::now(), &crate::config::Limits::default());
        let before = meter.cost();
        assert!(!taken.settle(100, &mut meter));
        assert_eq!(meter.cost(), taken.added_to(100, before));

        // The tenths count bounds the tenths between settlements.
        let word = RequestWord::new(1, MAX_ALLOWANCE);
        for _ in 0..MAX_TENTHS {
            assert!(word.try_charge(tenth));
        }
        assert!(!word.try_charge(tenth), "the tenths count is full");
        assert!(word.try_charge(units_charge(1)), "whole units still pass");
        assert_eq!(word.take_allowance().tenths, MAX_TENTHS);
    }

    /// A charge a step makes: whole units, or a tenth.
    #[derive(Clone, Copy, Debug)]
    enum Charge {
        Units(u64),
        Tenth,
    }

    impl Charge {
        fn fast(self) -> FastCharge {
            match self {
                Charge::Units(units) => units_charge(units),
                Charge::Tenth => FastCharge::of(TENTH).unwrap(),
            }
        }

        /// (whole units, tenths).
        fn parts(self) -> (u64, u64) {
            match self {
                Charge::Units(units) => (units, 0),
                Charge::Tenth => (0, 1),
            }
        }
    }

    /// What each thread does: admit (lock-free or locked), then release
    /// with a charge (lock-free or, past the allowance, locked).
    #[derive(Clone, Debug)]
    enum Step {
        Admit,
        Release(Charge),
        Regrant(u32, u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        let charge = prop_oneof![
            3 => (0u64..3_000).prop_map(Charge::Units),
            2 => Just(Charge::Tenth),
        ];
        prop_oneof![
            3 => Just(Step::Admit),
            3 => charge.prop_map(Step::Release),
            1 => (0u32..5, 0u64..60_000).prop_map(|(open, allowance)| Step::Regrant(open, allowance)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Threads admitting, releasing with charges (whole units or
        /// tenths) and regranting (the lock holder's part, under a mutex
        /// as in a session) never hold more than the target, and the
        /// meter plus what is pending sums to exactly what was charged,
        /// units and tenths apart.
        #[test]
        fn concurrent_interleavings_keep_exact_costs_and_the_target(
            threads in proptest::collection::vec(proptest::collection::vec(step(), 1..60), 2..4),
            target in 1u32..4,
        ) {
            use std::sync::Mutex;
            use std::sync::atomic::AtomicU32;
            /// The meter in (whole units, tenths), and the last grant.
            struct Locked { units: u64, tenths: u64, granted: u64, admitted: u64 }
            impl Locked {
                /// Settles what the word took, then regrants.
                fn settle(&mut self, word: &RequestWord, charge: (u64, u64), grant: u64, open: u32) {
                    let taken = word.take_allowance();
                    let (units, tenths) = taken.charged(self.granted);
                    self.admitted += taken.admitted;
                    self.units += units + charge.0;
                    self.tenths += tenths + charge.1;
                    self.granted = grant;
                    word.set(open, grant);
                }
            }
            let word = RequestWord::new(target, 1000);
            let locked = Mutex::new(Locked { units: 0, tenths: 0, granted: 1000, admitted: 0 });
            let held = AtomicU32::new(0);
            let charged: Vec<(u64, u64, u64)> = std::thread::scope(|scope| {
                let handles: Vec<_> = threads.iter().map(|steps| {
                    let (word, locked, held) = (&word, &locked, &held);
                    scope.spawn(move || {
                        let (mut mine, mut units, mut tenths, mut admissions) = (0u32, 0u64, 0u64, 0u64);
                        for step in steps {
                            match *step {
                                Step::Admit => {
                                    let admitted = word.try_admit() || {
                                        let mut state = locked.lock().unwrap();
                                        state.admitted += word.take_admitted();
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
                                Step::Release(charge) if mine > 0 => {
                                    mine -= 1;
                                    held.fetch_sub(1, Ordering::SeqCst);
                                    units += charge.parts().0;
                                    tenths += charge.parts().1;
                                    if !word.try_release(charge.fast()) {
                                        let mut state = locked.lock().unwrap();
                                        word.release_locked();
                                        state.settle(word, charge.parts(), 500, target);
                                    }
                                }
                                // No slot: a charge outside a permit.
                                Step::Release(charge) => {
                                    units += charge.parts().0;
                                    tenths += charge.parts().1;
                                    if !word.try_charge(charge.fast()) {
                                        locked.lock().unwrap().settle(word, charge.parts(), 300, target);
                                    }
                                }
                                Step::Regrant(open, allowance) => {
                                    locked.lock().unwrap().settle(word, (0, 0), allowance, open.min(target));
                                }
                            }
                        }
                        for _ in 0..mine {
                            held.fetch_sub(1, Ordering::SeqCst);
                            if !word.try_release(FastCharge::NONE) {
                                let _guard = locked.lock().unwrap();
                                word.release_locked();
                            }
                        }
                        (units, tenths, admissions)
                    })
                }).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let state = locked.lock().unwrap();
            let pending = word.pending();
            let (units, tenths) = pending.charged(state.granted);
            prop_assert_eq!(state.units + units, charged.iter().map(|c| c.0).sum::<u64>());
            prop_assert_eq!(state.tenths + tenths, charged.iter().map(|c| c.1).sum::<u64>());
            prop_assert_eq!(state.admitted + pending.admitted, charged.iter().map(|c| c.2).sum::<u64>());
            prop_assert_eq!(word.in_flight(), 0);
        }
    }
}
