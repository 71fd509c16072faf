//! NATS JetStream: one connection per endpoint, made and remade in the
//! background by async-nats, and one publish per attempt, counted as delivered
//! only when the stream acknowledges it (`PubAck`). siphook never creates a
//! stream: a subject no stream captures is reported (log, `/readyz`, the
//! endpoint's state) and its events wait in the outbox.

mod encoder;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::{ConnectOptions, Event, ServerError};
use bytes::Bytes;

use super::{Outcome, TransportError, Unavailable};
use crate::config::{EndpointConfig, NatsAuth, NatsTarget, Target};

/// The longest pause between two reconnection attempts: a broker that comes back
/// is found within this.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// What an attempt says while the server refuses the configured credentials.
const REFUSED: &str = "the NATS server refused siphook's credentials (authorization violation)";

/// One endpoint's NATS connection, shared by its attempts.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: String,
    /// The client, once its first connection succeeded (async-nats reconnects
    /// it from then on).
    client: OnceLock<(async_nats::Client, async_nats::jetstream::Context)>,
    /// What the connection last reported, when it is not connected: shown as the
    /// attempt's error instead of a bare "not connected".
    problem: Mutex<Option<(Unavailable, String)>>,
}

impl Inner {
    fn set_problem(&self, p: Option<(Unavailable, String)>) {
        let mut slot = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        if *slot != p {
            match &p {
                None => tracing::info!(endpoint = %self.endpoint, "connected to NATS"),
                Some((_, why)) => {
                    tracing::warn!(endpoint = %self.endpoint, %why, "NATS connection")
                }
            }
        }
        *slot = p;
    }

    fn problem(&self) -> Option<(Unavailable, String)> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Publisher {
    /// Starts connecting to the target's servers in the background (it must run
    /// inside the tokio runtime). Settings a client refuses outright (a bad
    /// `.creds` file) are an error now; an unreachable server or refused
    /// credentials are reported by each attempt while the client keeps retrying.
    pub fn new(ep: &EndpointConfig, target: &NatsTarget) -> Result<Publisher, TransportError> {
        let nats_err = |reason: String| TransportError::Broker {
            endpoint: ep.name.clone(),
            reason,
        };
        let mut options = match &target.auth {
            Some(NatsAuth::Creds(text)) => ConnectOptions::with_credentials(&text.0)
                .map_err(|e| nats_err(format!("creds_file: {}", e.kind())))?,
            _ => ConnectOptions::new(),
        };
        options = match &target.auth {
            Some(NatsAuth::Token(t)) => options.token(t.0.clone()),
            Some(NatsAuth::UserPassword { user, password }) => {
                options.user_and_password(user.clone(), password.0.clone())
            }
            Some(NatsAuth::NkeySeed(seed)) => options.nkey(seed.0.clone()),
            Some(NatsAuth::Creds(_)) | None => options,
        };
        let tls = super::tls::client_config(ep)?;
        let wants_tls = ep.ca_file.is_some() || ep.client_cert_file.is_some() || ep.native_roots;
        let inner = Arc::new(Inner {
            endpoint: ep.name.clone(),
            client: OnceLock::new(),
            problem: Mutex::new(Some((
                Unavailable::Disconnected,
                "not connected to NATS yet".into(),
            ))),
        });
        let events = Arc::downgrade(&inner);
        let options = options
            .name(format!("siphook/{}", ep.name))
            .max_reconnects(None)
            .connection_timeout(ep.timeout)
            .reconnect_delay_callback(reconnect_delay)
            .tls_client_config(tls)
            .require_tls(wants_tls)
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    if let Some(inner) = events.upgrade() {
                        inner.set_problem(problem_of(&event, inner.problem()));
                    }
                }
            });
        let servers: Vec<async_nats::ServerAddr> = target
            .servers
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        if servers.is_empty() {
            return Err(nats_err("no usable server address".into()));
        }
        tokio::spawn(first_connect(
            options,
            servers,
            ep.timeout,
            Arc::downgrade(&inner),
        ));
        Ok(Publisher { inner })
    }

    /// Publishes one event and waits for the stream's acknowledgement.
    pub async fn attempt(
        &self,
        ep: &EndpointConfig,
        event_id: &str,
        event_json: &Bytes,
        now_unix: i64,
    ) -> (Outcome, Duration) {
        let started = Instant::now();
        let outcome = self.publish(ep, event_id, event_json, now_unix).await;
        (outcome, started.elapsed())
    }

    async fn publish(
        &self,
        ep: &EndpointConfig,
        event_id: &str,
        event_json: &Bytes,
        now_unix: i64,
    ) -> Outcome {
        let Target::Nats(target) = &ep.target else {
            return rejected("not a NATS endpoint".into());
        };
        let Some((client, js)) = self.inner.client.get() else {
            return unavailable(self.inner.problem());
        };
        if client.connection_state() != State::Connected {
            // Publishing now would only queue in the client and time out: the
            // event waits in the outbox instead.
            return unavailable(self.inner.problem());
        }
        let m = match encoder::message(ep, target, event_id, event_json, now_unix) {
            Ok(m) => m,
            Err(e) => return rejected(e),
        };
        let publish = PublishMessage::build()
            .payload(m.payload)
            .headers(m.headers);
        let exchange = async { js.send_publish(m.subject.clone(), publish).await?.await };
        match tokio::time::timeout(ep.timeout, exchange).await {
            Err(_) => Outcome::Unavailable {
                reason: Unavailable::Timeout,
                error: format!(
                    "no JetStream acknowledgement within {}",
                    humantime::format_duration(ep.timeout)
                ),
            },
            Ok(Ok(_ack)) => Outcome::Delivered { status: 200 },
            Ok(Err(e)) => classify(e.kind(), &e.to_string(), &m.subject),
        }
    }
}

/// Connects until it succeeds or the publisher is gone (a reload replaced it),
/// noting each failure where attempts read it. Once connected, async-nats
/// reconnects on its own. Not async-nats' own initial retry: that loop outlives
/// the client, so every reload of an endpoint with refused credentials would
/// leave one behind.
async fn first_connect(
    options: ConnectOptions,
    servers: Vec<async_nats::ServerAddr>,
    timeout: Duration,
    inner: std::sync::Weak<Inner>,
) {
    for attempt in 0usize.. {
        match options.clone().connect(servers.clone()).await {
            Ok(client) => {
                let js = async_nats::jetstream::context::ContextBuilder::new()
                    .timeout(timeout)
                    .build(client.clone());
                if let Some(inner) = inner.upgrade() {
                    inner.set_problem(None);
                    let _ = inner.client.set((client, js));
                }
                return;
            }
            Err(e) => {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                inner.set_problem(Some(connect_problem(e.kind())));
            }
        }
        tokio::time::sleep(reconnect_delay(attempt)).await;
    }
}

/// Why the first connection failed, in siphook's terms.
fn connect_problem(kind: async_nats::ConnectErrorKind) -> (Unavailable, String) {
    use async_nats::ConnectErrorKind as K;
    match kind {
        K::AuthorizationViolation | K::Authentication => (Unavailable::Auth, REFUSED.into()),
        other => (
            Unavailable::Disconnected,
            format!("cannot connect to NATS: {other}"),
        ),
    }
}

/// 100 ms, doubling, at most [`MAX_RECONNECT_DELAY`].
fn reconnect_delay(attempts: usize) -> Duration {
    let shift = u32::try_from(attempts.min(8)).unwrap_or(8);
    Duration::from_millis(100u64 << shift).min(MAX_RECONNECT_DELAY)
}

/// What a connection event says about publishing now; `previous` is kept when
/// the event says nothing new (a slow-consumer notice).
fn problem_of(
    event: &Event,
    previous: Option<(Unavailable, String)>,
) -> Option<(Unavailable, String)> {
    let refused = || Some((Unavailable::Auth, REFUSED.into()));
    match event {
        Event::Connected => None,
        Event::Disconnected => Some((Unavailable::Disconnected, "disconnected from NATS".into())),
        Event::Closed => Some((Unavailable::Disconnected, "the NATS client closed".into())),
        Event::ServerError(ServerError::AuthorizationViolation) => refused(),
        Event::ClientError(e) => {
            let text = match e {
                async_nats::ClientError::Other(t) => t.clone(),
                other => other.to_string(),
            };
            if text.contains("authorization violation") || text.contains("signing nonce") {
                refused()
            } else {
                Some((
                    Unavailable::Disconnected,
                    format!("cannot connect to NATS: {text}"),
                ))
            }
        }
        _ => previous,
    }
}

/// A JetStream publish error in siphook's terms: the broker's state (wait) or
/// the event's fault (dead letter).
fn classify(kind: PublishErrorKind, text: &str, subject: &str) -> Outcome {
    let unavailable = |reason, error| Outcome::Unavailable { reason, error };
    match kind {
        PublishErrorKind::StreamNotFound => unavailable(
            Unavailable::NoStream,
            format!(
                "no JetStream stream captures the subject \"{subject}\"; siphook does not create streams: add one (nats stream add) whose subjects include it"
            ),
        ),
        PublishErrorKind::TimedOut | PublishErrorKind::MaxAckPending => {
            unavailable(Unavailable::Timeout, format!("JetStream: {text}"))
        }
        PublishErrorKind::BrokenPipe => {
            unavailable(Unavailable::Disconnected, format!("JetStream: {text}"))
        }
        PublishErrorKind::MaxPayloadExceeded => rejected(format!("JetStream: {text}")),
        // A stream that refuses this one message (a size or schema limit) answers
        // with an API error; anything else is worth another try.
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::Other => Outcome::Retry {
            status: None,
            error: format!("JetStream: {text}"),
            retry_after: None,
        },
    }
}

fn unavailable(problem: Option<(Unavailable, String)>) -> Outcome {
    let (reason, error) =
        problem.unwrap_or((Unavailable::Disconnected, "not connected to NATS".into()));
    Outcome::Unavailable { reason, error }
}

fn rejected(error: String) -> Outcome {
    Outcome::Rejected { status: 0, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_two_seconds() {
        assert_eq!(reconnect_delay(0), Duration::from_millis(100));
        assert_eq!(reconnect_delay(3), Duration::from_millis(800));
        assert_eq!(reconnect_delay(50), MAX_RECONNECT_DELAY);
    }

    #[test]
    fn refused_credentials_are_told_apart_from_an_unreachable_server() {
        let auth = problem_of(
            &Event::ClientError(async_nats::ClientError::Other(
                "authorization violation".into(),
            )),
            None,
        );
        assert_eq!(auth.map(|p| p.0), Some(Unavailable::Auth));
        let io = problem_of(
            &Event::ClientError(async_nats::ClientError::Other("IO error".into())),
            None,
        );
        assert_eq!(
            io,
            Some((
                Unavailable::Disconnected,
                "cannot connect to NATS: IO error".into()
            ))
        );
        assert_eq!(problem_of(&Event::Connected, io.clone()), None);
        assert_eq!(problem_of(&Event::SlowConsumer(1), io.clone()), io);
    }

    #[test]
    fn a_missing_stream_waits_and_names_the_subject() {
        let o = classify(
            PublishErrorKind::StreamNotFound,
            "",
            "siphook.call.answered",
        );
        let Outcome::Unavailable { reason, error } = o else {
            panic!("{o:?}")
        };
        assert_eq!(reason, Unavailable::NoStream);
        assert!(error.contains("\"siphook.call.answered\""), "{error}");
        assert!(matches!(
            classify(PublishErrorKind::MaxPayloadExceeded, "too big", "s"),
            Outcome::Rejected { .. }
        ));
    }
}
