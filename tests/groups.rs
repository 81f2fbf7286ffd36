//! IP-subnet groups through the public API: shared throttling, retained
//! cost on reconnect, refund and deletion, exemptions, per-group limits.

mod common;

use common::Fixture;
use indexer_sessions::Cost;
use indexer_sessions::{Config, Limits, Refusal};
use std::time::Duration;

#[test]
fn sessions_group_by_24_and_48_and_mapped_ipv6_joins_its_ipv4_group() {
    let fx = Fixture::new(Config::default());
    let (_a, _) = fx.connect("203.0.113.5:1");
    let (_b, _) = fx.connect("[::ffff:203.0.113.77]:2");
    let (_c, _) = fx.connect("[2001:db8:1:2::5]:3");
    let (_d, _) = fx.connect("[2001:db8:1:ffff::9]:4");
    let mut groups: Vec<(String, usize)> = fx
        .manager
        .groups()
        .into_iter()
        .map(|g| (g.network.to_string(), g.sessions))
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        vec![
            ("2001:db8:1::/48".to_string(), 2),
            ("203.0.113.0/24".to_string(), 2)
        ]
    );
}

#[test]
fn exempt_networks_have_no_group_and_the_list_is_configurable() {
    let fx = Fixture::new(Config::default());
    let (local, _) = fx.connect("127.0.0.1:1");
    let (private, _) = fx.connect("192.168.1.20:1");
    assert_eq!(local.group(), None);
    assert_eq!(private.group(), None);
    assert!(fx.manager.groups().is_empty());

    let fx = Fixture::new(Config {
        exempt_networks: vec![],
        ..Config::default()
    });
    let (local, _) = fx.connect("127.0.0.1:1");
    assert_eq!(local.group().unwrap().to_string(), "127.0.0.0/24");
}

#[test]
fn two_sessions_of_one_24_throttle_each_other() {
    let fx = Fixture::new(Config::default());
    let (heavy, _) = fx.connect("203.0.113.5:1");
    let (light, _) = fx.connect("203.0.113.6:1");
    let (elsewhere, _) = fx.connect("198.51.100.6:1");
    heavy.charge(Cost::constant(5490.0)); // heavy: 5495
    // The light session's next recalculation sees the group's other cost.
    fx.manager.recalculate();
    let cost = light.cost();
    assert_eq!((cost.own, cost.group_extra, cost.retained), (5.0, 5495.0, 0.0));
    assert_eq!(light.throttle().fraction, 0.5);
    assert_eq!(light.throttle().target, 5);
    assert_eq!(elsewhere.throttle().fraction, 0.0);
}

#[test]
fn a_new_member_sees_its_groups_cost_at_once_even_below_the_soft_limit() {
    let fx = Fixture::new(Config::default());
    let (first, _) = fx.connect("203.0.113.5:1");
    first.charge(Cost::constant(295.0)); // 300
    fx.manager.recalculate(); // reported to the group
    let (second, _) = fx.connect("203.0.113.6:1");
    let cost = second.cost();
    assert_eq!((cost.own, cost.group_extra, cost.retained), (5.0, 300.0, 0.0));
    let row = fx
        .manager
        .sessions()
        .into_iter()
        .find(|row| row.id == second.id())
        .unwrap();
    assert_eq!(row.extra_cost, 300.0);
}

#[test]
fn a_client_reconnecting_from_the_same_24_inherits_the_retained_cost() {
    let fx = Fixture::new(Config::default());
    let (first, _) = fx.connect("203.0.113.5:1");
    first.charge(Cost::constant(9995.0));
    assert_eq!(first.throttle().target, 0);
    drop(first);
    let group = &fx.manager.groups()[0];
    assert_eq!((group.sessions, group.retained_cost), (0, 10_000.0));

    let (again, _) = fx.connect("203.0.113.99:7");
    let cost = again.cost();
    assert_eq!(
        (cost.own, cost.group_extra, cost.retained),
        (5.0, 10_000.0, 10_000.0)
    );
    assert_eq!(again.throttle().target, 0, "still over the hard limit");
    let (fresh, _) = fx.connect("198.51.100.1:7");
    assert_eq!(fresh.throttle().target, 10);
}

#[test]
fn retained_cost_is_refunded_and_empty_groups_deleted() {
    let fx = Fixture::new(Config::default());
    let (session, _) = fx.connect("203.0.113.5:1");
    session.charge(Cost::constant(995.0)); // 1000
    drop(session);
    assert_eq!(fx.manager.groups()[0].retained_cost, 1000.0);
    // Refunds follow time: 10000 / 5000 = 2 per second, 600 per 300 s.
    fx.timer.advance(Duration::from_secs(300));
    fx.manager.recalculate();
    assert_eq!(fx.manager.groups()[0].retained_cost, 400.0);
    // Recalculating again with no time passed refunds nothing.
    for _ in 0..10 {
        fx.manager.recalculate();
    }
    assert_eq!(fx.manager.groups()[0].retained_cost, 400.0);
    fx.timer.advance(Duration::from_secs(100));
    fx.manager.recalculate();
    assert_eq!(fx.manager.groups()[0].retained_cost, 200.0);
    fx.timer.advance(Duration::from_secs(100));
    fx.manager.recalculate();
    assert!(fx.manager.groups().is_empty(), "empty group at zero is deleted");
}

#[test]
fn groups_with_live_sessions_survive_refunds() {
    let fx = Fixture::new(Config::default());
    let (_session, _) = fx.connect("203.0.113.5:1");
    fx.timer.advance(Duration::from_secs(3000));
    fx.manager.recalculate();
    fx.manager.recalculate();
    assert_eq!(fx.manager.groups().len(), 1);
}

#[test]
fn the_per_group_session_limit_refuses_with_a_clear_error() {
    let fx = Fixture::new(Config {
        limits: Limits {
            max_sessions_per_group: Some(2),
            ..Limits::default()
        },
        ..Config::default()
    });
    let _a = fx.connect("203.0.113.5:1");
    let _b = fx.connect("203.0.113.6:1");
    let refused = fx.try_connect("203.0.113.7:1").err().expect("third is refused");
    assert!(
        matches!(&refused, Refusal::GroupFull { group, max: 2 } if group.to_string() == "203.0.113.0/24")
    );
    assert!(refused.to_string().contains("203.0.113.0/24"));
    assert_eq!(fx.manager.session_count(), 2);
    // Other groups and exempt addresses are unaffected.
    fx.connect("198.51.100.1:1");
    fx.connect("127.0.0.1:1");
    fx.connect("127.0.0.2:1");
    fx.connect("127.0.0.3:1");
}

#[test]
fn after_a_recalculation_every_member_sees_the_rest_of_its_group_exactly() {
    let fx = Fixture::new(Config::default());
    let members: Vec<_> = (1..=6)
        .map(|i| fx.connect(&format!("203.0.113.{i}:1")).0)
        .collect();
    for (i, member) in members.iter().enumerate() {
        member.charge(Cost::new(100.0 * (i as f64 + 1.0)).unwrap());
    }
    fx.timer.advance(Duration::from_secs(7)); // some decay
    fx.manager.recalculate();
    let group = fx.manager.groups()[0].cost;
    for member in &members {
        let cost = member.cost();
        assert!((cost.total() - group).abs() < 1e-9, "{cost:?} ≠ {group}");
    }
}
