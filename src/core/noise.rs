//! Noise against traffic analysis (Electrum protocol 1.7): `server.ping`
//! notifications sent when nothing else would be, so an observer of the
//! encrypted traffic cannot tell from its pattern whether a block or a
//! mempool change concerned a client.
//!
//! The draws are counter-based: each is a hash of the seed, the event
//! number, the session id and the draw's index, so the outcome for a
//! session does not depend on the order sessions are visited in, and a
//! fixed seed replays exactly.

use crate::config::NoisePolicy;
use crate::types::SessionId;
use std::time::Duration;

/// Most pings one session is sent for one block.
const MAX_BLOCK_PINGS: u32 = 16;

/// SplitMix64's finaliser: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A [`NoisePolicy`] with its seed drawn: the pure decision of how many
/// pings each session gets for one event.
#[derive(Clone, Debug)]
pub(crate) struct Noise {
    policy: NoisePolicy,
    seed: u64,
}

impl Noise {
    /// `random_seed` is used when the policy has no seed.
    pub(crate) fn new(policy: NoisePolicy, random_seed: u64) -> Self {
        let seed = policy.seed.unwrap_or(random_seed);
        Noise { policy, seed }
    }

    pub(crate) fn padding(&self) -> usize {
        self.policy.padding
    }

    /// A uniform draw in `[0, 1)` for (`event`, `session`, `draw`).
    fn unit(&self, event: u64, session: SessionId, draw: u32) -> f64 {
        let bits = mix(mix(mix(self.seed ^ event) ^ session.0) ^ u64::from(draw));
        // The top 53 bits as a fraction of 2^53.
        (bits >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Pings for `session` on block event `event`, after `sent`
    /// notifications were queued for it since the previous event.
    pub(crate) fn block_pings(&self, event: u64, session: SessionId, sent: u32) -> u32 {
        let mut pings = u32::from(sent < self.policy.block_min_notifications);
        let mut draw = 0;
        while pings < MAX_BLOCK_PINGS && self.unit(event, session, draw) < self.policy.block_extra_probability
        {
            pings += 1;
            draw += 1;
        }
        pings
    }

    /// Pings for `session` on mempool event `event`, `elapsed` after the
    /// previous event.
    pub(crate) fn mempool_pings(&self, event: u64, session: SessionId, elapsed: Duration) -> u32 {
        let p = (elapsed.as_secs_f64() / self.policy.mempool_mean_interval.as_secs_f64()).min(1.0);
        u32::from(self.unit(event, session, 0) < p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u64) -> Noise {
        Noise::new(NoisePolicy::default(), seed)
    }

    #[test]
    fn a_quiet_session_always_gets_a_ping_on_a_block() {
        let noise = noise(1);
        for event in 0..1000 {
            assert!(noise.block_pings(event, SessionId(event * 7), 0) >= 1);
            assert!(noise.block_pings(event, SessionId(event * 7), 1) >= 1);
        }
    }

    #[test]
    fn extra_pings_follow_their_probability() {
        let noise = noise(2);
        let trials = 100_000u64;
        let extra: u64 = (0..trials)
            .map(|i| u64::from(noise.block_pings(i, SessionId(i % 97), 2)))
            .sum();
        // Geometric with p = 0.1: mean p / (1 − p) = 0.111…
        let mean = extra as f64 / trials as f64;
        assert!((mean - 1.0 / 9.0).abs() < 0.01, "mean {mean}");
        let none = (0..trials)
            .filter(|i| noise.block_pings(*i, SessionId(3), 2) == 0)
            .count() as f64;
        assert!((none / trials as f64 - 0.9).abs() < 0.01);
    }

    #[test]
    fn mempool_pings_average_one_per_mean_interval() {
        let noise = noise(3);
        let trials = 100_000u64;
        let every = Duration::from_secs(6);
        let pings: u64 = (0..trials)
            .map(|i| u64::from(noise.mempool_pings(i, SessionId(1), every)))
            .sum();
        // 6 s of 600 s: p = 0.01.
        let rate = pings as f64 / trials as f64;
        assert!((rate - 0.01).abs() < 0.002, "rate {rate}");
        assert_eq!(noise.mempool_pings(5, SessionId(1), Duration::ZERO), 0);
        assert_eq!(noise.mempool_pings(5, SessionId(1), Duration::from_secs(601)), 1);
    }

    #[test]
    fn draws_depend_on_the_seed_only_through_it() {
        let (a, b) = (noise(9), noise(9));
        let c = Noise::new(
            NoisePolicy {
                seed: Some(9),
                ..NoisePolicy::default()
            },
            1234,
        );
        for event in 0..200 {
            let s = SessionId(event % 13);
            assert_eq!(a.block_pings(event, s, 5), b.block_pings(event, s, 5));
            assert_eq!(a.block_pings(event, s, 5), c.block_pings(event, s, 5));
        }
        let other = noise(10);
        assert!((0..200).any(|e| a.unit(e, SessionId(1), 0) != other.unit(e, SessionId(1), 0)));
    }

    #[test]
    fn a_certain_extra_ping_stops_at_the_cap() {
        let noise = Noise::new(
            NoisePolicy {
                block_extra_probability: 1.0,
                ..NoisePolicy::default()
            },
            0,
        );
        assert_eq!(noise.block_pings(0, SessionId(0), 0), MAX_BLOCK_PINGS);
    }

    #[test]
    fn validation_refuses_nonsense() {
        let bad = |f: fn(&mut NoisePolicy)| {
            let mut policy = NoisePolicy::default();
            f(&mut policy);
            policy.validate().is_err()
        };
        assert!(NoisePolicy::default().validate().is_ok());
        assert!(bad(|p| p.block_extra_probability = 1.5));
        assert!(bad(|p| p.block_extra_probability = f64::NAN));
        assert!(bad(|p| p.mempool_mean_interval = Duration::ZERO));
        assert!(bad(|p| p.padding = usize::MAX));
    }
}
