//! The admin listener as an SRE and Prometheus meet it: real HTTP against a real
//! siphook (started in-process through `serve`, the binary's own path), with SIP
//! over loopback UDP, a real webhook receiver and the outbox in a temp dir.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use common::CallSpec;
use common::admin::{self, AdminReply, TOKEN, get, has, parse_metrics, post, request, start, sum};
use common::receiver::{Receiver, Reply};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn endpoint(rx: &Receiver, extra: &str) -> String {
    format!(
        "[[endpoints]]\nname = \"crm\"\nurl = \"{}\"\nallow_http = true\nsecrets = [\"{SECRET}\"]\ntimeout = \"2s\"\nretry_schedule = [\"0s\"]\n{extra}\n",
        rx.url()
    )
}

fn assert_problem(r: &AdminReply, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/problem+json");
    let p = r.json();
    assert_eq!(p["status"], status);
    assert!(p["title"].is_string() && p["detail"].is_string(), "{p}");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_real_traffic() {
    let mut rx = Receiver::ok().await;
    let s = start(&endpoint(&rx, ""), true).await;
    let before = parse_metrics(
        &request(s.admin(), "GET", "/metrics", None, None)
            .await
            .text(),
    );
    assert_eq!(sum(&before, "siphook_sip_messages_total", &[]), 0.0);
    assert_eq!(
        sum(
            &before,
            "siphook_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(
        has(&before, "process_resident_memory_bytes"),
        "process metrics"
    );
    assert!(has(&before, "process_open_fds"));
    // Series an alert takes `increase()` of exist at 0 before anything happened:
    // the labelled counters from the registry's start, the endpoint's latency
    // histogram from its dispatcher's.
    let present = |name: &str, label: (&str, &str)| {
        before.iter().any(|s| {
            s.name == name
                && s.value == 0.0
                && s.labels
                    .iter()
                    .any(|(k, v)| (k.as_str(), v.as_str()) == label)
        })
    };
    for (name, label) in [
        ("siphook_events_refused_total", ("reason", "outbox_full")),
        ("siphook_sip_parse_errors_total", ("reason", "malformed")),
        ("siphook_calls_dropped_total", ("reason", "table_full")),
        (
            "siphook_tcp_connections_closed_total",
            ("reason", "idle_timeout"),
        ),
        (
            "siphook_hep_packets_dropped_total",
            ("reason", "auth_failed"),
        ),
        ("siphook_capture_clock_skew_total", ("source", "hep")),
        (
            "siphook_event_delivery_latency_seconds_count",
            ("endpoint", "crm"),
        ),
    ] {
        assert!(present(name, label), "{name}{{{label:?}}} is not at 0");
    }

    let call = CallSpec::new("metrics-1");
    s.send(&call.answered_flow()).await;
    for _ in 0..4 {
        rx.next().await;
    }
    admin::wait_metric(
        s.admin(),
        "siphook_event_delivery_latency_seconds_count",
        &[("endpoint", "crm")],
        4.0,
    )
    .await;
    // The dispatcher records the latency a moment before it updates its gauges:
    // scrape once they have settled (bounded).
    let mut m = Vec::new();
    for _ in 0..200 {
        m = parse_metrics(
            &request(s.admin(), "GET", "/metrics", None, None)
                .await
                .text(),
        );
        if sum(&m, "siphook_outbox_pending", &[("endpoint", "crm")]) == 0.0
            && sum(
                &m,
                "siphook_outbox_oldest_pending_seconds",
                &[("endpoint", "crm")],
            ) == 0.0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let udp = [("transport", "udp")];
    assert_eq!(sum(&m, "siphook_sip_messages_total", &udp), 7.0);
    assert_eq!(
        sum(
            &m,
            "siphook_sip_messages_total",
            &[("kind", "request"), ("method", "INVITE")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "siphook_sip_messages_total",
            &[("kind", "response"), ("method", "INVITE")]
        ),
        3.0, // 100, 180, 200; the last 200 answers the BYE
    );
    let bytes: usize = call.answered_flow().iter().map(String::len).sum();
    assert_eq!(
        sum(&m, "siphook_sip_received_bytes_total", &udp),
        bytes as f64
    );
    for t in [
        "call.initiated",
        "call.ringing",
        "call.answered",
        "call.completed",
    ] {
        assert_eq!(sum(&m, "siphook_events_total", &[("type", t)]), 1.0, "{t}");
    }
    assert_eq!(
        sum(&m, "siphook_calls_total", &[("disposition", "answered")]),
        1.0
    );
    assert_eq!(sum(&m, "siphook_calls_active", &[]), 0.0);
    assert_eq!(
        sum(
            &m,
            "siphook_deliveries_total",
            &[
                ("endpoint", "crm"),
                ("outcome", "delivered"),
                ("code", "200")
            ]
        ),
        4.0
    );
    assert_eq!(
        sum(
            &m,
            "siphook_delivery_attempt_duration_seconds_count",
            &[("endpoint", "crm")]
        ),
        4.0
    );
    // Every latency is below the histogram's top bucket and counted in +Inf.
    assert_eq!(
        sum(
            &m,
            "siphook_event_delivery_latency_seconds_bucket",
            &[("endpoint", "crm"), ("le", "+Inf")]
        ),
        4.0
    );
    assert!(sum(&m, "siphook_outbox_commit_duration_seconds_count", &[]) >= 1.0);
    assert!(sum(&m, "siphook_outbox_size_bytes", &[]) > 0.0);
    assert_eq!(
        sum(&m, "siphook_outbox_pending", &[("endpoint", "crm")]),
        0.0
    );
    assert_eq!(
        sum(
            &m,
            "siphook_outbox_oldest_pending_seconds",
            &[("endpoint", "crm")]
        ),
        0.0
    );
    assert_eq!(
        sum(
            &m,
            "siphook_endpoint_state",
            &[("endpoint", "crm"), ("state", "healthy")]
        ),
        1.0
    );
    assert_eq!(sum(&m, "siphook_deadletters", &[("endpoint", "crm")]), 0.0);

    // Label values stay bounded: no Call-ID, number or address in any of them.
    for sample in &m {
        for (_, v) in &sample.labels {
            assert!(
                !v.contains("metrics-1") && !v.contains("+1555") && !v.contains("127.0.0.1"),
                "unbounded label value in {sample:?}"
            );
        }
    }
    let text = request(s.admin(), "GET", "/metrics", None, None).await;
    assert!(
        text.header("content-type")
            .starts_with("text/plain; version=0.0.4")
    );
    promtool_check_metrics(&text.text());
    s.stop().await;
}

/// `promtool check metrics` lints names, units, suffixes and help texts. CI must
/// have it (Debian package `prometheus`); elsewhere a missing promtool is said.
fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e)
            if std::env::var_os("CI").is_none()
                && std::env::var_os("SIPHOOK_REQUIRE_TOOLS").is_none() =>
        {
            eprintln!("promtool not run ({e}); CI requires it");
            return;
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_flip_when_the_outbox_is_full() {
    let rx = Receiver::start(Arc::new(|_| Reply::status(503))).await;
    let s = start(
        &format!(
            "max_bytes = \"1MiB\"\n{}",
            endpoint(&rx, "").replace(
                "retry_schedule = [\"0s\"]",
                "retry_schedule = [\"0s\", \"1h\"]"
            )
        ),
        true,
    )
    .await;
    let health = request(s.admin(), "GET", "/healthz", None, None).await;
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    let ready = request(s.admin(), "GET", "/readyz", None, None).await;
    assert_eq!(
        (ready.status, ready.json()),
        (200, json!({"status": "ready"}))
    );

    // Calls until the outbox passes max_bytes (bounded: 60 batches of 25 calls).
    let mut full = false;
    for batch in 0..60 {
        for i in 0..25 {
            s.send(&CallSpec::new(&format!("full-{batch}-{i}")).answered_flow())
                .await;
        }
        let sent = (batch + 1) as f64 * 25.0 * 7.0;
        let m = admin::wait_metric(s.admin(), "siphook_sip_messages_total", &[], sent).await;
        if sum(
            &m,
            "siphook_events_refused_total",
            &[("reason", "outbox_full")],
        ) > 0.0
        {
            full = true;
            break;
        }
    }
    assert!(full, "the outbox never filled");
    let unready = request(s.admin(), "GET", "/readyz", None, None).await;
    assert_eq!(unready.status, 503);
    assert_eq!(
        unready.json(),
        json!({"status": "unready", "reasons": ["outbox_full"]})
    );
    // Alive all the same: a full disk is not a reason to restart.
    assert_eq!(
        request(s.admin(), "GET", "/healthz", None, None)
            .await
            .status,
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn v1_refuses_a_missing_or_wrong_token_and_is_off_without_one() {
    let s = start("", true).await;
    // Missing, wrong, empty, a prefix of the right one.
    for token in [
        None,
        Some("wrong"),
        Some(""),
        Some(&TOKEN[..TOKEN.len() - 1]),
    ] {
        let r = request(s.admin(), "GET", "/v1/calls", token, None).await;
        assert_problem(&r, 401);
        assert_eq!(r.header("www-authenticate"), "Bearer realm=\"siphook\"");
    }
    let ok = get(s.admin(), "/v1/calls", TOKEN).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // The open endpoints stay open; unknown paths and methods are problems.
    assert_eq!(
        request(s.admin(), "GET", "/metrics", None, None)
            .await
            .status,
        200
    );
    assert_problem(&get(s.admin(), "/v1/nothing", TOKEN).await, 404);
    assert_problem(
        &request(s.admin(), "POST", "/v1/calls", Some(TOKEN), None).await,
        405,
    );
    assert_problem(
        &request(s.admin(), "DELETE", "/metrics", None, None).await,
        405,
    );
    assert_problem(&get(s.admin(), "/v1/calls?limit=0", TOKEN).await, 400);
    s.stop().await;

    let open = start("", false).await;
    let r = request(open.admin(), "GET", "/v1/endpoints", Some(TOKEN), None).await;
    let p = assert_problem(&r, 401);
    assert!(p["detail"].as_str().unwrap().contains("token_file"), "{p}");
    open.stop().await;
}

#[tokio::test]
async fn v1_calls_pages_through_active_calls() {
    let s = start("", true).await;
    let calls: Vec<CallSpec> = (0..5)
        .map(|i| CallSpec::new(&format!("page-{i}")))
        .collect();
    for c in &calls[..4] {
        s.send(&[c.invite(1)]).await;
    }
    s.send(&[calls[1].resp(180, 1, "INVITE", Some("b"))]).await;
    s.send(&[calls[2].resp(200, 1, "INVITE", Some("b"))]).await;
    // A completed call is not active.
    s.send(&calls[4].answered_flow()).await;
    admin::wait_metric(
        s.admin(),
        "siphook_events_total",
        &[],
        4.0 + 1.0 + 1.0 + 4.0,
    )
    .await;

    let first = get(s.admin(), "/v1/calls?limit=3", TOKEN).await.json();
    assert_eq!(first["total"], 4);
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let next = first["next"].as_str().unwrap().to_owned();
    let second = get(s.admin(), &format!("/v1/calls?limit=3&after={next}"), TOKEN)
        .await
        .json();
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["next"], Value::Null);
    let items: Vec<&Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .collect();
    let ids: Vec<&str> = items.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ordered by id");
    let mut states: Vec<(String, String)> = items
        .iter()
        .map(|c| {
            (
                c["sip_call_id"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("page-0".into(), "trying".into()),
            ("page-1".into(), "ringing".into()),
            ("page-2".into(), "answered".into()),
            ("page-3".into(), "trying".into()),
        ]
    );
    assert_eq!(items[0]["from"]["user"], "+15557654321");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_listed_and_replayed_over_http_are_delivered() {
    let status = Arc::new(AtomicU16::new(422));
    let st = status.clone();
    let mut rx = Receiver::start(Arc::new(move |_| Reply::status(st.load(Ordering::SeqCst)))).await;
    let s = start(&endpoint(&rx, "events = [\"call.initiated\"]"), true).await;
    for i in 0..3 {
        s.send(&[CallSpec::new(&format!("dead-{i}")).invite(1)])
            .await;
    }
    let mut first_ids = Vec::new();
    for _ in 0..3 {
        first_ids.push(rx.next().await.header("webhook-id").to_owned());
    }
    admin::wait_metric(
        s.admin(),
        "siphook_deadletters",
        &[("endpoint", "crm")],
        3.0,
    )
    .await;

    let page = get(s.admin(), "/v1/deadletters?endpoint=crm&limit=2", TOKEN)
        .await
        .json();
    let items = page["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["endpoint"], "crm");
    assert_eq!(items[0]["state"]["last_status"], 422);
    assert_eq!(items[0]["state"]["attempts"], 1);
    let rest = get(
        s.admin(),
        &format!(
            "/v1/deadletters?limit=2&after={}",
            page["next"].as_str().unwrap()
        ),
        TOKEN,
    )
    .await
    .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next"], Value::Null);
    let endpoints = get(s.admin(), "/v1/endpoints", TOKEN).await.json();
    assert_eq!(endpoints["items"][0]["dead_letters"], 3);
    assert_eq!(endpoints["items"][0]["last_error"]["status"], 422);

    let typo = post(
        s.admin(),
        "/v1/deadletters/replay",
        TOKEN,
        json!({"endpoint": "nope"}),
    )
    .await;
    assert_eq!(
        assert_problem(&typo, 404)["detail"],
        "no such endpoint: nope"
    );
    let bad = post(s.admin(), "/v1/deadletters/replay", TOKEN, json!({})).await;
    assert_problem(&bad, 400);
    status.store(200, Ordering::SeqCst);
    let one = items[0]["offset"].as_u64().unwrap();
    let r = post(
        s.admin(),
        "/v1/deadletters/replay",
        TOKEN,
        json!({"ids": [one, 999_999]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"replayed": [{"endpoint": "crm", "id": one}], "skipped": [], "not_found": [999_999]})
    );
    let again = rx.next().await;
    assert_eq!(
        again.header("webhook-id"),
        items[0]["event_id"].as_str().unwrap()
    );
    assert!(first_ids.contains(&again.header("webhook-id").to_owned()));

    let all = post(
        s.admin(),
        "/v1/deadletters/replay",
        TOKEN,
        json!({"all": true}),
    )
    .await
    .json();
    assert_eq!(all["replayed"].as_array().unwrap().len(), 2);
    let mut got = vec![
        rx.next().await.header("webhook-id").to_owned(),
        rx.next().await.header("webhook-id").to_owned(),
    ];
    got.sort();
    let mut want: Vec<String> = first_ids
        .iter()
        .filter(|id| id.as_str() != again.header("webhook-id"))
        .cloned()
        .collect();
    want.sort();
    assert_eq!(got, want, "the other two, with their original ids");
    admin::wait_metric(
        s.admin(),
        "siphook_deliveries_total",
        &[("outcome", "delivered")],
        3.0,
    )
    .await;
    let empty = get(s.admin(), "/v1/deadletters", TOKEN).await.json();
    assert_eq!(empty["items"], json!([]));
    let m = parse_metrics(
        &request(s.admin(), "GET", "/metrics", None, None)
            .await
            .text(),
    );
    assert_eq!(sum(&m, "siphook_deadletters", &[("endpoint", "crm")]), 0.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_endpoint_is_paused_shown_and_resumed_over_http() {
    let mut rx = Receiver::ok().await;
    rx.script([Reply::status(410)]);
    let s = start(&endpoint(&rx, "events = [\"call.initiated\"]"), true).await;
    let call = CallSpec::new("gone-1");
    s.send(&[call.invite(1)]).await;
    let refused = rx.next().await;
    admin::wait_metric(
        s.admin(),
        "siphook_endpoint_state",
        &[("endpoint", "crm"), ("state", "paused")],
        1.0,
    )
    .await;
    let ep = get(s.admin(), "/v1/endpoints", TOKEN).await.json()["items"][0].clone();
    assert_eq!(ep["name"], "crm");
    assert_eq!(ep["state"], "paused");
    assert_eq!(ep["pending"], 1);
    assert_eq!(ep["last_error"]["status"], 410);
    assert!(ep["oldest_pending_seconds"].as_f64().unwrap() >= 0.0);

    assert_problem(
        &post(s.admin(), "/v1/endpoints/nope/resume", TOKEN, json!({})).await,
        404,
    );
    let r = post(s.admin(), "/v1/endpoints/crm/resume", TOKEN, json!({})).await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"endpoint": "crm", "resumed": true}))
    );
    let delivered = rx.next().await;
    assert_eq!(delivered.header("webhook-id"), refused.header("webhook-id"));
    assert_problem(
        &post(s.admin(), "/v1/endpoints/crm/resume", TOKEN, json!({})).await,
        409,
    );
    admin::wait_metric(
        s.admin(),
        "siphook_endpoint_state",
        &[("endpoint", "crm"), ("state", "healthy")],
        1.0,
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn a_test_delivery_is_signed_and_reports_status_and_latency() {
    let mut rx = Receiver::ok().await;
    let s = start(&endpoint(&rx, ""), true).await;
    let r = post(s.admin(), "/v1/endpoints/crm/test", TOKEN, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let result = r.json();
    assert_eq!(result["endpoint"], "crm");
    assert_eq!(result["outcome"], "delivered");
    assert_eq!(result["status"], 200);
    assert_eq!(result["error"], Value::Null);
    assert!(result["latency_ms"].as_f64().unwrap() > 0.0);
    let req = rx.next().await;
    let ev = req.json();
    assert_eq!(ev["type"], "webhook.test");
    assert_eq!(ev["data"]["endpoint"], "crm");
    assert_eq!(ev["id"], result["event_id"]);
    assert_eq!(req.header("webhook-id"), ev["id"].as_str().unwrap());
    assert!(req.header("webhook-signature").starts_with("v1,"));
    // A test is not a delivery of a call event: the counters stay put.
    let m = parse_metrics(
        &request(s.admin(), "GET", "/metrics", None, None)
            .await
            .text(),
    );
    assert_eq!(sum(&m, "siphook_deliveries_total", &[]), 0.0);

    rx.script([Reply::status(500)]);
    let failed = post(s.admin(), "/v1/endpoints/crm/test", TOKEN, json!({}))
        .await
        .json();
    assert_eq!(
        (failed["outcome"].as_str(), failed["status"].as_u64()),
        (Some("retry"), Some(500))
    );
    assert_problem(
        &post(s.admin(), "/v1/endpoints/other/test", TOKEN, json!({})).await,
        404,
    );
    s.stop().await;
}

/// Walks `docs/admin-api.yaml`: every documented path and method answers, with a
/// documented status, and a body that matches the documented schema.
#[tokio::test]
async fn the_openapi_spec_matches_the_routes() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-api.yaml"))
        .unwrap();
    let spec: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let mut rx = Receiver::ok().await;
    let s = start(&endpoint(&rx, ""), true).await;
    let mut called = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let concrete = path.replace("{name}", "crm");
            let body = (method == "post").then(|| {
                if path.ends_with("/replay") {
                    json!({"all": true})
                } else {
                    json!({})
                }
            });
            let r = request(
                s.admin(),
                &method.to_uppercase(),
                &concrete,
                Some(TOKEN),
                body,
            )
            .await;
            let responses = &op["responses"];
            let documented = &responses[r.status.to_string()];
            assert!(
                documented.is_object(),
                "{method} {path} answered {}, not documented",
                r.status
            );
            let documented = resolve(&spec, documented);
            let (ctype, media) = documented["content"]
                .as_object()
                .and_then(|c| c.iter().next())
                .unwrap_or_else(|| panic!("{method} {path} {}: no content documented", r.status));
            assert!(
                r.header("content-type").starts_with(ctype.as_str()),
                "{method} {path}: {} vs {ctype}",
                r.header("content-type")
            );
            if ctype.ends_with("json") {
                let mut schema = media["schema"].clone();
                schema["components"] = spec["components"].clone();
                let v = jsonschema::validator_for(&schema).unwrap();
                let body = r.json();
                let errors: Vec<String> = v.iter_errors(&body).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{method} {path}: {errors:?}\n{body}");
            }
            // Everything under /v1 is refused without the token, as documented.
            if path.starts_with("/v1") {
                let anon = request(s.admin(), &method.to_uppercase(), &concrete, None, None).await;
                assert_eq!(anon.status, 401, "{method} {path}");
                assert!(
                    responses["401"].is_object(),
                    "{method} {path}: 401 not documented"
                );
            }
            called += 1;
        }
    }
    assert_eq!(
        called, 12,
        "every route of the admin listener is documented"
    );
    // The test delivery above reached the receiver.
    assert_eq!(rx.next().await.json()["type"], "webhook.test");
    s.stop().await;
}

/// Follows a `$ref` to `#/components/...`.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => r
            .trim_start_matches("#/")
            .split('/')
            .fold(spec, |node, key| &node[key]),
        None => v,
    }
}
