//! Kafka: one idempotent producer per endpoint (librdkafka, `acks=all`), one
//! record per attempt, counted as delivered when the delivery report says every
//! in-sync replica has it. The record key is the call's id, so one call's events
//! share a partition and keep their order there; the dispatcher sends a call's
//! next event only after the report for the one before. siphook creates no
//! topic: a missing one is reported like a missing JetStream stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::{Outcome, TransportError, Unavailable};
use crate::config::{EndpointConfig, KafkaTarget, Target};
use crate::deliver::encode::{encode, routing, webhook_headers};

/// One endpoint's producer, shared by its attempts.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: String,
    config: ClientConfig,
    /// librdkafka's last error ("1/1 brokers are down"), for an attempt's error.
    last_error: Arc<Mutex<Option<String>>>,
    /// The producer in use, replaced after a fatal error (an idempotent
    /// producer that lost its sequence state refuses everything after it).
    current: Mutex<Arc<Slot>>,
}

/// A producer that is dropped off the async runtime: librdkafka's destroy
/// flushes and joins its threads, which must not block a tokio worker.
struct Slot(Option<FutureProducer<Context>>);

/// What librdkafka says, said through siphook's log: its errors at warn, at
/// most one line every [`LOG_EVERY`] (a cluster that is down makes it repeat
/// itself several times a second), and the last one kept for the attempts.
struct Context {
    endpoint: String,
    last_error: Arc<Mutex<Option<String>>>,
    limit: Mutex<crate::metrics::RateLog>,
}

/// At most one librdkafka line per endpoint this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Context {
    fn note(&self, text: String) {
        let allowed = self.limit.lock().unwrap_or_else(|e| e.into_inner()).allow();
        if let Some(suppressed) = allowed {
            tracing::warn!(endpoint = %self.endpoint, suppressed, "Kafka: {text}");
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => self.note(format!("{fac}: {message}")),
            _ => tracing::debug!(endpoint = %self.endpoint, "librdkafka {fac}: {message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.note(format!("{error}: {reason}"));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(p) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(move || drop(p));
            }
            Err(_) => drop(p),
        }
    }
}

impl Producer {
    /// Builds the producer; librdkafka connects to the brokers in its own
    /// threads, so a cluster that is down never stops siphook from starting.
    pub fn new(ep: &EndpointConfig, target: &KafkaTarget) -> Result<Producer, TransportError> {
        let config = producer_config(ep, target);
        let last_error = Arc::default();
        let producer = create(&ep.name, &config, &last_error)?;
        Ok(Producer {
            inner: Arc::new(Inner {
                endpoint: ep.name.clone(),
                config,
                last_error,
                current: Mutex::new(Arc::new(Slot(Some(producer)))),
            }),
        })
    }
}

fn create(
    endpoint: &str,
    config: &ClientConfig,
    last_error: &Arc<Mutex<Option<String>>>,
) -> Result<FutureProducer<Context>, TransportError> {
    let context = Context {
        endpoint: endpoint.to_owned(),
        last_error: last_error.clone(),
        limit: Mutex::new(crate::metrics::RateLog::new(LOG_EVERY)),
    };
    config
        .create_with_context::<_, FutureProducer<Context>>(context)
        .map_err(|e| TransportError::Broker {
            endpoint: endpoint.to_owned(),
            reason: format!("Kafka producer: {e}"),
        })
}

/// The producer's settings (no secret is among them: plaintext only for now).
fn producer_config(ep: &EndpointConfig, target: &KafkaTarget) -> ClientConfig {
    let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128).to_string();
    // A request that times out is retried by librdkafka within the attempt
    // (the idempotent producer makes that safe), so it gets half of it.
    let (timeout_ms, request_ms) = (
        ms(ep.timeout),
        ms((ep.timeout / 2).max(Duration::from_millis(500))),
    );
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", target.brokers.join(","))
        .set("client.id", format!("siphook/{}", ep.name))
        // Retries inside librdkafka never duplicate or reorder a record.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The attempt's deadline: the dispatcher decides what happens after.
        .set("message.timeout.ms", &timeout_ms)
        .set("request.timeout.ms", &request_ms)
        // An event goes out at once; batching is the outbox's job.
        .set("linger.ms", "0")
        // A missing topic is the operator's to create, and is told within a
        // second rather than after librdkafka's 30 s default.
        .set("allow.auto.create.topics", "false")
        .set("topic.metadata.propagation.max.ms", "1000")
        .set("log_level", "3");
    config
}

impl Producer {
    /// Produces one event and waits for its delivery report.
    pub async fn attempt(
        &self,
        ep: &EndpointConfig,
        event_id: &str,
        event_json: &Bytes,
        now_unix: i64,
    ) -> Outcome {
        let Target::Kafka(target) = &ep.target else {
            return Outcome::rejected("not a Kafka endpoint".into());
        };
        let prepared =
            routing(event_json).and_then(|r| Ok((r, encode(ep, event_id, event_json, now_unix)?)));
        let (route, e) = match prepared {
            Ok(p) => p,
            Err(e) => return Outcome::rejected(e),
        };
        let mut headers = OwnedHeaders::new_with_capacity(5 + ep.headers.len());
        for (k, v) in &ep.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.0.as_bytes()),
            });
        }
        for (k, v) in webhook_headers(&e) {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let record = FutureRecord::to(&target.topic)
            .key(route.key.as_bytes())
            .payload(&e.body[..])
            .headers(headers);
        let slot = self
            .inner
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(producer) = slot.0.as_ref() else {
            return self.timed_out(ep.timeout);
        };
        // librdkafka bounds the wait for room in its queue (`timeout`) and then
        // the report (message.timeout.ms); this outer bound only catches a hang.
        let send = producer.send(record, Timeout::After(ep.timeout));
        match tokio::time::timeout(ep.timeout * 2 + Duration::from_secs(1), send).await {
            Err(_) => self.timed_out(ep.timeout),
            Ok(Ok(_delivery)) => {
                // What librdkafka said before no longer explains anything.
                *self
                    .inner
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                Outcome::Delivered { status: 200 }
            }
            Ok(Err((e, _))) => {
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                    self.replace(&slot);
                }
                match classify(&e, &target.topic, ep.timeout) {
                    Outcome::Unavailable {
                        reason: Unavailable::Timeout,
                        ..
                    } => self.timed_out(ep.timeout),
                    o => o,
                }
            }
        }
    }
}

impl Producer {
    /// No report in time, with what librdkafka last said about why.
    fn timed_out(&self, timeout: Duration) -> Outcome {
        let last = self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (timed_out(timeout), last) {
            (Outcome::Unavailable { reason, error }, Some(why)) => Outcome::Unavailable {
                reason,
                error: format!("{error} (librdkafka: {why})"),
            },
            (o, _) => o,
        }
    }

    /// After a fatal error the producer refuses every record: a new one takes
    /// its place (once, however many attempts saw the error).
    fn replace(&self, failed: &Arc<Slot>) {
        let mut current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match create(
            &self.inner.endpoint,
            &self.inner.config,
            &self.inner.last_error,
        ) {
            Ok(p) => {
                tracing::warn!(endpoint = %self.inner.endpoint, "Kafka producer hit a fatal error; a new producer takes its place");
                *current = Arc::new(Slot(Some(p)));
            }
            Err(e) => {
                tracing::error!(endpoint = %self.inner.endpoint, error = %e, "cannot replace the Kafka producer after a fatal error")
            }
        }
    }
}

/// A producer error in siphook's terms: the cluster's state (wait) or the
/// record's fault (dead letter).
fn classify(e: &KafkaError, topic: &str, timeout: Duration) -> Outcome {
    use RDKafkaErrorCode as C;
    let unavailable = |reason, error: String| Outcome::Unavailable { reason, error };
    let Some(code) = e.rdkafka_error_code() else {
        return Outcome::Retry {
            status: None,
            error: format!("Kafka: {e}"),
            retry_after: None,
        };
    };
    match code {
        C::MessageTimedOut | C::QueueFull | C::RequestTimedOut => timed_out(timeout),
        C::UnknownTopicOrPartition | C::UnknownTopic => unavailable(
            Unavailable::NoStream,
            format!(
                "Kafka topic \"{topic}\" does not exist; siphook does not create topics: create it (kafka-topics --create --topic {topic})"
            ),
        ),
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication => unavailable(
            Unavailable::Auth,
            format!("the Kafka cluster refused siphook: {code}"),
        ),
        C::AllBrokersDown | C::BrokerTransportFailure | C::BrokerNotAvailable => unavailable(
            Unavailable::Disconnected,
            format!("cannot reach the Kafka cluster: {code}"),
        ),
        // The cluster answers but cannot take records now; the record is not at
        // fault, and a fatal error is answered with a new producer.
        C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::KafkaStorageError
        | C::NetworkException
        | C::Fatal => unavailable(
            Unavailable::Refused,
            format!("the Kafka cluster cannot take records now: {code}"),
        ),
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::InvalidRecord => {
            Outcome::rejected(format!("Kafka refused the record: {code}"))
        }
        _ => Outcome::Retry {
            status: None,
            error: format!("Kafka: {code}"),
            retry_after: None,
        },
    }
}

fn timed_out(timeout: Duration) -> Outcome {
    Outcome::Unavailable {
        reason: Unavailable::Timeout,
        error: format!(
            "no Kafka delivery report within {}: the cluster is unreachable or slow",
            humantime::format_duration(timeout)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_wait_or_dead_letter_by_whose_fault_they_are() {
        let t = Duration::from_secs(2);
        let produce = |c| KafkaError::MessageProduction(c);
        let reason = |o: Outcome| match o {
            Outcome::Unavailable { reason, .. } => Some(reason),
            _ => None,
        };
        assert_eq!(
            reason(classify(
                &produce(RDKafkaErrorCode::MessageTimedOut),
                "t",
                t
            )),
            Some(Unavailable::Timeout)
        );
        assert_eq!(
            reason(classify(
                &produce(RDKafkaErrorCode::UnknownTopicOrPartition),
                "t",
                t
            )),
            Some(Unavailable::NoStream)
        );
        assert_eq!(
            reason(classify(&produce(RDKafkaErrorCode::AllBrokersDown), "t", t)),
            Some(Unavailable::Disconnected)
        );
        assert!(matches!(
            classify(&produce(RDKafkaErrorCode::MessageSizeTooLarge), "t", t),
            Outcome::Rejected { .. }
        ));
        assert_eq!(
            reason(classify(
                &produce(RDKafkaErrorCode::NotEnoughReplicas),
                "t",
                t
            )),
            Some(Unavailable::Refused)
        );
        assert!(matches!(
            classify(&produce(RDKafkaErrorCode::InvalidRequiredAcks), "t", t),
            Outcome::Retry { .. }
        ));
    }
}
