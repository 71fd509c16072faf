//! `kafka://` endpoints against librdkafka's mock cluster (it speaks the Kafka
//! protocol on loopback sockets): records keyed by call, in per-call order, once,
//! with the webhook's headers; a produce error and a cluster outage recover with
//! nothing lost or duplicated; a missing topic is reported and waited for.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use common::admin::{request, start, wait_metric};
use common::{DEADLINE, FOUR, hmac_sha256};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, TopicPartitionList};
use serde_json::Value;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOPIC: &str = "siphook-calls";

fn kafka_endpoint(bootstrap: &str) -> String {
    format!(
        "[[endpoints]]\nname = \"bus\"\nurl = \"kafka://{bootstrap}\"\ntopic = \"{TOPIC}\"\nevents = [\"call.*\"]\nsecrets = [\"{SECRET}\"]\ntimeout = \"4s\"\ncircuit_probe_interval = \"200ms\"\n"
    )
}

/// One consumed record.
struct Record {
    partition: i32,
    key: String,
    event: Value,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Reads the topic from the start of its partitions until `n` records came,
/// then a little longer to see that no more do.
fn consume(bootstrap: &str, partitions: i32, n: usize) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "siphook-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(TOPIC, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let mut quiet_from = None;
    while started.elapsed() < DEADLINE {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                let v = x.value.map(|v| String::from_utf8_lossy(v).into_owned());
                                (x.key.to_owned(), v.unwrap_or_default())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let body = m.payload().unwrap_or_default().to_vec();
                out.push(Record {
                    partition: m.partition(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    event: serde_json::from_slice(&body).expect("the payload is the event"),
                    headers,
                    body,
                });
            }
            Some(Err(e)) => panic!("consumer: {e}"),
            None => {}
        }
        if out.len() >= n {
            let since = *quiet_from.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > Duration::from_millis(500) {
                return out;
            }
        }
    }
    panic!("consumed {} records, wanted {n}", out.len());
}

/// Every call's event types in the order its partition holds them, and that one
/// call stays in one partition.
fn by_call(records: &[Record]) -> BTreeMap<String, Vec<&str>> {
    let mut calls: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut partition_of: BTreeMap<&str, i32> = BTreeMap::new();
    for r in records {
        let call = r.event["call"]["id"].as_str().unwrap();
        assert_eq!(r.key, call, "the record key is call.id");
        let p = *partition_of.entry(call).or_insert(r.partition);
        assert_eq!(p, r.partition, "call {call} spans partitions");
        calls
            .entry(call.to_owned())
            .or_default()
            .push(r.event["type"].as_str().unwrap());
    }
    calls
}

fn assert_once_each(records: &[Record]) {
    let mut ids: Vec<&str> = records
        .iter()
        .map(|r| r.headers["webhook-id"].as_str())
        .collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "a record is in the topic twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_keyed_by_call_in_order_once_and_signed() {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic(TOPIC, 3, 3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let s = start(&kafka_endpoint(&bootstrap), true).await;
    s.send_calls(&["kafka-1", "kafka-2", "kafka-3", "kafka-4"])
        .await;
    let delivered = [("endpoint", "bus"), ("outcome", "delivered")];
    wait_metric(s.admin(), "siphook_deliveries_total", &delivered, 16.0).await;
    let b = bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || consume(&b, 3, 16))
        .await
        .unwrap();
    assert_eq!(records.len(), 16);
    assert_once_each(&records);
    let calls = by_call(&records);
    assert_eq!(calls.len(), 4);
    for (call, kinds) in &calls {
        assert_eq!(kinds, &FOUR, "call {call} out of order");
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    for r in &records {
        assert_eq!(r.headers["webhook-id"], r.event["id"].as_str().unwrap());
        assert_eq!(r.headers["content-type"], "application/json");
        common::assert_valid(&r.event);
        let signed = [
            r.headers["webhook-id"].as_bytes(),
            b".",
            r.headers["webhook-timestamp"].as_bytes(),
            b".",
            &r.body,
        ]
        .concat();
        let want = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, &signed))
        );
        assert_eq!(r.headers["webhook-signature"], want);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_and_a_cluster_outage_lose_and_duplicate_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic(TOPIC, 1, 3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let s = start(&kafka_endpoint(&bootstrap), true).await;

    // Retriable produce errors: librdkafka retries them inside the attempt, and
    // every event arrives once, in order. (The mock cluster refuses these
    // without appending, so this shows the retry path, not the broker's
    // deduplication of an appended retry, which the idempotent producer's
    // sequence numbers give on a real cluster.)
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND; 6],
    );
    s.send_calls(&["flaky-1", "flaky-2"]).await;
    let delivered = [("endpoint", "bus"), ("outcome", "delivered")];
    wait_metric(s.admin(), "siphook_deliveries_total", &delivered, 8.0).await;

    // The whole cluster away: events wait, keeping their attempts.
    for b in 1..=3 {
        mock.broker_down(b).unwrap();
    }
    s.send_calls(&["outage-1"]).await;
    wait_metric(
        s.admin(),
        "siphook_deliveries_total",
        &[("endpoint", "bus"), ("outcome", "unavailable")],
        1.0,
    )
    .await;
    let ep = s.endpoint("bus").await;
    assert_eq!(
        (ep["pending"].as_u64(), ep["dead_letters"].as_u64()),
        (Some(4), Some(0))
    );
    for b in 1..=3 {
        mock.broker_up(b).unwrap();
    }
    s.wait_endpoint("bus", "healthy", 0).await;

    let b = bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || consume(&b, 1, 12))
        .await
        .unwrap();
    assert_eq!(records.len(), 12, "every event once");
    assert_once_each(&records);
    for (call, kinds) in &by_call(&records) {
        assert_eq!(kinds, &FOUR, "call {call} out of order");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_reported_and_its_events_wait_for_it() {
    let mock = MockCluster::new(1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let s = start(&kafka_endpoint(&bootstrap), true).await;
    s.send_calls(&["notopic-1"]).await;
    let ep = s.wait_endpoint("bus", "misconfigured", 4).await;
    let error = ep["last_error"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Kafka topic \"siphook-calls\" does not exist"),
        "{error}"
    );
    let ready = request(s.admin(), "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json()["misconfigured_endpoints"],
        serde_json::json!(["bus"])
    );

    mock.create_topic(TOPIC, 1, 1).unwrap();
    s.wait_endpoint("bus", "healthy", 0).await;
    let b = bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || consume(&b, 1, 4))
        .await
        .unwrap();
    assert_eq!(
        by_call(&records).into_values().collect::<Vec<_>>(),
        vec![FOUR.to_vec()]
    );
    s.stop().await;
}
