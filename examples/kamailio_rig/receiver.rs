//! The rig's webhook endpoint. Kamailio posts to `/kamailio`, siphook to
//! `/siphook`; each request is logged (one JSON line) when its body has fully
//! arrived, stamped with the wall clock because the triggers are capture
//! timestamps, which are wall-clock too. It can answer late (`--delay-ms`) and be
//! down for a window (listener closed, open connections dropped: every attempt
//! is refused) to play the three endpoints of the comparison.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use siphook::deliver::sign::signature_header;
use siphook::vocab::Secret;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A webhook body is small; anything bigger is not one of the rig's.
const MAX_BODY: usize = 64 * 1024;

/// How the endpoint behaves: prompt, slow, or down for a window.
#[derive(clap::Args)]
pub struct ReceiveArgs {
    /// Where to listen (loopback).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The arrival log (JSON lines).
    #[arg(long)]
    out: PathBuf,
    /// Answer each request this many milliseconds after it arrived.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Down from this wall-clock time (Unix milliseconds)...
    #[arg(long)]
    down_from_ms: Option<u64>,
    /// ...until this one.
    #[arg(long)]
    down_until_ms: Option<u64>,
    /// How the endpoint is down: `refuse` (nothing listens: connection refused at
    /// once) or `hang` (connections are accepted and never answered, like a hung
    /// server; the client waits for its own timeout).
    #[arg(long, default_value = "refuse")]
    down_mode: DownMode,
    /// siphook's signing secret, to check every signature.
    #[arg(long)]
    secret: Option<String>,
}

/// How the endpoint is down during its window.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum DownMode {
    /// Connection refused.
    Refuse,
    /// Accepted, never answered.
    Hang,
}

/// One request as logged.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Arrival {
    /// Body fully received, nanoseconds since the Unix epoch.
    pub t_ns: u64,
    /// `/kamailio` or `/siphook`.
    pub path: String,
    /// The event name: Kamailio's `event`, siphook's `type`.
    pub event: Option<String>,
    /// The SIP Call-ID the event is about.
    pub call_id: Option<String>,
    /// siphook's `webhook-id` (the same on a redelivery).
    pub webhook_id: Option<String>,
    /// Whether siphook's signature checked out (None: not checked).
    pub sig_ok: Option<bool>,
}

struct State {
    /// Posts so far to `/kamailio` and to `/siphook`, for run.sh to see a
    /// backlog drain (`GET /stats`).
    kamailio: AtomicUsize,
    siphook: AtomicUsize,
    delay: Duration,
    secret: Option<Secret>,
    log: mpsc::UnboundedSender<Arrival>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Serves until SIGTERM or SIGINT, then flushes the log.
pub async fn run(args: ReceiveArgs) -> anyhow::Result<()> {
    let secret = match &args.secret {
        Some(s) => Some(Secret::parse(s).map_err(|_| anyhow::anyhow!("bad --secret"))?),
        None => None,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Arrival>();
    let state = Arc::new(State {
        kamailio: AtomicUsize::new(0),
        siphook: AtomicUsize::new(0),
        delay: Duration::from_millis(args.delay_ms),
        secret,
        log: tx,
    });
    let file = tokio::fs::File::create(&args.out)
        .await
        .with_context(|| crate::shown(&args.out))?;
    let writer = tokio::spawn(async move {
        let mut w = tokio::io::BufWriter::new(file);
        while let Some(a) = rx.recv().await {
            if let Ok(mut line) = serde_json::to_vec(&a) {
                line.push(b'\n');
                w.write_all(&line).await?;
            }
        }
        w.flush().await
    });

    let stop = CancellationToken::new();
    let signals = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop.cancel();
            Ok::<_, std::io::Error>(())
        })
    };

    let window = match (args.down_from_ms, args.down_until_ms) {
        (Some(a), Some(b)) if b > a => Some((a, b)),
        (None, None) => None,
        _ => anyhow::bail!("--down-from-ms and --down-until-ms go together, from < until"),
    };
    // Up until the window, down through it, up again after it.
    serve_until(&args.listen, &state, &stop, window.map(|w| w.0)).await?;
    if let Some((_, until)) = window
        && !stop.is_cancelled()
    {
        let wait = Duration::from_nanos(until.saturating_mul(1_000_000).saturating_sub(now_ns()));
        let held = async {
            if args.down_mode == DownMode::Hang {
                hang(&args.listen, wait).await
            } else {
                tokio::time::sleep(wait).await;
                Ok(())
            }
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            r = held => r?,
        }
        serve_until(&args.listen, &state, &stop, None).await?;
    }
    drop(state);
    writer.await??;
    signals.abort();
    Ok(())
}

/// Accepts on `addr` until `stop` or the wall clock passes `until_ms`; then
/// closes the listener and every connection it accepted.
async fn serve_until(
    addr: &SocketAddr,
    state: &Arc<State>,
    stop: &CancellationToken,
    until_ms: Option<u64>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let down = stop.child_token();
    let deadline = until_ms.map(|ms| {
        tokio::time::Instant::now()
            + Duration::from_nanos(ms.saturating_mul(1_000_000).saturating_sub(now_ns()))
    });
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = down.cancelled() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            r = listener.accept() => r,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (state, down) = (state.clone(), down.clone());
        conns.spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = down.cancelled() => {}
                _ = conn => {}
            }
        });
    }
    drop(listener);
    down.cancel();
    conns.shutdown().await;
    Ok(())
}

/// Most connections a hung endpoint holds; later ones are dropped at once.
const MAX_HELD: usize = 10_000;

/// Accepts every connection for `wait` and answers none; then drops them all.
async fn hang(addr: &SocketAddr, wait: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let mut held = Vec::new();
    let end = tokio::time::sleep(wait);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => return Ok(()),
            r = listener.accept() => if let Ok((stream, _)) = r
                && held.len() < MAX_HELD
            {
                held.push(stream);
            },
        }
    }
}

#[derive(Deserialize)]
struct Body {
    event: Option<String>,
    call_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    call: Option<BodyCall>,
}

#[derive(Deserialize)]
struct BodyCall {
    sip_call_id: Option<String>,
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    if parts.method == hyper::Method::GET && parts.uri.path() == "/stats" {
        let text = format!(
            "kamailio {}\nsiphook {}\n",
            state.kamailio.load(Ordering::Relaxed),
            state.siphook.load(Ordering::Relaxed)
        );
        return Ok(Response::new(Full::new(Bytes::from(text))));
    }
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
        return Ok(answer(StatusCode::PAYLOAD_TOO_LARGE));
    };
    let t_ns = now_ns();
    let body = body.to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let parsed: Option<Body> = serde_json::from_slice(&body).ok();
    let webhook_id = header("webhook-id");
    let sig_ok = match (&state.secret, &webhook_id) {
        (Some(secret), Some(id)) => {
            let ts = header("webhook-timestamp").and_then(|t| t.parse::<i64>().ok());
            let sig = header("webhook-signature");
            Some(match (ts, sig) {
                (Some(ts), Some(sig)) => {
                    signature_header(std::slice::from_ref(secret), id, ts, &body) == sig
                }
                _ => false,
            })
        }
        _ => None,
    };
    let (event, call_id) = match parsed {
        Some(b) => (
            b.event.or(b.kind),
            b.call_id.or(b.call.and_then(|c| c.sip_call_id)),
        ),
        None => (None, None),
    };
    match parts.uri.path() {
        "/kamailio" => state.kamailio.fetch_add(1, Ordering::Relaxed),
        "/siphook" => state.siphook.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let _ = state.log.send(Arrival {
        t_ns,
        path: parts.uri.path().to_owned(),
        event,
        call_id,
        webhook_id,
        sig_ok,
    });
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    Ok(answer(StatusCode::OK))
}

fn answer(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}
