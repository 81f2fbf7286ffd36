//! What the manager tells an operator: `tracing` events (feature `tracing`)
//! and `metrics` (feature `metrics`), from one place.
//!
//! Every call site is one line calling a function here. Without its feature
//! a function's body is empty and its arguments are values the caller already
//! had, so nothing is formatted, counted or timed; with the feature, `tracing`
//! formats nothing unless a subscriber enables the event's level, and a metric
//! with no recorder installed costs one atomic load. Metric labels take a
//! fixed set of `&'static str` values (never a session id or an address).
//! The names, units and labels are listed in the crate documentation.

// Each function uses its arguments only with the features that need them.
#![cfg_attr(
    not(all(feature = "tracing", feature = "metrics")),
    allow(unused_variables, dead_code)
)]

use crate::edge::session::Counters;
use crate::error::{Error, Refusal};
use crate::timer::Timer;
use crate::types::{DisconnectReason, PeerInfo, SessionId};
use ipnetwork::IpNetwork;
use std::time::Duration;

#[cfg(feature = "metrics")]
use metrics::{counter, gauge, histogram};

/// Every metric: name, kind, unit, labels and what it measures. The crate
/// documentation's table says the same; a test checks the two agree.
#[cfg(feature = "metrics")]
pub(crate) const METRICS: &[(&str, Kind, metrics::Unit, &str, &str)] = {
    use metrics::Unit::{Bytes, Count, Seconds};
    &[
        (SESSIONS, Kind::Gauge, Count, "", "Live sessions."),
        (SESSIONS_OPENED, Kind::Counter, Count, "", "Sessions admitted."),
        (
            REFUSALS,
            Kind::Counter,
            Count,
            "reason",
            "Connections refused by `add_session`.",
        ),
        (DISCONNECTS, Kind::Counter, Count, "reason", "Sessions ended."),
        (GROUPS, Kind::Gauge, Count, "", "Groups held by the ledger."),
        (SUBSCRIPTIONS, Kind::Gauge, Count, "", "Script subscriptions."),
        (
            SUBSCRIBED_SCRIPTS,
            Kind::Gauge,
            Count,
            "",
            "Distinct scripts subscribed.",
        ),
        (
            HEADER_SUBSCRIBERS,
            Kind::Gauge,
            Count,
            "",
            "Sessions subscribed to headers.",
        ),
        (
            QUEUED_NOTIFICATIONS,
            Kind::Gauge,
            Count,
            "",
            "Notifications waiting in outboxes.",
        ),
        (REQUESTS, Kind::Counter, Count, "", "Requests admitted."),
        (
            ERRORS,
            Kind::Counter,
            Count,
            "code",
            "Request errors, by JSON-RPC code.",
        ),
        (
            THROTTLED_ADMISSIONS,
            Kind::Counter,
            Count,
            "",
            "Admissions that waited for a slot or slept.",
        ),
        (
            THROTTLE_SLEEP,
            Kind::Histogram,
            Seconds,
            "",
            "Throttle sleep of a throttled admission.",
        ),
        (
            REQUEST_TIME,
            Kind::Histogram,
            Seconds,
            "",
            "Handler time inside `Permit::run`.",
        ),
        (
            COST_CHARGED,
            Kind::Counter,
            Count,
            "",
            "Cost charged, in thousandths of a unit.",
        ),
        (
            BYTES_RECEIVED,
            Kind::Counter,
            Bytes,
            "",
            "Bytes recorded by `record_received`.",
        ),
        (
            BYTES_SENT,
            Kind::Counter,
            Bytes,
            "",
            "Bytes recorded by `record_sent`.",
        ),
        (
            NOTIFY_PASSES,
            Kind::Counter,
            Count,
            "",
            "Notification passes run.",
        ),
        (
            NOTIFY_PASS_TIME,
            Kind::Histogram,
            Seconds,
            "",
            "Duration of one notification pass.",
        ),
        (
            STATUSES_COMPUTED,
            Kind::Counter,
            Count,
            "",
            "Script statuses computed by passes.",
        ),
        (
            STATUSES_CHANGED,
            Kind::Counter,
            Count,
            "",
            "Script statuses found changed by passes.",
        ),
        (
            NOTIFICATIONS_QUEUED,
            Kind::Counter,
            Count,
            "kind",
            "Notifications queued by passes.",
        ),
        (
            NOTIFICATIONS_SENT,
            Kind::Counter,
            Count,
            "kind",
            "Notifications sent by `deliver`.",
        ),
        (
            HOST_ERRORS,
            Kind::Counter,
            Count,
            "operation",
            "Failed or timed-out host calls.",
        ),
        (
            CACHE_HITS,
            Kind::Counter,
            Count,
            "cache",
            "Cache lookups answered from the cache.",
        ),
        (
            CACHE_MISSES,
            Kind::Counter,
            Count,
            "cache",
            "Cache lookups that went to the host.",
        ),
        (
            CACHE_EVICTIONS,
            Kind::Counter,
            Count,
            "cache",
            "Entries evicted to hold a byte budget.",
        ),
        (
            CACHE_CLEARS,
            Kind::Counter,
            Count,
            "cache",
            "Whole-cache clears on a tip change or reorg.",
        ),
        (CACHE_BYTES, Kind::Gauge, Bytes, "cache", "Bytes held by a cache."),
        (
            CACHE_ENTRIES,
            Kind::Gauge,
            Count,
            "cache",
            "Entries held by a cache.",
        ),
        (
            LEDGER_CONNECTED,
            Kind::Gauge,
            Count,
            "",
            "1 while a shared ledger's last sync succeeded, 0 while it serves on its local view.",
        ),
        (
            LEDGER_SYNC_FAILURES,
            Kind::Counter,
            Count,
            "",
            "Failed syncs of a shared ledger (each retried with backoff).",
        ),
    ]
};

/// The kind of a metric in [`METRICS`].
#[cfg(feature = "metrics")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

macro_rules! names {
    ($($name:ident = $value:literal;)*) => {
        $(#[allow(dead_code)] pub(crate) const $name: &str = concat!("indexer_sessions_", $value);)*
    };
}

names! {
    SESSIONS = "sessions";
    SESSIONS_OPENED = "sessions_opened_total";
    REFUSALS = "refusals_total";
    DISCONNECTS = "disconnects_total";
    GROUPS = "groups";
    SUBSCRIPTIONS = "subscriptions";
    SUBSCRIBED_SCRIPTS = "subscribed_scripts";
    HEADER_SUBSCRIBERS = "header_subscribers";
    QUEUED_NOTIFICATIONS = "queued_notifications";
    REQUESTS = "requests_total";
    ERRORS = "errors_total";
    THROTTLED_ADMISSIONS = "throttled_admissions_total";
    THROTTLE_SLEEP = "throttle_sleep_seconds";
    REQUEST_TIME = "request_seconds";
    COST_CHARGED = "cost_charged_milli_total";
    BYTES_RECEIVED = "received_bytes_total";
    BYTES_SENT = "sent_bytes_total";
    NOTIFY_PASSES = "notify_passes_total";
    NOTIFY_PASS_TIME = "notify_pass_seconds";
    STATUSES_COMPUTED = "statuses_computed_total";
    STATUSES_CHANGED = "statuses_changed_total";
    NOTIFICATIONS_QUEUED = "notifications_queued_total";
    NOTIFICATIONS_SENT = "notifications_sent_total";
    HOST_ERRORS = "host_errors_total";
    CACHE_HITS = "cache_hits_total";
    CACHE_MISSES = "cache_misses_total";
    CACHE_EVICTIONS = "cache_evictions_total";
    CACHE_CLEARS = "cache_clears_total";
    CACHE_BYTES = "cache_bytes";
    CACHE_ENTRIES = "cache_entries";
    LEDGER_CONNECTED = "ledger_connected";
    LEDGER_SYNC_FAILURES = "ledger_sync_failures_total";
}

/// Registers the unit and description of every metric with the installed
/// recorder (exporters show them as `# HELP` and `# UNIT`). Call it once
/// after installing the recorder; metrics work without it.
#[cfg(feature = "metrics")]
pub fn describe_metrics() {
    for &(name, kind, unit, _, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, unit, help),
            Kind::Gauge => metrics::describe_gauge!(name, unit, help),
            Kind::Histogram => metrics::describe_histogram!(name, unit, help),
        }
    }
}

/// The `tracing` span of one session (nothing without the feature).
pub(crate) struct SessionSpan {
    /// Boxed, and kept only when enabled: one word for a session no
    /// subscriber wants a span of (a span created disabled stays so).
    #[cfg(feature = "tracing")]
    span: Option<Box<tracing::Span>>,
}

/// The span of every session no subscriber wanted a span of.
#[cfg(feature = "tracing")]
static DISABLED: std::sync::LazyLock<tracing::Span> = std::sync::LazyLock::new(tracing::Span::none);

impl SessionSpan {
    #[inline]
    pub(crate) fn new(id: SessionId, peer: PeerInfo, group: Option<IpNetwork>) -> Self {
        #[cfg(feature = "tracing")]
        {
            let span = tracing::info_span!(
                "session",
                id = id.0,
                peer = %peer.addr,
                group = group.map(tracing::field::display),
                kind = ?peer.kind,
            );
            SessionSpan {
                span: (!span.is_disabled()).then(|| Box::new(span)),
            }
        }
        #[cfg(not(feature = "tracing"))]
        SessionSpan {}
    }

    /// The session's span (disabled when no subscriber wanted it).
    #[cfg(feature = "tracing")]
    pub(crate) fn span(&self) -> &tracing::Span {
        self.span.as_deref().unwrap_or(&DISABLED)
    }
}

/// Times an operation when a metric or a `debug` event will use the time;
/// otherwise reads no clock.
pub(crate) struct Stopwatch {
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    started: Option<std::time::Instant>,
}

impl Stopwatch {
    /// `debug`: whether a `tracing` debug event will want the time.
    #[inline]
    pub(crate) fn start(timer: &dyn Timer, debug: bool) -> Self {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        {
            let wanted = cfg!(feature = "metrics") || debug && debug_enabled();
            Stopwatch {
                started: wanted.then(|| timer.now()),
            }
        }
        #[cfg(not(any(feature = "tracing", feature = "metrics")))]
        Stopwatch {}
    }

    #[inline]
    #[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
    fn elapsed(&self, timer: &dyn Timer) -> Option<Duration> {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        return self
            .started
            .map(|started| timer.now().saturating_duration_since(started));
        #[cfg(not(any(feature = "tracing", feature = "metrics")))]
        None
    }
}

#[cfg(any(feature = "tracing", feature = "metrics"))]
fn debug_enabled() -> bool {
    #[cfg(feature = "tracing")]
    return tracing::enabled!(tracing::Level::DEBUG);
    #[cfg(not(feature = "tracing"))]
    false
}

/// The `reason` label of a refusal.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn refusal_reason(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Banned { .. } => "banned",
        Refusal::AtCapacity { .. } => "at_capacity",
        Refusal::GroupFull { .. } => "group_full",
        Refusal::ShuttingDown => "shutting_down",
    }
}

/// The `reason` label of a disconnect; `None` is the host dropping its handle.
#[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
fn disconnect_reason(reason: Option<&DisconnectReason>) -> &'static str {
    match reason {
        None => "dropped",
        Some(DisconnectReason::Stale) => "stale",
        Some(DisconnectReason::ExcessiveCost) => "excessive_cost",
        Some(DisconnectReason::SendTimeout) => "send_timeout",
        Some(DisconnectReason::Admin) => "admin",
        Some(DisconnectReason::Banned) => "banned",
        Some(DisconnectReason::Shutdown) => "shutdown",
        Some(DisconnectReason::TransportError(_)) => "transport_error",
    }
}

// ---- Sessions ----

/// A session was admitted; `sessions` are live now.
#[inline]
pub(crate) fn session_opened(span: &SessionSpan, sessions: usize) {
    #[cfg(feature = "tracing")]
    tracing::debug!(parent: span.span(), sessions, "session opened");
    #[cfg(feature = "metrics")]
    {
        counter!(SESSIONS_OPENED).increment(1);
        gauge!(SESSIONS).set(sessions as f64);
    }
}

/// `add_session` refused `peer`.
#[inline]
pub(crate) fn session_refused(peer: PeerInfo, refusal: &Refusal) {
    #[cfg(feature = "tracing")]
    tracing::info!(peer = %peer.addr, kind = ?peer.kind, reason = %refusal, "session refused");
    #[cfg(feature = "metrics")]
    counter!(REFUSALS, "reason" => refusal_reason(refusal)).increment(1);
}

/// A session ended (`None`: its handle was dropped); `sessions` are live now.
#[inline]
pub(crate) fn session_closed(
    span: &SessionSpan,
    reason: Option<&DisconnectReason>,
    counters: &Counters,
    sessions: usize,
) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        parent: span.span(),
        reason = disconnect_reason(reason),
        detail = reason.map(tracing::field::display),
        requests = counters.requests,
        errors = counters.errors,
        recv_bytes = counters.recv_bytes,
        send_bytes = counters.send_bytes,
        "session closed"
    );
    #[cfg(feature = "metrics")]
    {
        counter!(DISCONNECTS, "reason" => disconnect_reason(reason)).increment(1);
        gauge!(SESSIONS).set(sessions as f64);
    }
}

/// A session stopped taking its notifications and is being cut off.
#[inline]
pub(crate) fn slow_consumer<H: crate::host::Host>(session: &crate::edge::session::SessionShared<H>) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        parent: session.span.span(),
        reason = disconnect_reason(Some(&DisconnectReason::SendTimeout)),
        detail = %DisconnectReason::SendTimeout,
        pending = session.outbox.len(),
        "slow consumer cut off"
    );
}

// ---- Cost and admission ----

/// A recalculation moved a session's concurrency target.
#[inline]
pub(crate) fn throttle_changed(span: &SessionSpan, before: u32, after: u32, cost: f64, extra: f64) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        parent: span.span(),
        target_before = before,
        target = after,
        cost,
        group_extra_cost = extra,
        "throttle changed"
    );
}

/// Admission refused a request with −101 (the target is 0).
#[inline]
pub(crate) fn excessive_cost(span: &SessionSpan, cost: f64, extra: f64) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        parent: span.span(),
        code = crate::error::codes::EXCESSIVE_RESOURCE_USAGE,
        cost,
        group_extra_cost = extra,
        "excessive resource usage"
    );
    #[cfg(feature = "metrics")]
    counter!(ERRORS, "code" => "-101").increment(1);
}

/// One request admitted.
#[inline]
pub(crate) fn request_admitted() {
    #[cfg(feature = "metrics")]
    counter!(REQUESTS).increment(1);
}

/// An admission that waited for a slot or slept `sleep`.
#[inline]
pub(crate) fn throttled_admission(sleep: Duration) {
    #[cfg(feature = "metrics")]
    {
        counter!(THROTTLED_ADMISSIONS).increment(1);
        histogram!(THROTTLE_SLEEP).record(sleep);
    }
}

/// A request error the manager charged, by JSON-RPC code (`"host"`: one
/// the host recorded with `record_error`, whose code it did not say).
#[inline]
pub(crate) fn request_error(code: &'static str) {
    #[cfg(feature = "metrics")]
    counter!(ERRORS, "code" => code).increment(1);
}

/// A handler finished (or timed out) inside `Permit::run`.
#[inline]
pub(crate) fn request_finished(stopwatch: Stopwatch, timer: &dyn Timer) {
    #[cfg(feature = "metrics")]
    if let Some(elapsed) = stopwatch.elapsed(timer) {
        histogram!(REQUEST_TIME).record(elapsed);
    }
}

/// Cost charged to a session.
#[inline]
pub(crate) fn cost_charged(amount: f64) {
    #[cfg(feature = "metrics")]
    counter!(COST_CHARGED).increment((amount * 1000.0).round() as u64);
}

/// Traffic recorded by the host.
#[inline]
pub(crate) fn bytes_received(bytes: usize) {
    #[cfg(feature = "metrics")]
    counter!(BYTES_RECEIVED).increment(bytes as u64);
}

/// Traffic recorded by the host.
#[inline]
pub(crate) fn bytes_sent(bytes: usize) {
    #[cfg(feature = "metrics")]
    counter!(BYTES_SENT).increment(bytes as u64);
}

// ---- Operator actions and the listener ----

/// The listener state changed.
#[inline]
pub(crate) fn listener_changed(
    state: crate::edge::listener::ListenerState,
    sessions: usize,
    max_sessions: usize,
) {
    #[cfg(feature = "tracing")]
    tracing::info!(state = ?state, sessions, max_sessions, "listener state changed");
}

/// `set_limits` replaced the limits.
#[inline]
pub(crate) fn limits_changed(limits: &crate::config::Limits) {
    #[cfg(feature = "tracing")]
    tracing::info!(limits = ?limits, "limits changed");
}

/// `ban` banned `network`.
#[inline]
pub(crate) fn banned(network: IpNetwork, duration: Option<Duration>, closed: usize) {
    #[cfg(feature = "tracing")]
    tracing::info!(%network, duration = ?duration, closed, "network banned");
}

/// `unban` lifted a ban (`existed`: whether there was one).
#[inline]
pub(crate) fn unbanned(network: IpNetwork, existed: bool) {
    #[cfg(feature = "tracing")]
    tracing::info!(%network, existed, "network unbanned");
}

/// A shared ledger's sync failed (`was_connected`: the first failure
/// after a success, logged as a warning; later ones at debug).
#[inline]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn ledger_unreachable(node: &str, reason: &str, was_connected: bool) {
    #[cfg(feature = "tracing")]
    if was_connected {
        tracing::warn!(node, reason, "ledger unreachable, serving on the local view");
    } else {
        tracing::debug!(node, reason, "ledger still unreachable");
    }
    #[cfg(feature = "metrics")]
    {
        gauge!(LEDGER_CONNECTED).set(0.0);
        counter!(LEDGER_SYNC_FAILURES).increment(1);
    }
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = (node, reason, was_connected);
}

/// A shared ledger synced again after failures.
#[inline]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn ledger_reconnected(node: &str) {
    #[cfg(feature = "tracing")]
    tracing::info!(node, "ledger reconnected");
    #[cfg(feature = "metrics")]
    gauge!(LEDGER_CONNECTED).set(1.0);
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = node;
}

/// `disconnect` closed the sessions of `selector`.
#[inline]
pub(crate) fn admin_disconnect(selector: &crate::edge::admin::Selector, closed: usize) {
    #[cfg(feature = "tracing")]
    tracing::info!(selector = ?selector, closed, "operator disconnect");
}

// ---- Notifications ----

/// One notification pass finished.
#[inline]
pub(crate) fn notify_pass(
    report: &crate::edge::notify::NotifyReport,
    stopwatch: Stopwatch,
    timer: &dyn Timer,
) {
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    let elapsed = stopwatch.elapsed(timer);
    #[cfg(feature = "tracing")]
    tracing::debug!(
        statuses_computed = report.statuses_computed,
        statuses_changed = report.statuses_changed,
        status_notifications = report.status_notifications,
        header_notifications = report.header_notifications,
        outpoints_computed = report.outpoints_computed,
        outpoint_notifications = report.outpoint_notifications,
        noise_pings = report.noise_pings,
        failures = report.failures,
        duration = ?elapsed,
        "notify pass"
    );
    #[cfg(feature = "metrics")]
    {
        counter!(NOTIFY_PASSES).increment(1);
        counter!(STATUSES_COMPUTED).increment(report.statuses_computed as u64);
        counter!(STATUSES_CHANGED).increment(report.statuses_changed as u64);
        counter!(NOTIFICATIONS_QUEUED, "kind" => "status").increment(report.status_notifications as u64);
        counter!(NOTIFICATIONS_QUEUED, "kind" => "header").increment(report.header_notifications as u64);
        counter!(NOTIFICATIONS_QUEUED, "kind" => "outpoint").increment(report.outpoint_notifications as u64);
        counter!(NOTIFICATIONS_QUEUED, "kind" => "ping").increment(report.noise_pings as u64);
        if let Some(elapsed) = elapsed {
            histogram!(NOTIFY_PASS_TIME).record(elapsed);
        }
    }
}

/// `deliver` sent one notification.
#[inline]
pub(crate) fn notification_sent(kind: &'static str) {
    #[cfg(feature = "metrics")]
    counter!(NOTIFICATIONS_SENT, "kind" => kind).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = kind;
}

// ---- Host and caches ----

/// A host call failed or timed out.
#[inline]
pub(crate) fn host_error(operation: &'static str, error: &Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(operation, error = %error, "host call failed");
    #[cfg(feature = "metrics")]
    counter!(HOST_ERRORS, "operation" => operation).increment(1);
}

/// A whole cache was cleared (`cause`: `tip` or `reorg`).
#[inline]
pub(crate) fn cache_cleared(cache: &'static str, cause: &'static str) {
    #[cfg(feature = "tracing")]
    tracing::debug!(cache, cause, "cache cleared");
    #[cfg(feature = "metrics")]
    counter!(CACHE_CLEARS, "cache" => cache).increment(1);
}

/// One cache lookup.
#[inline]
pub(crate) fn cache_lookup(cache: &'static str, hit: bool) {
    #[cfg(feature = "metrics")]
    if hit {
        counter!(CACHE_HITS, "cache" => cache).increment(1);
    } else {
        counter!(CACHE_MISSES, "cache" => cache).increment(1);
    }
}

/// Counts the evictions of a cache (with the `metrics` feature).
#[inline]
pub(crate) fn count_evictions<K, V>(
    builder: moka::future::CacheBuilder<K, V, moka::future::Cache<K, V>>,
    cache: &'static str,
) -> moka::future::CacheBuilder<K, V, moka::future::Cache<K, V>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    #[cfg(feature = "metrics")]
    return builder.eviction_listener(move |_, _, cause| {
        if cause.was_evicted() {
            counter!(CACHE_EVICTIONS, "cache" => cache).increment(1);
        }
    });
    #[cfg(not(feature = "metrics"))]
    builder
}

/// Sets the gauges sampled from the manager's summary (housekeeping does
/// this every `sweep_interval`, and so does every `info()` call).
#[inline]
pub(crate) fn sample(info: &crate::edge::admin::Info, queued_notifications: usize) {
    #[cfg(feature = "metrics")]
    {
        gauge!(SESSIONS).set(info.sessions as f64);
        gauge!(GROUPS).set(info.groups as f64);
        gauge!(SUBSCRIPTIONS).set(info.subs as f64);
        gauge!(SUBSCRIBED_SCRIPTS).set(info.distinct_subs as f64);
        gauge!(HEADER_SUBSCRIBERS).set(info.header_subs as f64);
        gauge!(QUEUED_NOTIFICATIONS).set(queued_notifications as f64);
        let caches = &info.caches;
        for (name, stats) in [
            ("history", &caches.history),
            ("txids", &caches.txids),
            ("merkle", &caches.merkle),
            ("checkpoints", &caches.checkpoints),
            ("fees", &caches.fees),
            ("outpoints", &caches.outpoints),
        ] {
            gauge!(CACHE_BYTES, "cache" => name).set(stats.bytes as f64);
            gauge!(CACHE_ENTRIES, "cache" => name).set(stats.entries as f64);
        }
    }
}

/// Whether `sample` does anything (so callers skip gathering its input).
pub(crate) const SAMPLES: bool = cfg!(feature = "metrics");

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    /// The crate documentation's table lists exactly the metrics in [`METRICS`].
    #[test]
    fn the_documented_table_is_the_list() {
        let docs = include_str!("../lib.rs");
        let documented: std::collections::BTreeSet<&str> = docs
            .lines()
            .filter_map(|line| line.strip_prefix("//! | `indexer_sessions_"))
            .filter_map(|rest| rest.split('`').next())
            .collect();
        let listed: std::collections::BTreeSet<&str> = METRICS
            .iter()
            .map(|(name, ..)| name.strip_prefix("indexer_sessions_").unwrap())
            .collect();
        assert_eq!(documented, listed);
        for (name, kind, ..) in METRICS {
            let row = docs
                .lines()
                .find(|line| line.starts_with(&format!("//! | `{name}`")))
                .unwrap();
            let kind = format!("| {} |", format!("{kind:?}").to_lowercase());
            assert!(row.contains(&kind), "{row} is not a {kind}");
        }
    }
}
