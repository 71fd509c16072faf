//! The webhook receiver: a hyper HTTP/1.1 server on loopback that verifies each
//! request's Standard Webhooks signature, answers, and records when it arrived.
//!
//! `POST /hook` takes siphook's webhooks: a bad signature is answered 401 (siphook
//! dead-letters it, so it is counted, never retried). `POST /baseline` takes the
//! null relay's posts: the raw SIP datagram, matched by its Call-ID and start line.
//! The handler only records; matching and statistics come after the run.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::BenchError;
use super::flow::{EventType, Profile, call_index, header, message_key};

/// Largest request body read.
const MAX_BODY: usize = 1 << 20;
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 4096;
/// Standard Webhooks' tolerance for `webhook-timestamp`.
const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// Verifies Standard Webhooks v1 signatures with one secret.
pub(crate) struct Verifier {
    key: Vec<u8>,
}

impl Verifier {
    /// The key of a `whsec_…` secret.
    pub(crate) fn new(secret: &str) -> Result<Verifier, BenchError> {
        let b64 = secret
            .trim()
            .strip_prefix("whsec_")
            .ok_or(BenchError::Secret)?;
        let key = STANDARD.decode(b64).map_err(|_| BenchError::Secret)?;
        if key.is_empty() {
            return Err(BenchError::Secret);
        }
        Ok(Verifier { key })
    }

    /// Whether one of the space-separated `v1,` signatures in `signatures` is the
    /// HMAC-SHA256 of `"{id}.{timestamp}.{body}"`, compared in constant time, and the
    /// timestamp is within five minutes of `now` (Unix seconds).
    pub(crate) fn verify(
        &self,
        id: &str,
        timestamp: &str,
        body: &[u8],
        signatures: &str,
        now: i64,
    ) -> bool {
        let Ok(ts) = timestamp.parse::<i64>() else {
            return false;
        };
        if (ts - now).abs() > TIMESTAMP_TOLERANCE_SECS {
            return false;
        }
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return false;
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        signatures
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .any(|sig| mac.clone().verify_slice(&sig).is_ok())
    }
}

/// One webhook that passed verification.
#[derive(Debug, Clone)]
pub(crate) struct EventArrival {
    /// Nanoseconds since the run's base instant.
    pub(crate) at: u64,
    /// The call's index, when the Call-ID is one of this run's.
    pub(crate) call: Option<usize>,
    /// The event type, when it is a call event type.
    pub(crate) event: Option<EventType>,
    /// The event's `sequence`.
    pub(crate) sequence: u64,
}

/// One null-relay post.
#[derive(Debug, Clone)]
pub(crate) struct RelayArrival {
    /// Nanoseconds since the run's base instant.
    pub(crate) at: u64,
    /// The call's index, when the Call-ID is one of this run's.
    pub(crate) call: Option<usize>,
    /// The step of the call's flow the datagram was.
    pub(crate) step: Option<usize>,
}

/// What the receiver saw, taken after a phase.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Verified webhooks, in arrival order.
    pub(crate) events: Vec<EventArrival>,
    /// Requests whose signature (or timestamp) did not verify.
    pub(crate) bad_signatures: usize,
    /// Requests with a `webhook-id` seen before.
    pub(crate) duplicates: usize,
    /// Requests without the webhook headers or a readable JSON body.
    pub(crate) malformed: usize,
    /// Relay posts, in arrival order.
    pub(crate) relayed: Vec<RelayArrival>,
    /// Webhooks answered 503 on purpose (`--fail-every`).
    pub(crate) refused: usize,
}

#[derive(Default)]
struct Inner {
    seen: Seen,
    ids: HashSet<String>,
}

struct State {
    verifier: Verifier,
    base: Instant,
    profile: Profile,
    event_prefix: String,
    relay_prefix: String,
    inner: Mutex<Inner>,
    /// Distinct webhook ids of this run's calls seen, verified or not.
    distinct: AtomicUsize,
    /// Relay posts seen.
    relayed: AtomicUsize,
    /// Every Nth webhook is answered 503 (a flaky endpoint); 0: none.
    fail_every: u64,
    /// Webhooks received, for `fail_every`.
    posts: std::sync::atomic::AtomicU64,
}

/// A running receiver.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

#[derive(serde::Deserialize)]
struct EventBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sequence: u64,
    call: Option<EventCall>,
}

#[derive(serde::Deserialize)]
struct EventCall {
    sip_call_id: String,
}

impl Receiver {
    /// Listens on `bind` (loopback; port 0 for any).
    pub(crate) async fn start(
        bind: SocketAddr,
        verifier: Verifier,
        base: Instant,
        profile: Profile,
        event_prefix: String,
        relay_prefix: String,
        fail_every: u64,
    ) -> Result<Receiver, BenchError> {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| BenchError::Bind {
                what: "webhook receiver",
                addr: bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| BenchError::Bind {
            what: "webhook receiver",
            addr: bind,
            source,
        })?;
        let state = Arc::new(State {
            verifier,
            base,
            profile,
            event_prefix,
            relay_prefix,
            inner: Mutex::default(),
            distinct: AtomicUsize::new(0),
            relayed: AtomicUsize::new(0),
            fail_every,
            posts: std::sync::atomic::AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        Ok(Receiver {
            addr,
            state,
            stop,
            task,
        })
    }

    /// A handle that records into this receiver's tally.
    pub(crate) fn recorder(&self) -> Recorder {
        Recorder(self.state.clone())
    }

    /// Distinct webhook ids of this run's calls received so far (whether they
    /// verified or not).
    pub(crate) fn distinct_events(&self) -> usize {
        self.state.distinct.load(Ordering::Relaxed)
    }

    /// Relay posts received so far.
    pub(crate) fn relayed(&self) -> usize {
        self.state.relayed.load(Ordering::Relaxed)
    }

    /// Everything recorded so far; the receiver starts afresh.
    pub(crate) fn take(&self) -> Seen {
        let mut inner = self
            .state
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.ids.clear();
        self.state.distinct.store(0, Ordering::Relaxed);
        self.state.relayed.store(0, Ordering::Relaxed);
        std::mem::take(&mut inner.seen)
    }

    /// Closes the listener and every connection.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Accepts until `stop` (which the run always fires, within its own deadline).
async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, most likely: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if conns.len() >= MAX_CONNECTIONS {
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (state, stop) = (state.clone(), stop.clone());
        conns.spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
    conns.shutdown().await;
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::PAYLOAD_TOO_LARGE)),
    };
    let at = u64::try_from(state.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
    match parts.uri.path() {
        "/hook" => Ok(webhook(&state, &parts.headers, &body, at)),
        "/baseline" => {
            relay_post(&state, &body, at);
            Ok(status(StatusCode::OK))
        }
        _ => Ok(status(StatusCode::NOT_FOUND)),
    }
}

fn webhook(
    state: &State,
    headers: &hyper::HeaderMap,
    body: &[u8],
    at: u64,
) -> Response<Full<Bytes>> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    status(record(state, get, body, at, true))
}

/// Records one signed event, however it came (a webhook, a stream message);
/// `may_refuse` lets `--fail-every` answer it 503 (a stream consumer cannot).
fn record<'a>(
    state: &State,
    get: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    at: u64,
    may_refuse: bool,
) -> StatusCode {
    let (Some(id), Some(ts), Some(sig)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        lock(state).seen.malformed += 1;
        return StatusCode::BAD_REQUEST;
    };
    let n = state.posts.fetch_add(1, Ordering::Relaxed) + 1;
    if may_refuse && state.fail_every > 0 && n.is_multiple_of(state.fail_every) {
        // Refused before it is recorded: the retry is what counts as received.
        lock(state).seen.refused += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let verified = state.verifier.verify(id, ts, body, sig, now);
    let parsed: Option<EventBody> = serde_json::from_slice(body).ok();
    let call = parsed
        .as_ref()
        .and_then(|ev| ev.call.as_ref())
        .and_then(|c| call_index(&state.event_prefix, &c.sip_call_id));
    let mut inner = lock(state);
    if inner.ids.insert(id.to_owned()) {
        // Only this run's calls count towards the end of the drain.
        if call.is_some() {
            state.distinct.fetch_add(1, Ordering::Relaxed);
        }
    } else {
        inner.seen.duplicates += 1;
        // Answered 200 all the same: a receiver deduplicates, it does not refuse.
        return StatusCode::OK;
    }
    if !verified {
        inner.seen.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Some(ev) = parsed else {
        inner.seen.malformed += 1;
        return StatusCode::BAD_REQUEST;
    };
    inner.seen.events.push(EventArrival {
        at,
        call,
        event: EventType::from_name(&ev.kind),
        sequence: ev.sequence,
    });
    StatusCode::OK
}

/// Records events that arrive other than by POST (a JetStream consumer's
/// messages), into the same tally as the webhooks.
#[derive(Clone)]
pub(crate) struct Recorder(Arc<State>);

impl Recorder {
    /// One message: its headers by name, its payload, and when it arrived.
    pub(crate) fn record<'a>(&self, get: impl Fn(&str) -> Option<&'a str>, body: &[u8]) {
        let at = u64::try_from(self.0.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        record(&self.0, get, body, at, false);
    }
}

fn relay_post(state: &State, body: &[u8], at: u64) {
    // A HEP packet carries the SIP message as its payload chunk.
    let sip = if body.starts_with(crate::sip::hep::MAGIC) {
        crate::sip::hep::decode(body).map_or(&[][..], |p| p.payload)
    } else {
        body
    };
    let call_id = std::str::from_utf8(sip)
        .ok()
        .and_then(|t| t.split_once("\r\n"))
        .and_then(|(_, headers)| header(headers, "Call-ID"));
    let call = call_id.and_then(|c| call_index(&state.relay_prefix, c));
    let step = match (call, message_key(sip)) {
        (Some(i), Some((first, method))) => state.profile.kind(i).step_of(first, method),
        _ => None,
    };
    lock(state)
        .seen
        .relayed
        .push(RelayArrival { at, call, step });
    state.relayed.fetch_add(1, Ordering::Relaxed);
}

fn lock(state: &State) -> std::sync::MutexGuard<'_, Inner> {
    state
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn status(s: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = s;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks reference libraries.
    #[test]
    fn verifies_the_spec_vector_and_rejects_tampering() {
        let v = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        assert!(v.verify(id, "1614265330", body, sig, 1614265330));
        assert!(v.verify(
            id,
            "1614265330",
            body,
            &format!("v1,AAAA {sig}"),
            1614265330
        ));
        assert!(!v.verify(id, "1614265330", b"{}", sig, 1614265330));
        assert!(!v.verify("msg_other", "1614265330", body, sig, 1614265330));
        assert!(
            !v.verify(id, "1614265330", body, sig, 1614265330 + 301),
            "stale"
        );
        assert!(!v.verify(id, "x", body, sig, 1614265330));
        assert!(Verifier::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
    }
}
