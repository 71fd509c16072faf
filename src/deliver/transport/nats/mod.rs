//! NATS JetStream: one connection per endpoint (`connection.rs`), and one
//! publish per attempt, counted as delivered only when the stream acknowledges
//! it (`PubAck`). siphook never creates a stream: a subject no stream captures is
//! reported (log, `/readyz`, the endpoint's state) and its events wait in the
//! outbox.

mod connection;
mod encoder;

use std::sync::Arc;

use async_nats::ConnectOptions;
use async_nats::connection::State;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

use super::{Outcome, TransportError, Unavailable};
use crate::config::{EndpointConfig, NatsAuth, NatsTarget, Target};
use connection::{Problem, Shared};

/// JetStream's "message size exceeds maximum allowed": the event's fault.
const MESSAGE_TOO_LARGE: u64 = 10054;
/// "JetStream not enabled" (for the server, or the account): the operator's.
const NOT_ENABLED: [u64; 2] = [10076, 10039];

/// One endpoint's NATS connection, shared by its attempts.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl Publisher {
    /// Starts connecting to the target's servers in the background (it must run
    /// inside the tokio runtime). Settings a client refuses outright (a bad
    /// `.creds` file) are an error now; an unreachable server, refused
    /// credentials or a missing stream are reported by [`Publisher::standing`]
    /// and each attempt while the connection keeps trying.
    pub fn new(ep: &EndpointConfig, target: &NatsTarget) -> Result<Publisher, TransportError> {
        let broker_err = |reason: String| TransportError::Broker {
            endpoint: ep.name.clone(),
            reason,
        };
        let mut options = match &target.auth {
            Some(NatsAuth::Creds(text)) => ConnectOptions::with_credentials(&text.0)
                .map_err(|e| broker_err(format!("creds_file: {}", e.kind())))?,
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
        let mut subjects: Vec<String> = crate::vocab::EVENT_TYPES
            .iter()
            .filter(|t| ep.events.iter().any(|g| crate::config::glob_match(g, t)))
            .map(|t| target.subject_for(t))
            .collect();
        subjects.dedup();
        let shared = Arc::new(Shared::new(&ep.name, subjects, &target.servers));
        let servers: Vec<async_nats::ServerAddr> = target
            .servers
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        if servers.is_empty() {
            return Err(broker_err("no usable server address".into()));
        }
        // The callback starts over when async-nats gives up reconnecting, so it
        // needs the options it is part of: they are handed to it once built.
        let again: connection::Restart = Arc::default();
        let (events, restart) = (Arc::downgrade(&shared), again.clone());
        let options = options
            .name(format!("siphook/{}", ep.name))
            .max_reconnects(connection::MAX_RECONNECTS)
            .connection_timeout(ep.timeout)
            .reconnect_delay_callback(connection::reconnect_delay)
            .tls_client_config(tls)
            .require_tls(wants_tls)
            .event_callback(move |event| {
                let (events, restart) = (events.clone(), restart.clone());
                async move {
                    if event
                        == async_nats::Event::ClientError(async_nats::ClientError::MaxReconnects)
                    {
                        connection::restart(&events, &restart);
                    }
                    connection::on_event(&events, &event);
                }
            });
        *again.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((options.clone(), servers.clone(), ep.timeout));
        tokio::spawn(connection::run(
            options,
            servers,
            ep.timeout,
            Arc::downgrade(&shared),
        ));
        Ok(Publisher { shared })
    }

    /// A problem only an operator can fix, known without an attempt (refused
    /// credentials, no stream for the subject): an idle endpoint shows it too.
    /// `Some(None)` when the connection is known to be fine; `None` when unknown.
    pub fn standing(&self) -> Option<Option<Problem>> {
        match self.shared.problem() {
            Some(p) if p.0.needs_operator() => Some(Some(p)),
            Some(_) => None,
            None => Some(None),
        }
    }

    /// Publishes one event and waits for the stream's acknowledgement.
    pub async fn attempt(
        &self,
        ep: &EndpointConfig,
        event_id: &str,
        event_json: &Bytes,
        now_unix: i64,
    ) -> Outcome {
        let Target::Nats(target) = &ep.target else {
            return Outcome::rejected("not a NATS endpoint".into());
        };
        let Some((client, js)) = self.shared.client() else {
            return unavailable(self.shared.problem());
        };
        if client.connection_state() != State::Connected {
            // Publishing now would only queue in the client and time out: the
            // event waits in the outbox instead.
            return unavailable(self.shared.problem());
        }
        let m = match encoder::message(ep, target, event_id, event_json, now_unix) {
            Ok(m) => m,
            Err(e) => return Outcome::rejected(e),
        };
        let publish = PublishMessage::build()
            .payload(m.payload)
            .headers(m.headers);
        let exchange = async { js.send_publish(m.subject.clone(), publish).await?.await };
        let timed_out = || {
            // A server that denies the subject says so only on the connection.
            match self.shared.problem() {
                Some(p) if p.0 == Unavailable::Auth => unavailable(Some(p)),
                _ => Outcome::Unavailable {
                    reason: Unavailable::Timeout,
                    error: format!(
                        "no JetStream acknowledgement within {}",
                        humantime::format_duration(ep.timeout)
                    ),
                },
            }
        };
        match tokio::time::timeout(ep.timeout, exchange).await {
            Err(_) => timed_out(),
            Ok(Ok(_ack)) => {
                self.shared.acknowledged();
                Outcome::Delivered { status: 200 }
            }
            Ok(Err(e)) if e.kind() == PublishErrorKind::TimedOut => timed_out(),
            Ok(Err(e)) => {
                let o = classify(&e, &m.subject);
                if let Outcome::Unavailable { reason, error } = &o
                    && reason.needs_operator()
                {
                    self.shared.set_problem(Some((*reason, error.clone())));
                }
                o
            }
        }
    }
}

/// A JetStream publish error in siphook's terms: the broker's state (wait) or
/// the event's fault (dead letter).
fn classify(e: &PublishError, subject: &str) -> Outcome {
    let unavailable = |reason, error| Outcome::Unavailable { reason, error };
    match e.kind() {
        PublishErrorKind::StreamNotFound => {
            let (reason, error) = connection::no_stream(subject);
            unavailable(reason, error)
        }
        PublishErrorKind::TimedOut | PublishErrorKind::MaxAckPending => {
            unavailable(Unavailable::Timeout, format!("JetStream: {e}"))
        }
        PublishErrorKind::BrokenPipe => {
            unavailable(Unavailable::Disconnected, format!("JetStream: {e}"))
        }
        PublishErrorKind::MaxPayloadExceeded => Outcome::rejected(format!("JetStream: {e}")),
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::Other => match api_error(e) {
            // The stream refuses this one message: no retry can help.
            Some((code, text)) if code == MESSAGE_TOO_LARGE => {
                Outcome::rejected(format!("JetStream: {text}"))
            }
            Some((code, text)) if NOT_ENABLED.contains(&code) => unavailable(
                Unavailable::NoStream,
                format!(
                    "JetStream: {text}: enable JetStream (nats-server -js) for siphook's account"
                ),
            ),
            // The stream cannot take anything now (full with discard=new, out of
            // resources, no quorum): the event waits, it is not at fault.
            Some((_, text)) => unavailable(
                Unavailable::Refused,
                format!("JetStream refuses new messages now: {text}"),
            ),
            None => Outcome::Retry {
                status: None,
                error: format!("JetStream: {e}"),
                retry_after: None,
            },
        },
    }
}

/// The JetStream API error (code and description) behind a publish error.
fn api_error(e: &PublishError) -> Option<(u64, String)> {
    let source = std::error::Error::source(e)?;
    let api = source.downcast_ref::<async_nats::jetstream::Error>()?;
    Some((api.error_code().0, api.to_string()))
}

fn unavailable(problem: Option<Problem>) -> Outcome {
    let (reason, error) =
        problem.unwrap_or((Unavailable::Disconnected, "not connected to NATS".into()));
    Outcome::Unavailable { reason, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_stream_waits_and_names_the_subject() {
        let o = classify(
            &PublishError::new(PublishErrorKind::StreamNotFound),
            "siphook.call.answered",
        );
        let Outcome::Unavailable { reason, error } = o else {
            panic!("{o:?}")
        };
        assert_eq!(reason, Unavailable::NoStream);
        assert!(error.contains("\"siphook.call.answered\""), "{error}");
        assert!(matches!(
            classify(
                &PublishError::new(PublishErrorKind::MaxPayloadExceeded),
                "s"
            ),
            Outcome::Rejected { .. }
        ));
        assert!(matches!(
            classify(&PublishError::new(PublishErrorKind::Other), "s"),
            Outcome::Retry { .. }
        ));
    }
}
