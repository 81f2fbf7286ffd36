//! The example server's `--status` page, driven in headless Chromium
//! (Debian's `chromium`) while clients connect: it must show them, and a
//! throttled group, without a reload. Fails when Chromium is missing
//! (`scripts/test.sh` installs it).
#![cfg(feature = "tokio")]

include!("support/example_server.rs");

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{LineClient, blocking, chromium_dumping_dom, http_get, start};

/// The text of the element with this id in a dumped DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let start = at + dom[at..].find('>').expect("the tag ends") + 1;
    let end = start + dom[start..].find('<').expect("the text ends");
    &dom[start..end]
}

/// The opening tag of the row showing this group.
fn group_row<'a>(dom: &'a str, group: &str) -> &'a str {
    let marker = format!("data-group=\"{group}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("group {group} is not in the page:\n{dom}"));
    let start = dom[..at].rfind('<').expect("in a tag");
    let end = at + dom[at..].find('>').expect("the tag ends");
    &dom[start..=end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_updates_in_chromium() {
    // Loopback addresses form /24 groups, and every byte costs 1.
    let server = start(&[
        "--status",
        "127.0.0.1:0",
        "--exempt-networks",
        "none",
        "--cost-soft-limit",
        "100",
        "--cost-hard-limit",
        "20000",
        "--bandwidth-unit-cost",
        "1",
        "--request-sleep-ms",
        "1",
    ])
    .await;
    let status = server.status_addr().expect("--status is bound");
    let listen = server.listen_addr();
    let profile = std::env::temp_dir().join(format!("indexer-sessions-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    // Virtual time stands still while a fetch is pending, and each poll
    // waits up to a second for a change: the page polls for 8 s of virtual
    // time, some seconds of real time, then the DOM is printed.
    let mut chromium = chromium_dumping_dom(&format!("http://{status}/"), &profile, 8000);
    let mut stdout = chromium.stdout.take().unwrap();
    let dom = std::thread::spawn(move || {
        let mut dom = String::new();
        stdout.read_to_string(&mut dom).map(|_| dom)
    });

    // The page is loaded and has its first data (no session yet).
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.observer().polls() == 0 {
        assert!(
            chromium.try_wait().unwrap().is_none(),
            "chromium exited before polling"
        );
        assert!(Instant::now() < deadline, "the page never asked for /status.json");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.manager().session_count(), 0);

    // Three clients in 127.0.0.0/24, one of which runs up its cost, and
    // one quiet client in 127.0.1.0/24.
    let mut clients = Vec::new();
    for source in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.1.1"] {
        clients.push(LineClient::connect_from(source, listen).await);
    }
    let clients = blocking(move || {
        for client in &mut clients {
            client.version();
        }
        for id in 1..=40 {
            let pong = clients[0].call(id, "server.ping", json!([]));
            assert!(pong.get("error").is_none(), "{pong}");
        }
        clients
    })
    .await;
    let rows = server.manager().sessions();
    assert!(
        rows.iter().any(|row| !row.flags.ends_with("10")),
        "a session is throttled: {rows:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if chromium.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = chromium.kill();
            let _ = chromium.wait();
            panic!("chromium did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dom = dom.join().unwrap().expect("reads chromium's output");
    let _ = std::fs::remove_dir_all(&profile);
    drop(clients);

    assert_eq!(
        server.observer().page_loads(),
        1,
        "the page was loaded once, never reloaded"
    );
    assert!(server.observer().polls() >= 2, "the page polled again");
    let updates: u32 = text_of(&dom, "updates").parse().expect("a number of updates");
    assert!(updates >= 2, "updated in place {updates} times");
    assert_eq!(text_of(&dom, "session-count"), "4", "{dom}");
    let throttled_sessions: u32 = text_of(&dom, "throttled-count").parse().expect("a count");
    assert!((1..=3).contains(&throttled_sessions), "{dom}");
    assert_eq!(text_of(&dom, "group-count"), "2", "{dom}");
    let throttled = group_row(&dom, "127.0.0.0/24");
    assert!(throttled.contains("data-throttled=\"true\""), "{throttled}");
    let quiet = group_row(&dom, "127.0.1.0/24");
    assert!(quiet.contains("data-throttled=\"false\""), "{quiet}");
    assert!(
        dom.contains("tag throttled"),
        "the throttle is in the journal:\n{dom}"
    );
    let (code, body) = blocking(move || http_get(status, "/status.json")).await;
    assert_eq!(code, 200, "{body}");
    let data: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(data["limits"]["soft"], 100.0, "{data}");
    assert_eq!(data["limits"]["hard"], 20000.0, "{data}");
    assert_eq!(data["events"]["counts"]["throttled"], 1, "{data}");
    let (code, _) = blocking(move || http_get(status, "/metrics")).await;
    assert_eq!(code, 404, "no metrics on the status listener");
    server.shutdown().await;
}
