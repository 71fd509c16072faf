//! Endpoints that misbehave below what a well-behaved HTTP server would do, each a
//! raw TCP server written here: one that accepts and never reads or answers, one
//! that sends its headers and stalls the body, and one that answers with 10 MiB.
//! Every attempt must end within the endpoint's `timeout`, read at most the
//! response cap, and leave other calls delivering meanwhile.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{CallSpec, DEADLINE, Harness, histogram_at_most};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The answer siphook is sent to stall on: far more than its 64 KiB cap.
const HUGE: usize = 10 << 20;

/// What the raw server does with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// `200`, empty body.
    Ok,
    /// `200` with a Content-Length of 100, 7 bytes of it, then nothing.
    StallBody,
    /// This status with a 10 MiB body, written as fast as siphook reads it.
    Huge(u16),
}

/// One request (or, for the silent server, one connection) as the server saw it.
#[derive(Debug)]
struct Seen {
    at: Instant,
    /// The event, when the server read the request.
    event: Option<Value>,
    webhook_id: String,
    answer: Option<Answer>,
}

type Policy = Arc<dyn Fn(&Value, usize) -> Answer + Send + Sync>;

struct RawEndpoint {
    addr: std::net::SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Bytes of huge bodies the server managed to hand to the kernel.
    huge_written: Arc<AtomicU64>,
}

impl RawEndpoint {
    /// `policy` answers each request (given the event and how many requests came
    /// before); without one the server accepts and never reads a byte.
    async fn start(policy: Option<Policy>) -> RawEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let huge_written = Arc::new(AtomicU64::new(0));
        let written = huge_written.clone();
        let count = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, policy, written, count) =
                    (tx.clone(), policy.clone(), written.clone(), count.clone());
                tokio::spawn(async move {
                    let Some(policy) = policy else {
                        let _ = tx.send(Seen {
                            at: Instant::now(),
                            event: None,
                            webhook_id: String::new(),
                            answer: None,
                        });
                        // Holds the connection open, unread, past any test's wait.
                        tokio::time::sleep(DEADLINE * 2).await;
                        drop(stream);
                        return;
                    };
                    serve(stream, tx, policy, written, count).await;
                });
            }
        });
        RawEndpoint {
            addr,
            seen,
            huge_written,
        }
    }

    fn endpoint(&self, extra: &str) -> String {
        format!(
            "[[endpoints]]\nname = \"raw\"\nurl = \"http://{}/hook\"\nallow_http = true\nsecrets = [\"{SECRET}\"]\n{extra}\n",
            self.addr
        )
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(DEADLINE, self.seen.recv())
            .await
            .expect("a request within the deadline")
            .expect("server running")
    }
}

/// Reads requests off one connection and answers each as `policy` says.
async fn serve(
    mut stream: TcpStream,
    tx: mpsc::UnboundedSender<Seen>,
    policy: Policy,
    written: Arc<AtomicU64>,
    count: Arc<AtomicU64>,
) {
    // A small send buffer: what the kernel holds for siphook stays far below
    // 10 MiB, so the count of bytes written shows what siphook really read.
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(64 * 1024);
    let mut buf = Vec::new();
    loop {
        let Some((head_len, body_len, webhook_id)) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        while buf.len() < head_len + body_len {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let event: Value =
            serde_json::from_slice(&buf[head_len..head_len + body_len]).expect("JSON event");
        buf.drain(..head_len + body_len);
        let n = count.fetch_add(1, Ordering::SeqCst) as usize;
        let answer = policy(&event, n);
        let _ = tx.send(Seen {
            at: Instant::now(),
            event: Some(event),
            webhook_id,
            answer: Some(answer),
        });
        match answer {
            Answer::Ok => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Answer::StallBody => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
                    .await;
                tokio::time::sleep(DEADLINE * 2).await;
                return;
            }
            Answer::Huge(status) => {
                let head = format!("HTTP/1.1 {status} Whatever\r\ncontent-length: {HUGE}\r\n\r\n");
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 16 * 1024];
                let mut sent = 0;
                while sent < HUGE {
                    // Bounded: a reader that stops makes the write wait, not spin.
                    let part = &chunk[..chunk.len().min(HUGE - sent)];
                    match tokio::time::timeout(DEADLINE, stream.write(part)).await {
                        Ok(Ok(n)) if n > 0 => {
                            sent += n;
                            written.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        _ => return,
                    }
                }
                return;
            }
        }
    }
}

/// Reads one request head: its length, the body's Content-Length and the
/// `webhook-id`; `None` when the peer closed.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(usize, usize, String)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            let body_len = header("content-length:")?.parse().ok()?;
            let id = header("webhook-id:").unwrap_or_default();
            return Some((end + 4, body_len, id));
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn call_of(seen: &Seen) -> (String, u64) {
    let e = seen.event.as_ref().expect("a request was read");
    (
        e["call"]["sip_call_id"].as_str().unwrap().to_owned(),
        e["sequence"].as_u64().unwrap(),
    )
}

async fn wait_dead(h: &Harness, delivery: &siphook::deliver::Delivery) {
    h.wait_metric("siphook_deadletters", &[("endpoint", "raw")], 1.0)
        .await;
    assert_eq!(delivery.outbox.dead_letters(None).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_accepts_and_never_answers_costs_one_timeout_per_attempt() {
    let mut ep = RawEndpoint::start(None).await;
    let (h, delivery, _dir) = common::start_delivery(&ep.endpoint(
        "events = [\"call.initiated\"]\ntimeout = \"300ms\"\nretry_schedule = [\"0s\", \"100ms\", \"100ms\"]",
    ))
    .await;
    h.send(&CallSpec::new("silent-1").invite(1)).await;
    let connects = [ep.next().await, ep.next().await, ep.next().await];
    // Attempt N+1 connects after attempt N's timeout and the schedule's delay.
    for pair in connects.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(300 + 80) && gap < Duration::from_millis(300 + 120 + 2000),
            "attempts {gap:?} apart"
        );
    }
    // Three attempts exhaust the schedule: exactly the documented dead letter.
    wait_dead(&h, &delivery).await;
    let dead = &delivery.outbox.dead_letters(None).unwrap()[0];
    assert_eq!(dead.state.attempts, 3);
    assert_eq!(dead.state.last_status, None);
    assert_eq!(
        dead.state.last_error.as_deref(),
        Some("timed out after 300ms")
    );
    assert_eq!(
        h.metric(
            "siphook_deliveries_total",
            &[("outcome", "retry"), ("code", "none")]
        ),
        3.0
    );
    // Each attempt lasted the timeout, and not much more (2.5 s: a hang guard).
    let (count, within) = histogram_at_most(
        &h.gw.metrics,
        "siphook_delivery_attempt_duration_seconds",
        2.5,
    );
    assert_eq!((count, within), (3, 3));
    let (_, quick) = histogram_at_most(
        &h.gw.metrics,
        "siphook_delivery_attempt_duration_seconds",
        0.25,
    );
    assert_eq!(quick, 0, "an attempt ended before its timeout");
    assert!(
        ep.seen.try_recv().is_err(),
        "no attempt after the dead letter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_times_out_and_is_retried_while_other_calls_are_delivered() {
    // The first attempt of `stall`'s first event stalls; everything else is answered.
    let mut ep = RawEndpoint::start(Some(Arc::new(|e: &Value, n| {
        if n == 0 && e["call"]["sip_call_id"] == "stall" {
            Answer::StallBody
        } else {
            Answer::Ok
        }
    })))
    .await;
    let (h, _delivery, _dir) = common::start_delivery(&ep.endpoint(
        "events = [\"call.initiated\", \"call.completed\"]\ntimeout = \"2s\"\nretry_schedule = [\"0s\", \"50ms\"]",
    ))
    .await;
    let stall = CallSpec::new("stall");
    h.send_all(&[stall.invite(1), stall.resp(486, 1, "INVITE", Some("b"))])
        .await;
    let first = ep.next().await;
    assert_eq!(call_of(&first), ("stall".into(), 1));
    assert_eq!(first.answer, Some(Answer::StallBody));
    // While that attempt hangs, other calls go out and are answered.
    for i in 0..5 {
        h.send(&CallSpec::new(&format!("other-{i}")).invite(1))
            .await;
    }
    let mut others = 0;
    let retry = loop {
        let s = ep.next().await;
        let (call, seq) = call_of(&s);
        if call == "stall" {
            // Per-call order: the call's next event waits for the first.
            assert_eq!(seq, 1, "stall's completed went before its initiated");
            break s;
        }
        assert!(
            s.at.duration_since(first.at) < Duration::from_secs(2),
            "{call} waited for the stalled call"
        );
        others += 1;
    };
    assert_eq!(others, 5, "every other call delivered during the stall");
    let waited = retry.at.duration_since(first.at);
    assert!(
        waited >= Duration::from_millis(2000) && waited < Duration::from_millis(2000 + 60 + 3000),
        "retried {waited:?} after the stalled attempt"
    );
    assert_eq!(retry.webhook_id, first.webhook_id);
    let completed = ep.next().await;
    assert_eq!(call_of(&completed), ("stall".into(), 2));
    h.wait_metric("siphook_deliveries_total", &[("outcome", "delivered")], 7.0)
        .await;
    assert_eq!(
        h.metric(
            "siphook_deliveries_total",
            &[("outcome", "retry"), ("code", "none")]
        ),
        1.0,
        "a 200 whose body never comes is a timeout"
    );
}

/// What [`huge_answer`] leaves to look at.
struct Huge {
    ep: RawEndpoint,
    h: Harness,
    delivery: siphook::deliver::Delivery,
    /// The request answered with 10 MiB.
    first: Seen,
    _dir: tempfile::TempDir,
}

/// A 10 MiB answer with `status` to the first request, then 200s; returns once
/// the first attempt is settled.
async fn huge_answer(status: u16) -> Huge {
    let mut ep = RawEndpoint::start(Some(Arc::new(move |_, n| {
        if n == 0 {
            Answer::Huge(status)
        } else {
            Answer::Ok
        }
    })))
    .await;
    let (h, delivery, dir) = common::start_delivery(&ep.endpoint(
        "events = [\"call.initiated\"]\ntimeout = \"10s\"\nretry_schedule = [\"0s\", \"50ms\"]",
    ))
    .await;
    let started = Instant::now();
    h.send(&CallSpec::new("huge-1").invite(1)).await;
    let first = ep.next().await;
    assert_eq!(first.answer, Some(Answer::Huge(status)));
    let attempts = if status < 300 { 1.0 } else { 2.0 };
    h.wait_metric("siphook_deliveries_total", &[], attempts)
        .await;
    // Settled long before the timeout: siphook stopped reading, it did not wait.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let (count, within) = histogram_at_most(
        &h.gw.metrics,
        "siphook_delivery_attempt_duration_seconds",
        2.5,
    );
    assert_eq!(count, within, "an attempt took longer than 2.5 s");
    Huge {
        ep,
        h,
        delivery,
        first,
        _dir: dir,
    }
}

/// The server could hand siphook only a bounded part of the 10 MiB.
async fn assert_read_bounded(ep: &RawEndpoint) {
    // The writer stops once siphook closes the connection; let it notice.
    let start = Instant::now();
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = ep.huge_written.load(Ordering::SeqCst);
        if now == last || start.elapsed() > DEADLINE {
            break;
        }
        last = now;
    }
    let written = ep.huge_written.load(Ordering::SeqCst);
    assert!(
        written < (HUGE as u64) / 2,
        "siphook took {written} bytes of a 10 MiB answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_2xx_is_delivered_and_read_only_up_to_the_cap() {
    let Huge {
        ep, h, delivery, ..
    } = huge_answer(200).await;
    h.wait_metric(
        "siphook_deliveries_total",
        &[("outcome", "delivered"), ("code", "200")],
        1.0,
    )
    .await;
    h.wait_metric("siphook_outbox_pending", &[("endpoint", "raw")], 0.0)
        .await;
    assert_eq!(delivery.outbox.pending_count("raw"), 0);
    assert!(delivery.outbox.dead_letters(None).unwrap().is_empty());
    assert_read_bounded(&ep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_5xx_is_retried_and_read_only_up_to_the_cap() {
    let Huge {
        mut ep,
        h,
        delivery,
        first,
        ..
    } = huge_answer(503).await;
    let retry = ep.next().await;
    assert_eq!(retry.answer, Some(Answer::Ok));
    assert_eq!(retry.webhook_id, first.webhook_id);
    assert!(!first.webhook_id.is_empty());
    assert_eq!(
        h.metric(
            "siphook_deliveries_total",
            &[("outcome", "retry"), ("code", "503")]
        ),
        1.0
    );
    h.wait_metric(
        "siphook_deliveries_total",
        &[("outcome", "delivered"), ("code", "200")],
        1.0,
    )
    .await;
    assert!(delivery.outbox.dead_letters(None).unwrap().is_empty());
    assert_read_bounded(&ep).await;
}
