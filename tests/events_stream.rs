//! The operator's view of events: the live stream (`/v1/events/stream`, SSE with
//! `Last-Event-ID` catch-up) and the search of recent events with each
//! endpoint's delivery record, against a real siphook, real SIP over loopback
//! and a real webhook receiver.

mod common;

use common::FOUR;

use common::CallSpec;
use common::admin::{Sse, TOKEN, get, parse_metrics, request, start, sum, wait_metric};
use common::receiver::{Receiver, Reply};
use serde_json::Value;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
fn endpoint(rx: &Receiver, name: &str, schedule: &str) -> String {
    format!(
        "[[endpoints]]\nname = \"{name}\"\nurl = \"{}\"\nallow_http = true\nsecrets = [\"{SECRET}\"]\ntimeout = \"2s\"\nretry_schedule = {schedule}\n",
        rx.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_carries_each_event_once_and_a_reconnect_gets_what_it_missed() {
    let mut rx = Receiver::ok().await;
    let s = start(&endpoint(&rx, "crm", "[\"0s\"]"), true).await;
    let mut sse = Sse::open(s.admin(), "", None).await;
    assert_eq!(sse.status, 200);
    let hello = sse.next().await.unwrap();
    assert_eq!(hello.comments, vec!["connected"]);

    let call = CallSpec::new("stream-1");
    s.send(&call.answered_flow()).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(sse.next_event().await);
    }
    let kinds: Vec<&str> = seen.iter().map(|m| m.event.as_deref().unwrap()).collect();
    assert_eq!(kinds, FOUR);
    let ids: Vec<u64> = seen
        .iter()
        .map(|m| m.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");
    for m in &seen {
        let v: Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(v["type"], m.event.as_deref().unwrap());
        assert_eq!(v["call"]["sip_call_id"], "stream-1");
    }
    // The webhook got the same events, byte for byte the same JSON.
    for m in &seen {
        let hook = rx.next().await;
        assert_eq!(hook.body, m.data.as_bytes());
    }
    drop(sse);

    // Reconnected after the second event: the third and fourth come first,
    // then the live ones, filtered by type.
    let mut again = Sse::open(s.admin(), "", Some(&ids[1].to_string())).await;
    assert_eq!(again.next().await.unwrap().comments, vec!["connected"]);
    assert_eq!(again.next_event().await, seen[2]);
    assert_eq!(again.next_event().await, seen[3]);
    let mut only = Sse::open(s.admin(), "?types=call.completed,call.ring*", None).await;
    let second = CallSpec::new("stream-2");
    s.send(&second.answered_flow()).await;
    let live: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(again.next_event().await.event.unwrap());
        }
        v
    };
    assert_eq!(live, FOUR);
    assert_eq!(only.next_event().await.event.unwrap(), "call.ringing");
    assert_eq!(only.next_event().await.event.unwrap(), "call.completed");

    let m = parse_metrics(
        &request(s.admin(), "GET", "/metrics", None, None)
            .await
            .text(),
    );
    assert_eq!(sum(&m, "siphook_admin_stream_clients", &[]), 2.0);
    drop((again, only));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_by_call_shows_each_endpoints_delivery_record() {
    let mut ok = Receiver::ok().await;
    let mut refusing = Receiver::start(std::sync::Arc::new(|_| Reply::status(500))).await;
    let config = format!(
        "{}{}",
        endpoint(&ok, "crm", "[\"0s\"]"),
        endpoint(&refusing, "bi", "[\"0s\", \"1h\"]")
    );
    let s = start(&config, true).await;
    let call = CallSpec::new("search-1");
    s.send(&call.answered_flow()).await;
    s.send(&CallSpec::new("other-call").answered_flow()).await;
    for _ in 0..8 {
        ok.next().await;
    }
    // Each call's first event to "bi" failed and waits an hour; the rest of
    // that call waits behind it, in order.
    for _ in 0..2 {
        refusing.next().await;
    }
    wait_metric(
        s.admin(),
        "siphook_outbox_pending",
        &[("endpoint", "bi")],
        8.0,
    )
    .await;
    let state = |e: &Value, endpoint: &str| {
        let d = e["deliveries"].as_array().unwrap();
        d.iter()
            .find(|d| d["endpoint"] == endpoint)
            .unwrap()
            .clone()
    };
    let found = poll_search(s.admin(), "sip_call_id=search-1", |items| {
        items
            .iter()
            .all(|e| state(e, "crm")["state"] == "delivered")
            && state(&items[3], "bi")["state"] == "retrying"
    })
    .await;
    let kinds: Vec<&str> = found
        .iter()
        .rev()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, FOUR, "newest first, only that call");
    for e in &found {
        assert_eq!(e["call"]["sip_call_id"], "search-1");
        let crm = state(e, "crm");
        assert!(crm["delivered_at"].is_string(), "{crm}");
        assert_eq!(crm["attempts"], 0);
    }
    let bi = state(&found[3], "bi");
    assert_eq!(bi["attempts"], 1, "{bi}");
    assert_eq!(bi["last_status"], 500);
    assert!(bi["next_attempt_at"].is_string());
    for e in &found[..3] {
        let bi = state(e, "bi");
        assert_eq!(
            (bi["state"].as_str(), &bi["attempts"]),
            (Some("pending"), &0.into())
        );
        assert!(bi["delivered_at"].is_null() && bi["next_attempt_at"].is_null());
    }
    // The same by siphook's call id, and one event by its id with its body.
    let call_id = found[0]["call"]["id"].as_str().unwrap().to_owned();
    let by_id = get(
        s.admin(),
        &format!("/v1/events?call_id={call_id}&limit=2"),
        TOKEN,
    )
    .await
    .json();
    assert_eq!(by_id["items"].as_array().unwrap().len(), 2);
    let event_id = found[0]["id"].as_str().unwrap();
    let one = get(s.admin(), &format!("/v1/events/{event_id}"), TOKEN).await;
    assert_eq!(one.status, 200);
    let one = one.json();
    assert_eq!(one["body"]["id"], event_id);
    assert_eq!(one["body"]["type"], "call.completed");
    let missing = get(s.admin(), "/v1/events/evt_nope", TOKEN).await;
    assert_eq!(missing.status, 404);
    let bad = get(s.admin(), "/v1/events?phone=1", TOKEN).await;
    assert_eq!(bad.status, 400);
    s.stop().await;
}

/// Searches until `done` holds for the items (bounded), and returns them.
async fn poll_search(
    admin: std::net::SocketAddr,
    query: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..200 {
        let r = get(admin, &format!("/v1/events?{query}"), TOKEN).await;
        assert_eq!(r.status, 200, "{}", r.text());
        last = r.json()["items"].as_array().unwrap().clone();
        if last.len() == 4 && done(&last) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the search never settled: {last:?}");
}
