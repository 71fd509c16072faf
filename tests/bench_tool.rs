//! `siphook bench` over real loopback: the library entry point against a spawned
//! siphook (and the null relay), a receiver that cannot verify, and the binary.

mod common;

use std::time::Duration;

use siphook::bench::{BenchOptions, PhaseResult, Profile, Report, Transport};

async fn run(opts: BenchOptions) -> Report {
    tokio::time::timeout(Duration::from_secs(30), siphook::bench::run(&opts))
        .await
        .expect("the bench finishes")
        .expect("the bench runs")
}

/// Every quantile measured, positive, and in order.
fn assert_quantiles(p: &PhaseResult) {
    let q = p.latency_ms.as_ref().expect("latencies measured");
    assert!(q.p50 > 0.0, "{q:?}");
    assert!(
        q.p50 <= q.p90 && q.p90 <= q.p99 && q.p99 <= q.p999 && q.p999 <= q.max,
        "{q:?}"
    );
    assert!(q.mean > 0.0 && q.mean <= q.max, "{q:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_answered_calls_over_udp_every_event_once_in_order_and_signed() {
    let report = run(BenchOptions::spawn(100.0, 50)).await;
    let s = &report.siphook;
    assert_eq!(s.calls_started, 50);
    assert_eq!(s.messages_sent, 350, "7 messages per call");
    assert_eq!((s.expected, s.received), (200, 200));
    assert_eq!(s.lost, 0);
    assert!(s.lost_by_type.is_empty());
    assert_eq!(s.duplicates, 0);
    assert_eq!(s.out_of_order, Some(0));
    assert_eq!(s.bad_signatures, Some(0));
    assert_eq!((s.unexpected, s.foreign, s.malformed), (0, 0, 0));
    assert_eq!(s.latency_ms.as_ref().map(|q| q.samples), Some(200));
    assert_quantiles(s);
    assert!(
        s.achieved_calls_per_sec > 50.0,
        "{}",
        s.achieved_calls_per_sec
    );
    assert!(s.events_per_sec > 0.0);
    assert!(report.baseline.is_none() && report.ratios.is_none());
    assert!(report.passed(), "{}", report.table());
    let table = report.table();
    assert!(
        table.contains("latency p99 (ms)")
            && table.contains("\nlatency: from the bench sending the SIP message")
            && table.contains("\nfsync: on: each outbox commit is fdatasynced")
            && !table.contains("\nratio: ")
            && table.ends_with("PASSED: no event lost, duplicated, out of order, unexpected or malformed, every signature valid (latency is reported, not judged)\n"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_sees_the_same_calls_and_the_ratios_are_reported() {
    let mut opts = BenchOptions::spawn(100.0, 50);
    opts.baseline = true;
    let report = run(opts).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.siphook.received, 200);
    let b = report.baseline.as_ref().expect("a baseline");
    assert_eq!(b.calls_started, 50);
    assert_eq!(b.messages_sent, 350);
    assert_eq!(
        (b.expected, b.received, b.lost),
        (200, 200, 0),
        "the relay posts the INVITE, 180, 200 and BYE of every call"
    );
    assert_eq!(b.relay_errors, Some(0));
    assert_quantiles(b);
    let r = report.ratios.as_ref().expect("ratios");
    for x in [r.p50, r.p90, r.p99, r.p999, r.max] {
        assert!(x.is_finite() && x > 0.0, "{r:?}");
    }
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["ratios"]["p50"].is_number(), "{json}");
    assert!(json["baseline"]["latency_ms"]["p99"].is_number(), "{json}");
    assert!(report.table().contains("null relay"));
    assert!(
        report
            .table()
            .contains("\nratio: siphook's latency over the null relay's"),
        "{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_receiver_costs_retries_not_events() {
    let mut opts = BenchOptions::spawn(50.0, 20);
    opts.fail_every = 7;
    let report = run(opts).await;
    let s = &report.siphook;
    // Every 7th webhook is refused, retries included; the spawned siphook's
    // schedule (0s 1s 2s 4s) outlasts that, so every event still arrives once.
    assert_eq!((s.expected, s.received, s.lost), (80, 80, 0));
    assert!(s.refused_on_purpose >= 80 / 7, "{}", s.refused_on_purpose);
    assert_eq!(s.duplicates, 0);
    assert_eq!(s.out_of_order, Some(0));
    assert!(report.passed(), "{}", report.table());
    assert!(report.table().contains("answered 503 on purpose"));
    // A retried event waited at least the schedule's 1 s.
    assert!(s.latency_ms.as_ref().expect("latencies").max >= 1000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_with_the_wrong_secret_counts_bad_signatures_and_fails_the_run() {
    let mut opts = BenchOptions::spawn(100.0, 10);
    // A valid secret, but not the one the spawned siphook signs with.
    opts.secret = Some("whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ==".into());
    opts.drain = Duration::from_secs(5);
    let report = run(opts).await;
    let s = &report.siphook;
    assert!(s.bad_signatures.unwrap_or(0) > 0, "{}", report.table());
    assert_eq!(s.received, 0, "nothing verified");
    assert_eq!(s.lost, s.expected);
    assert_eq!(s.lost_by_type.values().sum::<usize>(), s.lost);
    assert_eq!(s.lost_by_type.get("call.initiated"), Some(&10));
    assert!(!report.passed());
    let table = report.table();
    assert!(
        table.contains(&format!("FAILED: {} events lost", s.lost)),
        "{table}"
    );
    assert!(table.contains("bad signatures"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_calls_over_hep_with_a_hold_and_a_timer() {
    let mut opts = BenchOptions::spawn(100.0, 20);
    opts.profile = Profile::Mixed;
    opts.transport = Transport::Hep;
    opts.hold = Duration::from_millis(100);
    opts.invite_timeout = Duration::from_millis(300);
    opts.baseline = true;
    let report = run(opts).await;
    assert!(report.passed(), "{}", report.table());
    let s = &report.siphook;
    // Twice the ten-call mix: 6 answered (4 events), busy 2, cancel 3, no answer 3,
    // transfer 5.
    assert_eq!((s.expected, s.received, s.lost), (74, 74, 0));
    assert_eq!(
        s.timer_events, 2,
        "the two unanswered calls end by the timer"
    );
    assert_eq!(s.latency_ms.as_ref().map(|q| q.samples), Some(72));
    let b = report.baseline.as_ref().expect("a baseline");
    assert_eq!((b.expected, b.received), (72, 72));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_calls_over_tcp() {
    let mut opts = BenchOptions::spawn(100.0, 20);
    opts.transport = Transport::Tcp;
    opts.baseline = true;
    let report = run(opts).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.siphook.received, 80);
    assert_eq!(report.baseline.as_ref().map(|b| b.received), Some(80));
}

#[test]
fn the_binary_runs_a_spawned_bench_and_writes_json_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let svg = dir.path().join("bench.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
        .args([
            "bench", "--spawn", "--calls", "20", "--rate", "50", "--json",
        ])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASSED"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).expect("JSON");
    assert_eq!(report["config"]["calls"], 20);
    assert_eq!(report["config"]["transport"], "udp");
    assert_eq!(report["siphook"]["received"], 80);
    assert_eq!(report["siphook"]["lost"], 0);
    assert!(report["siphook"]["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // Who had the machine (in 10 ms ticks, so a short run may show 0 for one):
    // reported for the spawned siphook and for the tool.
    let cpu = &report["siphook"]["cpu"];
    assert!(cpu["tap"].as_f64().is_some_and(|c| c >= 0.0), "{cpu}");
    assert!(cpu["tool"].as_f64().is_some_and(|c| c >= 0.0), "{cpu}");
    assert!(cpu["wall_s"].as_f64().is_some_and(|w| w > 0.3), "{cpu}");
    assert!(stdout.contains("cpu: tap (cores)"), "{stdout}");
    assert!(report["baseline"].is_null());
    assert_eq!(report["failures"], serde_json::json!([]));
    let svg = std::fs::read_to_string(&svg).expect("the plot");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("latency distribution"));
    assert!(svg.contains("latency over the run"));
    // One point per latency sample: 80 events, all below the thinning limit.
    assert_eq!(svg.matches("<circle").count(), 80);
}

#[test]
fn the_binary_refuses_a_target_off_loopback_and_a_target_without_its_secret() {
    let bench = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
            .arg("bench")
            .args(args)
            .output()
            .unwrap()
    };
    let off = bench(&[
        "--target",
        "192.0.2.1:5060",
        "--receiver",
        "127.0.0.1:9",
        "--secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ]);
    assert_eq!(off.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&off.stderr).contains("loopback"));
    let no_secret = bench(&["--target", "127.0.0.1:5060", "--receiver", "127.0.0.1:9"]);
    assert!(!no_secret.status.success());
    let neither = bench(&["--calls", "1"]);
    assert!(!neither.status.success());
}

/// `--nats`: the spawned siphook publishes to JetStream and the bench consumes
/// the stream it made for the run: every event once, in order, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_answered_calls_through_jetstream_every_event_once_in_order_and_signed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = common::nats::NatsServer::start(dir.path(), &[]).await else {
        return;
    };
    let mut opts = BenchOptions::spawn(100.0, 50);
    opts.nats = Some(nats.url());
    let report = run(opts).await;
    let s = &report.siphook;
    assert_eq!((s.expected, s.received), (200, 200));
    assert_eq!((s.lost, s.duplicates), (0, 0));
    assert_eq!(s.out_of_order, Some(0));
    assert_eq!(s.bad_signatures, Some(0));
    assert_eq!(s.latency_ms.as_ref().map(|q| q.samples), Some(200));
    assert_quantiles(s);
    assert_eq!(report.config.sink, "nats");
    assert!(report.passed(), "{}", report.table());
    assert!(
        report.table().contains("delivering to JetStream"),
        "{}",
        report.table()
    );
    // The run's stream is gone afterwards.
    let js = nats.jetstream(None).await;
    let mut names = js.stream_names();
    use futures_util::StreamExt;
    assert!(
        names.next().await.is_none(),
        "the bench left its stream behind"
    );
}

/// `--kafka mock`: the spawned siphook produces to librdkafka's mock cluster and
/// the bench consumes the run's topic: every event once, in order, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_answered_calls_through_kafka_every_event_once_in_order_and_signed() {
    let mut opts = BenchOptions::spawn(100.0, 50);
    opts.kafka = Some("mock".into());
    let report = run(opts).await;
    let s = &report.siphook;
    assert_eq!((s.expected, s.received), (200, 200));
    assert_eq!((s.lost, s.duplicates), (0, 0));
    assert_eq!(s.out_of_order, Some(0));
    assert_eq!(s.bad_signatures, Some(0));
    assert_quantiles(s);
    assert_eq!(report.config.sink, "kafka");
    assert!(report.passed(), "{}", report.table());
    assert!(
        report.table().contains("delivering to Kafka"),
        "{}",
        report.table()
    );
}
