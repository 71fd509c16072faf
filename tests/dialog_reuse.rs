//! A call that reuses an ended call's Call-ID and From tag gets ids of its own,
//! the same in every instance fed the same traffic; a late copy of the ended
//! call's INVITE starts nothing; a call that reuses nothing keeps today's ids.

mod common;

use common::FOUR;

use common::timeline::{feed_until, tracker};
use common::{CallSpec, Harness, types};
use serde_json::Value;
use siphook::call::Tracker;

/// Feeds the timeline, timers included, up to its last message.
fn feed(t: &mut Tracker, msgs: &[(i64, String)]) -> Vec<Value> {
    let until = msgs.last().map_or(0, |(at, _)| *at);
    feed_until(t, msgs, until)
}

/// An answered call from `at`: INVITE (CSeq `cseq`, top Via branch `branch`),
/// 180, 200, ACK, and a BYE answered 200 ten seconds in.
fn call_at(call: &CallSpec, at: i64, cseq: u32, branch: &str) -> Vec<(i64, String)> {
    vec![
        (
            at,
            call.request("INVITE", cseq, "INVITE", None, branch, &[], ""),
        ),
        (at + 1_000, call.resp(180, cseq, "INVITE", Some("b"))),
        (at + 2_000, call.resp(200, cseq, "INVITE", Some("b"))),
        (at + 2_050, call.ack(cseq, "b")),
        (at + 10_000, call.bye(cseq + 1, "b")),
        (at + 10_020, call.resp(200, cseq + 1, "BYE", Some("b"))),
    ]
}

fn ids(events: &[Value]) -> (Vec<&str>, Vec<&str>) {
    (
        events
            .iter()
            .map(|e| e["call"]["id"].as_str().unwrap())
            .collect(),
        events.iter().map(|e| e["id"].as_str().unwrap()).collect(),
    )
}

#[test]
fn a_call_reusing_an_ended_dialog_gets_ids_of_its_own() {
    let call = CallSpec::new("reuse-36s");
    // The first call alone, as any instance sees it: today's ids.
    let alone = feed(&mut tracker(), &call_at(&call, 0, 1, "first"));
    // The same call, then a second one 36 s after the first ended (buggy
    // phones restart the CSeq with a new branch).
    let mut both = call_at(&call, 0, 1, "first");
    both.extend(call_at(&call, 10_020 + 36_000, 1, "second"));
    let ev = feed(&mut tracker(), &both);
    assert_eq!(types(&ev), [FOUR, FOUR].concat());
    let (first, second) = ev.split_at(4);
    assert_eq!(
        ids(first),
        ids(&alone),
        "the first call's ids do not change"
    );
    let (second_calls, second_events) = ids(second);
    assert!(second_calls.iter().all(|c| *c == second_calls[0]));
    assert_ne!(second_calls[0], ids(first).0[0], "a call id of its own");
    for e in &second_events {
        assert!(!ids(first).1.contains(e), "event ids of its own");
    }
    assert_eq!(second[0]["call"]["sip_call_id"], "reuse-36s");
    assert_eq!(second[0]["sequence"], 1);
    assert_eq!(second[3]["data"]["talk_ms"], 8_000);
    // Deterministic: another instance fed the same traffic agrees.
    assert_eq!(ids(&feed(&mut tracker(), &both)), ids(&ev));
}

#[test]
fn a_reuse_right_after_the_end_is_a_new_call_too() {
    let call = CallSpec::new("reuse-5s");
    let mut msgs = call_at(&call, 0, 1, "first");
    // Within the window where late retransmissions of the ended call are absorbed.
    msgs.extend(call_at(&call, 15_000, 3, "second"));
    let ev = feed(&mut tracker(), &msgs);
    assert_eq!(types(&ev), [FOUR, FOUR].concat());
    assert_ne!(ev[4]["call"]["id"], ev[0]["call"]["id"]);
}

#[test]
fn a_late_copy_of_the_ended_calls_invite_starts_nothing() {
    let call = CallSpec::new("reuse-copy");
    let mut msgs = call_at(&call, 0, 1, "first");
    msgs.push((
        12_000,
        call.request("INVITE", 1, "INVITE", None, "first", &[], ""),
    ));
    // Past the tombstone's purge (32 s after the end), within the memory.
    msgs.push((
        90_000,
        call.request("INVITE", 1, "INVITE", None, "first", &[], ""),
    ));
    let ev = feed(&mut tracker(), &msgs);
    assert_eq!(types(&ev), FOUR);
}

#[test]
fn a_proxys_forwarded_copy_of_the_invite_starts_nothing_after_the_end() {
    let call = CallSpec::new("reuse-proxy-copy");
    let forwarded = || call.request("INVITE", 1, "INVITE", None, "proxy-fwd", &[], "");
    let mut msgs = call_at(&call, 0, 1, "first");
    // The proxy's copy, with its own top Via, seen while the call is up.
    msgs.insert(1, (5, forwarded()));
    msgs.push((80_000, forwarded()));
    let ev = feed(&mut tracker(), &msgs);
    assert_eq!(types(&ev), FOUR);
}

#[test]
fn a_reuse_while_the_old_calls_bye_waits_ends_the_old_call_at_its_bye() {
    let call = CallSpec::new("reuse-pending-bye");
    // The first call's BYE gets no answer on this mirror.
    let mut msgs: Vec<(i64, String)> = call_at(&call, 0, 1, "first");
    msgs.truncate(5);
    msgs.extend(call_at(&call, 15_000, 1, "second"));
    let ev = feed(&mut tracker(), &msgs);
    assert_eq!(types(&ev), [FOUR, FOUR].concat());
    assert_eq!(
        ev[3]["data"]["talk_ms"], 8_000,
        "the old call ended at its BYE"
    );
    assert_eq!(ev[3]["call"]["ended_at"], "2026-11-22T07:00:10.000Z");
    assert_ne!(ev[4]["call"]["id"], ev[0]["call"]["id"]);
}

/// Over a real socket: the second call's events reach the outbox with ids a
/// receiver does not drop as duplicates.
#[tokio::test]
async fn over_udp_a_reusing_call_is_delivered_as_a_new_call() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("reuse-udp");
    for round in ["one", "two"] {
        let cseq = if round == "one" { 1 } else { 5 };
        h.send(&call.request("INVITE", cseq, "INVITE", None, round, &[], ""))
            .await;
        h.send(&call.resp(200, cseq, "INVITE", Some("b"))).await;
        h.send(&call.ack(cseq, "b")).await;
        h.send(&call.bye(cseq + 1, "b")).await;
        h.send(&call.resp(200, cseq + 1, "BYE", Some("b"))).await;
    }
    let ev = h.events(6).await;
    assert_eq!(
        types(&ev),
        [
            "call.initiated",
            "call.answered",
            "call.completed",
            "call.initiated",
            "call.answered",
            "call.completed"
        ]
    );
    assert_ne!(ev[3]["call"]["id"], ev[0]["call"]["id"]);
    let distinct: std::collections::HashSet<&str> =
        ev.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(distinct.len(), 6);
}
