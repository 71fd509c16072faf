//! What an operator can ask of a running endpoint dispatcher (through the admin
//! API), and what it answers. The dispatcher owns its endpoint's delivery rows in
//! the outbox while it runs, so changes to them go through it, never around it.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

use super::transport::Outcome;
use crate::vocab::Timestamp;

/// A request to one endpoint's dispatcher; each carries its reply channel.
#[derive(Debug)]
pub enum EndpointCommand {
    /// Report the endpoint's state.
    Status(oneshot::Sender<EndpointStatus>),
    /// Lift a 410 pause; answers whether the endpoint was paused.
    Resume(oneshot::Sender<bool>),
    /// Move dead letters back to pending and queue them; answers the offsets
    /// that were dead letters of this endpoint.
    Replay {
        /// Which dead letters.
        offsets: Vec<u64>,
        /// The offsets that were dead letters and are pending again.
        reply: oneshot::Sender<Vec<u64>>,
    },
    /// Send one signed `webhook.test` event now, outside the outbox.
    Test(oneshot::Sender<TestResult>),
}

/// The last failed attempt, so an operator sees why without reading logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// When the attempt ended.
    pub at: Timestamp,
    /// HTTP status, if the endpoint answered.
    pub status: Option<u16>,
    /// What went wrong (connect error, timeout, status text); never a secret.
    pub error: String,
}

/// One endpoint as `/v1/endpoints` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStatus {
    /// Configured name.
    pub name: String,
    /// `healthy`, `circuit_open`, `misconfigured` or `paused`.
    pub state: &'static str,
    /// Deliveries waiting (including those in flight).
    pub pending: usize,
    /// Age of the oldest waiting event, from its SIP message; `None` when idle.
    pub oldest_pending_seconds: Option<f64>,
    /// Attempts running now.
    pub in_flight: usize,
    /// Dead letters kept for this endpoint.
    pub dead_letters: usize,
    /// Failures in a row (10 open the circuit).
    pub consecutive_failures: u32,
    /// The most recent failure, if any since the start.
    pub last_error: Option<LastError>,
}

/// The answer to a test delivery: what the endpoint said and how fast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    /// Endpoint name.
    pub endpoint: String,
    /// The test event's id (`webhook-id`).
    pub event_id: String,
    /// `delivered`, `retry`, `unavailable`, `gone` or `rejected`, as for a real event.
    pub outcome: &'static str,
    /// HTTP status, if the endpoint answered.
    pub status: Option<u16>,
    /// Time of the whole attempt.
    pub latency_ms: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl TestResult {
    /// What one test attempt came to, in the operator's terms.
    pub fn new(endpoint: &str, event_id: String, outcome: &Outcome, elapsed: Duration) -> Self {
        let (status, error) = match outcome {
            Outcome::Delivered { status } => (Some(*status), None),
            Outcome::Retry { status, error, .. } => (*status, Some(error.clone())),
            Outcome::Unavailable { error, .. } => (None, Some(error.clone())),
            Outcome::Gone => (Some(410), Some("HTTP 410 Gone".into())),
            Outcome::Rejected { status, error } => {
                ((*status > 0).then_some(*status), Some(error.clone()))
            }
        };
        TestResult {
            endpoint: endpoint.to_owned(),
            event_id,
            outcome: outcome.label(),
            status,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            error,
        }
    }
}

/// The `webhook.test` event: the shape of a call event's envelope without a call,
/// so a receiver can check its signature verification end to end.
pub fn test_event(endpoint: &str, now: Timestamp) -> (String, Vec<u8>) {
    let id = crate::call::event::stable_id(
        "evt_test_",
        &[
            endpoint,
            &now.millis().to_string(),
            &std::process::id().to_string(),
        ],
    );
    let body = serde_json::json!({
        "id": id,
        "type": "webhook.test",
        "version": crate::call::event::EVENT_VERSION,
        "timestamp": now,
        "data": { "endpoint": endpoint },
    });
    (id, serde_json::to_vec(&body).unwrap_or_default())
}
