//! An endpoint's metric series, resolved once per dispatcher.

use super::EndpointState;
use crate::deliver::transport::Outcome;
use crate::metrics::Metrics;

pub(super) const STATES: [EndpointState; 4] = [
    EndpointState::Healthy,
    EndpointState::CircuitOpen,
    EndpointState::Misconfigured,
    EndpointState::Paused,
];

/// Every `state` label of `siphook_endpoint_state`, for clearing a removed
/// endpoint's series.
pub const STATE_LABELS: [&str; 4] = ["healthy", "circuit_open", "misconfigured", "paused"];

/// This endpoint's series, resolved once: a label lookup hashes the name and
/// takes the family's lock, which per event adds up.
pub(super) struct Gauges {
    pub(super) pending: prometheus::IntGauge,
    pub(super) oldest_pending: prometheus::Gauge,
    pub(super) dead: prometheus::IntGauge,
    /// In the order of [`STATES`].
    pub(super) state: Vec<prometheus::IntGauge>,
    /// The common outcome's counter; the others are looked up when they happen.
    pub(super) delivered_200: prometheus::IntCounter,
    pub(super) attempt_duration: prometheus::Histogram,
    pub(super) latency: prometheus::Histogram,
}

impl Gauges {
    pub(super) fn of(m: &Metrics, name: &str) -> Gauges {
        let delivered = Outcome::Delivered { status: 200 };
        Gauges {
            pending: m.outbox_pending.with_label_values(&[name]),
            oldest_pending: m.outbox_oldest_pending_seconds.with_label_values(&[name]),
            dead: m.deadletters.with_label_values(&[name]),
            state: STATES
                .iter()
                .map(|s| m.endpoint_state.with_label_values(&[name, s.as_str()]))
                .collect(),
            delivered_200: m.deliveries.with_label_values(&[
                name,
                delivered.label(),
                &delivered.code(),
            ]),
            attempt_duration: m.delivery_attempt_duration.with_label_values(&[name]),
            latency: m.event_delivery_latency.with_label_values(&[name]),
        }
    }
}
