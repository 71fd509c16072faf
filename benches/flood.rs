//! The overload measurement: 1,000,000 INVITEs that never end, against the real
//! binary with `max_active_calls` at its default (200,000). What a debug-build
//! test cannot afford (tests/overload.rs runs the same checks at 30,000).
//!
//! `cargo bench --bench flood` (FLOOD_INVITES and FLOOD_BLAST change the counts).
//! Two phases, both over UDP on loopback:
//!
//! 1. paced: each window of INVITEs is sent once siphook has parsed the previous
//!    one, so every INVITE reaches the tracker; the table must stop at its cap
//!    and refuse the rest as `table_full`, and resident memory must stop growing
//!    with it;
//! 2. blast: as fast as the sender can, far past what siphook parses; what it
//!    cannot take must be counted by reason and add up to what was sent.
//!
//! Meanwhile `/healthz` and `/metrics` are asked every 10 ms on fresh connections
//! (the target: within 100 ms during the flood) and the quantiles of
//! their latency are reported with the peak RSS, next to the same request to a
//! trivial server in this process: on a shared machine, what the host's
//! scheduling alone costs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Datagrams between two looks at what siphook has parsed in the paced phase.
const WINDOW: usize = 1_000;
/// How long any wait for siphook may take before the run is declared broken.
const STUCK: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// One GET on a fresh connection; the status line's code.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: siphook\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Sum of the samples of `name` whose label set contains `label` (or all).
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| label.is_empty() || l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Siphook {
    child: Child,
    sip: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Siphook {
    fn start() -> Siphook {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let sip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config = dir.path().join("siphook.toml");
        // Defaults for everything that matters here: max_active_calls 200,000,
        // queue_capacity 65,536, a 4 MiB receive buffer (as far as rmem_max allows).
        std::fs::write(
            &config,
            format!(
                "[sip]\nudp = [\"{sip}\"]\ntcp = []\n[outbox]\npath = \"{}\"\n[admin]\nlisten = \"{admin}\"\n",
                dir.path().join("outbox").display()
            ),
        )
        .expect("config written");
        let child = Command::new(env!("CARGO_BIN_EXE_siphook"))
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("siphook starts");
        let s = Siphook {
            child,
            sip,
            admin,
            _dir: dir,
        };
        let start = Instant::now();
        while !matches!(get(admin, "/healthz"), Ok((200, _))) {
            assert!(start.elapsed() < STUCK, "siphook never became healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn metrics(&self) -> String {
        get(self.admin, "/metrics").map(|r| r.1).unwrap_or_default()
    }

    /// Polls `/metrics` until `done` holds of it; returns that text.
    fn until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let m = self.metrics();
            if done(&m) {
                return m;
            }
            assert!(start.elapsed() < STUCK, "stuck waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Siphook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn invite(id: &str) -> String {
    let ft = format!("ft-{id}");
    format!(
        "INVITE sip:+15551234567@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{id}\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:+15557654321@10.0.0.1>;tag={ft}\r\nTo: <sip:+15551234567@10.0.0.2>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.1:5060>\r\nUser-Agent: siphook-flood\r\nContent-Length: 0\r\n\r\n"
    )
}

fn parsed(m: &str) -> f64 {
    metric(m, "siphook_sip_messages_total", "transport=\"udp\"")
}

fn ignored_full(m: &str) -> f64 {
    metric(
        m,
        "siphook_sip_messages_ignored_total",
        "reason=\"table_full\"",
    )
}

/// Messages the tracker has taken a new call from, or refused one for.
fn tracked(m: &str) -> f64 {
    metric(m, "siphook_calls_active", "") + ignored_full(m)
}

fn shed(m: &str, reason: &str) -> f64 {
    metric(
        m,
        "siphook_sip_messages_dropped_total",
        &format!("reason=\"{reason}\""),
    )
}

fn quantiles(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    let slow = v
        .iter()
        .filter(|d| **d > Duration::from_millis(100))
        .count();
    format!(
        "n={} p50={:.2} ms p99={:.2} ms max={:.2} ms, {slow} over 100 ms",
        v.len(),
        q(0.5),
        q(0.99),
        v[v.len() - 1].as_secs_f64() * 1e3
    )
}

/// When each admin answer was asked for and how long it took, per path, and how
/// many answers were not 200.
#[derive(Default)]
struct Samples {
    healthz: Vec<(Instant, Duration)>,
    metrics: Vec<(Instant, Duration)>,
    /// The same request to a trivial server in this process: what the host's
    /// scheduling alone costs, on a machine shared with other work.
    baseline: Vec<(Instant, Duration)>,
    /// Answers other than 200, per path.
    failures: std::collections::BTreeMap<&'static str, usize>,
}

/// A minimal HTTP server on its own thread that answers every request with 200:
/// the control for the admin latencies.
fn baseline_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            // The whole request first: closing on unread bytes would reset the
            // connection under the client.
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    addr
}

/// The latencies of `v` asked for within `from..to`.
fn within(v: &[(Instant, Duration)], from: Instant, to: Instant) -> Vec<Duration> {
    v.iter()
        .filter(|(at, _)| (from..to).contains(at))
        .map(|(_, d)| *d)
        .collect()
}

fn main() {
    let invites = count("FLOOD_INVITES", 1_000_000);
    let blast = count("FLOOD_BLAST", 200_000);
    let s = Siphook::start();
    let pid = s.child.id();
    let rss_idle = status_kib(pid, "VmRSS:");

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let sampler = {
        let (stop, samples, admin) = (stop.clone(), samples.clone(), s.admin);
        let control = baseline_server();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for path in ["/healthz", "/metrics", "baseline"] {
                    let t = Instant::now();
                    let ok = match path {
                        "baseline" => matches!(get(control, "/"), Ok((200, _))),
                        _ => matches!(get(admin, path), Ok((200, _))),
                    };
                    let took = t.elapsed();
                    let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
                    if !ok {
                        *s.failures.entry(path).or_default() += 1;
                    }
                    match path {
                        "/healthz" => s.healthz.push((t, took)),
                        "/metrics" => s.metrics.push((t, took)),
                        _ => s.baseline.push((t, took)),
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let sock = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    println!("flood: {invites} INVITEs that never end, max_active_calls 200000 (default)");
    let started = Instant::now();
    // When the table reached its cap: before it, every INVITE is a new call with
    // an event to commit; after it, every INVITE is refused.
    let mut full_at = None;
    let mut checkpoints = Vec::new();
    let mut sent = 0usize;
    while sent < invites {
        let n = WINDOW.min(invites - sent);
        for i in sent..sent + n {
            sock.send_to(invite(&format!("flood-{i}")).as_bytes(), s.sip)
                .expect("send");
        }
        sent += n;
        let want = sent as f64;
        // Paced by the tracker, not the parser: every INVITE is either in the
        // table or refused there (or, should a window overrun the socket buffer
        // or the tracker fall a whole queue behind, shed before it: counted, and
        // reported below).
        let seen = s.until("the window tracked", |m| {
            tracked(m) + shed(m, "queue_full") + shed(m, "receive_buffer_full") >= want
        });
        if full_at.is_none() && metric(&seen, "siphook_calls_active", "") >= 200_000.0 {
            full_at = Some(Instant::now());
        }
        if [invites / 4, invites / 2, invites].contains(&sent) {
            checkpoints.push((
                sent,
                metric(&seen, "siphook_calls_active", ""),
                status_kib(pid, "VmRSS:"),
            ));
        }
    }
    let paced = started.elapsed();
    let m = s.metrics();
    println!(
        "paced phase: {invites} parsed in {:.1} s ({:.0}/s); calls_active {}; calls_dropped_total{{table_full}} {}; shed queue_full {} receive_buffer_full {}",
        paced.as_secs_f64(),
        invites as f64 / paced.as_secs_f64(),
        metric(&m, "siphook_calls_active", ""),
        metric(&m, "siphook_calls_dropped_total", "reason=\"table_full\""),
        shed(&m, "queue_full"),
        shed(&m, "receive_buffer_full"),
    );
    println!("  RSS idle {} MiB", rss_idle / 1024);
    for (at, active, rss) in &checkpoints {
        println!(
            "  after {at} INVITEs: calls_active {active}, RSS {} MiB",
            rss / 1024
        );
    }

    let before = parsed(&m) + shed(&m, "receive_buffer_full");
    let paced_end = Instant::now();
    let t = Instant::now();
    for i in 0..blast {
        sock.send_to(invite(&format!("blast-{i}")).as_bytes(), s.sip)
            .expect("send");
    }
    let send_secs = t.elapsed().as_secs_f64();
    let want = before + blast as f64;
    let m = s.until("the blast accounted for", |m| {
        parsed(m) + shed(m, "receive_buffer_full") >= want
    });
    let m = s.until("the tracker caught up after the blast", |m2| {
        tracked(m2) + shed(m2, "queue_full") >= parsed(&m)
    });
    println!(
        "blast phase: {blast} sent in {send_secs:.2} s ({:.0}/s); parsed {}, shed receive_buffer_full {}, queue_full {}, refused table_full {} (in total); calls_active {}",
        blast as f64 / send_secs,
        parsed(&m) - invites as f64,
        shed(&m, "receive_buffer_full"),
        shed(&m, "queue_full"),
        ignored_full(&m),
        metric(&m, "siphook_calls_active", ""),
    );
    let rss_end = status_kib(pid, "VmRSS:");
    let peak = status_kib(pid, "VmHWM:");
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "RSS at the end {} MiB, peak (VmHWM) {} MiB",
        rss_end / 1024,
        peak / 1024
    );
    let full_at = full_at.unwrap_or(paced_end);
    let end = Instant::now();
    for (phase, from, to) in [
        ("whole run", started, end),
        ("filling the table", started, full_at),
        ("table full, refusing", full_at, paced_end),
        ("blast", paced_end, end),
    ] {
        println!(
            "{phase}:\n  /healthz {}\n  /metrics {}\n  control  {}",
            quantiles(within(&samples.healthz, from, to)),
            quantiles(within(&samples.metrics, from, to)),
            quantiles(within(&samples.baseline, from, to))
        );
    }
    println!("answers other than 200: {:?}", samples.failures);
}
