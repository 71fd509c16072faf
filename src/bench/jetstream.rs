//! `--nats URL`: the bench's receiver becomes a JetStream consumer. The bench
//! makes a stream of its own for the run (file storage, a duplicate window, as an
//! operator would), points the spawned siphook's endpoint at its subject, reads
//! every stored message with an ordered consumer into the same tally as the
//! webhooks, and deletes the stream afterwards. A latency is therefore "stored
//! message received by a consumer" minus "SIP message sent": an upper bound on
//! SIP-to-acknowledgement, since the stream delivers only what it has stored.

use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;

use super::BenchError;
use super::receiver::Recorder;

/// How long setting up or removing the stream may take.
const SETUP_WITHIN: Duration = Duration::from_secs(10);

/// The run's stream and its consumer.
pub(crate) struct Consumer {
    js: jetstream::Context,
    stream: String,
    /// The subject siphook's endpoint publishes on, with `{type}`.
    pub(crate) subject: String,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    /// Connects to `url` (loopback, checked by the caller), creates stream
    /// `SIPHOOK_BENCH_<run>` and starts consuming it into `recorder`.
    pub(crate) async fn start(
        url: &str,
        run: &str,
        recorder: Recorder,
    ) -> Result<Consumer, BenchError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            BenchError::Option(format!("--nats {url}: {what}: {e}"))
        };
        let setup = async {
            let client = async_nats::ConnectOptions::new()
                .name("siphook bench consumer")
                .connect(url)
                .await
                .map_err(|e| failed("cannot connect", &e))?;
            let js = jetstream::new(client);
            let stream = format!("SIPHOOK_BENCH_{run}");
            let prefix = format!("siphook-bench.{run}");
            let created = js
                .create_stream(jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![format!("{prefix}.>")],
                    storage: jetstream::stream::StorageType::File,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    failed(
                        "cannot create the run's stream (is JetStream on? nats-server -js)",
                        &e,
                    )
                })?;
            let consumer = created
                .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
                .await
                .map_err(|e| failed("cannot create a consumer", &e))?;
            let messages = consumer
                .messages()
                .await
                .map_err(|e| failed("cannot consume", &e))?;
            Ok::<_, BenchError>((js, stream, prefix, messages))
        };
        let (js, stream, prefix, mut messages) = tokio::time::timeout(SETUP_WITHIN, setup)
            .await
            .map_err(|_| BenchError::Timeout {
            what: "the bench's JetStream stream",
        })??;
        let task = tokio::spawn(async move {
            // Ends when the stream is deleted or the task aborted at the stop.
            while let Some(m) = messages.next().await {
                let Ok(m) = m else { continue };
                let headers = m.headers.as_ref();
                let get = |name: &str| {
                    headers
                        .and_then(|h| h.get(name))
                        .map(async_nats::HeaderValue::as_str)
                };
                recorder.record(get, &m.payload);
            }
        });
        Ok(Consumer {
            js,
            stream,
            subject: format!("{prefix}.{{type}}"),
            task,
        })
    }

    /// Stops consuming and deletes the run's stream.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = tokio::time::timeout(SETUP_WITHIN, self.js.delete_stream(&self.stream)).await;
    }
}
