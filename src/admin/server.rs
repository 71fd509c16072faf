//! The admin HTTP listener: `/metrics`, `/healthz`, `/readyz` for machines, and the
//! token-protected `/v1` API for the operator on call. Loopback by default; bounded
//! in connections, header time and body size, because it may face a hostile host.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::conns::Conns;
use super::reply::{Reply, json_reply, method_not_allowed, problem};
use super::state::AdminState;
use super::stream;
use crate::vocab::{Redacted, same_secret};

/// Admin connections held at once. An idle one costs a task and a few KiB, so
/// the bound is set well past what a process opening idle connections would
/// need to crowd out the probes; past it the one idle longest gives way.
const MAX_CONNECTIONS: usize = 1024;
/// Connections one source may hold. Loopback is one source, the health probes'
/// too, so a full source gives up its own idlest connection rather than refusing.
const MAX_PER_SOURCE: usize = 512;
/// A client must send its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the admin listener; fails before anything runs if the address is taken.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves admin requests until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let conns = Conns::new(MAX_CONNECTIONS, MAX_PER_SOURCE);
    let closed = |reason: &str| {
        state
            .metrics
            .admin_connections_closed
            .with_label_values(&[reason])
            .inc();
    };
    loop {
        // Accepted at once, never left in the kernel's backlog: a newcomer is
        // given a slot here or closed, so a health probe never waits in a queue.
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let conn = match conns.admit(peer.ip()) {
            Ok((conn, evicted)) => {
                if evicted {
                    closed("evicted");
                }
                conn
            }
            Err(()) => {
                closed("refused");
                continue;
            }
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = Arc::new(conn);
            let service = {
                let (state, conn) = (state.clone(), conn.clone());
                hyper::service::service_fn(move |req| {
                    let (state, busy) = (state.clone(), conn.busy());
                    async move {
                        let reply = route(&state, req).await;
                        drop(busy);
                        Ok::<_, Infallible>(reply)
                    }
                })
            };
            let http = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(http);
            tokio::select! {
                r = http.as_mut() => {
                    if r.is_err_and(|e| e.is_timeout()) {
                        state.metrics.admin_connections_closed.with_label_values(&["header_timeout"]).inc();
                    }
                }
                _ = conn.evicted.cancelled() => {}
                _ = shutdown.cancelled() => {
                    http.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
                }
            }
        });
    }
}

/// A response: a whole body, or the event stream's.
type Body = http_body_util::Either<Full<Bytes>, stream::Events>;

async fn route(state: &Arc<AdminState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/');
    if path == "/v1/events/stream" {
        if let Err(r) = authorize(state, &req) {
            return r.map(Body::Left);
        }
        if req.method() != Method::GET {
            return method_not_allowed().map(Body::Left);
        }
        let query = super::api::parse_query(req.uri().query().unwrap_or(""));
        return match stream::serve(state, &req, &query).await {
            Ok(r) => r.map(Body::Right),
            Err(r) => r.map(Body::Left),
        };
    }
    whole(state, req).await.map(Body::Left)
}

async fn whole(state: &AdminState, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/healthz") => json_reply(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/readyz") => readyz(state),
        (_, "/metrics" | "/healthz" | "/readyz") => method_not_allowed(),
        (&Method::GET, p) if p == "/ui" || p.starts_with("/ui/") => super::ui::serve(p)
            .unwrap_or_else(|| problem(StatusCode::NOT_FOUND, "Not Found", "no such path")),
        (_, p) if p == "/v1" || p.starts_with("/v1/") => {
            if let Err(r) = authorize(state, &req) {
                return *r;
            }
            super::api::handle(state, req).await
        }
        _ => problem(StatusCode::NOT_FOUND, "Not Found", "no such path"),
    }
}

/// Ready means: SIP listeners bound (true once this server runs), the outbox takes
/// new events (neither past `max_bytes` nor failing to write), and no shutdown has
/// begun.
fn readyz(state: &AdminState) -> Reply {
    let mut reasons = Vec::new();
    if state.stopping.is_cancelled() {
        reasons.push("shutting_down");
    }
    if state.metrics.outbox_storage_failing.get() == 1 {
        reasons.push("outbox_storage_error");
    } else if state.metrics.outbox_accepting.get() != 1 {
        reasons.push("outbox_full");
    }
    let misconfigured = misconfigured_endpoints(state);
    if !misconfigured.is_empty() {
        reasons.push("endpoint_misconfigured");
    }
    if reasons.is_empty() {
        json_reply(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        let mut body = json!({"status": "unready", "reasons": reasons});
        if !misconfigured.is_empty() {
            body["misconfigured_endpoints"] = json!(misconfigured);
        }
        json_reply(StatusCode::SERVICE_UNAVAILABLE, &body)
    }
}

/// Endpoints whose broker refuses them until an operator acts (credentials, a
/// missing stream): their events are kept but go nowhere, which a readiness
/// check should not call ready. Read from `siphook_endpoint_state`, which each
/// dispatcher keeps current.
fn misconfigured_endpoints(state: &AdminState) -> Vec<String> {
    use prometheus::core::Collector;
    let mut names = Vec::new();
    for family in state.metrics.endpoint_state.collect() {
        for m in family.get_metric() {
            let label = |n: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == n)
                    .map(|l| l.value().to_owned())
            };
            if m.get_gauge().get_value() == 1.0
                && label("state").as_deref() == Some("misconfigured")
            {
                names.extend(label("endpoint"));
            }
        }
    }
    names.sort();
    names
}

/// Bearer token check (constant time, see [`same_secret`]).
fn authorize(state: &AdminState, req: &Request<Incoming>) -> Result<(), Box<Reply>> {
    let unauthorized = |detail: &str| {
        let mut r = problem(StatusCode::UNAUTHORIZED, "Unauthorized", detail);
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"siphook\""),
        );
        Box::new(r)
    };
    let token = state.token.borrow().clone();
    let Some(Redacted(token)) = token else {
        return Err(unauthorized(
            "no admin token is configured (admin.token_file): /v1 is disabled",
        ));
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 7235 §2.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    if given.is_empty() || !same_secret(given.as_bytes(), token.as_bytes()) {
        return Err(unauthorized("missing or wrong bearer token"));
    }
    Ok(())
}
