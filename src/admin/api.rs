//! `/v1`: what the operator on call needs to see and fix without a restart —
//! active calls, endpoint states, resuming a paused endpoint, dead letters and
//! their replay, and a signed test delivery. Described in `docs/admin-api.yaml`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::reply::{Reply, json_reply, method_not_allowed, problem};
use super::state::AdminState;
use crate::call::{CallsPage, TrackerQuery};
use crate::deliver::EndpointCommand;

/// Default and largest page sizes.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Largest request body (replay by ids).
const MAX_BODY: usize = 1 << 20;
/// A request body must arrive whole within this, or a client sending a byte at a
/// time would hold its connection (and a slot) for as long as it liked.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most ids one replay request may name.
const MAX_REPLAY_IDS: usize = 10_000;
/// Dead letters handed to a dispatcher per command.
const REPLAY_CHUNK: usize = 1000;
/// How long an internal owner (tracker, dispatcher) may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

pub(super) async fn handle(state: &AdminState, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
    let method = req.method().clone();
    match (segments.as_slice(), method) {
        (["calls"], Method::GET) => calls(state, &query).await,
        (["endpoints"], Method::GET) => endpoints(state).await,
        (["endpoints", name, "resume"], Method::POST) => resume(state, name).await,
        (["endpoints", name, "test"], Method::POST) => test(state, name).await,
        (["deadletters"], Method::GET) => dead_letters(state, &query),
        (["events"], Method::GET) => super::events::find(state, &query).await,
        (["events", id], Method::GET) => super::events::get(state, id).await,
        (["deadletters", "replay"], Method::POST) => replay(state, req).await,
        (["calls"] | ["endpoints"] | ["deadletters"] | ["events"] | ["events", _], _)
        | (["endpoints", _, "resume" | "test"] | ["deadletters", "replay"], _) => {
            method_not_allowed()
        }
        _ => problem(StatusCode::NOT_FOUND, "Not Found", "no such path"),
    }
}

/// A query string's parameters, percent-decoded (the last of a repeated one wins).
pub(super) fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bad_request(detail: &str) -> Reply {
    problem(StatusCode::BAD_REQUEST, "Bad Request", detail)
}

fn unavailable(detail: &str) -> Reply {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable",
        detail,
    )
}

fn limit(query: &BTreeMap<String, String>) -> Result<usize, Box<Reply>> {
    match query.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(Box::new(bad_request(&format!(
                "limit must be 1 to {MAX_LIMIT}"
            )))),
        },
    }
}

/// Asks an owner task a question and waits, bounded, for its answer.
async fn ask<Q, A>(
    to: &mpsc::Sender<Q>,
    make: impl FnOnce(oneshot::Sender<A>) -> Q,
    within: Duration,
) -> Option<A> {
    let (tx, rx) = oneshot::channel();
    tokio::time::timeout(within, async {
        to.send(make(tx)).await.ok()?;
        rx.await.ok()
    })
    .await
    .ok()
    .flatten()
}

async fn calls(state: &AdminState, query: &BTreeMap<String, String>) -> Reply {
    let limit = match limit(query) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let after = query.get("after").cloned();
    let page: Option<CallsPage> = ask(
        &state.tracker,
        |reply| TrackerQuery::Calls {
            after,
            limit,
            reply,
        },
        ANSWER_WITHIN,
    )
    .await;
    let Some(page) = page else {
        return unavailable("the call tracker did not answer");
    };
    let next = (page.calls.len() == limit)
        .then(|| page.calls.last().map(|c| c.id.clone()))
        .flatten();
    let items: Vec<Value> = page
        .calls
        .iter()
        .map(|c| {
            let state = if c.answered_at.is_some() {
                "answered"
            } else if c.ringing_at.is_some() {
                "ringing"
            } else {
                "trying"
            };
            let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("state".into(), state.into());
                o.remove("ended_at");
            }
            v
        })
        .collect();
    json_reply(
        StatusCode::OK,
        &json!({"total": page.total, "items": items, "next": next}),
    )
}

fn endpoint_named(
    state: &AdminState,
    name: &str,
) -> Result<mpsc::Sender<EndpointCommand>, Box<Reply>> {
    state.endpoints.borrow().get(name).cloned().ok_or_else(|| {
        Box::new(problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            &format!("no endpoint named \"{}\" is configured", printable(name)),
        ))
    })
}

/// Names come from the URL: keep what is echoed short and printable.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

async fn endpoints(state: &AdminState) -> Reply {
    let all = state.endpoints.borrow().clone();
    let mut items = Vec::with_capacity(all.len());
    for (name, commands) in all.iter() {
        match ask(commands, EndpointCommand::Status, ANSWER_WITHIN).await {
            Some(s) => items.push(serde_json::to_value(s).unwrap_or(Value::Null)),
            None => {
                return unavailable(&format!("the dispatcher of \"{name}\" did not answer"));
            }
        }
    }
    json_reply(StatusCode::OK, &json!({"items": items}))
}

async fn resume(state: &AdminState, name: &str) -> Reply {
    let commands = match endpoint_named(state, name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match ask(&commands, EndpointCommand::Resume, ANSWER_WITHIN).await {
        Some(true) => json_reply(StatusCode::OK, &json!({"endpoint": name, "resumed": true})),
        Some(false) => problem(
            StatusCode::CONFLICT,
            "Conflict",
            &format!("endpoint \"{name}\" is not paused"),
        ),
        None => unavailable("the endpoint's dispatcher did not answer"),
    }
}

async fn test(state: &AdminState, name: &str) -> Reply {
    let commands = match endpoint_named(state, name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    // The attempt itself is bounded by the endpoint's own timeout.
    match ask(&commands, EndpointCommand::Test, Duration::from_secs(300)).await {
        Some(result) => json_reply(
            StatusCode::OK,
            &serde_json::to_value(result).unwrap_or(Value::Null),
        ),
        None => unavailable("the endpoint's dispatcher did not answer"),
    }
}

fn dead_letters(state: &AdminState, query: &BTreeMap<String, String>) -> Reply {
    let limit = match limit(query) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let after = match query.get("after").map(|a| a.rsplit_once(':')) {
        None => None,
        Some(Some((e, o))) => match o.parse::<u64>() {
            Ok(o) => Some((e.to_owned(), o)),
            Err(_) => return bad_request("after must be a cursor from a previous page"),
        },
        Some(None) => return bad_request("after must be a cursor from a previous page"),
    };
    let endpoint = query.get("endpoint").map(String::as_str);
    if let (Some(e), Some((from, _))) = (endpoint, &after)
        && e != from
    {
        return bad_request("after is a cursor of another endpoint's listing");
    }
    let page = state.outbox.dead_letters_page(
        endpoint,
        after.as_ref().map(|(e, o)| (e.as_str(), *o)),
        limit,
    );
    match page {
        Ok(items) => {
            let next = (items.len() == limit)
                .then(|| items.last().map(|d| format!("{}:{}", d.endpoint, d.offset)))
                .flatten();
            json_reply(StatusCode::OK, &json!({"items": items, "next": next}))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot list dead letters");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "the outbox could not be read",
            )
        }
    }
}

/// `POST /v1/deadletters/replay` body: which dead letters to replay.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    ids: Vec<u64>,
    endpoint: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn replay(state: &AdminState, req: Request<Incoming>) -> Reply {
    let read = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return bad_request("body unreadable or over 1 MiB"),
        Err(_) => {
            state
                .metrics
                .admin_connections_closed
                .with_label_values(&["body_timeout"])
                .inc();
            // Answered without reading the rest, so hyper closes the connection.
            return problem(
                StatusCode::REQUEST_TIMEOUT,
                "Request Timeout",
                "the request body did not arrive within 10 s",
            );
        }
    };
    let r: ReplayRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("invalid JSON body: {e}")),
    };
    if r.ids.is_empty() && !r.all && r.endpoint.is_none() {
        return bad_request("say which: \"ids\", \"endpoint\", or \"all\": true");
    }
    if !r.ids.is_empty() && r.all {
        return bad_request("\"ids\" and \"all\" are exclusive");
    }
    if r.ids.len() > MAX_REPLAY_IDS {
        return bad_request(&format!(
            "at most {MAX_REPLAY_IDS} ids per request; use \"endpoint\" or \"all\" for more"
        ));
    }
    let dead = match state.outbox.dead_offsets(r.endpoint.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot list dead letters");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "the outbox could not be read",
            );
        }
    };
    // A name neither configured nor holding dead letters (a typo) is not an
    // empty success: nothing could ever be replayed for it.
    if let Some(name) = &r.endpoint
        && dead.is_empty()
        && !state.endpoints.borrow().contains_key(name)
    {
        return problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            &format!("no such endpoint: {name}"),
        );
    }
    let wanted: HashSet<u64> = r.ids.iter().copied().collect();
    let mut found: HashSet<u64> = HashSet::new();
    let configured = state.endpoints.borrow().clone();
    let mut replayed = Vec::new();
    let mut skipped = Vec::new();
    for (endpoint, mut offsets) in dead {
        if !wanted.is_empty() {
            offsets.retain(|o| wanted.contains(o));
            found.extend(offsets.iter().copied());
        }
        let Some(commands) = configured.get(&endpoint) else {
            for o in offsets {
                skipped.push(
                    json!({"endpoint": endpoint, "id": o, "reason": "endpoint not configured"}),
                );
            }
            continue;
        };
        // In slices, so the dispatcher keeps delivering (and answering the
        // watchdog) between them, however many dead letters there are.
        for chunk in offsets.chunks(REPLAY_CHUNK) {
            let done = ask(
                commands,
                |reply| EndpointCommand::Replay {
                    offsets: chunk.to_vec(),
                    reply,
                },
                ANSWER_WITHIN,
            )
            .await;
            let Some(ids) = done else {
                return unavailable(&format!(
                    "the dispatcher of \"{endpoint}\" did not answer; {} dead letter(s) were replayed before it stopped answering",
                    replayed.len()
                ));
            };
            for o in ids {
                replayed.push(json!({"endpoint": endpoint, "id": o}));
            }
        }
    }
    let mut not_found: Vec<u64> = wanted.difference(&found).copied().collect();
    not_found.sort_unstable();
    json_reply(
        StatusCode::OK,
        &json!({"replayed": replayed, "skipped": skipped, "not_found": not_found}),
    )
}
