//! `--kafka mock|URL`: the bench's receiver becomes a Kafka consumer. With
//! `mock` the bench starts librdkafka's mock cluster in this process (it speaks
//! the Kafka protocol on loopback), makes the run's topic on it, and consumes it
//! from the start of every partition into the same tally as the webhooks. With a
//! URL the topic must exist already (`siphook-bench`, 4 partitions): the bench
//! does not administer a real cluster. A latency is "record consumed" minus "SIP
//! message sent": an upper bound on SIP-to-delivery-report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::BenchError;
use super::receiver::Recorder;

/// Partitions of the run's topic: calls spread over them by key.
const PARTITIONS: i32 = 4;
/// The topic on a real cluster, which the operator creates.
pub(crate) const REAL_TOPIC: &str = "siphook-bench";

/// The run's cluster (when mocked), topic and consumer.
pub(crate) struct Consumer {
    /// Kept alive for the run: dropping it stops the mock brokers.
    _mock: Option<MockCluster<'static, DefaultProducerContext>>,
    /// `kafka://` bootstrap URL for the spawned siphook.
    pub(crate) url: String,
    /// The topic siphook's endpoint produces to.
    pub(crate) topic: String,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Consumer {
    /// Starts the mock cluster (`spec` = `mock`) or uses `spec` as the
    /// cluster's `kafka://` URL (loopback, checked by the caller), and starts
    /// consuming into `recorder`.
    pub(crate) fn start(spec: &str, run: &str, recorder: Recorder) -> Result<Consumer, BenchError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            BenchError::Option(format!("--kafka {spec}: {what}: {e}"))
        };
        let (mock, bootstrap, topic) = if spec == "mock" {
            let mock =
                MockCluster::new(1).map_err(|e| failed("cannot start the mock cluster", &e))?;
            let topic = format!("siphook-bench-{run}");
            mock.create_topic(&topic, PARTITIONS, 1)
                .map_err(|e| failed("cannot create the run's topic", &e))?;
            let bootstrap = mock.bootstrap_servers();
            (Some(mock), bootstrap, topic)
        } else {
            let bootstrap = spec.trim_start_matches("kafka://").to_owned();
            (None, bootstrap, REAL_TOPIC.to_owned())
        };
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("siphook-bench-{run}"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "1")
            .create()
            .map_err(|e| failed("cannot create a consumer", &e))?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            // A real topic may hold earlier runs: only what comes from now on.
            let from = if mock.is_some() {
                Offset::Beginning
            } else {
                Offset::End
            };
            tpl.add_partition_offset(&topic, p, from)
                .map_err(|e| failed("cannot assign the topic", &e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| failed("cannot assign the topic", &e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-kafka".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                        continue;
                    };
                    let headers = m.headers();
                    let get = |name: &str| {
                        let h = headers?;
                        (0..h.count())
                            .map(|i| h.get(i))
                            .find(|x| x.key == name)
                            .and_then(|x| std::str::from_utf8(x.value?).ok())
                    };
                    recorder.record(get, m.payload().unwrap_or_default());
                }
            })
            .map_err(BenchError::Runtime)?;
        Ok(Consumer {
            _mock: mock,
            url: format!("kafka://{bootstrap}"),
            topic,
            stop,
            thread,
        })
    }

    /// Stops consuming (and the mock cluster with it).
    pub(crate) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}
