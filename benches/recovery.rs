//! Recovery: how long after a restart with a large backlog (default 1,000,000
//! pending events) delivery resumes, and how fast the backlog then drains.
//! Run: `cargo bench --bench recovery` (`SIPHOOK_RECOVERY_EVENTS=N` to change the
//! backlog; it needs about 2.5 KiB of disk per event in the temp directory).
//!
//! Phase 1 fills a fresh outbox with answered calls (4 events each, real tracker
//! output with unique ids) committed in batches, then closes it. Phase 2 is the
//! restart: open the store, start delivery, and time the first webhook at a local
//! receiver; then it measures the drain rate for up to 20 s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use siphook::call::{Event, Tracker, TrackerConfig};
use siphook::config::Config;
use siphook::deliver::{Delivery, open_outbox};
use siphook::metrics::Metrics;
use siphook::sip::{ParseOptions, parse};
use siphook::vocab::{Meta, Timestamp, Transport};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Appends per commit while filling: the writer's own batches are smaller, but
/// the fill is set-up, not what is measured.
const FILL_BATCH: usize = 10_000;
/// How long the drain is watched after the first delivery.
const DRAIN_WATCH: Duration = Duration::from_secs(20);

/// The four events of one answered call, from the real tracker.
fn template() -> Vec<Event> {
    let cfg = TrackerConfig::from(&Config::default().sip);
    let mut t = Tracker::new(cfg);
    let opts = ParseOptions::default();
    let call = |m: &str| {
        format!(
            "{m}\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\r\nFrom: \"Alice\" <sip:+15557654321@192.0.2.10>;tag=a1\r\nTo: <sip:+15551234567@198.51.100.20>{}\r\nCall-ID: recovery-template\r\nContent-Length: 0\r\n",
            if m.starts_with("INVITE") {
                ""
            } else {
                ";tag=b1"
            }
        )
    };
    let flow = [
        ("INVITE sip:+15551234567@198.51.100.20 SIP/2.0", "1 INVITE"),
        ("SIP/2.0 180 Ringing", "1 INVITE"),
        ("SIP/2.0 200 OK", "1 INVITE"),
        // The BYE completes the call; its 200 OK would come after the end.
        ("BYE sip:b@198.51.100.20 SIP/2.0", "2 BYE"),
    ];
    let mut out = Vec::new();
    for (i, (line, cseq)) in flow.iter().enumerate() {
        let text = call(line).replace("Content-Length", &format!("CSeq: {cseq}\r\nContent-Length"));
        let msg = parse(format!("{text}\r\n").as_bytes(), &opts).expect("template message");
        let meta = Meta {
            transport: Transport::Udp,
            source: "192.0.2.10:5060".parse().expect("address"),
            destination: "198.51.100.20:5060".parse().expect("address"),
            received_at: Timestamp(1_795_330_800_000 + i as i64),
        };
        t.on_message(&msg, &meta, &mut out).expect("template call");
    }
    assert_eq!(out.len(), 4, "initiated, ringing, answered, completed");
    out
}

async fn receiver(count: Arc<AtomicU64>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    count.fetch_add(1, Ordering::Relaxed);
                    async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new()))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("SIPHOOK_RECOVERY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let count = Arc::new(AtomicU64::new(0));
    let addr = receiver(count.clone()).await;
    let text = format!(
        "[sip]\nudp = []\ntcp = []\n[outbox]\npath = \"{}\"\nmax_bytes = \"64GiB\"\n[[endpoints]]\nname = \"x\"\nurl = \"http://{addr}/hook\"\nallow_http = true\nsecrets = [\"{SECRET}\"]\n",
        dir.path().join("outbox").display()
    );
    let config = Config::parse(&text).expect("config");

    // Phase 1: the backlog.
    let template = template();
    let fill = Instant::now();
    {
        let outbox = open_outbox(&config).expect("outbox");
        for i in 0..n {
            let mut e = template[i % 4].clone();
            let call = i / 4;
            e.call.id = format!("call_{call:016x}{:048x}", 0);
            e.id = format!("evt_{i:064x}");
            let body = e.to_json();
            outbox.append(&e, &body, &["x"], 0).expect("append");
            if i % FILL_BATCH == FILL_BATCH - 1 {
                outbox.commit().await.expect("commit");
            }
        }
        outbox.commit().await.expect("commit");
    }
    let fill = fill.elapsed();
    let disk = dir_size(&dir.path().join("outbox"));
    println!(
        "backlog: {n} events written in {:.1} s ({:.0} events/s); {:.0} MiB on disk ({:.0} bytes/event)",
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64(),
        disk as f64 / 1048576.0,
        disk as f64 / n as f64
    );

    // Phase 2: the restart.
    let restart = Instant::now();
    let outbox = open_outbox(&config).expect("reopen");
    let opened = restart.elapsed();
    let (no_more, events) = tokio::sync::mpsc::channel(1);
    let delivery =
        Delivery::start(&config, outbox, events, None, Metrics::new()).expect("delivery");
    let started = restart.elapsed();
    let deadline = restart + Duration::from_secs(600);
    while count.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let first = restart.elapsed();
    let watch_until = Instant::now() + DRAIN_WATCH;
    while (count.load(Ordering::Relaxed) as usize) < n && Instant::now() < watch_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = count.load(Ordering::Relaxed);
    let drain = restart.elapsed() - first;
    println!(
        "restart: store open {:.2} s, delivery started (backlog loaded) {:.2} s, first webhook {:.2} s after start",
        opened.as_secs_f64(),
        started.as_secs_f64(),
        first.as_secs_f64()
    );
    println!(
        "drain: {delivered} delivered in the {:.1} s after the first ({:.0} webhooks/s){}",
        drain.as_secs_f64(),
        delivered as f64 / drain.as_secs_f64(),
        if delivered as usize >= n {
            ", all of them"
        } else {
            ""
        }
    );
    // The writer's input must close before delivery shuts down.
    drop(no_more);
    let _ = delivery.shutdown().await;
}
