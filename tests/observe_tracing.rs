//! The `tracing` feature: a span per session and the operator's events,
//! seen by a subscriber that records every event with its fields and the
//! fields of its session span.

mod common;

use common::Fixture;
use futures::executor::block_on;
use indexer_sessions::Cost;
use indexer_sessions::testing::HostBehaviour;
use indexer_sessions::{
    Config, DisconnectReason, Error, HashX, Height, HistoryEntry, Limits, Refusal, TxHash,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

type Fields = BTreeMap<String, String>;

/// One recorded event.
#[derive(Debug, Clone)]
struct Record {
    level: Level,
    message: String,
    fields: Fields,
    /// The fields of the span the event belongs to (empty for none).
    span: Fields,
}

struct Collect(Fields);

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Record>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Collect(Fields::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields.0);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Collect(Fields::new());
        event.record(&mut fields);
        let mut fields = fields.0;
        let message = fields.remove("message").unwrap_or_default();
        let span = ctx
            .event_span(event)
            .and_then(|span| span.extensions().get::<Fields>().cloned())
            .unwrap_or_default();
        self.0.lock().unwrap().push(Record {
            level: *event.metadata().level(),
            message,
            fields,
            span,
        });
    }
}

impl Recorder {
    fn take(&self) -> Vec<Record> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The one event with `message` among `records`.
fn one<'a>(records: &'a [Record], message: &str) -> &'a Record {
    let found: Vec<_> = records.iter().filter(|r| r.message == message).collect();
    assert_eq!(found.len(), 1, "one {message:?} in {records:#?}");
    found[0]
}

fn hashx(n: u8) -> (String, HashX) {
    let alias = format!("{n:02x}").repeat(32);
    let hashx = HashX::from_scripthash_hex(&alias).unwrap();
    (alias, hashx)
}

fn header(height: u32) -> Vec<u8> {
    let mut header = vec![7; 80];
    header[..4].copy_from_slice(&height.to_le_bytes());
    header
}

#[test]
fn sessions_cost_admin_and_listener_events_carry_their_fields() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    tracing::subscriber::with_default(subscriber, || {
        let config = Config {
            limits: Limits {
                max_sessions: 2,
                ..Limits::default()
            },
            ..Config::default()
        };
        let fx = Fixture::new(config);
        let (a, _) = fx.connect("203.0.113.1:1000");
        let (b, _) = fx.connect("198.51.100.9:2000");
        let records = recorder.take();
        let opened: Vec<_> = records.iter().filter(|r| r.message == "session opened").collect();
        assert_eq!(opened.len(), 2);
        assert_eq!(opened[0].span["peer"], "203.0.113.1:1000");
        assert_eq!(opened[0].span["group"], "203.0.113.0/24");
        assert_eq!(opened[0].span["kind"], "Tcp");
        assert_eq!(opened[0].span["id"], a.id().to_string());
        assert_eq!(opened[0].level, Level::DEBUG);
        let paused = one(&records, "listener state changed");
        assert_eq!(paused.level, Level::INFO);
        assert_eq!(paused.fields["state"], "Paused");
        assert_eq!(paused.fields["sessions"], "2");

        // Refused at capacity: why, and who.
        assert!(matches!(
            fx.try_connect("192.0.2.5:3000"),
            Err(Refusal::AtCapacity { .. })
        ));
        let records = recorder.take();
        let refused = one(&records, "session refused");
        assert_eq!(refused.level, Level::INFO);
        assert_eq!(refused.fields["peer"], "192.0.2.5:3000");
        assert!(refused.fields["reason"].contains("2"), "{refused:?}");
        assert_eq!(
            refused.fields["reason"],
            Refusal::AtCapacity { max: 2 }.to_string()
        );

        // Throttled: the target moves, with the cost that moved it.
        let before = a.throttle().target;
        a.charge(Cost::constant(5495.0));
        let records = recorder.take();
        let throttled = one(&records, "throttle changed");
        assert_eq!(throttled.level, Level::INFO);
        assert_eq!(throttled.fields["target"], "5");
        assert_eq!(throttled.fields["target_before"], before.to_string());
        assert_eq!(throttled.fields["cost"], "5500.0");
        assert_eq!(throttled.span["id"], a.id().to_string());

        // −101 at the hard limit, then the host closes the session.
        a.charge(Cost::constant(5000.0));
        recorder.take();
        assert!(matches!(block_on(a.admit()), Err(Error::ExcessiveCost)));
        let records = recorder.take();
        let refused = one(&records, "excessive resource usage");
        assert_eq!(refused.fields["code"], "-101");
        assert_eq!(refused.span["peer"], "203.0.113.1:1000");
        block_on(a.close(DisconnectReason::ExcessiveCost));
        let records = recorder.take();
        let closed = one(&records, "session closed");
        assert_eq!(closed.level, Level::INFO);
        assert_eq!(closed.fields["reason"], "excessive_cost");
        assert_eq!(
            closed.fields["detail"],
            DisconnectReason::ExcessiveCost.to_string()
        );
        assert_eq!(closed.span["id"], a.id().to_string());
        let resumed = one(&records, "listener state changed");
        assert_eq!(resumed.fields["state"], "Accepting");

        // Ban and unban.
        let network = "198.51.100.0/24".parse().unwrap();
        let closed_by_ban = block_on(fx.manager.ban(network, Some(Duration::from_secs(60)))).unwrap();
        assert_eq!(closed_by_ban, 1);
        let records = recorder.take();
        let ban = one(&records, "network banned");
        assert_eq!(ban.fields["network"], "198.51.100.0/24");
        assert_eq!(ban.fields["closed"], "1");
        assert_eq!(ban.fields["duration"], "Some(60s)");
        assert_eq!(one(&records, "session closed").fields["reason"], "banned");
        assert_eq!(one(&records, "session closed").span["peer"], "198.51.100.9:2000");
        assert!(matches!(
            fx.try_connect("198.51.100.10:1"),
            Err(Refusal::Banned { .. })
        ));
        assert!(one(&recorder.take(), "session refused").fields["reason"].contains("banned"));
        assert!(fx.manager.unban(network));
        let records = recorder.take();
        assert_eq!(one(&records, "network unbanned").fields["existed"], "true");
        drop(b);

        // Limits changed.
        let limits = Limits {
            max_sessions: 50,
            ..Limits::default()
        };
        fx.manager.set_limits(limits).unwrap();
        let records = recorder.take();
        assert!(one(&records, "limits changed").fields["limits"].contains("max_sessions: 50"));

        // Operator disconnect, and a handle the host dropped.
        let (c, _) = fx.connect("192.0.2.7:1");
        let (d, _) = fx.connect("192.0.2.8:1");
        recorder.take();
        assert_eq!(
            block_on(fx.manager.disconnect(indexer_sessions::Selector::Session(c.id()))).unwrap(),
            1
        );
        let records = recorder.take();
        assert_eq!(one(&records, "operator disconnect").fields["closed"], "1");
        assert_eq!(one(&records, "session closed").fields["reason"], "admin");
        drop(d);
        let records = recorder.take();
        let dropped = one(&records, "session closed");
        assert_eq!(dropped.fields["reason"], "dropped");
        assert!(!dropped.fields.contains_key("detail"));
        assert_eq!(dropped.span["peer"], "192.0.2.8:1");
    });
}

#[test]
fn notify_passes_cache_clears_host_errors_and_slow_consumers() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    tracing::subscriber::with_default(subscriber, || {
        let fx = Fixture::new(Config::default());
        fx.db.push_block(header(0), vec![]);
        let (alias, script) = hashx(3);
        let (session, log) = fx.connect("203.0.113.1:1000");
        block_on(session.subscribe(&alias)).unwrap();
        block_on(session.subscribe_headers()).unwrap();
        recorder.take();

        // A block that touches the script: one pass, its counts and duration.
        fx.db.add_history(
            script,
            HistoryEntry {
                txid: TxHash([9; 32]),
                height: Height(1),
            },
        );
        let tip = fx.db.push_block(header(1), vec![TxHash([9; 32])]);
        let report = block_on(fx.manager.notify(tip, [script].iter()));
        let records = recorder.take();
        let pass = one(&records, "notify pass");
        assert_eq!(pass.level, Level::DEBUG);
        assert_eq!(
            pass.fields["statuses_computed"],
            report.statuses_computed.to_string()
        );
        assert_eq!(pass.fields["statuses_changed"], "1");
        assert_eq!(pass.fields["status_notifications"], "1");
        assert_eq!(pass.fields["header_notifications"], "1");
        assert_eq!(pass.fields["duration"], "Some(0ns)");
        let clears: Vec<_> = records.iter().filter(|r| r.message == "cache cleared").collect();
        assert!(
            clears
                .iter()
                .any(|r| r.fields["cache"] == "fees" && r.fields["cause"] == "tip"),
            "{clears:?}"
        );
        assert!(clears.iter().all(|r| r.level == Level::DEBUG));

        // The index fails: a warning names the operation.
        fx.db.set_behaviour(HostBehaviour::Failing);
        let tip = fx.db.push_block(header(2), vec![]);
        let report = block_on(fx.manager.notify(tip, [script].iter()));
        assert!(report.failures > 0);
        let records = recorder.take();
        let failed: Vec<_> = records
            .iter()
            .filter(|r| r.message == "host call failed")
            .collect();
        assert!(!failed.is_empty());
        assert!(failed.iter().all(|r| r.level == Level::WARN));
        assert!(
            failed.iter().any(|r| r.fields["operation"] == "history"),
            "{failed:?}"
        );
        assert!(failed[0].fields["error"].contains("host unavailable"));
        fx.db.set_behaviour(HostBehaviour::Normal);

        // The client never reads its notifications: the sweep cuts it off.
        assert!(log.sent().is_empty());
        fx.timer.advance(Duration::from_secs(21));
        assert_eq!(block_on(fx.manager.sweep()), 1);
        let records = recorder.take();
        let slow = one(&records, "slow consumer cut off");
        assert_eq!(slow.level, Level::WARN);
        assert_eq!(slow.fields["reason"], "send_timeout");
        assert_eq!(slow.span["peer"], "203.0.113.1:1000");
        assert_eq!(one(&records, "session closed").fields["reason"], "send_timeout");
    });
}

#[test]
fn a_disabled_level_records_nothing() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry()
        .with(recorder.clone())
        .with(tracing_subscriber::filter::LevelFilter::WARN);
    tracing::subscriber::with_default(subscriber, || {
        let fx = Fixture::new(Config::default());
        let (session, _) = fx.connect("203.0.113.1:1000");
        session.charge(Cost::constant(5495.0));
        let tip = fx.db.push_block(header(1), vec![]);
        block_on(fx.manager.notify(tip, [].iter()));
        drop(session);
    });
    assert!(recorder.take().is_empty());
}
