//! `GET /v1/events` and `GET /v1/events/{id}`: what happened to an event or a
//! call, from the recent-history index (the latest [`HISTORY_EVENTS`] events),
//! with every endpoint's delivery record.

use std::collections::BTreeMap;

use base64::Engine;
use hyper::StatusCode;
use serde_json::json;

use super::reply::{Reply, json_reply, problem};
use super::state::AdminState;
use crate::deliver::history::{HISTORY_EVENTS, Search};

/// Largest and default page.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

fn unavailable() -> Reply {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable",
        "siphook is stopping",
    )
}

/// `GET /v1/events?call_id=…|sip_call_id=…|ani=…|dnis=…&limit=`: newest first.
pub(super) async fn find(state: &AdminState, query: &BTreeMap<String, String>) -> Reply {
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!("limit must be 1 to {MAX_LIMIT}"),
            );
        }
    };
    let known = ["call_id", "sip_call_id", "ani", "dnis", "limit"];
    if let Some(k) = query.keys().find(|k| !known.contains(&k.as_str())) {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            &format!("unknown parameter {k:?}: search by call_id, sip_call_id, ani or dnis"),
        );
    }
    let search = Search {
        call_id: query.get("call_id").cloned(),
        sip_call_id: query.get("sip_call_id").cloned(),
        ani: query.get("ani").cloned(),
        dnis: query.get("dnis").cloned(),
    };
    match state.history.find(search, limit).await {
        Some(items) => json_reply(
            StatusCode::OK,
            &json!({"items": items, "window": HISTORY_EVENTS}),
        ),
        None => unavailable(),
    }
}

/// `GET /v1/events/{id}`: the event's record and its body exactly as stored
/// (`body`, JSON; `body_base64`, the bytes).
pub(super) async fn get(state: &AdminState, id: &str) -> Reply {
    match state.history.get(id.to_owned()).await {
        Some(Some(record)) => {
            let body: serde_json::Value =
                serde_json::from_slice(&record.body).unwrap_or(serde_json::Value::Null);
            let raw = base64::engine::general_purpose::STANDARD.encode(&record.body);
            let mut v = serde_json::to_value(&record).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("body".into(), body);
                o.insert("body_base64".into(), raw.into());
            }
            json_reply(StatusCode::OK, &v)
        }
        Some(None) => problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            &format!(
                "no event with that id among the latest {HISTORY_EVENTS}; a pending one is also in GET /v1/endpoints and dead letters in GET /v1/deadletters"
            ),
        ),
        None => unavailable(),
    }
}
