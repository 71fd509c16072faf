//! The transports an endpoint's URL scheme picks: a webhook (`http`), a
//! JetStream publish (`nats`), or a Kafka record (`kafka`). Each makes one attempt at one event and says what
//! it came to as an [`Outcome`]; everything around the attempt (per-call order,
//! the retry schedule, the breaker, dead letters) is the dispatcher's policy, the
//! same for every transport.

pub mod http;
pub mod kafka;
pub mod nats;
mod tls;

use std::time::Duration;

use bytes::Bytes;

use crate::config::{EndpointConfig, Target};

/// Why an endpoint's transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("endpoint {endpoint}: {what} \"{path}\": {reason}")]
    Pem {
        /// Endpoint name.
        endpoint: String,
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the TLS settings.
    #[error("endpoint {endpoint}: TLS configuration: {source}")]
    Tls {
        /// Endpoint name.
        endpoint: String,
        /// The rustls error.
        source: rustls::Error,
    },
    /// The broker client refused its settings (a bad seed or `.creds` file, a
    /// Kafka property librdkafka rejects).
    #[error("endpoint {endpoint}: broker settings: {reason}")]
    Broker {
        /// Endpoint name.
        endpoint: String,
        /// What is wrong, without the credential.
        reason: String,
    },
}

/// One endpoint's client, cheap to clone into each attempt.
#[derive(Clone)]
pub enum Transport {
    /// Pooled HTTP/1.1 and HTTP/2 connections (behind an `Arc`: an attempt's
    /// clone is one count, not the pool's several).
    Http(std::sync::Arc<http::HttpClient>),
    /// One NATS connection, reconnecting on its own.
    Nats(nats::Publisher),
    /// One idempotent Kafka producer.
    Kafka(kafka::Producer),
}

impl Transport {
    /// Builds the endpoint's client. A broker transport starts connecting in the
    /// background: its events wait in the outbox until it is connected, so a
    /// broker that is down never stops siphook from starting.
    pub fn new(ep: &EndpointConfig) -> Result<Transport, TransportError> {
        Ok(match &ep.target {
            Target::Http(_) => Transport::Http(std::sync::Arc::new(http::HttpClient::new(ep)?)),
            Target::Nats(t) => Transport::Nats(nats::Publisher::new(ep, t)?),
            Target::Kafka(t) => Transport::Kafka(kafka::Producer::new(ep, t)?),
        })
    }

    /// What is known of the peer without an attempt: `Some(Some(problem))` when
    /// only an operator can fix it (credentials refused, no stream), so an idle
    /// endpoint shows as misconfigured too; `Some(None)` when it is known to be
    /// fine; `None` when this transport cannot tell between attempts.
    pub fn standing(&self) -> Option<Option<(Unavailable, String)>> {
        match self {
            Transport::Nats(p) => p.standing(),
            Transport::Http(_) | Transport::Kafka(_) => None,
        }
    }

    /// Sends one signed attempt of `event_json` and classifies the answer.
    pub async fn attempt(
        &self,
        ep: &EndpointConfig,
        event_id: &str,
        event_json: &Bytes,
        now_unix: i64,
    ) -> (Outcome, Duration) {
        let started = std::time::Instant::now();
        let outcome = match self {
            Transport::Http(c) => http::attempt(c, ep, event_id, event_json, now_unix).await,
            Transport::Nats(p) => p.attempt(ep, event_id, event_json, now_unix).await,
            Transport::Kafka(p) => p.attempt(ep, event_id, event_json, now_unix).await,
        };
        (outcome, started.elapsed())
    }
}

/// Why a broker could not take an event, though nothing is wrong with the event:
/// it waits, keeping its attempts, until the broker takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No connection to any server of the cluster.
    Disconnected,
    /// The server refused siphook's credentials.
    Auth,
    /// No JetStream stream captures the subject (siphook never creates one).
    NoStream,
    /// The publish was not acknowledged in time.
    Timeout,
    /// The broker answers but takes nothing now: a stream full with
    /// `discard = new`, no resources, no quorum, not enough in-sync replicas.
    Refused,
}

impl Unavailable {
    /// Bounded metrics label (the `code` of `siphook_deliveries_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::Disconnected => "disconnected",
            Unavailable::Auth => "auth",
            Unavailable::NoStream => "no_stream",
            Unavailable::Timeout => "timeout",
            Unavailable::Refused => "refused",
        }
    }

    /// Whether only an operator can fix it (credentials, a stream to create), so
    /// the endpoint shows as misconfigured rather than merely failing.
    pub fn needs_operator(self) -> bool {
        matches!(self, Unavailable::Auth | Unavailable::NoStream)
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx, or a broker's acknowledgement (status 200 stands for it).
    Delivered {
        /// The status.
        status: u16,
    },
    /// Worth another try later: connect error, timeout, 408, 425, 429, 5xx.
    Retry {
        /// Status, when there was a response.
        status: Option<u16>,
        /// What went wrong, without secrets or event content.
        error: String,
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The broker cannot take anything now; see [`Unavailable`].
    Unavailable {
        /// Why, as a bounded value.
        reason: Unavailable,
        /// What the client said, without secrets or event content.
        error: String,
    },
    /// 410 Gone: stop sending to this endpoint until an operator resumes it.
    Gone,
    /// Any other answer (3xx, 4xx, `webhook-delivery: abort-message`, or an
    /// event a broker refuses): no retry.
    Rejected {
        /// The status (0 when there is none).
        status: u16,
        /// Why it is final.
        error: String,
    },
}

impl Outcome {
    /// A final refusal without a status: the event cannot be sent as it is (not
    /// renderable, too large for the broker).
    pub fn rejected(error: String) -> Outcome {
        Outcome::Rejected { status: 0, error }
    }

    /// Bounded metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Unavailable { .. } => "unavailable",
            Outcome::Gone => "gone",
            Outcome::Rejected { .. } => "rejected",
        }
    }

    /// Status code label ("none" when no response; the reason when unavailable).
    pub fn code(&self) -> String {
        match self {
            Outcome::Delivered { status } | Outcome::Rejected { status, .. } => status.to_string(),
            Outcome::Retry {
                status: Some(s), ..
            } => s.to_string(),
            Outcome::Retry { status: None, .. } => "none".into(),
            Outcome::Unavailable { reason, .. } => reason.as_str().into(),
            Outcome::Gone => "410".into(),
        }
    }
}
