//! `GET /v1/events/stream`: every committed event as Server-Sent Events, for
//! `siphook tail` and the console. Each event's SSE `id` is its outbox offset,
//! so a client that reconnects with `Last-Event-ID` gets what it missed while
//! the recent-history index still holds it.
//!
//! The buffer per client is the history's broadcast ring ([`STREAM_BUFFER`]
//! events): a client that falls that far behind is sent a last comment saying
//! why and disconnected, rather than holding memory for it or slowing anyone.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{broadcast, mpsc};

use super::reply::{Reply, problem};
use super::state::AdminState;
use crate::config::glob_match;
use crate::deliver::history::{STREAM_BUFFER, StreamItem};

/// Stream clients at once: each holds a task and a connection, and the
/// operators watching one siphook are a handful.
pub const MAX_CLIENTS: usize = 64;
/// A comment this often: proxies keep the connection, and a client that went
/// away is noticed within one interval (the write fails).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Frames queued towards the connection. The real buffer is the broadcast ring;
/// this only decouples the socket's pace from the task's.
const FRAMES: usize = 64;

/// The body of a stream response: frames from the client's task until it ends.
pub struct Events(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Why a stream ended, the label of `siphook_admin_stream_disconnects_total`.
#[derive(Clone, Copy)]
enum Ended {
    Closed,
    Slow,
    Shutdown,
}

impl Ended {
    fn label(self) -> &'static str {
        match self {
            Ended::Closed => "closed",
            Ended::Slow => "slow",
            Ended::Shutdown => "shutdown",
        }
    }
}

/// The permits [`AdminState::stream_slots`] starts with.
pub fn stream_slots() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS))
}

/// Which types a client asked for: `types=call.*,registration.*`; none means all.
fn wanted(query: &BTreeMap<String, String>) -> Vec<String> {
    query
        .get("types")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn frame(item: &StreamItem) -> Bytes {
    let mut out = Vec::with_capacity(item.body.len() + 64);
    if let Some(o) = item.offset {
        out.extend_from_slice(format!("id: {o}\n").as_bytes());
    }
    out.extend_from_slice(format!("event: {}\n", item.kind).as_bytes());
    // The writer's JSON is one line; a line break would end the field early, so
    // each line gets its own `data:` (SSE joins them back with `\n`).
    for line in item.body.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// Answers a stream request (already authorized): `Ok` with the streaming
/// response, or `Err` with a problem to send instead.
pub async fn serve(
    state: &Arc<AdminState>,
    req: &Request<Incoming>,
    query: &BTreeMap<String, String>,
) -> Result<Response<Events>, Reply> {
    let after = match req.headers().get("last-event-id") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(o) => Some(o),
            None => {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    "Last-Event-ID must be an id this stream sent (a number)",
                ));
            }
        },
    };
    let Ok(permit) = state.stream_slots.clone().try_acquire_owned() else {
        return Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            &format!("{MAX_CLIENTS} stream clients are connected already"),
        ));
    };
    let Some(sub) = state.history.subscribe(after).await else {
        return Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "siphook is stopping",
        ));
    };
    let types = wanted(query);
    let (tx, rx) = mpsc::channel(FRAMES);
    let state = state.clone();
    let counted = Counted::new(&state);
    tokio::spawn(async move {
        let _slot = (permit, counted);
        let ended = pump(&state.stopping, sub, &types, &tx).await;
        let why = match ended {
            Ended::Closed => None,
            Ended::Slow => Some(format!(
                ": disconnected: more than {STREAM_BUFFER} events behind; reconnect with Last-Event-ID to catch up\n\n"
            )),
            Ended::Shutdown => Some(": disconnected: siphook is stopping\n\n".to_owned()),
        };
        if let Some(why) = why {
            // Bounded: a client that stopped reading does not hold the task.
            let _ = tokio::time::timeout(KEEP_ALIVE, tx.send(Bytes::from(why))).await;
        }
        state
            .metrics
            .admin_stream_disconnects
            .with_label_values(&[ended.label()])
            .inc();
    });
    let mut r = Response::new(Events(rx));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies (nginx) must pass each event on as it comes.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// A connected client in `siphook_admin_stream_clients`, taken out however its
/// task ends.
struct Counted(prometheus::IntGauge);

impl Counted {
    fn new(state: &AdminState) -> Counted {
        state.metrics.admin_stream_clients.inc();
        Counted(state.metrics.admin_stream_clients.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Sends a frame, or says the client is too slow: one that does not take a
/// frame within a keep-alive interval (stopped reading) is cut off like one
/// that fell a buffer behind, so it never holds its task.
async fn send(tx: &mpsc::Sender<Bytes>, frame: Bytes) -> Result<(), Ended> {
    match tokio::time::timeout(KEEP_ALIVE, tx.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended::Closed),
        Err(_) => Err(Ended::Slow),
    }
}

async fn pump(
    stopping: &tokio_util::sync::CancellationToken,
    sub: crate::deliver::history::Subscription,
    types: &[String],
    tx: &mpsc::Sender<Bytes>,
) -> Ended {
    let wants =
        |item: &StreamItem| types.is_empty() || types.iter().any(|g| glob_match(g, item.kind));
    // The opening comment goes out at once, so the client knows it is connected
    // before the first event.
    let hello = if sub.gap {
        ": connected; some events after Last-Event-ID are no longer held\n\n"
    } else {
        ": connected\n\n"
    };
    if let Err(e) = send(tx, Bytes::from_static(hello.as_bytes())).await {
        return e;
    }
    for item in sub.missed.iter().filter(|i| wants(i)) {
        if let Err(e) = send(tx, frame(item)).await {
            return e;
        }
    }
    let mut live = sub.live;
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.reset();
    loop {
        let sent = tokio::select! {
            _ = stopping.cancelled() => return Ended::Shutdown,
            _ = keep_alive.tick() => send(tx, Bytes::from_static(b": keep-alive\n\n")).await,
            item = live.recv() => match item {
                Ok(item) if wants(&item) => send(tx, frame(&item)).await,
                Ok(_) => Ok(()),
                Err(broadcast::error::RecvError::Lagged(_)) => return Ended::Slow,
                Err(broadcast::error::RecvError::Closed) => return Ended::Shutdown,
            },
        };
        if let Err(e) = sent {
            return e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::history::Subscription;

    fn item(offset: u64) -> Arc<StreamItem> {
        Arc::new(StreamItem {
            offset: Some(offset),
            kind: "call.ringing",
            body: Bytes::from_static(b"{}"),
        })
    }

    #[tokio::test]
    async fn a_client_a_buffer_behind_is_cut_off_as_slow() {
        let (live_tx, live) = broadcast::channel(4);
        let sub = Subscription {
            missed: vec![item(1)],
            gap: true,
            live,
        };
        // Ten events while the client read nothing: six more than its buffer.
        for o in 2..12 {
            live_tx.send(item(o)).unwrap();
        }
        let (tx, mut rx) = mpsc::channel(64);
        let stopping = tokio_util::sync::CancellationToken::new();
        let ended = pump(&stopping, sub, &[], &tx).await;
        assert!(matches!(ended, Ended::Slow));
        let hello = rx.recv().await.unwrap();
        assert!(hello.starts_with(b": connected; some events"), "{hello:?}");
        assert_eq!(
            rx.recv().await.unwrap(),
            Bytes::from_static(b"id: 1\nevent: call.ringing\ndata: {}\n\n")
        );
        assert!(rx.try_recv().is_err(), "nothing from the lagged ring");
    }

    #[tokio::test]
    async fn a_type_filter_keeps_only_matching_events_and_shutdown_ends_the_stream() {
        let (live_tx, live) = broadcast::channel(16);
        let sub = Subscription {
            missed: Vec::new(),
            gap: false,
            live,
        };
        for kind in ["call.initiated", "call.answered", "call.completed"] {
            live_tx
                .send(Arc::new(StreamItem {
                    offset: None,
                    kind,
                    body: Bytes::from_static(b"{\"a\":1}"),
                }))
                .unwrap();
        }
        let (tx, mut rx) = mpsc::channel(64);
        let stopping = tokio_util::sync::CancellationToken::new();
        let types = vec!["call.a*".to_owned(), "call.completed".to_owned()];
        let pumped = {
            let stopping = stopping.clone();
            tokio::spawn(async move { pump(&stopping, sub, &types, &tx).await })
        };
        assert_eq!(
            rx.recv().await.unwrap(),
            Bytes::from_static(b": connected\n\n")
        );
        let next = rx.recv().await.unwrap();
        assert_eq!(
            next,
            Bytes::from_static(b"event: call.answered\ndata: {\"a\":1}\n\n")
        );
        let next = rx.recv().await.unwrap();
        assert!(next.starts_with(b"event: call.completed\n"));
        stopping.cancel();
        assert!(matches!(pumped.await.unwrap(), Ended::Shutdown));
    }
}
