//! Configuration. [`Config::default`] reproduces ElectrumX's numbers; the
//! extra limits ElectrumX lacks (per-group sessions, subscriptions) are off.

use crate::error::ConfigError;
use ipnetwork::IpNetwork;
use std::time::Duration;

/// Limits that can be changed while the manager runs
/// ([`crate::SessionManager::set_limits`]).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Limits {
    /// Cost (session + group) above which requests are throttled. Default 1000.
    pub cost_soft_limit: f64,
    /// Cost at which the session's concurrency target reaches 0 and its next
    /// request fails with [`crate::Error::ExcessiveCost`]. Default 10000.
    /// `soft = hard = 0` disables limiting.
    pub cost_hard_limit: f64,
    /// Concurrent requests per session when unthrottled. Default 10.
    pub initial_concurrent: u32,
    /// Sleep before a request at throttle fraction 1 (scaled by the fraction). Default 2.5 s.
    pub request_sleep: Duration,
    /// Time a request may take from admission (queueing and throttle sleep
    /// included) to its answer before it fails with −102. Default 30 s.
    pub request_timeout: Duration,
    /// Bytes per cost unit for traffic in and out. Default 5000.
    pub bandwidth_unit_cost: f64,
    /// Cost of a request that ends in an error. Default 100.
    pub error_cost: f64,
    /// Cost of a message that cannot be parsed. Default 1100.
    pub parse_error_cost: f64,
    /// A session that has not sent a complete message for this long is closed. Default 600 s.
    pub session_timeout: Duration,
    /// Most sessions at once; the listener pauses here and resumes at 95 %. Default 1000.
    pub max_sessions: usize,
    /// Most sessions per group (subnet). Default: unlimited.
    pub max_sessions_per_group: Option<usize>,
    /// Most subscriptions per session. Default: unlimited.
    pub max_subs_per_session: Option<usize>,
    /// Most subscriptions per group. Default: unlimited.
    pub max_subs_per_group: Option<usize>,
    /// Most subscriptions in the whole manager. Default: unlimited.
    pub max_subs: Option<usize>,
    /// A session whose notification stays undelivered this long is closed. Default 20 s.
    pub max_send_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cost_soft_limit: 1000.0,
            cost_hard_limit: 10000.0,
            initial_concurrent: 10,
            request_sleep: Duration::from_millis(2500),
            request_timeout: Duration::from_secs(30),
            bandwidth_unit_cost: 5000.0,
            error_cost: 100.0,
            parse_error_cost: 1100.0,
            session_timeout: Duration::from_secs(600),
            max_sessions: 1000,
            max_sessions_per_group: None,
            max_subs_per_session: None,
            max_subs_per_group: None,
            max_subs: None,
            max_send_delay: Duration::from_secs(20),
        }
    }
}

fn finite_non_negative(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{value} is not a finite, non-negative number"),
        ))
    }
}

/// Longest period accepted: deadlines are `now + period`, which must not overflow.
const MAX_PERIOD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn non_zero(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(ConfigError::new(field, "must be longer than zero"))
    } else if value > MAX_PERIOD {
        Err(ConfigError::new(field, "must be under ten years"))
    } else {
        Ok(())
    }
}

impl Limits {
    /// Checks every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        finite_non_negative("cost_soft_limit", self.cost_soft_limit)?;
        finite_non_negative("cost_hard_limit", self.cost_hard_limit)?;
        if self.cost_hard_limit < self.cost_soft_limit {
            return Err(ConfigError::new(
                "cost_hard_limit",
                format!(
                    "hard limit {} is below the soft limit {}",
                    self.cost_hard_limit, self.cost_soft_limit
                ),
            ));
        }
        if self.initial_concurrent == 0 {
            return Err(ConfigError::new("initial_concurrent", "must be at least 1"));
        }
        if self.request_sleep > MAX_PERIOD {
            return Err(ConfigError::new("request_sleep", "must be under ten years"));
        }
        finite_non_negative("error_cost", self.error_cost)?;
        finite_non_negative("parse_error_cost", self.parse_error_cost)?;
        if !(self.bandwidth_unit_cost.is_finite() && self.bandwidth_unit_cost > 0.0) {
            return Err(ConfigError::new(
                "bandwidth_unit_cost",
                "must be a positive number of bytes",
            ));
        }
        non_zero("request_timeout", self.request_timeout)?;
        non_zero("session_timeout", self.session_timeout)?;
        non_zero("max_send_delay", self.max_send_delay)?;
        if self.max_sessions == 0 {
            return Err(ConfigError::new("max_sessions", "must be at least 1"));
        }
        for (field, value) in [
            ("max_sessions_per_group", self.max_sessions_per_group),
            ("max_subs_per_session", self.max_subs_per_session),
            ("max_subs_per_group", self.max_subs_per_group),
            ("max_subs", self.max_subs),
        ] {
            if value == Some(0) {
                return Err(ConfigError::new(
                    field,
                    "0 would refuse everything; use None for no limit",
                ));
            }
        }
        Ok(())
    }

    /// Whether cost limiting is on (it is off when soft and hard are both 0).
    pub fn limiting(&self) -> bool {
        self.cost_hard_limit > 0.0
    }

    /// The session count at which a paused listener resumes: 95 % of `max_sessions`.
    pub fn resume_at(&self) -> usize {
        self.max_sessions * 19 / 20
    }
}

/// Everything the manager is built with.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Config {
    /// Limits that can also be changed at run time.
    pub limits: Limits,
    /// IPv4 prefix length that forms a group. Default 24.
    pub ipv4_group_prefix: u8,
    /// IPv6 prefix length that forms a group. Default 48.
    pub ipv6_group_prefix: u8,
    /// Networks whose clients belong to no group (and so are never limited
    /// by group cost or group session limits). Default: loopback, private,
    /// link-local and unique-local networks.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_networks"))]
    pub exempt_networks: Vec<IpNetwork>,
    /// How often idle sessions are looked for. Default 60 s.
    pub sweep_interval: Duration,
    /// How often every session's cost is decayed and its concurrency
    /// retargeted, and retained group cost refunded. Default 300 s.
    pub recalc_interval: Duration,
    /// Time allowed for one host call (database, daemon, mempool) before it
    /// fails with [`crate::Error::HostTimeout`]. Default 30 s.
    pub host_timeout: Duration,
    /// Time allowed for [`crate::Transport::close`]. Default 30 s.
    pub close_timeout: Duration,
    /// Largest response the host will send, in bytes; bounds the history
    /// length served (`(max_send − 100) / 99` entries). Default 8,100,000.
    pub max_send: usize,
    /// Byte budget of the history cache. Default 64 MiB.
    pub history_cache_bytes: u64,
    /// Byte budget of the block txids cache. Default 32 MiB.
    pub txids_cache_bytes: u64,
    /// Byte budget of the merkle middle-level cache. Default 8 MiB.
    pub merkle_cache_bytes: u64,
    /// Byte budget of the outpoint cache (the confirmed part of each
    /// outpoint status). Default 8 MiB.
    pub outpoint_cache_bytes: u64,
    /// Noise pings against traffic analysis (protocol 1.7), for the
    /// sessions that turn them on. Default `None`: off.
    pub noise: Option<NoisePolicy>,
}

#[cfg(feature = "serde")]
fn serialize_networks<S: serde::Serializer>(
    networks: &[IpNetwork],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_seq(networks.iter().map(|n| n.to_string()))
}

/// The default exempt networks: IPv4 loopback, private (RFC 1918) and
/// link-local; IPv6 loopback, link-local and unique-local.
pub fn default_exempt_networks() -> Vec<IpNetwork> {
    [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fe80::/10",
        "fc00::/7",
    ]
    .iter()
    .filter_map(|text| text.parse().ok())
    .collect()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            ipv4_group_prefix: 24,
            ipv6_group_prefix: 48,
            exempt_networks: default_exempt_networks(),
            sweep_interval: Duration::from_secs(60),
            recalc_interval: Duration::from_secs(300),
            host_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(30),
            max_send: 8_100_000,
            history_cache_bytes: 64 << 20,
            txids_cache_bytes: 32 << 20,
            merkle_cache_bytes: 8 << 20,
            outpoint_cache_bytes: 8 << 20,
            noise: None,
        }
    }
}

impl Config {
    /// Checks every value; the first problem found is returned.
    ///
    /// ```
    /// use indexer_sessions::Config;
    /// let mut config = Config::default();
    /// assert!(config.validate().is_ok());
    /// config.ipv4_group_prefix = 33;
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        if self.ipv4_group_prefix > 32 {
            return Err(ConfigError::new(
                "ipv4_group_prefix",
                format!("{} is over 32", self.ipv4_group_prefix),
            ));
        }
        if self.ipv6_group_prefix > 128 {
            return Err(ConfigError::new(
                "ipv6_group_prefix",
                format!("{} is over 128", self.ipv6_group_prefix),
            ));
        }
        non_zero("sweep_interval", self.sweep_interval)?;
        non_zero("recalc_interval", self.recalc_interval)?;
        non_zero("host_timeout", self.host_timeout)?;
        non_zero("close_timeout", self.close_timeout)?;
        if self.max_send < 1000 {
            return Err(ConfigError::new("max_send", "must be at least 1000 bytes"));
        }
        if let Some(noise) = &self.noise {
            noise.validate()?;
        }
        Ok(())
    }

    /// Longest confirmed history served for one script: `(max_send − 100) / 99`.
    pub fn max_history_len(&self) -> usize {
        (self.max_send - 100) / 99
    }
}

/// When the manager sends noise pings ([`crate::ExtendedNotification::Ping`])
/// to the sessions that asked for them ([`crate::SessionHandle::set_noise`]).
/// Off unless set in [`crate::Config::noise`]. The defaults are the
/// reference server's:
///
/// - **on a block** (a `notify` whose tip hash changed), a session that was
///   queued fewer than [`NoisePolicy::block_min_notifications`] (2)
///   notifications since the previous event gets one ping; then, each with
///   probability [`NoisePolicy::block_extra_probability`] (0.1), one more,
///   again and again until a draw fails (at most 16 in all);
/// - **on a mempool refresh** (a `notify` with the same tip), each session
///   gets one ping with probability `elapsed / mempool_mean_interval`
///   (capped at 1), `elapsed` being the time since the previous event on
///   the manager's clock: one ping per ten minutes on average, however
///   often the host calls `notify`.
///
/// Each ping carries [`NoisePolicy::padding`] characters (128), about the
/// length of a script status notification. A session holds at most four
/// pending pings (a client that does not read gains nothing from more).
/// Pings are not charged to the session.
///
/// With a policy set, every `notify` visits each session that asked for
/// noise (O(those sessions) per event, beside the O(touched ∩ subscribed)
/// of the statuses); without one, nothing is visited.
///
/// ```
/// use indexer_sessions::{Config, NoisePolicy};
/// let config = Config {
///     noise: Some(NoisePolicy { seed: Some(7), ..NoisePolicy::default() }),
///     ..Config::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NoisePolicy {
    /// Seed of the draws. `None` (the default) seeds each manager at
    /// random; a fixed seed makes the pattern reproducible (tests).
    pub seed: Option<u64>,
    /// On a block, a session queued fewer notifications than this since the
    /// previous event gets a ping. Default 2.
    pub block_min_notifications: u32,
    /// On a block, the probability of each further ping. Default 0.1.
    pub block_extra_probability: f64,
    /// On a mempool refresh, the mean time between pings per session.
    /// Default 600 s.
    pub mempool_mean_interval: Duration,
    /// Characters of padding in each ping. Default 128.
    pub padding: usize,
}

impl Default for NoisePolicy {
    fn default() -> Self {
        NoisePolicy {
            seed: None,
            block_min_notifications: 2,
            block_extra_probability: 0.1,
            mempool_mean_interval: Duration::from_secs(600),
            padding: 128,
        }
    }
}

/// Most padding accepted: a ping is noise, not a payload.
const MAX_PADDING: usize = 64 << 10;

impl NoisePolicy {
    /// Checks every value; the first problem found is returned.
    ///
    /// # Errors
    /// [`ConfigError`] for a probability outside `[0, 1]`, a zero mean
    /// interval, or padding over 64 KiB.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = self.block_extra_probability;
        if !(0.0..=1.0).contains(&p) {
            return Err(ConfigError::new(
                "noise.block_extra_probability",
                format!("{p} is not a probability (0 to 1)"),
            ));
        }
        if self.mempool_mean_interval.is_zero() {
            return Err(ConfigError::new(
                "noise.mempool_mean_interval",
                "must be longer than zero",
            ));
        }
        if self.padding > MAX_PADDING {
            return Err(ConfigError::new(
                "noise.padding",
                format!("{} is over {MAX_PADDING} characters", self.padding),
            ));
        }
        Ok(())
    }
}
