//! Crash safety with the real binary: SIGKILL siphook while calls are up and
//! deliveries are backed up, start it again on the same data directory, and every
//! committed event still arrives (duplicates only with the same `webhook-id`),
//! and the calls that were up complete with the right sequence and durations.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::process::Siphook;
use common::receiver::{Receiver, Reply};
use common::{CallSpec, ms};
use serde_json::Value;
use tokio::net::UdpSocket;

/// Sends a fresh INVITE until siphook has committed it: proves it is listening.
async fn wait_ready(s: &mut Siphook, sock: &UdpSocket, target: &str, name: &str) {
    let before = s.wait_ready(sock, target, name).await;
    assert!(before.is_empty(), "committed before the probe: {before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_committed_event_and_calls_survive_the_restart() {
    const CALLS: usize = 40;
    // A slow receiver keeps a backlog of committed, undelivered events at the kill.
    let mut rx = Receiver::start(Arc::new(|_| Reply {
        status: 200,
        headers: vec![],
        delay: Duration::from_millis(15),
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (config, target) = common::binary_config(
        dir.path(),
        &rx.url(),
        "max_in_flight = 2\nretry_schedule = [\"0s\", \"50ms\", \"50ms\", \"50ms\", \"50ms\"]",
    );
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let calls: Vec<CallSpec> = (0..CALLS)
        .map(|i| CallSpec::new(&format!("crash-{i}")))
        .collect();

    let mut first = Siphook::spawn(&config);
    wait_ready(&mut first, &sock, &target, "probe-1").await;
    for c in &calls {
        for m in [
            c.invite(1),
            c.resp(180, 1, "INVITE", Some("b")),
            c.resp(200, 1, "INVITE", Some("b")),
            c.ack(1, "b"),
        ] {
            sock.send_to(m.as_bytes(), &target).await.unwrap();
        }
    }
    // Every call's answered event is committed before the kill.
    let mut before: HashMap<(String, u64), Value> = HashMap::new();
    while before.len() < CALLS * 3 {
        let v = first.next_committed().await;
        if v["call"]["sip_call_id"]
            .as_str()
            .unwrap()
            .starts_with("crash-")
        {
            before.insert(
                (
                    v["call"]["sip_call_id"].as_str().unwrap().to_owned(),
                    v["sequence"].as_u64().unwrap(),
                ),
                v,
            );
        }
    }
    first.child.start_kill().unwrap(); // SIGKILL
    first.child.wait().await.unwrap();
    // What the receiver already got counts: those deliveries may have completed.
    let mut early = Vec::new();
    while let Ok(req) = rx.requests.try_recv() {
        early.push(req);
    }
    let delivered_before_kill = early.len();
    assert!(
        delivered_before_kill < CALLS * 3,
        "the kill must leave a backlog (delivered {delivered_before_kill})"
    );

    let mut second = Siphook::spawn(&config);
    wait_ready(&mut second, &sock, &target, "probe-2").await;
    for c in &calls {
        for m in [c.bye(2, "b"), c.resp(200, 2, "BYE", Some("b"))] {
            sock.send_to(m.as_bytes(), &target).await.unwrap();
        }
    }

    // Everything committed before the kill, and every completion after it, arrives.
    let mut ids: HashMap<(String, u64), String> = HashMap::new();
    let mut got: HashMap<(String, u64), Value> = HashMap::new();
    let mut early = early.into_iter();
    while got.keys().filter(|(c, _)| c.starts_with("crash-")).count() < CALLS * 4 {
        let req = match early.next() {
            Some(r) => r,
            None => rx.next().await,
        };
        let v = req.json();
        let key = (
            v["call"]["sip_call_id"].as_str().unwrap().to_owned(),
            v["sequence"].as_u64().unwrap(),
        );
        let id = req.header("webhook-id").to_owned();
        assert_eq!(
            ids.entry(key.clone()).or_insert_with(|| id.clone()),
            &id,
            "a duplicate must carry the same webhook-id"
        );
        got.insert(key, v);
    }
    for c in &calls {
        let answered = &before[&(c.call_id.clone(), 3)];
        let done = &got[&(c.call_id.clone(), 4)];
        assert_eq!(done["type"], "call.completed");
        assert_eq!(done["call"]["answered_at"], answered["call"]["answered_at"]);
        let talk = ms(&done["call"]["ended_at"]) - ms(&done["call"]["answered_at"]);
        assert_eq!(done["data"]["talk_ms"], talk);
        assert!(talk > 0);
        assert_eq!(done["data"]["disposition"], "answered");
    }
    let _ = second.child.start_kill();
}

/// A call's event by Call-ID and sequence.
fn key(v: &Value) -> (String, u64) {
    (
        v["call"]["sip_call_id"].as_str().unwrap().to_owned(),
        v["sequence"].as_u64().unwrap(),
    )
}

/// xorshift64*: a seeded sequence of kill points that a failure can repeat.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Notes events printed after their commit: what a crash must never take back.
fn record(committed: &mut HashMap<(String, u64), String>, events: Vec<Value>) {
    for v in events {
        committed.insert(key(&v), v["id"].as_str().unwrap().to_owned());
    }
}

/// Log lines that would mean the store came back damaged or inconsistent.
fn damage(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("ERROR")
                || l.contains("panicked")
                || l.contains("corrupt")
                || l.contains("unreadable")
                || l.contains("without its event")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_loses_a_committed_event_or_damages_the_store() {
    const ITERATIONS: usize = 30;
    let seed = std::env::var("SIPHOOK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1;
    println!("kill -9 loop seed {seed} (SIPHOOK_CRASH_SEED={seed} repeats the kill points)");
    let mut rng = Rng(seed);
    // Answers vary in time, and some fail, so kills land during attempts, retries
    // and the recording of deliveries as well as during commits.
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = counter.clone();
    let mut rx = Receiver::start(Arc::new(move |_| {
        let n = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        Reply {
            status: if r.is_multiple_of(10) { 503 } else { 200 },
            headers: vec![],
            delay: Duration::from_millis(r % 15),
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (config, target) = common::binary_config(
        dir.path(),
        &rx.url(),
        "max_in_flight = 4\nretry_schedule = [\"0s\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\"]",
    );
    // A 1 MiB store has 64 KiB segments (the least): the log starts a segment
    // every few dozen calls and retires the delivered ones, so kills also land
    // in rotations, retirements and carries.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[outbox]\n", "[outbox]\nmax_bytes = \"1MiB\"\n"),
    )
    .unwrap();
    let admin_addr = common::admin_addr(&config);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let mut committed: HashMap<(String, u64), String> = HashMap::new();
    let mut opened: Vec<CallSpec> = Vec::new();
    let mut all_calls: Vec<CallSpec> = Vec::new();
    for iteration in 0..ITERATIONS {
        let mut s = Siphook::spawn(&config);
        // It starts, on the store the last SIGKILL left, or the test fails here.
        let probe = format!("kill-probe-{iteration}");
        record(&mut committed, s.wait_ready(&sock, &target, &probe).await);
        committed.insert((probe, 1), String::new());
        // The calls opened last time end; new ones open (answered, still up).
        let mut msgs: Vec<String> = opened
            .drain(..)
            .flat_map(|c| [c.bye(2, "b"), c.resp(200, 2, "BYE", Some("b"))])
            .collect();
        for n in 0..1 + rng.below(8) {
            let c = CallSpec::new(&format!("kill-{iteration}-{n}"));
            msgs.extend([
                c.invite(1),
                c.resp(180, 1, "INVITE", Some("b")),
                c.resp(200, 1, "INVITE", Some("b")),
                c.ack(1, "b"),
            ]);
            opened.push(c.clone());
            all_calls.push(c);
        }
        let cut = rng.below(msgs.len() as u64 + 1) as usize;
        for m in &msgs[..cut] {
            sock.send_to(m.as_bytes(), &target).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
        record(&mut committed, s.kill9().await);
        let log = s.log_text();
        assert!(damage(&log).is_empty(), "iteration {iteration}:\n{log}");
    }

    // A last start ends every call and drains.
    let mut s = Siphook::spawn(&config);
    record(
        &mut committed,
        s.wait_ready(&sock, &target, "kill-probe-last").await,
    );
    committed.insert(("kill-probe-last".into(), 1), String::new());
    for c in &all_calls {
        for m in [c.bye(2, "b"), c.resp(200, 2, "BYE", Some("b"))] {
            sock.send_to(m.as_bytes(), &target).await.unwrap();
        }
    }
    // Every committed event arrives; a repeat carries the same webhook-id.
    let mut got: HashMap<(String, u64), String> = HashMap::new();
    let deadline = tokio::time::Instant::now() + common::DEADLINE * 2;
    let check = |req: common::receiver::Received, got: &mut HashMap<(String, u64), String>| {
        let v = req.json();
        let id = req.header("webhook-id").to_owned();
        assert_eq!(v["id"], id.as_str());
        let k = key(&v);
        assert_eq!(
            got.entry(k.clone()).or_insert_with(|| id.clone()),
            &id,
            "{k:?}"
        );
    };
    while !committed.keys().all(|k| got.contains_key(k)) {
        let req = tokio::time::timeout_at(deadline, rx.requests.recv())
            .await
            .unwrap_or_else(|_| {
                let lost: Vec<_> = committed.keys().filter(|k| !got.contains_key(*k)).collect();
                panic!("seed {seed}: committed, never delivered: {lost:?}")
            })
            .unwrap();
        check(req, &mut got);
    }
    for (k, id) in &committed {
        assert!(
            id.is_empty() || &got[k] == id,
            "seed {seed}: {k:?} changed its id"
        );
    }
    // Whatever else arrives before the outbox is empty (completions of calls
    // whose last event came after the kill) is checked too.
    let start = tokio::time::Instant::now();
    loop {
        let reply = common::admin::get(admin_addr, "/v1/endpoints", common::ADMIN_TOKEN).await;
        let crm = &reply.json()["items"][0];
        if crm["pending"] == 0 {
            assert_eq!(crm["dead_letters"], 0, "seed {seed}: {crm}");
            break;
        }
        assert!(start.elapsed() < common::DEADLINE, "seed {seed}: {crm}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let Ok(req) = rx.requests.try_recv() {
        check(req, &mut got);
    }
    // No call ends with a gap: what a crash took back was never numbered.
    let mut per_call: HashMap<&str, Vec<u64>> = HashMap::new();
    for (call, seq) in got.keys() {
        per_call.entry(call).or_default().push(*seq);
    }
    for (call, mut seqs) in per_call {
        seqs.sort();
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "seed {seed}: {call} has a gap");
    }
    let log = s.log_text();
    assert!(damage(&log).is_empty(), "{log}");
    let segments: Vec<u64> = std::fs::read_dir(dir.path().join("outbox/log"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("seg-")?.parse().ok())
        .collect();
    let newest = segments.iter().max().copied().unwrap_or(0);
    assert!(
        newest >= 3,
        "the kills never came after a segment rotation: {segments:?}"
    );
    println!(
        "kill -9 loop: {ITERATIONS} kills, {newest} segments started, {} events committed, {} delivered",
        committed.len(),
        got.len()
    );
}
