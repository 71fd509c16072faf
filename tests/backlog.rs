//! A restart with a backlog larger than one load page: the dispatcher reads it a
//! page at a time between deliveries, and per-call order must hold across pages
//! and for events the writer commits while the backlog is still being read.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;

use common::receiver::Receiver;
use siphook::call::Event;
use siphook::config::Config;
use siphook::deliver::{Delivery, EndpointCommand, open_outbox};
use siphook::metrics::Metrics;
use siphook::outbox::DeliveryState;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Several load pages (4,096 each) of the dispatcher.
const BACKLOG: usize = 20_000;

fn template() -> Event {
    common::initiated_event("backlog")
}

/// An outbox in `dir` and one endpoint, `test`, delivering to `rx`.
fn config(dir: &tempfile::TempDir, rx: &Receiver) -> Config {
    let text = format!(
        "[sip]\nudp = []\ntcp = []\n[outbox]\npath = \"{}\"\n[[endpoints]]\nname = \"test\"\nurl = \"{}\"\nallow_http = true\nsecrets = [\"{SECRET}\"]\n",
        dir.path().join("outbox").display(),
        rx.url()
    );
    Config::parse(&text).unwrap()
}

/// Event `sequence` of call `call` (a distinct id for each pair).
/// Starts delivery on the store a previous run left, with `waiting` already in
/// the writer's queue; the sender keeps the queue open.
async fn restart(config: &Config, waiting: Vec<Event>) -> (mpsc::Sender<Event>, Delivery) {
    let (tx, events) = mpsc::channel(16);
    for e in waiting {
        tx.send(e).await.unwrap();
    }
    let outbox = open_outbox(config).unwrap();
    let delivery = Delivery::start(config, outbox, events, None, Metrics::new()).unwrap();
    (tx, delivery)
}

fn event(template: &Event, call: usize, sequence: u32) -> Event {
    let mut e = template.clone();
    e.call.id = format!("call_{call:016x}{:048x}", 0);
    e.id = format!("evt_{call:032x}{sequence:032x}");
    e.sequence = sequence;
    e
}

#[tokio::test]
async fn a_backlog_of_several_pages_goes_out_once_in_call_order_with_new_events_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::ok().await;
    let config = config(&dir, &rx);
    let t = template();

    // Call 0 has events spread over the pages; every other event is a call of its own.
    let spread = [0, BACKLOG / 2, BACKLOG - 1];
    {
        let outbox = open_outbox(&config).unwrap();
        let mut filler = 1;
        for offset in 0..BACKLOG {
            let e = match spread.iter().position(|&o| o == offset) {
                Some(i) => event(&t, 0, i as u32 + 1),
                None => {
                    filler += 1;
                    event(&t, filler, 1)
                }
            };
            outbox.append(&e, &e.to_json(), &["test"], 0).unwrap();
        }
        outbox.commit().await.unwrap();
    }

    // The restart, with a new event of call 0 already waiting for the writer: once
    // committed it must still wait for the three older ones, two of which sit on
    // pages not read yet.
    let (tx, delivery) = restart(&config, vec![event(&t, 0, 4)]).await;

    let mut ids = HashSet::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut call0 = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while ids.len() < BACKLOG + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} delivered",
            ids.len(),
            BACKLOG + 1
        );
        let req = rx.next().await;
        let body = req.json();
        assert!(
            ids.insert(req.header("webhook-id").to_owned()),
            "delivered once"
        );
        let call = body["call"]["id"].as_str().unwrap().to_owned();
        let seq = body["sequence"].as_u64().unwrap();
        let prev = last_seq.insert(call.clone(), seq).unwrap_or(0);
        assert!(seq > prev, "call {call}: sequence {seq} after {prev}");
        if call == event(&t, 0, 1).call.id {
            call0.push(seq);
        }
    }
    assert_eq!(call0, vec![1, 2, 3, 4]);
    drop(tx);
    delivery.shutdown().await.unwrap();
}

/// A dead letter the operator replays while the backlog still loads must wait for
/// its call's older pending events, even those on pages not read yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_while_the_backlog_loads_stays_behind_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::ok().await;
    let config = config(&dir, &rx);
    let t = template();
    // Call 0's first event is pending behind a large backlog; its second is a dead
    // letter (say both failed, and only the first was replayed before a restart).
    let dead;
    {
        let outbox = open_outbox(&config).unwrap();
        for i in 0..BACKLOG {
            let e = event(&t, i + 1, 1);
            outbox.append(&e, &e.to_json(), &["test"], 0).unwrap();
        }
        let first = event(&t, 0, 1);
        outbox
            .append(&first, &first.to_json(), &["test"], 0)
            .unwrap();
        let second = event(&t, 0, 2);
        dead = outbox
            .append(&second, &second.to_json(), &["test"], 0)
            .unwrap();
        let state = DeliveryState {
            attempts: 3,
            ..Default::default()
        };
        outbox.dead_letter("test", dead, &state).unwrap();
        outbox.commit().await.unwrap();
    }
    let (tx, delivery) = restart(&config, Vec::new()).await;
    let commands = delivery.endpoints().borrow()["test"].clone();
    let (reply, replied) = tokio::sync::oneshot::channel();
    commands
        .send(EndpointCommand::Replay {
            offsets: vec![dead],
            reply,
        })
        .await
        .unwrap();
    assert_eq!(replied.await.unwrap(), vec![dead]);

    let call0 = event(&t, 0, 1).call.id;
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for _ in 0..BACKLOG + 2 {
        assert!(tokio::time::Instant::now() < deadline, "delivered in time");
        let body = rx.next().await.json();
        if body["call"]["id"] == call0.as_str() {
            seqs.push(body["sequence"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, vec![1, 2]);
    drop(tx);
    delivery.shutdown().await.unwrap();
}
