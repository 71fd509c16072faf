//! Group commit: how many events share one outbox flush (fsync), when INVITEs
//! arrive in a burst versus one at a time. Run: `cargo bench --bench group_commit`.
//! The endpoint points at a closed loopback port with a long first delay, so events
//! stay pending and nothing but the commits are measured.

use std::time::{Duration, Instant};

use siphook::config::Config;
use siphook::deliver::{Delivery, open_outbox};
use siphook::metrics::Metrics;
use siphook::pipeline::Gateway;

fn invite(i: usize) -> String {
    format!(
        "INVITE sip:+1555{i:07}@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{i}\r\nFrom: <sip:+1444@10.0.0.1>;tag=a{i}\r\nTo: <sip:+1555{i:07}@10.0.0.2>\r\nCall-ID: gc-{i}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
}

async fn run(label: &str, n: usize, gap: Option<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n[outbox]\npath = \"{}\"\n[[endpoints]]\nname = \"x\"\nurl = \"http://127.0.0.1:9/\"\nallow_http = true\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\nretry_schedule = [\"1h\"]\n",
        dir.path().join("outbox").display()
    );
    let config = Config::parse(&text).unwrap();
    let metrics = Metrics::new();
    let mut gw = Gateway::start(&config, metrics.clone()).await.unwrap();
    let events = std::mem::replace(&mut gw.events, tokio::sync::mpsc::channel(1).1);
    let _d = Delivery::start(
        &config,
        open_outbox(&config).unwrap(),
        events,
        None,
        metrics.clone(),
    )
    .unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    for i in 0..n {
        sock.send_to(invite(i).as_bytes(), gw.udp_addrs[0])
            .await
            .unwrap();
        match gap {
            Some(g) => tokio::time::sleep(g).await,
            // Pace bursts to the kernel's socket buffer, not to siphook.
            None if i % 100 == 99 => tokio::time::sleep(Duration::from_millis(1)).await,
            None => {}
        }
    }
    let pending = metrics.outbox_pending.with_label_values(&["x"]);
    while (pending.get() as usize) < n && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let commits = metrics.outbox_commit_duration.get_sample_count();
    let mean_ms = metrics.outbox_commit_duration.get_sample_sum() / commits as f64 * 1000.0;
    println!(
        "{label:<28} events {:>6}  commits {commits:>6}  events/commit {:>7.1}  mean commit {mean_ms:.2} ms",
        pending.get(),
        pending.get() as f64 / commits as f64
    );
}

#[tokio::main]
async fn main() {
    run("burst of 5000 INVITEs", 5000, None).await;
    run(
        "200 INVITEs, 5 ms apart",
        200,
        Some(Duration::from_millis(5)),
    )
    .await;
}
