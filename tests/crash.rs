//! Crash safety with the real binary: SIGKILL siphook while calls are up and
//! deliveries are backed up, start it again on the same data directory, and every
//! committed event still arrives (duplicates only with the same `webhook-id`),
//! and the calls that were up complete with the right sequence and durations.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::process::Siphook;
use common::receiver::{Receiver, Reply};
use common::{CallSpec, ms};
use serde_json::Value;
use tokio::net::UdpSocket;

/// Sends a fresh INVITE until siphook has committed it: proves it is listening.
async fn wait_ready(s: &mut Siphook, sock: &UdpSocket, target: &str, name: &str) {
    let before = s.wait_ready(sock, target, name).await;
    assert!(before.is_empty(), "committed before the probe: {before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_committed_event_and_calls_survive_the_restart() {
    const CALLS: usize = 40;
    // A slow receiver keeps a backlog of committed, undelivered events at the kill.
    let mut rx = Receiver::start(Arc::new(|_| Reply {
        status: 200,
        headers: vec![],
        delay: Duration::from_millis(15),
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (config, target) = common::binary_config(
        dir.path(),
        &rx.url(),
        "max_in_flight = 2\nretry_schedule = [\"0s\", \"50ms\", \"50ms\", \"50ms\", \"50ms\"]",
    );
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let calls: Vec<CallSpec> = (0..CALLS)
        .map(|i| CallSpec::new(&format!("crash-{i}")))
        .collect();

    let mut first = Siphook::spawn(&config);
    wait_ready(&mut first, &sock, &target, "probe-1").await;
    for c in &calls {
        for m in [
            c.invite(1),
            c.resp(180, 1, "INVITE", Some("b")),
            c.resp(200, 1, "INVITE", Some("b")),
            c.ack(1, "b"),
        ] {
            sock.send_to(m.as_bytes(), &target).await.unwrap();
        }
    }
    // Every call's answered event is committed before the kill.
    let mut before: HashMap<(String, u64), Value> = HashMap::new();
    while before.len() < CALLS * 3 {
        let v = first.next_committed().await;
        if v["call"]["sip_call_id"]
            .as_str()
            .unwrap()
            .starts_with("crash-")
        {
            before.insert(
                (
                    v["call"]["sip_call_id"].as_str().unwrap().to_owned(),
                    v["sequence"].as_u64().unwrap(),
                ),
                v,
            );
        }
    }
    first.child.start_kill().unwrap(); // SIGKILL
    first.child.wait().await.unwrap();
    // What the receiver already got counts: those deliveries may have completed.
    let mut early = Vec::new();
    while let Ok(req) = rx.requests.try_recv() {
        early.push(req);
    }
    let delivered_before_kill = early.len();
    assert!(
        delivered_before_kill < CALLS * 3,
        "the kill must leave a backlog (delivered {delivered_before_kill})"
    );

    let mut second = Siphook::spawn(&config);
    wait_ready(&mut second, &sock, &target, "probe-2").await;
    for c in &calls {
        sock.send_to(c.bye(2, "b").as_bytes(), &target)
            .await
            .unwrap();
    }

    // Everything committed before the kill, and every completion after it, arrives.
    let mut ids: HashMap<(String, u64), String> = HashMap::new();
    let mut got: HashMap<(String, u64), Value> = HashMap::new();
    let mut early = early.into_iter();
    while got.keys().filter(|(c, _)| c.starts_with("crash-")).count() < CALLS * 4 {
        let req = match early.next() {
            Some(r) => r,
            None => rx.next().await,
        };
        let v = req.json();
        let key = (
            v["call"]["sip_call_id"].as_str().unwrap().to_owned(),
            v["sequence"].as_u64().unwrap(),
        );
        let id = req.header("webhook-id").to_owned();
        assert_eq!(
            ids.entry(key.clone()).or_insert_with(|| id.clone()),
            &id,
            "a duplicate must carry the same webhook-id"
        );
        got.insert(key, v);
    }
    for c in &calls {
        let answered = &before[&(c.call_id.clone(), 3)];
        let done = &got[&(c.call_id.clone(), 4)];
        assert_eq!(done["type"], "call.completed");
        assert_eq!(done["call"]["answered_at"], answered["call"]["answered_at"]);
        let talk = ms(&done["call"]["ended_at"]) - ms(&done["call"]["answered_at"]);
        assert_eq!(done["data"]["talk_ms"], talk);
        assert!(talk > 0);
        assert_eq!(done["data"]["disposition"], "answered");
    }
    let _ = second.child.start_kill();
}
