//! The admin listener under an idle-connection flood from a local process, and a
//! body sent a byte at a time: `/healthz` keeps answering (the probes that watch
//! siphook must not restart a healthy process), and the crowding is counted.

mod common;

use std::time::{Duration, Instant};

use common::DEADLINE;
use common::admin::{TOKEN, parse_metrics, request, start, sum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One `/healthz` over a fresh connection, as a probe makes it: status and time.
async fn probe(admin: std::net::SocketAddr) -> (u16, Duration) {
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(3), async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.ok()?;
        let line = String::from_utf8_lossy(&reply);
        line.split(' ').nth(1)?.parse::<u16>().ok()
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(0);
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_through_an_idle_connection_flood() {
    let s = start("", true).await;
    let admin = s.admin();
    // A local process holds 300 idle connections (the listener used to serve 64
    // and queue the rest in the kernel, probes included), and reopens each one as
    // soon as siphook closes it, for as long as the probes run.
    let stop = tokio_util::sync::CancellationToken::new();
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let (stop, opened) = (stop.clone(), opened.clone());
        flood.spawn(async move {
            for _ in 0..10_000 {
                if stop.is_cancelled() {
                    return;
                }
                let Ok(mut c) = TcpStream::connect(admin).await else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut buf = [0u8; 64];
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = c.read(&mut buf) => {}
                }
            }
        });
    }
    let deadline = Instant::now() + DEADLINE;
    while opened.load(std::sync::atomic::Ordering::Relaxed) < 300 {
        assert!(
            Instant::now() < deadline,
            "the flood never opened its connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut times = Vec::new();
    for _ in 0..100 {
        let (status, took) = probe(admin).await;
        assert_eq!(status, 200, "a health probe failed during the flood");
        times.push(took);
    }
    stop.cancel();
    while flood.join_next().await.is_some() {}
    let opened = opened.load(std::sync::atomic::Ordering::Relaxed);
    times.sort();
    let p99 = times[98];
    println!(
        "healthz during the flood ({opened} connections opened): p50 {:?}, p99 {p99:?}",
        times[49]
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    // 300 idle connections fit without any giving way or being refused.
    let m = parse_metrics(&request(admin, "GET", "/metrics", None, None).await.text());
    for reason in ["evicted", "refused"] {
        assert_eq!(
            sum(
                &m,
                "siphook_admin_connections_closed_total",
                &[("reason", reason)]
            ),
            0.0,
            "{reason}"
        );
    }
    assert!(opened >= 300);
    s.stop().await;
}

#[tokio::test]
async fn a_request_body_sent_a_byte_at_a_time_is_cut_off() {
    let s = start("", true).await;
    let admin = s.admin();
    let mut c = TcpStream::connect(admin).await.unwrap();
    c.write_all(
        format!(
            "POST /v1/deadletters/replay HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // One byte every 200 ms, bounded: the body deadline (10 s) ends it.
    let started = Instant::now();
    let mut reply = Vec::new();
    for _ in 0..100 {
        if c.write_all(b" ").await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !reply.is_empty() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let m = parse_metrics(&request(admin, "GET", "/metrics", None, None).await.text());
    assert_eq!(
        sum(
            &m,
            "siphook_admin_connections_closed_total",
            &[("reason", "body_timeout")]
        ),
        1.0
    );
    assert_eq!(probe(admin).await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn request_headers_that_never_finish_are_cut_off_and_counted() {
    let s = start("", false).await;
    let admin = s.admin();
    let mut c = TcpStream::connect(admin).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // hyper's header timeout (10 s) closes it; bounded wait.
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(15), c.read(&mut buf))
        .await
        .expect("the connection is closed within the header timeout");
    assert!(!matches!(read, Ok(n) if n > 0 && !buf[..n].starts_with(b"HTTP/1.1 408")));
    let m = parse_metrics(&request(admin, "GET", "/metrics", None, None).await.text());
    assert_eq!(
        sum(
            &m,
            "siphook_admin_connections_closed_total",
            &[("reason", "header_timeout")]
        ),
        1.0
    );
    s.stop().await;
}
