//! `nats://` endpoints against a real `nats-server -js`: every event reaches the
//! stream once, signed as a webhook is, in per-call order; an outage, a missing
//! stream and refused credentials keep every event in the outbox until the
//! broker takes it.

mod common;

use std::time::Duration;

use base64::Engine;
use common::admin::{parse_metrics, request, start, sum, wait_metric};
use common::nats::{NatsServer, create_stream, messages, wait_messages};
use common::{CallSpec, DEADLINE, FOUR, hmac_sha256};
use serde_json::Value;
use siphook::config::Config;
use siphook::pipeline::Signal;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn nats_endpoint(url: &str, extra: &str) -> String {
    format!(
        "[[endpoints]]\nname = \"stream\"\nurl = \"{url}\"\nsubject = \"siphook.{{type}}\"\nevents = [\"call.*\"]\nsecrets = [\"{SECRET}\"]\ntimeout = \"2s\"\ncircuit_probe_interval = \"200ms\"\n{extra}\n"
    )
}

/// What a consumer reads of one message: subject, event, and its headers.
struct Seen {
    subject: String,
    event: Value,
    msg_id: String,
    webhook_id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

fn seen(m: &async_nats::jetstream::message::StreamMessage) -> Seen {
    let h = |name: &str| {
        m.headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| panic!("header {name} missing"))
    };
    Seen {
        subject: m.subject.to_string(),
        event: serde_json::from_slice(&m.payload).expect("the payload is the event's JSON"),
        msg_id: h("Nats-Msg-Id"),
        webhook_id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body: m.payload.to_vec(),
    }
}

/// The events of each call in stream order, by `call.id`.
fn by_call(all: &[Seen]) -> std::collections::BTreeMap<String, Vec<&str>> {
    let mut calls: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for s in all {
        let call = s.event["call"]["id"].as_str().unwrap().to_owned();
        calls
            .entry(call)
            .or_default()
            .push(s.event["type"].as_str().unwrap());
    }
    calls
}

/// Waits until stream `CALLS` holds one answered call, and checks it is one:
/// its four events, in order.
async fn one_call_arrives(js: &async_nats::jetstream::Context) {
    let all: Vec<Seen> = wait_messages(js, "CALLS", 4)
        .await
        .iter()
        .map(seen)
        .collect();
    assert_eq!(
        by_call(&all).into_values().collect::<Vec<_>>(),
        vec![FOUR.to_vec()]
    );
}

fn assert_once_each(all: &[Seen]) {
    let mut ids: Vec<&str> = all.iter().map(|s| s.msg_id.as_str()).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "an event is in the stream twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_stream_once_signed_as_webhooks_in_call_order() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = NatsServer::start(dir.path(), &[]).await else {
        return;
    };
    let js = nats.jetstream(None).await;
    create_stream(&js, "CALLS", &["siphook.>"]).await;
    let s = start(&nats_endpoint(&nats.url(), ""), true).await;

    s.send_calls(&["nats-1", "nats-2", "nats-3"]).await;
    let all: Vec<Seen> = wait_messages(&js, "CALLS", 12)
        .await
        .iter()
        .map(seen)
        .collect();
    assert_eq!(all.len(), 12);
    assert_once_each(&all);
    let calls = by_call(&all);
    assert_eq!(calls.len(), 3);
    for (call, kinds) in &calls {
        assert_eq!(kinds, &FOUR, "call {call} out of order");
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    for m in &all {
        let ty = m.event["type"].as_str().unwrap();
        assert_eq!(m.subject, format!("siphook.{ty}"));
        assert_eq!(m.msg_id, m.event["id"].as_str().unwrap());
        assert_eq!(m.webhook_id, m.msg_id);
        common::assert_valid(&m.event);
        let signed = [
            m.webhook_id.as_bytes(),
            b".",
            m.timestamp.as_bytes(),
            b".",
            &m.body,
        ]
        .concat();
        let want = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, &signed))
        );
        assert_eq!(m.signature, want, "signature of {}", m.webhook_id);
    }
    let metrics = parse_metrics(
        &request(s.admin(), "GET", "/metrics", None, None)
            .await
            .text(),
    );
    assert_eq!(
        sum(
            &metrics,
            "siphook_deliveries_total",
            &[("endpoint", "stream"), ("outcome", "delivered")]
        ),
        12.0
    );
    let ep = s.endpoint("stream").await;
    assert_eq!(
        (ep["state"].as_str(), ep["pending"].as_u64()),
        (Some("healthy"), Some(0))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_for_30_s_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nats) = NatsServer::start(dir.path(), &[]).await else {
        return;
    };
    let js = nats.jetstream(None).await;
    create_stream(&js, "CALLS", &["siphook.>"]).await;
    let s = start(&nats_endpoint(&nats.url(), ""), true).await;
    s.send_calls(&["before-1"]).await;
    wait_messages(&js, "CALLS", 4).await;

    nats.stop().await;
    s.send_calls(&["during-1", "during-2"]).await;
    wait_metric(
        s.admin(),
        "siphook_deliveries_total",
        &[("endpoint", "stream"), ("outcome", "unavailable")],
        1.0,
    )
    .await;
    let waiting = s.wait_endpoint("stream", "circuit_open", 8).await;
    let error = waiting["last_error"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("NATS"), "{error}");
    // The outage the issue names: half a minute with events waiting.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(s.endpoint("stream").await["pending"], 8);
    assert_eq!(s.endpoint("stream").await["dead_letters"], 0);

    nats.restart().await;
    s.send_calls(&["after-1"]).await;
    let js = nats.jetstream(None).await;
    let all: Vec<Seen> = wait_messages(&js, "CALLS", 16)
        .await
        .iter()
        .map(seen)
        .collect();
    s.wait_endpoint("stream", "healthy", 0).await;
    // Nothing more trickles in: 16 is all there is.
    let again = messages(&js, "CALLS").await;
    assert_eq!((all.len(), again.len()), (16, 16));
    assert_once_each(&all);
    let calls = by_call(&all);
    assert_eq!(calls.len(), 4);
    for (call, kinds) in &calls {
        assert_eq!(kinds, &FOUR, "call {call} out of order");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_reported_and_its_events_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = NatsServer::start(dir.path(), &[]).await else {
        return;
    };
    let s = start(&nats_endpoint(&nats.url(), ""), true).await;
    // Known before any event: the endpoint checks that a stream captures it.
    let idle = s.wait_endpoint("stream", "misconfigured", 0).await;
    assert!(
        idle["last_error"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no JetStream stream captures the subject \"siphook.call.initiated\""),
        "{idle:#}"
    );
    s.send_calls(&["nostream-1"]).await;

    let ep = s.wait_endpoint("stream", "misconfigured", 4).await;
    let error = ep["last_error"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no JetStream stream captures the subject \"siphook.call.initiated\""),
        "{error}"
    );
    let ready = request(s.admin(), "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json()["reasons"],
        serde_json::json!(["endpoint_misconfigured"])
    );
    assert_eq!(
        ready.json()["misconfigured_endpoints"],
        serde_json::json!(["stream"])
    );
    let metrics = wait_metric(
        s.admin(),
        "siphook_deliveries_total",
        &[
            ("endpoint", "stream"),
            ("outcome", "unavailable"),
            ("code", "no_stream"),
        ],
        1.0,
    )
    .await;
    assert_eq!(
        sum(
            &metrics,
            "siphook_endpoint_state",
            &[("endpoint", "stream"), ("state", "misconfigured")]
        ),
        1.0
    );

    // The operator adds the stream: what waited goes out, in order.
    let js = nats.jetstream(None).await;
    create_stream(&js, "CALLS", &["siphook.>"]).await;
    one_call_arrives(&js).await;
    s.wait_endpoint("stream", "healthy", 0).await;
    let ready = request(s.admin(), "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_a_clear_error_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) =
        NatsServer::start(dir.path(), &["--user", "siphook", "--pass", "right-pass"]).await
    else {
        return;
    };
    let js = nats.jetstream(Some(("siphook", "right-pass"))).await;
    create_stream(&js, "CALLS", &["siphook.>"]).await;
    let password = dir.path().join("nats.password");
    std::fs::write(&password, "wrong-pass\n").unwrap();
    let auth = format!(
        "auth = {{ user = \"siphook\", password_file = \"{}\" }}",
        password.display()
    );
    let s = start(&nats_endpoint(&nats.url(), &auth), true).await;
    s.send_calls(&["creds-1"]).await;

    let ep = s.wait_endpoint("stream", "misconfigured", 4).await;
    let error = ep["last_error"]["error"].as_str().unwrap_or_default();
    assert_eq!(
        error,
        "the NATS server refused siphook's credentials (authorization violation)"
    );
    assert!(!ep.to_string().contains("wrong-pass"));
    let ready = request(s.admin(), "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503);

    // Fixed and reloaded (SIGHUP): the four events waited and now go out.
    std::fs::write(&password, "right-pass\n").unwrap();
    let fixed = Config::parse(&s.text).unwrap();
    s.signals
        .send(Signal::Reload(Box::new(Ok(fixed))))
        .await
        .unwrap();
    one_call_arrives(&js).await;
    s.wait_endpoint("stream", "healthy", 0).await;
    s.stop().await;
}

/// Two siphooks fed the same mirror publish to one stream: JetStream's duplicate
/// window (by `Nats-Msg-Id`, the event id both compute alike) leaves each event
/// once, in per-call order, and when one instance dies mid-run the other still
/// brings every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_active_pair_publishes_each_event_once_and_survives_losing_one() {
    use common::binary_config;
    use common::process::Siphook;
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = NatsServer::start(dir.path(), &[]).await else {
        return;
    };
    let js = nats.jetstream(None).await;
    create_stream(&js, "CALLS", &["siphook.>"]).await;
    let extra =
        "subject = \"siphook.{type}\"\ntimeout = \"2s\"\ncircuit_probe_interval = \"200ms\"";
    let mut pair = Vec::new();
    let mut admin_b = None;
    for name in ["a", "b"] {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        let (config, sip) = binary_config(&home, &nats.url(), extra);
        admin_b = Some(common::admin_addr(&config));
        pair.push((Siphook::spawn(&config), sip));
    }
    let admin_b = admin_b.unwrap();
    let mirror = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for (s, sip) in &mut pair {
        s.wait_ready(&mirror, sip, "pair-probe").await;
    }
    // The SBC mirrors every message to both.
    let send = |calls: std::ops::Range<u32>, to: Vec<String>| {
        let mirror = &mirror;
        async move {
            for i in calls {
                for m in CallSpec::new(&format!("pair-{i}")).answered_flow() {
                    for sip in &to {
                        mirror.send_to(m.as_bytes(), sip).await.unwrap();
                    }
                }
            }
        }
    };
    let both: Vec<String> = pair.iter().map(|(_, sip)| sip.clone()).collect();
    send(0..5, both.clone()).await;
    wait_messages(&js, "CALLS", 1 + 5 * 4).await;
    // Mid-run: calls still arriving at both when one dies.
    send(5..8, both.clone()).await;
    pair[0].0.kill9().await;
    send(8..10, vec![both[1].clone()]).await;

    let all: Vec<Seen> = wait_messages(&js, "CALLS", 1 + 10 * 4)
        .await
        .iter()
        .map(seen)
        .collect();
    // The survivor has nothing left for the stream: 41 is all there is.
    let started = tokio::time::Instant::now();
    while common::admin::endpoint(admin_b, "crm").await["pending"] != 0 {
        assert!(
            started.elapsed() < DEADLINE,
            "the survivor keeps events pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(messages(&js, "CALLS").await.len(), 41);
    assert_once_each(&all);
    let calls = by_call(&all);
    assert_eq!(calls.len(), 11);
    for (call, kinds) in &calls {
        if kinds.len() == 1 {
            assert_eq!(kinds, &["call.initiated"], "the probe {call}");
        } else {
            assert_eq!(kinds, &FOUR, "call {call} out of order");
        }
    }
}

/// A token and an nkey seed, each read from a file, are what the server accepts;
/// neither shows in `/v1/endpoints` or the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_and_an_nkey_seed_from_files_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let token = "s3cret-token-for-siphook";
    let cases = [
        (
            "token",
            vec!["--auth".to_owned(), token.to_owned()],
            token.to_owned(),
        ),
        (
            "nkey_seed",
            vec!["-c".to_owned(), config.display().to_string()],
            seed.clone(),
        ),
    ];
    for (kind, args, secret) in cases {
        let home = dir.path().join(kind);
        std::fs::create_dir_all(&home).unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some(nats) = NatsServer::start(&home, &args).await else {
            return;
        };
        let opts = match kind {
            "token" => async_nats::ConnectOptions::with_token(token.into()),
            _ => async_nats::ConnectOptions::with_nkey(seed.clone()),
        };
        let js = nats.jetstream_with(opts).await;
        create_stream(&js, "CALLS", &["siphook.>"]).await;
        let file = home.join("credential");
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        let auth = format!("auth = {{ {kind}_file = \"{}\" }}", file.display());
        let s = start(&nats_endpoint(&nats.url(), &auth), true).await;
        s.send_calls(&[&format!("{kind}-1")]).await;
        one_call_arrives(&js).await;
        let shown = s.endpoint("stream").await.to_string()
            + &request(s.admin(), "GET", "/metrics", None, None)
                .await
                .text();
        assert!(!shown.contains(&secret), "the {kind} leaked");
        s.stop().await;
    }
}

/// A stream that captures only some of the endpoint's subjects is a missing
/// stream for the rest, and says which, before any event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_misses_one_subject_is_named_while_idle() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = NatsServer::start(dir.path(), &[]).await else {
        return;
    };
    let js = nats.jetstream(None).await;
    create_stream(&js, "SOME", &["siphook.call.initiated"]).await;
    let s = start(&nats_endpoint(&nats.url(), ""), true).await;
    let idle = s.wait_endpoint("stream", "misconfigured", 0).await;
    let error = idle["last_error"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("captures the subject \"siphook.call.ringing\""),
        "{error}"
    );
    js.delete_stream("SOME").await.unwrap();
    create_stream(&js, "CALLS", &["siphook.>"]).await;
    s.wait_endpoint("stream", "healthy", 0).await;
    let ready = request(s.admin(), "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    s.stop().await;
}
