//! The process lifecycle with the real binary: SIGHUP reloads (good and broken
//! files), SIGTERM under load, what the logs must never carry, and the systemd
//! notification protocol (READY, WATCHDOG, RELOADING, STOPPING).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::admin::{self, parse_metrics, sum};
use common::receiver::{Receiver, Reply};
use common::{ADMIN_TOKEN, CallSpec, DEADLINE};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The signing secret `common::binary_config` writes, and its base64 body.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_BODY: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A running `siphook run --print-events`: its printed (committed) events and its
/// log, line by line. Killed if dropped while running.
struct Siphook {
    child: Child,
    pid: String,
    /// Events as printed after their commit.
    events: mpsc::UnboundedReceiver<Value>,
    /// Log lines not yet looked at by [`Siphook::wait_log`].
    log: mpsc::UnboundedReceiver<String>,
    /// Every log line so far.
    all_log: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

fn spawn(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Siphook {
    spawn_with(
        Command::new(env!("CARGO_BIN_EXE_siphook")),
        config,
        args,
        env,
    )
}

/// Like [`spawn`], through `sh`, which sets `WATCHDOG_PID` to its own pid and then
/// execs siphook (keeping that pid): the environment systemd gives a main process.
fn spawn_with_watchdog_pid(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Siphook {
    let mut sh = Command::new("sh");
    sh.args([
        "-c",
        "WATCHDOG_PID=$$ exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_siphook"),
    ]);
    spawn_with(sh, config, args, env)
}

fn spawn_with(mut cmd: Command, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Siphook {
    cmd.args(["run", "--config"])
        .arg(config)
        .arg("--print-events")
        .args(args)
        // Nothing from the environment the tests run in decides what siphook does.
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("siphook starts");
    let pid = child.id().expect("a pid").to_string();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (event_tx, events) = mpsc::unbounded_channel();
    let (log_tx, log) = mpsc::unbounded_channel();
    let all_log: Arc<Mutex<Vec<String>>> = Arc::default();
    let all = all_log.clone();
    let readers = vec![
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                let _ = event_tx.send(v);
            }
        }),
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                all.lock().unwrap().push(line.clone());
                let _ = log_tx.send(line);
            }
        }),
    ];
    Siphook {
        child,
        pid,
        events,
        log,
        all_log,
        readers,
    }
}

impl Siphook {
    fn log_text(&self) -> String {
        self.all_log.lock().unwrap().join("\n")
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(&self.pid)
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} {}", self.pid);
    }

    /// The next log line containing `needle`; fails at the deadline.
    async fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.log.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "siphook's log ended without {needle:?}:\n{}",
                    self.log_text()
                ),
                Err(_) => panic!("log never showed {needle:?}:\n{}", self.log_text()),
            }
        }
    }

    /// The next printed event; fails at the deadline or if siphook exited.
    async fn next_event(&mut self) -> Value {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no event printed in time:\n{}", self.log_text()))
            .unwrap_or_else(|| panic!("siphook's stdout closed:\n{}", self.log_text()))
    }

    /// Retransmits `probe`'s INVITE until siphook has printed its
    /// `call.initiated`: proves it listens and commits. Returns that event.
    async fn wait_ready(&mut self, sock: &UdpSocket, target: &str, probe: &CallSpec) -> Value {
        for _ in 0..200 {
            sock.send_to(probe.invite(1).as_bytes(), target)
                .await
                .unwrap();
            if let Ok(Some(v)) =
                tokio::time::timeout(Duration::from_millis(100), self.events.recv()).await
            {
                assert_eq!(v["call"]["sip_call_id"], probe.call_id.as_str(), "{v}");
                assert_eq!(v["type"], "call.initiated");
                return v;
            }
        }
        panic!("siphook did not start listening:\n{}", self.log_text());
    }

    /// Waits (bounded) for the process to exit, then for its output to be read.
    async fn wait_exit(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("siphook did not exit in time:\n{}", self.log_text()))
            .unwrap();
        for r in std::mem::take(&mut self.readers) {
            tokio::time::timeout(DEADLINE, r)
                .await
                .expect("siphook's output closes after it exits")
                .expect("output reader");
        }
        status
    }

    /// SIGTERM, then asserts exit status 0 and the final log line.
    async fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit().await;
        assert_eq!(
            status.code(),
            Some(0),
            "exit status {status}:\n{}",
            self.log_text()
        );
        assert!(
            self.log_text().lines().any(|l| l.contains("stopped")),
            "no \"stopped\" in the log:\n{}",
            self.log_text()
        );
    }
}

async fn send(sock: &UdpSocket, target: &str, msgs: &[String]) {
    for m in msgs {
        sock.send_to(m.as_bytes(), target).await.unwrap();
    }
}

/// `retry_schedule` with `n` attempts: at once, then every `every`.
fn retry_schedule(n: usize, every: &str) -> String {
    let mut s = vec!["\"0s\"".to_owned()];
    s.extend(std::iter::repeat_n(format!("\"{every}\""), n - 1));
    format!("retry_schedule = [{}]", s.join(", "))
}

async fn metrics(addr: std::net::SocketAddr) -> Vec<admin::Sample> {
    parse_metrics(
        &admin::request(addr, "GET", "/metrics", None, None)
            .await
            .text(),
    )
}

/// `crm`'s entry of `/v1/endpoints`.
async fn crm_status(addr: std::net::SocketAddr) -> Value {
    let reply = admin::get(addr, "/v1/endpoints", ADMIN_TOKEN).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let items = reply.json()["items"].as_array().unwrap().clone();
    items
        .into_iter()
        .find(|e| e["name"] == "crm")
        .expect("crm is listed")
}

/// Polls `/v1/endpoints` until crm's entry satisfies `ok` (described by `what`).
async fn wait_crm(addr: std::net::SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let crm = crm_status(addr).await;
        if ok(&crm) {
            return crm;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "crm stayed {crm}, wanted {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/v1/endpoints` until crm's `pending` is `want`.
async fn wait_pending(addr: std::net::SocketAddr, want: u64) -> Value {
    wait_crm(addr, &format!("pending {want}"), |c| c["pending"] == want).await
}

fn key(v: &Value) -> (String, u64) {
    (
        v["call"]["sip_call_id"].as_str().unwrap().to_owned(),
        v["sequence"].as_u64().unwrap(),
    )
}

/// The rest of an answered call after its INVITE and 180.
fn answered_rest(c: &CallSpec) -> Vec<String> {
    vec![
        c.resp(200, 1, "INVITE", Some("callee")),
        c.ack(1, "callee"),
        c.bye(2, "callee"),
        c.resp(200, 2, "BYE", Some("callee")),
    ]
}

const TYPES: [&str; 4] = [
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.completed",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_changed_endpoint_reroutes_new_events_without_losing_pending_ones() {
    let mut a = Receiver::start(Arc::new(|_| Reply::status(503))).await;
    let mut b = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, target) =
        common::binary_config(dir.path(), &a.url(), &retry_schedule(60, "200ms"));
    let admin_at = common::admin_addr(&config);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let call1 = CallSpec::new("reroute-1");
    let call2 = CallSpec::new("reroute-2");

    let mut s = spawn(&config, &[], &[]);
    s.wait_log("siphook running").await;
    // Call 1's INVITE doubles as the readiness probe (retransmissions make no event).
    let initiated = s.wait_ready(&sock, &target, &call1).await;
    send(
        &sock,
        &target,
        &[call1.resp(180, 1, "INVITE", Some("callee"))],
    )
    .await;
    let ringing = s.next_event().await;
    assert_eq!(key(&ringing), ("reroute-1".to_owned(), 2), "{ringing}");
    // A refused the INVITE's event at least once; per-call ordering keeps the 180's
    // behind it, so both are pending at A.
    let first_at_a = a.next().await;
    assert_eq!(key(&first_at_a.json()), ("reroute-1".to_owned(), 1));
    wait_crm(admin_at, "2 pending after a 503", |c| {
        c["pending"] == 2
            && c["last_error"]["status"] == 503
            && c["consecutive_failures"].as_u64() >= Some(1)
    })
    .await;

    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&a.url()));
    std::fs::write(&config, text.replace(&a.url(), &b.url())).unwrap();
    s.signal("HUP");
    let line = s.wait_log("configuration reloaded").await;
    assert!(line.contains("changed=[\"crm\"]"), "{line}");

    send(&sock, &target, &answered_rest(&call1)).await;
    let mut flow2 = call2.answered_flow();
    flow2.remove(1); // the 100 Trying makes no event
    send(&sock, &target, &flow2).await;

    // B gets all 8 events, each call's in order; the two that were pending at A too.
    let mut ids: HashMap<(String, u64), String> = HashMap::new();
    let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut requests = 0;
    while ids.len() < 8 {
        requests += 1;
        assert!(requests <= 64, "too many requests at B: {order:?}");
        let req = b.next().await;
        let v = req.json();
        let k = key(&v);
        let id = req.header("webhook-id").to_owned();
        assert_eq!(v["id"], id.as_str(), "webhook-id is the event id");
        assert!(
            k.0 == "reroute-1" || k.0 == "reroute-2",
            "unexpected event at B: {v}"
        );
        assert_eq!(v["type"], TYPES[k.1 as usize - 1], "{v}");
        let known = ids.entry(k.clone()).or_insert_with(|| id.clone());
        assert_eq!(known, &id, "a duplicate must carry the same webhook-id");
        let seen = order.entry(k.0.clone()).or_default();
        if !seen.contains(&k.1) {
            seen.push(k.1);
        }
    }
    assert_eq!(order["reroute-1"], [1, 2, 3, 4]);
    assert_eq!(order["reroute-2"], [1, 2, 3, 4]);
    // The events pending at A reached B under their original ids.
    assert_eq!(
        ids[&("reroute-1".to_owned(), 1)],
        initiated["id"].as_str().unwrap()
    );
    assert_eq!(
        ids[&("reroute-1".to_owned(), 2)],
        ringing["id"].as_str().unwrap()
    );

    let crm = wait_pending(admin_at, 0).await;
    assert_eq!(crm["dead_letters"], 0, "{crm}");
    let m = metrics(admin_at).await;
    assert_eq!(
        sum(&m, "siphook_config_reloads_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(
        sum(&m, "siphook_config_reloads_total", &[("result", "failure")]),
        0.0
    );
    s.stop().await;
    // Only call 1's INVITE event was ever offered to A (ordering held the 180);
    // nothing committed after the reload went there.
    while let Ok(req) = a.requests.try_recv() {
        if !req.body.is_empty() {
            assert_eq!(key(&req.json()), ("reroute-1".to_owned(), 1));
        }
    }
    // Nothing more reached B than duplicates of what it already had.
    while let Ok(req) = b.requests.try_recv() {
        let k = key(&req.json());
        assert_eq!(
            ids.get(&k).map(String::as_str),
            Some(req.header("webhook-id"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_config_keeps_the_old_one() {
    let mut rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, target) = common::binary_config(dir.path(), &rx.url(), "");
    let admin_at = common::admin_addr(&config);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let mut s = spawn(&config, &[], &[]);
    s.wait_log("siphook running").await;
    let probe = CallSpec::new("broken-probe");
    s.wait_ready(&sock, &target, &probe).await;
    assert_eq!(
        rx.next().await.json()["call"]["sip_call_id"],
        "broken-probe"
    );

    let text = std::fs::read_to_string(&config).unwrap();
    let udp_line = format!("udp = [\"{target}\"]");
    assert!(text.contains(&udp_line) && text.contains(SECRET));
    let broken = text
        .replace(&udp_line, "udp = [\"nonsense\"]")
        .replace(SECRET, "whsec_!!BROKENSECRETVALUE!!");
    std::fs::write(&config, broken).unwrap();
    s.signal("HUP");
    let line = s.wait_log("configuration reload rejected").await;
    assert!(line.contains("sip.udp[0]"), "{line}");
    assert!(line.contains("endpoints[0].secrets[0]"), "{line}");
    assert!(
        !line.contains("BROKENSECRETVALUE"),
        "a secret was echoed: {line}"
    );
    let m = metrics(admin_at).await;
    assert_eq!(
        sum(&m, "siphook_config_reloads_total", &[("result", "failure")]),
        1.0
    );
    assert_eq!(
        sum(&m, "siphook_config_reloads_total", &[("result", "success")]),
        0.0
    );

    // Still listening where it was, still delivering to crm with the old secret.
    let call = CallSpec::new("broken-after");
    send(&sock, &target, &call.answered_flow()).await;
    let mut got = Vec::new();
    while got.len() < 4 {
        let req = rx.next().await;
        let v = req.json();
        assert_eq!(v["call"]["sip_call_id"], "broken-after", "{v}");
        assert!(req.header("webhook-signature").starts_with("v1,"));
        got.push(v["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, TYPES);
    assert_eq!(crm_status(admin_at).await["state"], "healthy");
    s.stop().await;
    assert!(!s.log_text().contains("BROKENSECRETVALUE"));
}

/// What the receiver got across runs: each event's id, and per call the order of
/// first arrivals, per run and overall.
#[derive(Default)]
struct Tally {
    ids: HashMap<(String, u64), String>,
    per_run: [BTreeMap<String, Vec<u64>>; 2],
    overall: BTreeMap<String, Vec<u64>>,
    duplicates: usize,
}

impl Tally {
    fn record(
        &mut self,
        run: usize,
        req: &common::receiver::Received,
        printed: &HashMap<(String, u64), Value>,
    ) {
        if req.body.is_empty() {
            return; // an abandoned attempt cut off mid-body
        }
        let v = req.json();
        let k = key(&v);
        if !k.0.starts_with("load-") {
            return; // a readiness probe
        }
        let id = req.header("webhook-id").to_owned();
        assert_eq!(v["id"], id.as_str());
        let p = printed
            .get(&k)
            .unwrap_or_else(|| panic!("delivered but never committed: {v}"));
        assert_eq!(p["id"], id.as_str(), "delivered under another id: {v}");
        if self.ids.insert(k.clone(), id).is_some() {
            self.duplicates += 1;
        }
        for seen in [
            self.per_run[run].entry(k.0.clone()).or_default(),
            self.overall.entry(k.0).or_default(),
        ] {
            if !seen.contains(&k.1) {
                seen.push(k.1);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_nothing_committed_is_lost() {
    const CALLS: usize = 100;
    const STOP_AFTER: usize = 100;
    // A slow receiver with few attempts at once: a backlog builds.
    let mut rx = Receiver::start(Arc::new(|_| Reply {
        status: 200,
        headers: vec![],
        delay: Duration::from_millis(15),
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "max_in_flight = 2\n{}\n[service]\nshutdown_grace = \"2s\"",
        retry_schedule(10, "50ms")
    );
    let (config, target) = common::binary_config(dir.path(), &rx.url(), &extra);
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let calls: Vec<CallSpec> = (0..CALLS)
        .map(|i| CallSpec::new(&format!("load-{i:03}")))
        .collect();

    let mut first = spawn(&config, &[], &[]);
    first
        .wait_ready(&sock, &target, &CallSpec::new("probe-1"))
        .await;
    let sender = {
        let (sock, target, calls) = (sock.clone(), target.clone(), calls.clone());
        tokio::spawn(async move {
            for c in &calls {
                for m in c.answered_flow() {
                    // After the stop nothing listens: a lost datagram is expected.
                    let _ = sock.send_to(m.as_bytes(), &target).await;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Committed = printed. Stop mid-stream, then read to the end of stdout.
    let mut committed: Vec<Value> = Vec::new();
    while committed.len() < STOP_AFTER {
        committed.push(first.next_event().await);
    }
    first.signal("TERM");
    let stopped_at = Instant::now();
    let status = first.wait_exit().await;
    let stop_took = stopped_at.elapsed();
    assert_eq!(status.code(), Some(0), "{status}:\n{}", first.log_text());
    assert!(first.log_text().contains("stopped"), "{}", first.log_text());
    // 15 ms attempts finish well within the 2 s grace: none was abandoned.
    assert!(
        !first.log_text().contains("shutdown grace over"),
        "{}",
        first.log_text()
    );
    while let Ok(v) = first.events.try_recv() {
        committed.push(v);
    }
    tokio::time::timeout(DEADLINE, sender)
        .await
        .expect("the sender finishes")
        .unwrap();
    // Every request run 1 made was answered within the grace, so it is queued here.
    let mut run1 = Vec::new();
    while let Ok(req) = rx.requests.try_recv() {
        run1.push(req);
    }

    let mut printed: HashMap<(String, u64), Value> = HashMap::new();
    for v in &committed {
        assert!(
            v["call"]["sip_call_id"]
                .as_str()
                .unwrap()
                .starts_with("load-"),
            "{v}"
        );
        assert!(
            printed.insert(key(v), v.clone()).is_none(),
            "printed twice: {v}"
        );
    }
    let completed: Vec<&String> = printed
        .keys()
        .filter(|(_, seq)| *seq == 4)
        .map(|(c, _)| c)
        .collect();
    assert!(!completed.is_empty(), "no call completed before the stop");
    for c in &completed {
        for seq in 1..=4u64 {
            let v = printed
                .get(&((*c).clone(), seq))
                .unwrap_or_else(|| panic!("{c} completed but its event {seq} was not committed"));
            assert_eq!(v["type"], TYPES[seq as usize - 1]);
        }
    }

    let mut second = spawn(&config, &[], &[]);
    second
        .wait_ready(&sock, &target, &CallSpec::new("probe-2"))
        .await;
    let mut tally = Tally::default();
    let delivered_in_run1 = run1.len();
    for req in &run1 {
        tally.record(0, req, &printed);
    }
    let mut requests = 0;
    while tally.ids.len() < printed.len() {
        requests += 1;
        assert!(requests <= 4 * printed.len(), "too many requests");
        let req = rx.next().await;
        tally.record(1, &req, &printed);
    }
    let Tally {
        per_run,
        overall,
        duplicates,
        ..
    } = tally;
    for (run, calls) in per_run.iter().enumerate() {
        for (c, seqs) in calls {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "run {}: {c} delivered out of order: {seqs:?}",
                run + 1
            );
        }
    }
    for (c, seqs) in &overall {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{c} delivered out of order across the restart: {seqs:?}"
        );
    }
    for c in &completed {
        assert_eq!(overall[*c], [1, 2, 3, 4], "{c}");
    }
    assert!(
        delivered_in_run1 < printed.len(),
        "the stop must leave a backlog (delivered {delivered_in_run1} of {})",
        printed.len()
    );
    eprintln!(
        "committed {} events of {} calls ({} completed), run 1 delivered {delivered_in_run1}, stop took {stop_took:?}, {duplicates} duplicates",
        printed.len(),
        overall.len(),
        completed.len()
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_secrets_tokens_or_phone_numbers() {
    const BEARER: &str = "endpoint-bearer-7Qx9Lm2Vz8Kp4Rt6";
    const WRONG_ADMIN: &str = "wrong-admin-token-Hn3Jd8Fs5Wq1";
    let mut rx = Receiver::ok().await;
    rx.script([Reply::status(500)]);
    let dir = tempfile::tempdir().unwrap();
    let bearer_file = dir.path().join("crm.bearer");
    std::fs::write(&bearer_file, format!("{BEARER}\n")).unwrap();
    let extra = format!(
        "auth = {{ bearer_token_file = \"{}\" }}\n{}",
        bearer_file.display(),
        retry_schedule(5, "100ms")
    );
    let (config, target) = common::binary_config(dir.path(), &rx.url(), &extra);
    let admin_at = common::admin_addr(&config);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Every crate at debug (a full filter: a bare "debug" is siphook's own).
    let mut s = spawn(
        &config,
        &["--log-format", "json"],
        &[("RUST_LOG", "debug,siphook=debug")],
    );
    s.wait_log("siphook running").await;
    let calls: Vec<CallSpec> = (0..3)
        .map(|i| CallSpec::new(&format!("logs-{i}")))
        .collect();
    s.wait_ready(&sock, &target, &calls[0]).await;
    for c in &calls {
        send(&sock, &target, &c.answered_flow()).await;
    }
    // The first attempt got a 500 and was retried; every event arrives, with the token.
    let mut delivered = HashSet::new();
    let mut statuses = 0;
    while delivered.len() < 12 {
        statuses += 1;
        assert!(statuses <= 40, "too many requests");
        let req = rx.next().await;
        assert_eq!(req.header("authorization"), format!("Bearer {BEARER}"));
        delivered.insert(req.header("webhook-id").to_owned());
    }
    assert!(statuses > 12, "the 500 was retried");
    let crm = crm_status(admin_at).await;
    assert_eq!(crm["last_error"]["status"], 500, "{crm}");

    // Malformed SIP carrying a number, as garbage and as a broken request.
    sock.send_to(b"garbage +15559990000 garbage\r\n\r\n", &target)
        .await
        .unwrap();
    let broken = "INVITE sip:+15559990000@10.0.0.2 SIP/2.0\r\nFrom: <sip:+15559990000@10.0.0.1>;tag=x\r\nTo: <sip:+15559990000@10.0.0.2>\r\nContent-Length: 0\r\n\r\n";
    sock.send_to(broken.as_bytes(), &target).await.unwrap();
    s.wait_log("unparseable SIP message dropped").await;

    let wrong = admin::request(admin_at, "GET", "/v1/endpoints", Some(WRONG_ADMIN), None).await;
    assert_eq!(wrong.status, 401);
    s.signal("HUP");
    s.wait_log("configuration reloaded").await;
    let test = admin::post(
        admin_at,
        "/v1/endpoints/crm/test",
        ADMIN_TOKEN,
        serde_json::json!({}),
    )
    .await;
    assert_eq!(test.status, 200, "{}", test.text());
    assert_eq!(test.json()["outcome"], "delivered", "{}", test.text());
    let req = rx.next().await;
    assert_eq!(req.json()["type"], "webhook.test");
    assert_eq!(req.header("authorization"), format!("Bearer {BEARER}"));
    s.stop().await;

    let lines = s.all_log.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("\"DEBUG\"")),
        "RUST_LOG=debug took effect"
    );
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v.is_object() && v["level"].is_string(), "{line}");
    }
    let text = lines.join("\n");
    for (what, needle) in [
        ("the webhook secret", "whsec_"),
        ("the webhook secret", SECRET_BODY),
        ("the endpoint bearer token", BEARER),
        ("the admin token", ADMIN_TOKEN),
        ("a wrong admin token", WRONG_ADMIN),
        ("the callee's number", "5551234567"),
        ("the caller's number", "5557654321"),
        ("the malformed message's number", "5559990000"),
    ] {
        let hits: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
        assert!(
            hits.is_empty(),
            "{what} ({needle}) reached the log:\n{}",
            hits.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(text.contains("configuration reloaded"));
}

/// Reads notifications from a socket standing in for systemd's.
struct Notify {
    socket: tokio::net::UnixDatagram,
    seen: Vec<String>,
}

impl Notify {
    /// The next datagram; fails at the deadline.
    async fn next(&mut self) -> String {
        self.next_within(DEADLINE).await
    }

    /// The next datagram; fails after `within`.
    async fn next_within(&mut self, within: Duration) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(within, self.socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no notification within {within:?}; so far {:?}", self.seen))
            .unwrap();
        let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
        self.seen.push(msg.clone());
        msg
    }

    /// Skips watchdog pings up to the next other notification.
    async fn next_not_watchdog(&mut self) -> String {
        for _ in 0..1000 {
            let m = self.next().await;
            if m.trim_end() != "WATCHDOG=1" {
                return m;
            }
        }
        panic!("only watchdog pings: {:?}", self.seen);
    }
}

fn has(msg: &str, assignment: &str) -> bool {
    msg.lines().any(|l| l == assignment)
}

/// BUG (src/pipeline/systemd.rs, `watchdog_interval`): fails while siphook reads
/// `WATCHDOG_USEC` through `sd_notify::watchdog_enabled`, which (sd-notify 0.4.5)
/// demands `WATCHDOG_PID`; sd_watchdog_enabled(3) enables the watchdog when
/// `WATCHDOG_PID` is unset. siphook then never sends WATCHDOG=1 and a supervisor
/// that sets only `WATCHDOG_USEC` kills it after the first timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_ready_watchdog_reloading_and_stopping() {
    notify_protocol(false).await;
}

/// The same protocol with the environment systemd really gives its main process:
/// `WATCHDOG_PID` set to siphook's pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_with_watchdog_pid_as_systemd_sets_it() {
    notify_protocol(true).await;
}

/// READY=1 first (before any WATCHDOG=1), at least two WATCHDOG=1, RELOADING=1 with
/// MONOTONIC_USEC then READY=1 around a SIGHUP, STOPPING=1 on SIGTERM, exit 0.
async fn notify_protocol(watchdog_pid: bool) {
    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, _target) = common::binary_config(dir.path(), &rx.url(), "");
    let path = dir.path().join("notify.sock");
    let mut notify = Notify {
        socket: tokio::net::UnixDatagram::bind(&path).unwrap(),
        seen: Vec::new(),
    };
    let env = [
        ("NOTIFY_SOCKET", path.to_str().unwrap()),
        ("WATCHDOG_USEC", "200000"),
    ];
    let mut s = if watchdog_pid {
        spawn_with_watchdog_pid(&config, &[], &env)
    } else {
        spawn(&config, &[], &env)
    };
    let ready = notify.next().await;
    assert!(has(&ready, "READY=1"), "READY first, got {ready:?}");
    assert!(!ready.contains("WATCHDOG=1"), "{ready:?}");
    // Ready means the log has said so too (the line is written before READY=1).
    s.wait_log("siphook running").await;
    let pings_from = Instant::now();
    for _ in 0..2 {
        // WATCHDOG_USEC=200000: a ping every 100 ms; 5 s is 50 intervals.
        let m = notify.next_within(Duration::from_secs(5)).await;
        assert_eq!(m.trim_end(), "WATCHDOG=1", "{:?}", notify.seen);
    }
    // Half the 200 ms watchdog: two pings take about 100-200 ms, never seconds.
    assert!(pings_from.elapsed() < Duration::from_secs(5));

    s.signal("HUP");
    let reloading = notify.next_not_watchdog().await;
    assert!(has(&reloading, "RELOADING=1"), "{:?}", notify.seen);
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING without MONOTONIC_USEC: {reloading:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0, "{reloading:?}");
    let ready_again = notify.next_not_watchdog().await;
    assert!(has(&ready_again, "READY=1"), "{:?}", notify.seen);
    s.wait_log("configuration reloaded").await;
    let m = notify.next().await;
    assert_eq!(m.trim_end(), "WATCHDOG=1", "pings go on after a reload");

    s.signal("TERM");
    let stopping = notify.next_not_watchdog().await;
    assert!(has(&stopping, "STOPPING=1"), "{:?}", notify.seen);
    let status = s.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", s.log_text());
    // Nothing after STOPPING but (at most) pings already on their way.
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.socket.try_recv(&mut buf) {
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(!has(&m, "READY=1"), "READY after STOPPING: {m:?}");
        notify.seen.push(m);
    }
}
