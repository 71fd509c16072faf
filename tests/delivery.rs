//! Durable delivery end to end: SIP over UDP in, signed webhooks out to a real hyper
//! receiver in this process, the outbox in a temporary sled directory.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::receiver::{Receiver, Reply};
use common::{CallSpec, Harness, assert_valid};
use siphook::config::Config;
use siphook::deliver::Delivery;
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn endpoint(rx: &Receiver, extra: &str) -> String {
    format!(
        "[[endpoints]]\nname = \"test\"\nurl = \"{}\"\nallow_http = true\nsecrets = [\"{SECRET}\"]\ntimeout = \"2s\"\nretry_schedule = [\"0s\", \"20ms\", \"20ms\", \"20ms\"]\n{extra}\n",
        rx.url()
    )
}

fn verify(req: &common::receiver::Received) {
    let id = req.header("webhook-id");
    let ts = req.header("webhook-timestamp");
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(&req.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(common::hmac_sha256(&key, &signed))
    );
    assert_eq!(req.header("webhook-signature"), expected);
    let now = siphook::vocab::Timestamp::now().millis() / 1000;
    assert!(
        (now - ts.parse::<i64>().unwrap()).abs() < 300,
        "timestamp within 5 minutes"
    );
}

#[tokio::test]
async fn signed_webhooks_for_every_event_in_order() {
    let mut rx = Receiver::ok().await;
    let (h, delivery, _dir) = common::start_delivery(&endpoint(&rx, "")).await;
    let call = CallSpec::new("deliver-1");
    h.send_all(&call.answered_flow()).await;
    let mut types = Vec::new();
    for seq in 1..=4 {
        let req = rx.next().await;
        verify(&req);
        let ev = req.json();
        assert_valid(&ev);
        assert_eq!(ev["sequence"], seq);
        assert_eq!(req.header("webhook-id"), ev["id"].as_str().unwrap());
        assert_eq!(req.header("content-type"), "application/json");
        assert!(req.header("user-agent").starts_with("siphook/"));
        types.push(ev["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        types,
        [
            "call.initiated",
            "call.ringing",
            "call.answered",
            "call.completed"
        ]
    );
    h.wait_metric("siphook_deliveries_total", &[("outcome", "delivered")], 4.0)
        .await;
    h.wait_metric("siphook_outbox_pending", &[("endpoint", "test")], 0.0)
        .await;
    assert!(delivery.outbox.dead_letters(None).unwrap().is_empty());
    drop(h.gw.shutdown().await);
    delivery.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_webhook_id() {
    let mut rx = Receiver::ok().await;
    rx.script([Reply::status(500), Reply::status(503)]);
    let (h, _delivery, _dir) =
        common::start_delivery(&endpoint(&rx, "events = [\"call.initiated\"]")).await;
    h.send(&CallSpec::new("retry-1").invite(1)).await;
    let attempts = [rx.next().await, rx.next().await, rx.next().await];
    let ids: Vec<&str> = attempts.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    for a in &attempts {
        verify(a);
    }
    h.wait_metric("siphook_deliveries_total", &[("outcome", "delivered")], 1.0)
        .await;
    assert_eq!(
        h.metric("siphook_deliveries_total", &[("outcome", "retry")]),
        2.0
    );
}

#[tokio::test]
async fn a_client_error_is_one_attempt_then_a_dead_letter() {
    let mut rx = Receiver::ok().await;
    rx.script([Reply::status(400)]);
    let (h, delivery, _dir) =
        common::start_delivery(&endpoint(&rx, "events = [\"call.initiated\"]")).await;
    h.send(&CallSpec::new("dead-1").invite(1)).await;
    let first = rx.next().await;
    h.wait_metric("siphook_deadletters", &[("endpoint", "test")], 1.0)
        .await;
    let dead = delivery.outbox.dead_letters(Some("test")).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, first.header("webhook-id"));
    assert_eq!(dead[0].state.attempts, 1);
    assert_eq!(dead[0].state.last_status, Some(400));
    assert_eq!(
        h.metric(
            "siphook_deliveries_total",
            &[("outcome", "rejected"), ("code", "400")]
        ),
        1.0
    );
    // Nothing else was tried: the next call's event is the next request.
    h.send(&CallSpec::new("dead-2").invite(1)).await;
    assert_eq!(rx.next().await.json()["call"]["sip_call_id"], "dead-2");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let mut rx = Receiver::ok().await;
    rx.script([Reply {
        status: 429,
        headers: vec![("retry-after", "1".into())],
        delay: Duration::ZERO,
    }]);
    let (h, _d, _dir) =
        common::start_delivery(&endpoint(&rx, "events = [\"call.initiated\"]")).await;
    h.send(&CallSpec::new("ra-1").invite(1)).await;
    let first = rx.next().await;
    let second = rx.next().await;
    assert!(
        second.at.duration_since(first.at) >= Duration::from_millis(950),
        "waited {:?}",
        second.at.duration_since(first.at)
    );
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_is_retried() {
    let mut rx = Receiver::ok().await;
    rx.script([Reply {
        status: 200,
        headers: vec![],
        delay: Duration::from_secs(30),
    }]);
    let (h, _d, _dir) = common::start_delivery(
        &endpoint(&rx, "events = [\"call.initiated\"]\ntimeout = \"200ms\"")
            .replace("timeout = \"2s\"\n", ""),
    )
    .await;
    h.send(&CallSpec::new("hang-1").invite(1)).await;
    let first = rx.next().await;
    let second = rx.next().await;
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
    h.wait_metric("siphook_deliveries_total", &[("outcome", "delivered")], 1.0)
        .await;
    assert_eq!(
        h.metric(
            "siphook_deliveries_total",
            &[("outcome", "retry"), ("code", "none")]
        ),
        1.0
    );
}

#[tokio::test]
async fn gone_pauses_the_endpoint_and_events_keep_queuing() {
    let mut rx = Receiver::ok().await;
    rx.script([Reply::status(410)]);
    let (h, delivery, _dir) =
        common::start_delivery(&endpoint(&rx, "events = [\"call.initiated\"]")).await;
    h.send(&CallSpec::new("gone-1").invite(1)).await;
    rx.next().await;
    h.wait_metric(
        "siphook_endpoint_state",
        &[("endpoint", "test"), ("state", "paused")],
        1.0,
    )
    .await;
    h.send(&CallSpec::new("gone-2").invite(1)).await;
    h.wait_metric("siphook_outbox_pending", &[("endpoint", "test")], 2.0)
        .await;
    assert_eq!(delivery.outbox.pending_count("test"), 2);
    assert!(
        rx.requests.try_recv().is_err(),
        "nothing is sent while paused"
    );
}

#[tokio::test]
async fn form_encoding() {
    let mut rx = Receiver::ok().await;
    let (h, _d, _dir) = common::start_delivery(&endpoint(
        &rx,
        "events = [\"call.initiated\"]\nencoding = \"form\"",
    ))
    .await;
    h.send(&CallSpec::new("form-1").invite(1)).await;
    let req = rx.next().await;
    verify(&req);
    assert_eq!(
        req.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    let body = String::from_utf8(req.body.to_vec()).unwrap();
    let pairs: HashMap<&str, &str> = body.split('&').filter_map(|p| p.split_once('=')).collect();
    assert_eq!(pairs["type"], "call.initiated");
    assert_eq!(pairs["call.sip_call_id"], "form-1");
    assert_eq!(pairs["call.from.user"], "%2B15557654321");
    assert_eq!(pairs["call.to.tag"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_calls_against_a_flaky_receiver_arrive_complete_and_in_order() {
    // Fails 30% of requests, deterministically pseudo-random by request count.
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = counter.clone();
    let mut rx = Receiver::start(Arc::new(move |_| {
        let n = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        Reply::status(if r % 10 < 3 { 503 } else { 200 })
    }))
    .await;
    let schedule = format!("retry_schedule = [{}]", vec!["\"5ms\""; 30].join(", "));
    let (h, delivery, _dir) = common::start_delivery(&endpoint(&rx, "max_in_flight = 32").replace(
        "retry_schedule = [\"0s\", \"20ms\", \"20ms\", \"20ms\"]",
        &schedule,
    ))
    .await;
    const CALLS: usize = 200;
    for i in 0..CALLS {
        h.send_all(&CallSpec::new(&format!("flaky-{i}")).answered_flow())
            .await;
        if i % 20 == 19 {
            h.wait_metric("siphook_sip_messages_total", &[], ((i + 1) * 7) as f64)
                .await;
        }
    }
    let mut delivered: HashMap<String, Vec<u64>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < CALLS * 4 {
        let req = rx.next().await;
        let ev = req.json();
        let call = ev["call"]["sip_call_id"].as_str().unwrap().to_owned();
        let seq = ev["sequence"].as_u64().unwrap();
        let list = delivered.entry(call.clone()).or_default();
        // A call's event N+1 is never sent before N was accepted.
        assert!(
            list.last()
                .is_none_or(|&last| seq == last || seq == last + 1),
            "{call}: {seq} after {list:?}"
        );
        if list.last() != Some(&seq) {
            list.push(seq);
        }
        seen.insert(req.header("webhook-id").to_owned());
    }
    assert_eq!(delivered.len(), CALLS);
    assert!(delivered.values().all(|s| s == &[1, 2, 3, 4]));
    h.wait_metric(
        "siphook_deliveries_total",
        &[("outcome", "delivered")],
        (CALLS * 4) as f64,
    )
    .await;
    assert!(delivery.outbox.dead_letters(None).unwrap().is_empty());
    assert!(
        h.metric("siphook_deliveries_total", &[("outcome", "retry")]) > 100.0,
        "the receiver really failed"
    );
}

#[tokio::test]
async fn auth_custom_headers_and_cloudevents() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    let mut rx = Receiver::ok().await;
    let extra = format!(
        "events = [\"call.initiated\"]\nformat = \"cloudevents\"\nauth = {{ bearer_token_file = \"{}\" }}\nheaders = {{ \"X-Tenant\" = \"acme\" }}",
        token_file.display()
    );
    let (h, _d, _dir) = common::start_delivery(&endpoint(&rx, &extra)).await;
    h.send(&CallSpec::new("ce-1").invite(1)).await;
    let req = rx.next().await;
    verify(&req);
    assert_eq!(req.header("authorization"), "Bearer s3cr3t-token");
    assert_eq!(req.header("x-tenant"), "acme");
    assert_eq!(req.header("content-type"), "application/cloudevents+json");
    let ce = req.json();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["type"], "call.initiated");
    assert_eq!(ce["id"], req.header("webhook-id"));
    assert_valid(&ce["data"]);
}

#[tokio::test]
async fn abort_message_header_stops_retries() {
    let mut rx = Receiver::ok().await;
    rx.script([Reply {
        status: 500,
        headers: vec![("webhook-delivery", "abort-message".into())],
        delay: Duration::ZERO,
    }]);
    let (h, delivery, _dir) =
        common::start_delivery(&endpoint(&rx, "events = [\"call.initiated\"]")).await;
    h.send(&CallSpec::new("abort-1").invite(1)).await;
    rx.next().await;
    h.wait_metric("siphook_deadletters", &[("endpoint", "test")], 1.0)
        .await;
    assert_eq!(
        delivery.outbox.dead_letters(None).unwrap()[0]
            .state
            .attempts,
        1
    );
}

#[tokio::test]
async fn an_exhausted_schedule_dead_letters_and_the_next_event_of_the_call_goes_on() {
    let mut rx = Receiver::ok().await;
    rx.script(vec![Reply::status(503); 4]);
    let (h, delivery, _dir) = common::start_delivery(&endpoint(
        &rx,
        "events = [\"call.initiated\", \"call.completed\"]",
    ))
    .await;
    let call = CallSpec::new("exhaust-1");
    h.send_all(&[call.invite(1), call.resp(486, 1, "INVITE", Some("b"))])
        .await;
    for _ in 0..4 {
        assert_eq!(rx.next().await.json()["type"], "call.initiated");
    }
    // Dead-lettering the head releases the call's next event.
    assert_eq!(rx.next().await.json()["type"], "call.completed");
    let dead = delivery.outbox.dead_letters(Some("test")).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].state.attempts, 4);
    assert_eq!(dead[0].state.last_status, Some(503));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_after_ten_failures_probes_and_closes() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let up = healthy.clone();
    let mut rx = Receiver::start(Arc::new(move |_| {
        Reply::status(if up.load(std::sync::atomic::Ordering::SeqCst) {
            200
        } else {
            503
        })
    }))
    .await;
    let schedule = format!("retry_schedule = [{}]", vec!["\"10ms\""; 50].join(", "));
    let extra =
        "events = [\"call.initiated\"]\nmax_in_flight = 1\ncircuit_probe_interval = \"300ms\"";
    let (h, delivery, _dir) = common::start_delivery(&endpoint(&rx, extra).replace(
        "retry_schedule = [\"0s\", \"20ms\", \"20ms\", \"20ms\"]",
        &schedule,
    ))
    .await;
    for i in 0..3 {
        h.send(&CallSpec::new(&format!("cb-{i}")).invite(1)).await;
    }
    for _ in 0..10 {
        rx.next().await;
    }
    h.wait_metric(
        "siphook_endpoint_state",
        &[("endpoint", "test"), ("state", "circuit_open")],
        1.0,
    )
    .await;
    // Open: the next attempts are probes, one per interval.
    let a = rx.next().await;
    let b = rx.next().await;
    let gap = b.at.duration_since(a.at);
    assert!(
        gap >= std::time::Duration::from_millis(250),
        "probes {gap:?} apart"
    );
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    h.wait_metric(
        "siphook_endpoint_state",
        &[("endpoint", "test"), ("state", "healthy")],
        1.0,
    )
    .await;
    h.wait_metric("siphook_deliveries_total", &[("outcome", "delivered")], 3.0)
        .await;
    assert!(
        delivery.outbox.dead_letters(None).unwrap().is_empty(),
        "the outage cost no event"
    );
    assert_eq!(delivery.outbox.pending_count("test"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_and_counts_instead_of_growing() {
    let rx = Receiver::start(Arc::new(|_| Reply::status(503))).await;
    let schedule = "retry_schedule = [\"0s\", \"1h\"]";
    let text = endpoint(&rx, "").replace(
        "retry_schedule = [\"0s\", \"20ms\", \"20ms\", \"20ms\"]",
        schedule,
    );
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n[outbox]\npath = \"{}\"\nmax_bytes = \"1MiB\"\n{text}",
        dir.path().join("outbox").display()
    );
    let config = Config::parse(&text).unwrap();
    let mut h = Harness::with_config(config.clone()).await;
    let events = std::mem::replace(&mut h.gw.events, mpsc::channel(1).1);
    let outbox = siphook::deliver::open_outbox(&config).unwrap();
    let _d = Delivery::start(&config, outbox.clone(), events, None, h.gw.metrics.clone()).unwrap();
    let mut sent = 0;
    for batch in 0..60 {
        for i in 0..25 {
            h.send_all(&CallSpec::new(&format!("full-{batch}-{i}")).answered_flow())
                .await;
        }
        sent += 25 * 7;
        h.wait_metric("siphook_sip_messages_total", &[], sent as f64)
            .await;
        if h.metric("siphook_events_refused_total", &[("reason", "outbox_full")]) > 0.0 {
            break;
        }
    }
    assert!(
        h.metric("siphook_events_refused_total", &[("reason", "outbox_full")]) > 0.0,
        "never filled"
    );
    assert_eq!(
        h.metric("siphook_outbox_accepting", &[]),
        0.0,
        "full means not ready"
    );
    let size = outbox.size_on_disk();
    // Growth stops near the limit: one group commit past it at most.
    assert!(size < 4 << 20, "outbox grew to {size} bytes");
}

#[tokio::test]
async fn the_first_schedule_entry_delays_the_first_attempt() {
    let mut rx = Receiver::ok().await;
    let text = endpoint(&rx, "events = [\"call.initiated\"]").replace(
        "retry_schedule = [\"0s\", \"20ms\", \"20ms\", \"20ms\"]",
        "retry_schedule = [\"300ms\"]",
    );
    let (h, _d, _dir) = common::start_delivery(&text).await;
    let sent = std::time::Instant::now();
    h.send(&CallSpec::new("delay-1").invite(1)).await;
    let req = rx.next().await;
    assert!(
        req.at.duration_since(sent) >= Duration::from_millis(300),
        "{:?}",
        req.at.duration_since(sent)
    );
}

/// Opens the outbox again in this process: sled's flusher thread lets go of the
/// previous handle's file lock a moment after the handle is dropped.
async fn open_when_free(config: &Config) -> Arc<siphook::outbox::Outbox> {
    let start = std::time::Instant::now();
    loop {
        match siphook::deliver::open_outbox(config) {
            Ok(o) => return o,
            Err(e) => assert!(
                start.elapsed() < common::DEADLINE,
                "outbox stays locked: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_gone_pause_survives_a_restart_until_resumed() {
    let mut rx = Receiver::ok().await;
    rx.script([Reply::status(410)]);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n[outbox]\npath = \"{}\"\n{}",
        dir.path().join("outbox").display(),
        endpoint(&rx, "events = [\"call.initiated\"]")
    );
    let config = Config::parse(&text).unwrap();
    let run = |config: Config| async move {
        let mut h = Harness::with_config(config.clone()).await;
        let events = std::mem::replace(&mut h.gw.events, mpsc::channel(1).1);
        let outbox = open_when_free(&config).await;
        let d = Delivery::start(&config, outbox, events, None, h.gw.metrics.clone()).unwrap();
        (h, d)
    };
    let (h, d) = run(config.clone()).await;
    h.send(&CallSpec::new("gone-restart").invite(1)).await;
    let first = rx.next().await;
    h.wait_metric(
        "siphook_endpoint_state",
        &[("endpoint", "test"), ("state", "paused")],
        1.0,
    )
    .await;
    drop(h.gw.shutdown().await);
    d.shutdown().await.unwrap();

    // Restarted: still paused, the event still pending.
    let (h, d) = run(config.clone()).await;
    assert_eq!(
        h.metric(
            "siphook_endpoint_state",
            &[("endpoint", "test"), ("state", "paused")]
        ),
        1.0
    );
    assert_eq!(d.outbox.pending_count("test"), 1);
    // What `siphook endpoints resume` does, with siphook stopped.
    drop(h.gw.shutdown().await);
    d.shutdown().await.unwrap();
    let ob = open_when_free(&config).await;
    assert!(ob.is_paused("test"));
    ob.set_paused("test", false).unwrap();
    ob.commit().await.unwrap();
    drop(ob);

    let (_h, _d) = run(config).await;
    let again = rx.next().await;
    assert_eq!(again.header("webhook-id"), first.header("webhook-id"));
}
