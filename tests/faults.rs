//! Faults with the real binary: a disk that fills up under the outbox, and a long
//! endpoint outage across a restart. Endpoints that misbehave at the HTTP level
//! are in `tests/endpoint_faults.rs`, a host name that does not resolve in
//! `tests/dns_fault.rs`, SIGKILL at random points in `tests/crash.rs`.
//!
//! The disk test needs root (mount); without it it prints why and passes, unless
//! `SIPHOOK_REQUIRE_TOOLS=1` (CI) makes that a failure.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::admin::{self, parse_metrics, sum};
use common::process::Siphook;
use common::receiver::{Receiver, Reply};
use common::stage::{Tmpfs, can_stage, not_root};
use common::{ADMIN_TOKEN, CallSpec, DEADLINE};
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Writes `bytes` of zeros to `path` (the filler that takes a disk's space).
fn fill(path: &Path, bytes: usize) {
    std::fs::write(path, vec![0u8; bytes]).expect("filler written");
}

async fn scrape(addr: std::net::SocketAddr) -> Vec<admin::Sample> {
    parse_metrics(
        &admin::request(addr, "GET", "/metrics", None, None)
            .await
            .text(),
    )
}

fn key(v: &Value) -> (String, u64) {
    (
        v["call"]["sip_call_id"].as_str().unwrap().to_owned(),
        v["sequence"].as_u64().unwrap(),
    )
}

/// A receiver that answers 503 until `up` is set, then 200.
async fn gated_receiver(up: Arc<AtomicBool>) -> Receiver {
    Receiver::start(Arc::new(move |_| {
        Reply::status(if up.load(Ordering::SeqCst) { 200 } else { 503 })
    }))
    .await
}

/// Takes webhooks until every key of `want` arrived; a key seen twice must carry
/// the same `webhook-id` (a redelivery). Returns what arrived, by key.
async fn receive_all(
    rx: &mut Receiver,
    want: &HashSet<(String, u64)>,
) -> HashMap<(String, u64), Value> {
    let mut ids: HashMap<(String, u64), String> = HashMap::new();
    let mut got = HashMap::new();
    let deadline = Instant::now() + DEADLINE * 3;
    while !want.iter().all(|k| got.contains_key(k)) {
        let req = tokio::time::timeout_at(deadline, rx.requests.recv())
            .await
            .unwrap_or_else(|_| {
                let missing: Vec<_> = want.iter().filter(|k| !got.contains_key(*k)).collect();
                panic!(
                    "{} never delivered, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(5)]
                )
            })
            .expect("receiver open");
        let v = req.json();
        let k = key(&v);
        let id = req.header("webhook-id").to_owned();
        assert_eq!(
            ids.entry(k.clone()).or_insert_with(|| id.clone()),
            &id,
            "a duplicate of {k:?} must carry the same webhook-id"
        );
        got.insert(k, v);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_fails_readiness_and_recovers_through_a_restart() {
    if !can_stage("disk full", not_root()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let fs = match Tmpfs::mount(&mnt, "8m") {
        Ok(fs) => fs,
        Err(e) => {
            assert!(can_stage("disk full", Some(e)));
            return;
        }
    };
    // The filler takes part of the disk; the outbox fills the rest. max_bytes is
    // far above the disk, so the real ENOSPC path is taken, not the size check.
    let filler = fs.dir.join("filler");
    fill(&filler, 3 << 20);
    let up = Arc::new(AtomicBool::new(false));
    let mut rx = gated_receiver(up.clone()).await;
    let schedule = std::iter::once("\"0s\"".to_owned())
        .chain(std::iter::repeat_n("\"300ms\"".to_owned(), 40))
        .collect::<Vec<_>>()
        .join(", ");
    let (config, target) = common::binary_config(
        dir.path(),
        &rx.url(),
        &format!(
            "max_in_flight = 4\ncircuit_probe_interval = \"300ms\"\nretry_schedule = [{schedule}]"
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("path = \"{}\"", dir.path().join("outbox").display()),
        &format!(
            "path = \"{}\"\nmax_bytes = \"1GiB\"",
            fs.dir.join("outbox").display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let admin_addr = common::admin_addr(&config);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let mut s = Siphook::spawn(&config);
    s.wait_ready(&sock, &target, "disk-probe-1").await;
    let mut committed: HashSet<(String, u64)> = HashSet::new();
    committed.insert(("disk-probe-1".into(), 1));
    // Calls until the disk is full: each INVITE is one committed event, and each
    // failed attempt rewrites its delivery state, so the store grows quickly.
    let mut calls = 0usize;
    let broke = 'fill: {
        for _burst in 0..400 {
            for _ in 0..50 {
                let c = CallSpec::new(&format!("disk-{calls}"));
                sock.send_to(c.invite(1).as_bytes(), &target).await.unwrap();
                calls += 1;
            }
            // Paced by the commits, so the socket buffer never overflows.
            let wait_until = Instant::now() + Duration::from_millis(500);
            while let Ok(Some(v)) = tokio::time::timeout_at(wait_until, s.committed.recv()).await {
                committed.insert(key(&v));
                if committed.len() > calls {
                    break;
                }
            }
            let ready = admin::request(admin_addr, "GET", "/readyz", None, None).await;
            if ready.status == 503 {
                break 'fill ready;
            }
        }
        panic!(
            "the disk never filled after {calls} calls:\n{}",
            s.log_text()
        );
    };
    assert_eq!(
        broke.json(),
        serde_json::json!({"status": "unready", "reasons": ["outbox_storage_error"]}),
        "readiness names the disk"
    );
    let line = s.wait_log("outbox cannot write to disk").await;
    assert!(line.contains("No space left on device"), "{line}");
    // Still running, still answering, and refusing (counted) what keeps coming.
    let refused_before = sum(
        &scrape(admin_addr).await,
        "siphook_events_refused_total",
        &[("reason", "storage_error")],
    );
    for i in 0..20 {
        let c = CallSpec::new(&format!("disk-late-{i}"));
        sock.send_to(c.invite(1).as_bytes(), &target).await.unwrap();
    }
    let samples = admin::wait_metric(
        admin_addr,
        "siphook_events_refused_total",
        &[("reason", "storage_error")],
        refused_before + 20.0,
    )
    .await;
    assert_eq!(sum(&samples, "siphook_outbox_storage_failing", &[]), 1.0);
    assert_eq!(sum(&samples, "siphook_outbox_accepting", &[]), 0.0);
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "siphook keeps running"
    );
    // Still refused a second later: it does not come back while the disk is full.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ready = admin::request(admin_addr, "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "siphook keeps running"
    );
    while let Ok(v) = s.committed.try_recv() {
        committed.insert(key(&v));
    }

    // Space comes back: siphook notices, and exits for its supervisor (this test,
    // like systemd's Restart=on-failure) to start it on a reopened store.
    std::fs::remove_file(&filler).unwrap();
    let status = s.wait_exit().await;
    assert!(!status.success(), "a broken store exits non-zero: {status}");
    let log = s.log_text();
    assert!(log.contains("the disk takes writes again"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    for number in ["15551234567", "15557654321"] {
        assert!(!log.contains(number), "a phone number in the log:\n{log}");
    }
    while let Ok(v) = s.committed.try_recv() {
        committed.insert(key(&v));
    }

    up.store(true, Ordering::SeqCst);
    let mut s = Siphook::spawn(&config);
    s.wait_ready(&sock, &target, "disk-probe-2").await;
    let ready = admin::request(admin_addr, "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let fresh = CallSpec::new("disk-after");
    sock.send_to(fresh.invite(1).as_bytes(), &target)
        .await
        .unwrap();
    committed.insert(("disk-probe-2".into(), 1));
    committed.insert(("disk-after".into(), 1));
    // Every event committed before the disk filled, and the new ones, arrive.
    let got = receive_all(&mut rx, &committed).await;
    assert!(got.len() >= committed.len());
    let samples = scrape(admin_addr).await;
    assert_eq!(sum(&samples, "siphook_outbox_storage_failing", &[]), 0.0);
    drop(s);
}

/// Polls until endpoint `name` is `state` with `pending` deliveries waiting.
async fn wait_endpoint(addr: std::net::SocketAddr, name: &str, state: &str, pending: usize) {
    let start = Instant::now();
    loop {
        let e = admin::endpoint(addr, name).await;
        if e["state"] == state && e["pending"] == pending {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{name} stayed {e}, wanted {state} with {pending} pending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Takes committed events from `s` until `n` arrived, recording them.
async fn take_committed(s: &mut Siphook, n: usize, into: &mut Vec<Value>) {
    for _ in 0..n {
        into.push(s.next_committed().await);
    }
}

fn retries(samples: &[admin::Sample], endpoint: &str) -> f64 {
    sum(
        samples,
        "siphook_deliveries_total",
        &[("endpoint", endpoint), ("outcome", "retry")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_across_a_restart_loses_nothing_and_drains_in_order() {
    // The endpoints' port has nothing listening: every attempt is refused.
    let port = common::free_port(false);
    let url = format!("http://127.0.0.1:{port}/hook");
    let dir = tempfile::tempdir().unwrap();
    let long = std::iter::once("\"0s\"".to_owned())
        .chain(std::iter::repeat_n("\"100ms\"".to_owned(), 50))
        .collect::<Vec<_>>()
        .join(", ");
    // crm retries 51 times, far past this outage; "short" gives up after 3
    // attempts, so its events end delivered or dead-lettered, nothing else.
    let extra = format!(
        "max_in_flight = 4\ncircuit_probe_interval = \"100ms\"\nretry_schedule = [{long}]\n\n\
         [[endpoints]]\nname = \"short\"\nurl = \"{url}\"\nallow_http = true\n\
         secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\nevents = [\"call.initiated\"]\n\
         headers = {{ \"X-Endpoint\" = \"short\" }}\ncircuit_probe_interval = \"100ms\"\n\
         retry_schedule = [\"0s\", \"100ms\", \"100ms\"]"
    );
    let (config, target) = common::binary_config(dir.path(), &url, &extra);
    let admin_addr = common::admin_addr(&config);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let send = |m: String| {
        let (sock, target) = (&sock, &target);
        async move { sock.send_to(m.as_bytes(), target).await.unwrap() }
    };
    let calls: Vec<CallSpec> = (0..10)
        .map(|i| CallSpec::new(&format!("outage-{i}")))
        .collect();
    let mut committed = Vec::new();

    let mut s = Siphook::spawn(&config);
    s.wait_ready(&sock, &target, "outage-probe-1").await;
    committed.push(serde_json::json!({"call": {"sip_call_id": "outage-probe-1"}, "sequence": 1}));
    // Calls keep coming during the outage: six answered, still up.
    for c in &calls[..6] {
        for m in [
            c.invite(1),
            c.resp(180, 1, "INVITE", Some("b")),
            c.resp(200, 1, "INVITE", Some("b")),
            c.ack(1, "b"),
        ] {
            send(m).await;
        }
        take_committed(&mut s, 3, &mut committed).await;
    }
    // Ten straight failures open crm's circuit: from then on one probe per
    // interval, whatever the schedule of each event says.
    wait_endpoint(admin_addr, "crm", "circuit_open", committed.len()).await;
    let before = retries(&scrape(admin_addr).await, "crm");
    let window = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let probes = retries(&scrape(admin_addr).await, "crm") - before;
    let elapsed = window.elapsed().as_millis() as f64;
    let expected = elapsed / 100.0;
    assert!(
        probes >= expected * 0.5 && probes <= expected + 2.0,
        "{probes} probes in {elapsed} ms at one per 100 ms"
    );
    let crm = admin::endpoint(admin_addr, "crm").await;
    assert_eq!(crm["dead_letters"], 0, "{crm}");
    assert!(
        crm["last_error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Connection refused")),
        "{crm}"
    );

    // The host dies mid-outage.
    committed.extend(s.kill9().await);
    let mut s = Siphook::spawn(&config);
    let before = s.wait_ready(&sock, &target, "outage-probe-2").await;
    assert!(before.is_empty(), "{before:?}");
    committed.push(serde_json::json!({"call": {"sip_call_id": "outage-probe-2"}, "sequence": 1}));
    for c in &calls[..6] {
        send(c.bye(2, "b")).await;
        send(c.resp(200, 2, "BYE", Some("b"))).await;
        take_committed(&mut s, 1, &mut committed).await;
    }
    for c in &calls[6..] {
        for m in c.answered_flow() {
            send(m).await;
        }
        take_committed(&mut s, 4, &mut committed).await;
    }
    assert_eq!(committed.len(), 2 + 10 * 4);
    wait_endpoint(admin_addr, "crm", "circuit_open", committed.len()).await;

    // The endpoint returns: everything drains, once, in each call's order.
    let mut rx = Receiver::start_on(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Arc::new(|_| Reply::status(200)),
    )
    .await;
    let want: HashSet<(String, u64)> = committed.iter().map(key).collect();
    let mut crm_got: HashMap<(String, u64), String> = HashMap::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut short_got: HashSet<String> = HashSet::new();
    while crm_got.len() < want.len() {
        let req = rx.next().await;
        let v = req.json();
        let id = req.header("webhook-id").to_owned();
        if req.header("x-endpoint") == "short" {
            assert_eq!(v["type"], "call.initiated");
            assert!(short_got.insert(id), "short got {} twice", v["id"]);
            continue;
        }
        let k = key(&v);
        assert!(want.contains(&k), "not committed: {k:?}");
        assert!(crm_got.insert(k.clone(), id).is_none(), "{k:?} twice");
        let last = last_seq.entry(k.0.clone()).or_insert(0);
        assert_eq!(k.1, *last + 1, "{} out of order", k.0);
        *last = k.1;
    }
    wait_endpoint(admin_addr, "crm", "healthy", 0).await;
    wait_endpoint(admin_addr, "short", "healthy", 0).await;
    // short: each call.initiated delivered once, or a dead letter after exactly
    // its three attempts; never both, never neither.
    let dead = admin::get(admin_addr, "/v1/deadletters?endpoint=short", ADMIN_TOKEN).await;
    let dead = dead.json()["items"].as_array().unwrap().clone();
    while let Ok(req) = rx.requests.try_recv() {
        assert_eq!(req.header("x-endpoint"), "short", "crm sent more");
        assert!(short_got.insert(req.header("webhook-id").to_owned()));
    }
    let initiated: HashSet<String> = crm_got
        .iter()
        .filter(|((_, seq), _)| *seq == 1)
        .map(|(_, id)| id.clone())
        .collect();
    let mut accounted = short_got.clone();
    for d in &dead {
        assert_eq!(d["state"]["attempts"], 3, "{d}");
        let id = d["event_id"].as_str().unwrap().to_owned();
        assert!(accounted.insert(id), "{d} delivered and dead");
    }
    assert_eq!(accounted, initiated);
    let crm = admin::endpoint(admin_addr, "crm").await;
    assert_eq!(crm["dead_letters"], 0, "{crm}");
    drop(s);
}
