//! Fee estimates: ElectrumX's Bitcoin bucketing of confirmation targets, the
//! estimate-mode whitelist, and the requests that read fees
//! (`blockchain.estimatefee`, `blockchain.relayfee`,
//! `mempool.get_fee_histogram`).
//!
//! Estimates are cached per (bucketed target, mode) while the tip hash stays
//! the same, and a miss makes one daemon call per key however many clients
//! ask at once: the others wait for it. Bucketing keeps the key space small,
//! and the whitelist keeps a client from forcing misses with made-up modes.
//!
//! ```
//! use indexer_sessions::fees::bucket_fee_target;
//! assert_eq!(bucket_fee_target(0), 1);
//! assert_eq!(bucket_fee_target(6), 6);
//! assert_eq!(bucket_fee_target(25), 25);
//! assert_eq!(bucket_fee_target(27), 26);
//! assert_eq!(bucket_fee_target(144), 144);
//! assert_eq!(bucket_fee_target(150), 144);
//! assert_eq!(bucket_fee_target(5000), 1008);
//! ```

use crate::core::cost;
use crate::edge::caches::FeeKey;
use crate::edge::chain::unshare;
use crate::edge::session::SessionHandle;
use crate::error::{Error, Result};
use crate::host::FeeMode;
use crate::host::{Daemon, Host, Mempool};

/// The longest confirmation target a node estimates (Bitcoin Core's
/// `MAX_BLOCK_CONFIRMS`, 1008 blocks); longer targets ask for this one.
pub const MAX_FEE_TARGET: u32 = 1008;

/// ElectrumX's `bucket_estimatefee_block_target` for Bitcoin, following
/// the resolution of Bitcoin Core's fee estimator horizons:
///
/// | target `n` | bucket |
/// | --- | --- |
/// | ≤ 1 | 1 |
/// | 2 ..= 12 | `n` |
/// | 25 (common enough to keep) | 25 |
/// | 13 ..= 48 | `n` rounded down to even |
/// | 49 ..= 1008 | `n` rounded down to a multiple of 24 |
/// | > 1008 | 1008 |
pub fn bucket_fee_target(blocks: u32) -> u32 {
    match blocks {
        0..=1 => 1,
        2..=12 | 25 => blocks,
        13..=48 => blocks / 2 * 2,
        49..=MAX_FEE_TARGET => blocks / 24 * 24,
        _ => MAX_FEE_TARGET,
    }
}

/// Parses an estimate mode as the whitelist allows: none, or
/// `ECONOMICAL` / `CONSERVATIVE` in any case.
///
/// # Errors
/// [`Error::BadRequest`] naming any other mode.
pub fn parse_fee_mode(mode: Option<&str>) -> Result<Option<FeeMode>> {
    match mode {
        None => Ok(None),
        Some(text) => FeeMode::parse(text)
            .map(Some)
            .ok_or_else(|| Error::BadRequest(format!("unknown estimatefee mode: {text:?}"))),
    }
}

impl<H: Host> SessionHandle<H> {
    /// `blockchain.estimatefee`: the node's fee-rate estimate (coin units
    /// per kilobyte) for confirmation within `blocks`, asked for the
    /// bucketed target [`bucket_fee_target`]`(blocks)`. `mode` is `None`,
    /// `"ECONOMICAL"` or `"CONSERVATIVE"` (any case). `Ok(None)` when the
    /// node cannot estimate (Electrum answers −1).
    ///
    /// Answers are cached per (bucket, mode) until the tip hash changes;
    /// concurrent misses on one key share one daemon call.
    ///
    /// **Cost:** 0.1, plus 2.0 for the caller whose request made the daemon call.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for another mode (nothing charged);
    /// [`Error::Host`] / [`Error::HostTimeout`] when the `Daemon` fails
    /// (nothing is cached).
    ///
    /// # Cancel safety
    /// Cancel-safe: the cost charged so far stays; a node call shared with
    /// other callers is taken over by one of them.
    pub async fn estimate_fee(&self, blocks: u32, mode: Option<&str>) -> Result<Option<f64>> {
        let mode = parse_fee_mode(mode)?;
        self.session.add_cost(cost::ESTIMATE_FEE);
        let manager = &self.manager;
        let caches = &manager.inner.caches;
        let blocks = bucket_fee_target(blocks);
        let key = FeeKey {
            blocks,
            mode,
            epoch: caches.fee_epoch(),
        };
        let mut loaded = false;
        let rate = caches
            .fees
            .try_get_with(key, async {
                loaded = true;
                let daemon = manager.inner.daemon();
                manager
                    .host_call("estimatefee", daemon.estimate_fee(blocks, mode))
                    .await
            })
            .await
            .map_err(unshare)?;
        if loaded {
            self.session.add_cost(cost::ESTIMATE_FEE_MISS);
            if caches.fee_epoch() != key.epoch {
                // The tip moved while the node answered: valid for this request only.
                caches.fees.invalidate(&key).await;
            }
        }
        caches.fees_counter.record(!loaded);
        Ok(rate)
    }

    /// `blockchain.relayfee`: the node's minimum relay fee (coin units per
    /// kilobyte). Not cached.
    ///
    /// **Cost:** 1.0.
    ///
    /// # Errors
    /// [`Error::Host`] / [`Error::HostTimeout`] when the `Daemon` fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: only the cost, charged at the first poll, stays.
    pub async fn relay_fee(&self) -> Result<f64> {
        self.session.add_cost(cost::RELAY_FEE);
        let daemon = self.manager.inner.daemon();
        self.manager.host_call("relayfee", daemon.relay_fee()).await
    }

    /// `mempool.get_fee_histogram`: `(fee rate, cumulative vsize)` pairs
    /// from the `Mempool`, highest rate first. Not cached here (the host's
    /// mempool keeps it).
    ///
    /// **Cost:** 1.0.
    ///
    /// # Errors
    /// [`Error::Host`] / [`Error::HostTimeout`] when the `Mempool` fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: only the cost, charged at the first poll, stays.
    pub async fn fee_histogram(&self) -> Result<Vec<(f64, u64)>> {
        self.session.add_cost(cost::FEE_HISTOGRAM);
        let mempool = self.manager.inner.mempool();
        self.manager
            .host_call("fee histogram", mempool.fee_histogram())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_electrumx() {
        let expect = |n: u32| -> u32 {
            // ElectrumX's BitcoinMixin.bucket_estimatefee_block_target, verbatim in Rust.
            if n <= 1 {
                1
            } else if n <= 12 || n == 25 {
                n
            } else if n <= 48 {
                n / 2 * 2
            } else if n <= 1008 {
                n / 24 * 24
            } else {
                1008
            }
        };
        for n in 0..3000 {
            assert_eq!(bucket_fee_target(n), expect(n), "n = {n}");
        }
        assert_eq!(bucket_fee_target(u32::MAX), 1008);
        let table = [
            (0, 1),
            (1, 1),
            (2, 2),
            (12, 12),
            (13, 12),
            (14, 14),
            (24, 24),
            (25, 25),
            (26, 26),
            (47, 46),
            (48, 48),
            (49, 48),
            (71, 48),
            (72, 72),
            (144, 144),
            (1007, 984),
            (1008, 1008),
            (1009, 1008),
        ];
        for (n, bucket) in table {
            assert_eq!(bucket_fee_target(n), bucket, "n = {n}");
        }
    }

    #[test]
    fn buckets_are_few_and_idempotent() {
        let buckets: std::collections::BTreeSet<u32> = (0..=2000).map(bucket_fee_target).collect();
        assert!(buckets.len() < 80, "{} buckets", buckets.len());
        for &b in &buckets {
            assert_eq!(bucket_fee_target(b), b);
        }
    }

    #[test]
    fn modes_are_whitelisted() {
        assert_eq!(parse_fee_mode(None).unwrap(), None);
        assert_eq!(
            parse_fee_mode(Some("ECONOMICAL")).unwrap(),
            Some(FeeMode::Economical)
        );
        assert_eq!(
            parse_fee_mode(Some("conservative")).unwrap(),
            Some(FeeMode::Conservative)
        );
        assert_eq!(
            parse_fee_mode(Some("Conservative")).unwrap(),
            Some(FeeMode::Conservative)
        );
        let error = parse_fee_mode(Some("UNSET")).unwrap_err();
        assert!(
            matches!(&error, Error::BadRequest(m) if m.contains("UNSET")),
            "{error}"
        );
        assert!(parse_fee_mode(Some("")).is_err());
    }
}
