//! Faults with the real binary: a disk that fills up under the outbox, an
//! endpoint whose host name does not resolve (in a network namespace of the
//! test's own, so no lookup leaves the machine), and a long endpoint outage
//! across a restart. Endpoints that misbehave at the HTTP level are in
//! `tests/endpoint_faults.rs`.
//!
//! The disk and DNS tests need root (mount, unshare); without it they print why
//! and pass, unless `SIPHOOK_REQUIRE_TOOLS=1` (CI) makes that a failure.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::admin::{self, parse_metrics, sum};
use common::process::Siphook;
use common::receiver::{Receiver, Reply};
use common::{CallSpec, DEADLINE};
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Whether a root-only fault can be staged here; prints why not, or fails when
/// CI demands the tools (`SIPHOOK_REQUIRE_TOOLS=1`).
fn can_stage(what: &str, problem: Option<String>) -> bool {
    let Some(problem) = problem else {
        return true;
    };
    if std::env::var("SIPHOOK_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{what}: {problem} (SIPHOOK_REQUIRE_TOOLS=1)");
    }
    eprintln!("SKIPPED {what}: {problem}");
    false
}

fn not_root() -> Option<String> {
    let uid = std::process::Command::new("id").arg("-u").output();
    match uid {
        Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "0" => None,
        Ok(_) => Some("needs root".into()),
        Err(e) => Some(format!("cannot run id: {e}")),
    }
}

/// A small tmpfs mounted for one test; unmounted when dropped, even on a panic.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process of the test that is still being reaped must not leave
        // the mount behind.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

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
