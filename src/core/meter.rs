//! The per-session cost meter: pure, deterministic, and driven by the caller's
//! `now`. It reproduces aiorpcX's accounting:
//!
//! - a session starts at cost [`CostMeter::INITIAL_COST`] (5.0);
//! - every charge adds to the cost; when the cost has drifted more than
//!   [`CostMeter::RECALC_DRIFT`] (100) from its value at the last
//!   recalculation, a recalculation is due ([`CostMeter::charge`] says so);
//! - a recalculation first decays the cost lazily by
//!   `elapsed × hard / (10000 + 5 × subscriptions)`, then computes the
//!   throttle fraction `f = max(0, (cost + extra − soft) / (hard − soft))`
//!   and the concurrency target `ceil((1 − f) × initial_concurrent)`;
//! - each admitted request sleeps `f × request_sleep`; a target of 0 makes
//!   the next admission fail.
//!
//! `extra` is the rest of the session's group's cost (see [`crate::core::groups`]).

use crate::config::Limits;
use std::time::{Duration, Instant};

/// The throttle decision of the last recalculation.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Throttle {
    /// `f`, 0 when unthrottled; 1 or more at or past the hard limit.
    pub fraction: f64,
    /// Concurrent requests allowed; 0 refuses the next request.
    pub target: u32,
}

/// One session's cost.
///
/// ```
/// use indexer_sessions::{CostMeter, Limits};
/// use std::time::{Duration, Instant};
/// let limits = Limits::default();
/// let start = Instant::now();
/// let mut meter = CostMeter::new(start, &limits);
/// assert_eq!(meter.cost(), 5.0);
/// meter.charge(5495.0);
/// let throttle = meter.recalculate(start, 0.0, 0, &limits);
/// assert_eq!(throttle.fraction, 0.5);
/// assert_eq!(throttle.target, 5);
/// assert_eq!(meter.request_sleep(&limits), Duration::from_millis(1250));
/// ```
#[derive(Clone, Debug)]
pub struct CostMeter {
    cost: f64,
    cost_at_recalc: f64,
    decayed_at: Instant,
    throttle: Throttle,
}

impl CostMeter {
    /// The cost a new session starts with.
    pub const INITIAL_COST: f64 = 5.0;
    /// Drift from the last recalculation that makes the next one due.
    pub const RECALC_DRIFT: f64 = 100.0;

    /// A new meter at [`Self::INITIAL_COST`], unthrottled.
    pub fn new(now: Instant, limits: &Limits) -> Self {
        Self::starting(now, limits.initial_concurrent)
    }

    /// [`Self::new`] with `initial_concurrent` alone.
    pub(crate) fn starting(now: Instant, initial_concurrent: u32) -> Self {
        CostMeter {
            cost: Self::INITIAL_COST,
            cost_at_recalc: Self::INITIAL_COST,
            decayed_at: now,
            throttle: Throttle {
                fraction: 0.0,
                target: initial_concurrent,
            },
        }
    }

    /// The session's own cost (not decayed since the last recalculation).
    pub fn cost(&self) -> f64 {
        self.cost
    }

    /// The throttle decided at the last recalculation.
    pub fn throttle(&self) -> Throttle {
        self.throttle
    }

    /// Adds `amount` (the caller guarantees it is finite and non-negative).
    /// Returns whether a recalculation is now due.
    pub fn charge(&mut self, amount: f64) -> bool {
        self.cost += amount;
        (self.cost - self.cost_at_recalc).abs() > Self::RECALC_DRIFT
    }

    /// How much more can be charged before a recalculation is due: 0 if
    /// one already is, else `RECALC_DRIFT − (cost − cost at the last
    /// recalculation)`.
    pub(crate) fn headroom(&self) -> f64 {
        let drift = self.cost - self.cost_at_recalc;
        if drift.abs() > Self::RECALC_DRIFT {
            0.0
        } else {
            Self::RECALC_DRIFT - drift
        }
    }

    /// Decay per second for a session with `subscriptions`: `hard / (10000 + 5 × subs)`.
    pub fn decay_per_sec(limits: &Limits, subscriptions: usize) -> f64 {
        limits.cost_hard_limit / (10000.0 + 5.0 * subscriptions as f64)
    }

    /// Applies the decay owed since the last decay. Returns the change in cost (≤ 0).
    pub fn decay(&mut self, now: Instant, subscriptions: usize, limits: &Limits) -> f64 {
        self.decay_with(now, subscriptions, limits.cost_hard_limit)
    }

    /// [`Self::decay`] given only the limit it reads, `cost_hard_limit`.
    #[inline]
    pub(crate) fn decay_with(&mut self, now: Instant, subscriptions: usize, cost_hard_limit: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.decayed_at).as_secs_f64();
        self.decayed_at = now.max(self.decayed_at);
        let before = self.cost;
        let per_sec = cost_hard_limit / (10000.0 + 5.0 * subscriptions as f64);
        self.cost = (self.cost - elapsed * per_sec).max(0.0);
        self.cost - before
    }

    /// Decays, then retargets against `extra_cost` (the rest of the group's
    /// cost). Call [`Self::decay`] first when the group ledger must learn the
    /// decayed cost before `extra_cost` is known; decaying twice at the same
    /// `now` is harmless.
    pub fn recalculate(
        &mut self,
        now: Instant,
        extra_cost: f64,
        subscriptions: usize,
        limits: &Limits,
    ) -> Throttle {
        self.decay(now, subscriptions, limits);
        self.retarget(extra_cost, limits)
    }

    /// Computes the throttle from the current cost and `extra_cost`, without decaying.
    pub fn retarget(&mut self, extra_cost: f64, limits: &Limits) -> Throttle {
        self.cost_at_recalc = self.cost;
        let soft_range = limits.cost_hard_limit - limits.cost_soft_limit;
        self.throttle = if !limits.limiting() {
            Throttle {
                fraction: 0.0,
                target: limits.initial_concurrent,
            }
        } else if soft_range <= 0.0 {
            // Soft == hard > 0: no throttling band, a hard cut at the limit.
            let over = self.cost + extra_cost >= limits.cost_hard_limit;
            Throttle {
                fraction: if over { 1.0 } else { 0.0 },
                target: if over { 0 } else { limits.initial_concurrent },
            }
        } else {
            let fraction = ((self.cost + extra_cost - limits.cost_soft_limit) / soft_range).max(0.0);
            let target = ((1.0 - fraction) * f64::from(limits.initial_concurrent))
                .ceil()
                .max(0.0);
            Throttle {
                fraction,
                target: target as u32,
            }
        };
        self.throttle
    }

    /// The sleep each admitted request takes: `fraction × request_sleep`.
    pub fn request_sleep(&self, limits: &Limits) -> Duration {
        if self.throttle.fraction <= 0.0 {
            Duration::ZERO
        } else {
            limits.request_sleep.mul_f64(self.throttle.fraction.min(1.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn new_session_starts_at_five_unthrottled() {
        let meter = CostMeter::new(Instant::now(), &limits());
        assert_eq!(meter.cost(), 5.0);
        assert_eq!(meter.throttle().target, 10);
        assert_eq!(meter.request_sleep(&limits()), Duration::ZERO);
    }

    #[test]
    fn half_way_between_soft_and_hard_halves_concurrency() {
        let now = Instant::now();
        let mut meter = CostMeter::new(now, &limits());
        meter.charge(5495.0);
        let t = meter.recalculate(now, 0.0, 0, &limits());
        assert_eq!(
            t,
            Throttle {
                fraction: 0.5,
                target: 5
            }
        );
        assert_eq!(meter.request_sleep(&limits()), Duration::from_millis(1250));
    }

    #[test]
    fn extra_cost_counts_toward_the_fraction() {
        let now = Instant::now();
        let mut meter = CostMeter::new(now, &limits());
        let t = meter.recalculate(now, 5495.0, 0, &limits());
        assert_eq!(t.fraction, 0.5);
    }

    #[test]
    fn recalculation_is_due_only_after_drift_over_100() {
        let mut meter = CostMeter::new(Instant::now(), &limits());
        assert!(!meter.charge(100.0));
        assert!(meter.charge(0.5));
        meter.retarget(0.0, &limits());
        assert!(!meter.charge(1.0));
    }

    #[test]
    fn decay_is_lazy_and_scaled_by_subscriptions() {
        let start = Instant::now();
        let mut meter = CostMeter::new(start, &limits());
        meter.charge(995.0);
        // Nothing changes until a recalculation.
        assert_eq!(meter.cost(), 1000.0);
        meter.recalculate(start + Duration::from_secs(100), 0.0, 0, &limits());
        // 1 unit per second with no subscriptions at hard = 10000.
        assert!((meter.cost() - 900.0).abs() < 1e-9);
        meter.recalculate(start + Duration::from_secs(200), 0.0, 2000, &limits());
        // 10000 / 20000 = 0.5 per second with 2000 subscriptions.
        assert!((meter.cost() - 850.0).abs() < 1e-9);
        meter.recalculate(start + Duration::from_secs(100_000), 0.0, 0, &limits());
        assert_eq!(meter.cost(), 0.0);
    }

    #[test]
    fn hard_limit_targets_zero() {
        let now = Instant::now();
        let mut meter = CostMeter::new(now, &limits());
        meter.charge(9995.0);
        assert_eq!(meter.recalculate(now, 0.0, 0, &limits()).target, 0);
    }

    #[test]
    fn zero_limits_disable_limiting() {
        let now = Instant::now();
        let limits = Limits {
            cost_soft_limit: 0.0,
            cost_hard_limit: 0.0,
            ..Limits::default()
        };
        let mut meter = CostMeter::new(now, &limits);
        meter.charge(1e12);
        let t = meter.recalculate(now, 1e12, 0, &limits);
        assert_eq!(
            t,
            Throttle {
                fraction: 0.0,
                target: 10
            }
        );
        // No decay either: hard = 0.
        assert_eq!(meter.cost(), 1e12 + 5.0);
    }
}
