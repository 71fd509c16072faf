//! Overload with the real binary: a flood of calls that never end past the call
//! table's cap, webhook endpoints that hang or are down, and TCP peers that hold
//! connections or send a header block that never ends. Each is held by a limit
//! that is counted by reason, memory stops growing, and the admin listener keeps
//! answering.
//!
//! Debug builds are slow, so the counts here are modest; the million-INVITE run
//! with the release binary is `cargo bench --bench flood` (numbers in
//! docs/operations.md, "Limits and shedding").

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::admin::{Sample, parse_metrics, request, sum};
use common::receiver::{Receiver, Reply};
use common::{CallSpec, DEADLINE, Harness, free_port, test_config};
use siphook::pipeline::EVENT_QUEUE;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Longer than any admin answer may take while the flood runs: a hang guard,
/// not the latency target (that is measured by the flood bench).
const ADMIN_HANG_GUARD: Duration = Duration::from_secs(5);

/// Datagrams sent before waiting for siphook to have parsed them all, so the
/// paced phases measure siphook and not the kernel's receive buffer.
const WINDOW: usize = 200;

/// A running `siphook run` with its own outbox and admin listener.
struct Siphook {
    child: Child,
    pid: u32,
    sip: SocketAddr,
    tcp: Option<SocketAddr>,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Siphook {
    /// Starts the binary with `[sip]` keys `sip_extra` and the given endpoints
    /// (TOML `[[endpoints]]` blocks), and waits until `/healthz` answers.
    async fn start(sip_extra: &str, tcp: bool, endpoints: &str) -> Siphook {
        let dir = tempfile::tempdir().unwrap();
        let sip: SocketAddr = format!("127.0.0.1:{}", free_port(true)).parse().unwrap();
        let tcp = tcp
            .then(|| -> SocketAddr { format!("127.0.0.1:{}", free_port(false)).parse().unwrap() });
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
        let tcp_list = tcp.map(|a| format!("\"{a}\"")).unwrap_or_default();
        let config = dir.path().join("siphook.toml");
        std::fs::write(
            &config,
            format!(
                "[sip]\nudp = [\"{sip}\"]\ntcp = [{tcp_list}]\n{sip_extra}\n[outbox]\npath = \"{}\"\n[admin]\nlisten = \"{admin}\"\n{endpoints}\n",
                dir.path().join("outbox").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("siphook.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_siphook"))
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            // Events are not printed: a stdout nobody reads would stall the writer.
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("siphook starts");
        let pid = child.id().expect("a pid");
        let s = Siphook {
            child,
            pid,
            sip,
            tcp,
            admin,
            _dir: dir,
        };
        s.wait_healthy().await;
        s
    }

    async fn wait_healthy(&self) {
        let start = Instant::now();
        loop {
            let up = tokio::time::timeout(Duration::from_millis(500), async {
                TcpStream::connect(self.admin).await.is_ok()
            })
            .await
            .unwrap_or(false);
            if up
                && request(self.admin, "GET", "/healthz", None, None)
                    .await
                    .status
                    == 200
            {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "siphook did not become healthy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metrics(&self) -> Vec<Sample> {
        parse_metrics(
            &request(self.admin, "GET", "/metrics", None, None)
                .await
                .text(),
        )
    }

    /// Polls `/metrics` until `done` holds, returning that scrape; fails at the
    /// deadline with what `what` describes.
    async fn until(&self, what: &str, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let start = Instant::now();
        loop {
            let m = self.metrics().await;
            if done(&m) {
                return m;
            }
            assert!(start.elapsed() < DEADLINE, "waited in vain for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident memory from /proc/PID/status, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }

    /// Still running (not crashed by what the test did).
    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "siphook exited during the test"
        );
    }
}

fn udp_parsed(m: &[Sample]) -> f64 {
    sum(m, "siphook_sip_messages_total", &[("transport", "udp")])
}

fn shed(m: &[Sample], reason: &str) -> f64 {
    sum(
        m,
        "siphook_sip_messages_dropped_total",
        &[("transport", "udp"), ("reason", reason)],
    )
}

/// Sends INVITEs of new calls over UDP `WINDOW` at a time, waiting after each
/// window until the tracker has taken or refused every one sent so far (`base`
/// before these), or siphook has counted it as shed: paced by the tracker, so no
/// queue can fill behind a window.
async fn send_paced(s: &Siphook, sock: &UdpSocket, invites: &[String], base: f64) {
    let mut sent = 0usize;
    for chunk in invites.chunks(WINDOW) {
        for m in chunk {
            sock.send_to(m.as_bytes(), s.sip).await.unwrap();
        }
        sent += chunk.len();
        let want = base + sent as f64;
        s.until(&format!("{want} INVITEs tracked"), |m| {
            tracked(m) + shed(m, "queue_full") + shed(m, "receive_buffer_full") >= want
        })
        .await;
    }
}

/// New calls the tracker took into its table or refused there.
fn tracked(m: &[Sample]) -> f64 {
    sum(m, "siphook_calls_active", &[])
        + sum(
            m,
            "siphook_sip_messages_ignored_total",
            &[("reason", "table_full")],
        )
}

fn invites(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| CallSpec::new(&format!("{prefix}-{i}")).invite(1))
        .collect()
}

/// Latencies of `/healthz` and `/metrics`, asked one after the other until
/// `stop`, each bounded by the hang guard.
async fn poll_admin(admin: SocketAddr, stop: Arc<AtomicBool>) -> Vec<(bool, Duration)> {
    let mut seen = Vec::new();
    // Bounded by count too, should `stop` never come.
    for i in 0..20_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let healthz = i % 2 == 0;
        let path = if healthz { "/healthz" } else { "/metrics" };
        let t = Instant::now();
        let reply = tokio::time::timeout(ADMIN_HANG_GUARD, request(admin, "GET", path, None, None))
            .await
            .unwrap_or_else(|_| {
                panic!("{path} did not answer within {ADMIN_HANG_GUARD:?} during the flood")
            });
        assert_eq!(reply.status, 200, "{path} during the flood");
        seen.push((healthz, t.elapsed()));
        // The pace of a busy scraper, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    seen
}

fn quantiles(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    format!(
        "n={} p50={:?} p99={:?} max={:?}",
        v.len(),
        q(0.5),
        q(0.99),
        v[v.len() - 1]
    )
}

/// 1,000 calls fill the table; 29,000 more INVITEs that never end are counted as
/// `table_full` one for one, resident memory stays put between 10,000 and 30,000
/// messages, and an unpaced blast on top is accounted for exactly, by reason
/// (`receive_buffer_full` in the kernel, `queue_full` before the tracker,
/// `table_full` in it). The admin listener answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_endless_calls_holds_the_table_at_its_cap_and_memory_flat() {
    const CAP: usize = 1_000;
    const N: usize = 10_000;
    const BLAST: usize = 20_000;
    let receiver = Receiver::ok().await;
    let mut s = Siphook::start(
        &format!("max_active_calls = {CAP}\nqueue_capacity = 1024"),
        false,
        &format!(
            "[[endpoints]]\nname = \"crm\"\nurl = \"{}\"\nallow_http = true\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n",
            receiver.url()
        ),
    )
    .await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_admin(s.admin, stop.clone()));

    // The table fills, then every further new call is refused by reason.
    send_paced(&s, &sock, &invites("flood", 0..N), 0.0).await;
    let at_n = s
        .until("the tracker to have seen all N", |m| {
            sum(
                m,
                "siphook_sip_messages_ignored_total",
                &[("reason", "table_full")],
            ) >= (N - CAP) as f64
        })
        .await;
    let rss_n = s.rss();
    assert_eq!(sum(&at_n, "siphook_calls_active", &[]), CAP as f64);
    assert_eq!(
        sum(
            &at_n,
            "siphook_calls_dropped_total",
            &[("reason", "table_full")]
        ),
        (N - CAP) as f64
    );
    assert_eq!(
        sum(&at_n, "siphook_events_total", &[("type", "call.initiated")]),
        CAP as f64
    );

    send_paced(&s, &sock, &invites("flood", N..3 * N), N as f64).await;
    let at_3n = s
        .until("the tracker to have seen all 3N", |m| {
            sum(
                m,
                "siphook_sip_messages_ignored_total",
                &[("reason", "table_full")],
            ) >= (3 * N - CAP) as f64
        })
        .await;
    let rss_3n = s.rss();
    assert_eq!(sum(&at_3n, "siphook_calls_active", &[]), CAP as f64);
    assert_eq!(
        sum(
            &at_3n,
            "siphook_calls_dropped_total",
            &[("reason", "table_full")]
        ),
        (3 * N - CAP) as f64
    );
    // Tracking the 20,000 extra calls would take over 20 MB (about 1.1 KB each,
    // BENCHMARKS.md); refusing them must take next to nothing.
    let growth = rss_3n.saturating_sub(rss_n);
    println!(
        "RSS at {N} messages: {} KiB; at {}: {} KiB; growth {} KiB",
        rss_n / 1024,
        3 * N,
        rss_3n / 1024,
        growth / 1024
    );
    assert!(
        growth < 6 * 1024 * 1024,
        "RSS grew {growth} bytes between {N} and {} refused calls",
        3 * N
    );

    // An unpaced blast: whatever siphook cannot take is shed and counted, so the
    // counts add up to what was sent, exactly.
    let blast = invites("blast", 0..BLAST);
    for m in &blast {
        sock.send_to(m.as_bytes(), s.sip).await.unwrap();
    }
    let total = (3 * N + BLAST) as f64;
    let end = s
        .until("every blast datagram parsed or counted as shed", |m| {
            udp_parsed(m) + shed(m, "receive_buffer_full") >= total
        })
        .await;
    let parsed = udp_parsed(&end);
    let (kernel, queue) = (shed(&end, "receive_buffer_full"), shed(&end, "queue_full"));
    assert_eq!(parsed + kernel, total, "every datagram accounted for");
    let end = s
        .until("the tracker to have seen every queued message", |m| {
            sum(
                m,
                "siphook_sip_messages_ignored_total",
                &[("reason", "table_full")],
            ) + queue
                >= parsed - CAP as f64
        })
        .await;
    assert_eq!(
        sum(
            &end,
            "siphook_sip_messages_ignored_total",
            &[("reason", "table_full")]
        ) + queue,
        parsed - CAP as f64,
        "parsed messages are tracked, refused at the table, or shed at the queue"
    );
    assert_eq!(sum(&end, "siphook_calls_active", &[]), CAP as f64);
    println!(
        "blast of {BLAST}: parsed {}, shed receive_buffer_full {kernel}, queue_full {queue}; RSS {} KiB",
        parsed - 3.0 * N as f64,
        s.rss() / 1024
    );

    stop.store(true, Ordering::Relaxed);
    let seen = poller.await.unwrap();
    let (h, m): (Vec<_>, Vec<_>) = seen.into_iter().partition(|(healthz, _)| *healthz);
    assert!(
        h.len() >= 5 && m.len() >= 5,
        "admin polled during the flood"
    );
    println!(
        "during the flood (debug build): /healthz {}; /metrics {}",
        quantiles(h.into_iter().map(|x| x.1).collect()),
        quantiles(m.into_iter().map(|x| x.1).collect())
    );
    s.assert_running();
}

/// With one endpoint that accepts and never answers and one that is down, SIP
/// ingest takes every message: none is shed, every call is tracked, and every
/// event is committed and waiting, while the hanging endpoint holds only its
/// `max_in_flight` attempts. Ingest never waits on delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_never_waits_on_hanging_or_dead_endpoints() {
    const CALLS: usize = 3_000;
    let hanging = Receiver::start(Arc::new(|_| Reply {
        status: 200,
        headers: vec![],
        delay: Duration::from_secs(3600),
    }))
    .await;
    let down = format!("http://127.0.0.1:{}/hook", free_port(false));
    let endpoint = |name: &str, url: &str| {
        format!(
            "[[endpoints]]\nname = \"{name}\"\nurl = \"{url}\"\nallow_http = true\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\ntimeout = \"1h\"\nmax_in_flight = 4\n"
        )
    };
    let mut s = Siphook::start(
        "",
        false,
        &(endpoint("hanging", &hanging.url()) + &endpoint("down", &down)),
    )
    .await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    send_paced(&s, &sock, &invites("nodelivery", 0..CALLS), 0.0).await;
    let rate = CALLS as f64 / started.elapsed().as_secs_f64();
    let m = s
        .until("every event committed for both endpoints", |m| {
            sum(m, "siphook_outbox_pending", &[("endpoint", "hanging")]) >= CALLS as f64
                && sum(m, "siphook_outbox_pending", &[("endpoint", "down")]) >= CALLS as f64
        })
        .await;
    assert_eq!(udp_parsed(&m), CALLS as f64);
    assert_eq!(
        sum(&m, "siphook_sip_messages_dropped_total", &[]),
        0.0,
        "nothing shed while delivery is stuck"
    );
    assert_eq!(sum(&m, "siphook_calls_active", &[]), CALLS as f64);
    assert_eq!(
        sum(&m, "siphook_events_total", &[("type", "call.initiated")]),
        CALLS as f64
    );
    assert_eq!(sum(&m, "siphook_events_refused_total", &[]), 0.0);
    assert_eq!(
        sum(&m, "siphook_deliveries_total", &[("endpoint", "hanging")]),
        0.0,
        "no attempt to the hanging endpoint has finished"
    );
    let requests = {
        let mut hanging = hanging;
        let mut n = 0;
        while hanging.requests.try_recv().is_ok() {
            n += 1;
        }
        n
    };
    assert!(
        (1..=4).contains(&requests),
        "the hanging endpoint holds at most max_in_flight attempts, got {requests}"
    );
    println!("{CALLS} calls ingested at {rate:.0}/s (paced, debug build) with delivery stuck");
    s.assert_running();
}

/// Idle TCP connections fill `max_tcp_connections`; the rest are refused and
/// counted, and UDP and the admin listener carry on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_past_the_cap_are_refused_and_counted() {
    const CAP: usize = 200;
    const EXTRA: usize = 50;
    let mut s = Siphook::start(
        // One source fills every slot: its own cap is set past the global one, so
        // only the global cap is at play (tests/tcp.rs has the per-source cap and
        // eviction).
        &format!(
            "max_tcp_connections = {CAP}\nmax_connections_per_source = {}\ntcp_idle_timeout = \"10m\"",
            CAP + EXTRA
        ),
        true,
        "",
    )
    .await;
    let tcp = s.tcp.expect("a TCP listener");
    let mut held = Vec::with_capacity(CAP);
    for _ in 0..CAP {
        held.push(TcpStream::connect(tcp).await.unwrap());
    }
    s.until("every idle connection accepted", |m| {
        sum(m, "siphook_tcp_connections", &[]) >= CAP as f64
    })
    .await;
    let mut refused = Vec::with_capacity(EXTRA);
    for _ in 0..EXTRA {
        // The kernel completes the handshake; siphook then closes it at once.
        refused.push(TcpStream::connect(tcp).await.unwrap());
    }
    let m = s
        .until("every extra connection refused", |m| {
            sum(
                m,
                "siphook_tcp_connections_closed_total",
                &[("reason", "refused_max_connections")],
            ) >= EXTRA as f64
        })
        .await;
    assert_eq!(
        sum(
            &m,
            "siphook_tcp_connections_closed_total",
            &[("reason", "refused_max_connections")]
        ),
        EXTRA as f64
    );
    assert_eq!(sum(&m, "siphook_tcp_connections", &[]), CAP as f64);
    for mut r in refused {
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(DEADLINE, tokio::io::AsyncReadExt::read(&mut r, &mut buf))
            .await
            .expect("a refused connection is closed");
        assert!(matches!(read, Ok(0) | Err(_)), "refused, got {read:?}");
    }
    // UDP still works while TCP is full.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(CallSpec::new("beside-full-tcp").invite(1).as_bytes(), s.sip)
        .await
        .unwrap();
    s.until("a UDP call tracked beside the full TCP listener", |m| {
        sum(m, "siphook_calls_active", &[]) >= 1.0
    })
    .await;
    // One held connection closes: its slot is free again.
    drop(held.pop());
    s.until("the closed connection's slot freed", |m| {
        sum(m, "siphook_tcp_connections", &[]) <= (CAP - 1) as f64
    })
    .await;
    let mut fresh = TcpStream::connect(tcp).await.unwrap();
    fresh
        .write_all(CallSpec::new("tcp-after-cap").invite(1).as_bytes())
        .await
        .unwrap();
    let m = s
        .until("a call over a new connection", |m| {
            sum(m, "siphook_calls_active", &[]) >= 2.0
        })
        .await;
    assert_eq!(
        sum(
            &m,
            "siphook_tcp_connections_closed_total",
            &[("reason", "refused_max_connections")]
        ),
        EXTRA as f64,
        "the freed slot was reused, not refused"
    );
    s.assert_running();
}

/// A 10 MB header block with no blank line: the connection is closed once it
/// passes `max_message_bytes`, counted as `too_large`, and memory does not grow
/// by anything like 10 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_header_block_is_cut_at_max_message_bytes() {
    let mut s = Siphook::start("max_message_bytes = \"64KiB\"", true, "").await;
    let rss_before = s.rss();
    let mut conn = TcpStream::connect(s.tcp.expect("a TCP listener"))
        .await
        .unwrap();
    let mut block = b"INVITE sip:+15551234567@10.0.0.2 SIP/2.0\r\n".to_vec();
    let line = format!("X-Pad: {}\r\n", "p".repeat(1000));
    while block.len() < 10 * 1024 * 1024 {
        block.extend_from_slice(line.as_bytes());
    }
    // siphook closes mid-stream, so the write fails part-way: that is the point.
    let written = tokio::time::timeout(DEADLINE, async {
        let mut n = 0usize;
        for piece in block.chunks(64 * 1024) {
            if conn.write_all(piece).await.is_err() {
                break;
            }
            n += piece.len();
        }
        n
    })
    .await
    .expect("the writes end (siphook closes the connection)");
    let m = s
        .until("the connection closed as too_large", |m| {
            sum(
                m,
                "siphook_tcp_connections_closed_total",
                &[("reason", "too_large")],
            ) >= 1.0
        })
        .await;
    assert_eq!(
        sum(
            &m,
            "siphook_sip_parse_errors_total",
            &[("transport", "tcp"), ("reason", "too_large")]
        ),
        1.0
    );
    assert_eq!(sum(&m, "siphook_tcp_connections", &[]), 0.0);
    assert_eq!(sum(&m, "siphook_sip_messages_total", &[]), 0.0);
    let growth = s.rss().saturating_sub(rss_before);
    println!(
        "10 MB header block: {written} bytes written before the close, RSS growth {} KiB",
        growth / 1024
    );
    assert!(
        growth < 4 * 1024 * 1024,
        "RSS grew {growth} bytes on a 10 MB header block"
    );
    assert!(
        written < block.len(),
        "siphook took the whole 10 MB instead of closing"
    );
    // The listener serves the next peer.
    let mut next = TcpStream::connect(s.tcp.expect("a TCP listener"))
        .await
        .unwrap();
    next.write_all(CallSpec::new("tcp-after-10mb").invite(1).as_bytes())
        .await
        .unwrap();
    s.until("a call after the big block", |m| {
        sum(m, "siphook_calls_active", &[]) >= 1.0
    })
    .await;
    s.assert_running();
}

/// The outbox writer stalls (here nobody takes the tracker's events, as when the
/// disk stops answering): the tracker waits once the event queue is full, its own
/// queue fills behind it, and every message past that is shed as `queue_full`,
/// counted one for one, while the listener goes on reading and parsing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_sheds_at_the_tracker_queue_while_ingest_reads_on() {
    const QUEUE: usize = 1024;
    const EXTRA: usize = 500;
    let mut config = test_config();
    config.sip.queue_capacity = QUEUE;
    let h = Harness::with_config(config).await;
    // One call more than the event queue holds is taken: its event is the one
    // the tracker waits to hand over.
    let taken = EVENT_QUEUE + 1;
    let total = taken + QUEUE + EXTRA;
    let msgs = invites("stall", 0..total);
    // Up to the stall, paced by the tracker so nothing is shed yet; then by the
    // parser, the tracker being stuck.
    let mut sent = 0usize;
    for chunk in msgs[..taken].chunks(WINDOW) {
        for m in chunk {
            h.send(m).await;
        }
        sent += chunk.len();
        h.wait_metric("siphook_calls_active", &[], sent as f64)
            .await;
    }
    assert_eq!(h.metric("siphook_sip_messages_dropped_total", &[]), 0.0);
    for chunk in msgs[taken..].chunks(WINDOW) {
        for m in chunk {
            h.send(m).await;
        }
        sent += chunk.len();
        h.wait_metric(
            "siphook_sip_messages_total",
            &[("transport", "udp")],
            sent as f64,
        )
        .await;
    }
    h.wait_metric(
        "siphook_sip_messages_dropped_total",
        &[("reason", "queue_full")],
        EXTRA as f64,
    )
    .await;
    assert_eq!(
        h.metric("siphook_sip_messages_total", &[("transport", "udp")]),
        total as f64,
        "every datagram read and parsed while the tracker was stuck"
    );
    assert_eq!(
        h.metric(
            "siphook_sip_messages_dropped_total",
            &[("reason", "queue_full")]
        ),
        EXTRA as f64
    );
    assert_eq!(h.metric("siphook_calls_active", &[]), taken as f64);
    assert_eq!(
        h.metric(
            "siphook_sip_messages_dropped_total",
            &[("reason", "receive_buffer_full")]
        ),
        0.0
    );
}
