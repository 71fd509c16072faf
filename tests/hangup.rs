//! How an answered call ends: only a BYE of the answered dialog ends it, at the
//! BYE, once accepted (or not refused within `challenge_window`); a final
//! failure that names no fork does not end a call another fork may answer.
//! Driven through the tracker with chosen receive times, and over UDP.

mod common;

use common::FOUR;

use common::timeline::{feed_until, tracker};
use common::{CallSpec, Harness, types};
use serde_json::Value;
use siphook::call::Tracker;

const WINDOW_MS: i64 = 32_000;

fn feed(t: &mut Tracker, msgs: &[(i64, String)], until: i64) -> Vec<Value> {
    feed_until(t, msgs, until)
}

/// INVITE at 0, 180 at 1 s, 200 at 4 s, ACK.
fn answered(call: &CallSpec) -> Vec<(i64, String)> {
    vec![
        (0, call.invite(1)),
        (1_000, call.resp(180, 1, "INVITE", Some("b"))),
        (4_000, call.resp(200, 1, "INVITE", Some("b"))),
        (4_050, call.ack(1, "b")),
    ]
}

/// A BYE from the caller without a To tag: it names no dialog.
fn tagless_bye(call: &CallSpec, cseq: u32) -> String {
    call.request("BYE", cseq, "BYE", None, "stray", &[], "")
}

fn completed(events: &[Value]) -> &Value {
    let c = events.last().expect("events");
    assert_eq!(c["type"], "call.completed");
    c
}

#[test]
fn a_bye_without_the_answered_dialogs_tags_ends_nothing() {
    let call = CallSpec::new("hangup-stray");
    let mut t = tracker();
    let mut msgs = answered(&call);
    msgs.push((10_000, tagless_bye(&call, 2)));
    // Another fork's tag: not the answered dialog either.
    msgs.push((11_000, call.bye(3, "other-fork")));
    msgs.push((20_000, call.bye(4, "b")));
    msgs.push((20_030, call.resp(200, 4, "BYE", Some("b"))));
    let ev = feed(&mut t, &msgs, 20_030);
    assert_eq!(types(&ev), FOUR);
    let c = completed(&ev);
    assert_eq!(c["data"]["ended_by"], "caller");
    assert_eq!(c["data"]["disposition"], "answered");
    assert_eq!(
        c["data"]["talk_ms"], 16_000,
        "ended by the real BYE at 20 s"
    );
    assert_eq!(c["call"]["ended_at"], "2026-11-22T07:00:20.000Z");
}

#[test]
fn a_bye_refused_with_481_leaves_the_call_up() {
    let call = CallSpec::new("hangup-481");
    let mut t = tracker();
    let mut msgs = answered(&call);
    msgs.push((10_000, call.bye(2, "b")));
    msgs.push((10_020, call.resp(481, 2, "BYE", Some("b"))));
    // Long after the window the call is still up; the next BYE ends it.
    msgs.push((60_000, call.bye(3, "b")));
    msgs.push((60_010, call.resp(200, 3, "BYE", Some("b"))));
    let ev = feed(&mut t, &msgs, 10_020 + WINDOW_MS + 1);
    assert_eq!(types(&ev), FOUR);
    assert_eq!(completed(&ev)["data"]["talk_ms"], 56_000);
}

#[test]
fn the_call_ends_at_the_bye_when_its_2xx_comes() {
    let call = CallSpec::new("hangup-2xx");
    let mut t = tracker();
    let mut msgs = answered(&call);
    msgs.push((10_000, call.bye(2, "b")));
    let ev = feed(&mut t, &msgs, 10_400);
    assert_eq!(ev.len(), 3, "nothing yet: the BYE's answer is awaited");
    let ev = feed(
        &mut t,
        &[(10_500, call.resp(200, 2, "BYE", Some("b")))],
        10_500,
    );
    assert_eq!(types(&ev), ["call.completed"]);
    let c = &ev[0];
    assert_eq!(
        c["data"]["talk_ms"], 6_000,
        "ended at the BYE, not at its 200"
    );
    assert_eq!(c["data"]["duration_ms"], 10_000);
    assert_eq!(c["call"]["ended_at"], "2026-11-22T07:00:10.000Z");
}

#[test]
fn an_unanswered_bye_ends_the_call_at_the_bye_after_the_window() {
    let call = CallSpec::new("hangup-silent");
    let mut t = tracker();
    let mut msgs = answered(&call);
    msgs.push((10_000, call.bye(2, "b")));
    let ev = feed(&mut t, &msgs, 10_000 + WINDOW_MS - 1);
    assert_eq!(ev.len(), 3, "still waiting within the window");
    let ev = feed(&mut t, &[], 10_000 + WINDOW_MS);
    assert_eq!(types(&ev), ["call.completed"]);
    assert_eq!(ev[0]["data"]["talk_ms"], 6_000);
    assert_eq!(ev[0]["data"]["ended_by"], "caller");
}

#[test]
fn a_bye_challenged_and_sent_again_ends_on_the_retrys_2xx() {
    let call = CallSpec::new("hangup-407");
    let mut t = tracker();
    let mut msgs = answered(&call);
    msgs.push((10_000, call.bye(2, "b")));
    msgs.push((10_010, call.resp(407, 2, "BYE", Some("b"))));
    msgs.push((10_020, call.bye(3, "b")));
    msgs.push((10_030, call.resp(200, 3, "BYE", Some("b"))));
    let ev = feed(&mut t, &msgs, 10_030);
    assert_eq!(completed(&ev)["data"]["talk_ms"], 6_000, "at the first BYE");
    assert_eq!(ev.len(), 4);
}

#[test]
fn the_callees_bye_counts_the_same_way() {
    let call = CallSpec::new("hangup-callee");
    let mut t = tracker();
    let mut msgs = answered(&call);
    msgs.push((7_000, call.callee_request("BYE", 1, "b", &[], "")));
    msgs.push((7_040, call.callee_response(200, 1, "BYE", "b", &[])));
    let ev = feed(&mut t, &msgs, 7_040);
    let c = completed(&ev);
    assert_eq!(c["data"]["ended_by"], "callee");
    assert_eq!(c["data"]["talk_ms"], 3_000);
}

#[test]
fn a_2xx_to_a_bye_the_mirror_missed_still_ends_the_call() {
    let call = CallSpec::new("hangup-lost-bye");
    let mut t = tracker();
    let mut msgs = answered(&call);
    msgs.push((9_000, call.resp(200, 2, "BYE", Some("b"))));
    let ev = feed(&mut t, &msgs, 9_000);
    let c = completed(&ev);
    assert_eq!(c["data"]["ended_by"], "caller");
    assert_eq!(c["data"]["talk_ms"], 5_000);
}

#[test]
fn crossed_byes_end_the_call_once_at_the_first_even_if_one_is_refused() {
    let call = CallSpec::new("hangup-glare");
    let mut t = tracker();
    let mut msgs = answered(&call);
    msgs.push((10_000, call.bye(2, "b")));
    msgs.push((10_010, call.callee_request("BYE", 1, "b", &[], "")));
    // The callee, already hanging up, refuses the caller's BYE; the caller
    // accepts the callee's.
    msgs.push((10_020, call.resp(481, 2, "BYE", Some("b"))));
    msgs.push((10_030, call.callee_response(200, 1, "BYE", "b", &[])));
    let ev = feed(&mut t, &msgs, 10_030 + WINDOW_MS);
    assert_eq!(types(&ev), FOUR);
    let c = completed(&ev);
    assert_eq!(c["data"]["talk_ms"], 6_000, "at the first BYE");
    assert_eq!(c["data"]["ended_by"], "caller");
}

#[test]
fn a_refresh_while_a_bye_waits_does_not_push_the_ending_out() {
    let call = CallSpec::new("hangup-refresh");
    let mut t = tracker();
    let mut msgs = answered(&call);
    msgs.push((10_000, call.bye(2, "b")));
    msgs.push((
        10_500,
        call.request("INVITE", 3, "INVITE", Some("b"), "reinv", &[], ""),
    ));
    let ev = feed(&mut t, &msgs, 10_000 + WINDOW_MS);
    assert_eq!(types(&ev).last(), Some(&"call.completed"));
    assert_eq!(completed(&ev)["data"]["talk_ms"], 6_000);
}

#[test]
fn a_tagless_final_failure_does_not_end_a_call_a_fork_may_answer() {
    let call = CallSpec::new("hangup-603");
    let mut t = tracker();
    let msgs = vec![
        (0, call.invite(1)),
        (1_000, call.resp(180, 1, "INVITE", Some("b"))),
        (2_000, call.resp(603, 1, "INVITE", None)),
        (3_000, call.resp(200, 1, "INVITE", Some("b"))),
        (3_050, call.ack(1, "b")),
        (8_000, call.bye(2, "b")),
        (8_020, call.resp(200, 2, "BYE", Some("b"))),
    ];
    let ev = feed(&mut t, &msgs, 8_020);
    assert_eq!(types(&ev), FOUR);
    let c = completed(&ev);
    assert_eq!(c["data"]["disposition"], "answered");
    assert_eq!(c["data"]["talk_ms"], 5_000);
}

#[test]
fn a_tagless_final_failure_with_no_fork_alive_still_ends_the_call() {
    let call = CallSpec::new("hangup-603-alone");
    let mut t = tracker();
    let msgs = vec![
        (0, call.invite(1)),
        (2_000, call.resp(603, 1, "INVITE", None)),
    ];
    let ev = feed(&mut t, &msgs, 2_000);
    assert_eq!(types(&ev), ["call.initiated", "call.completed"]);
    assert_eq!(ev[1]["data"]["disposition"], "rejected");
}

/// Over a real socket: the stray BYE changes nothing, the real one ends the call.
#[tokio::test]
async fn over_udp_a_stray_bye_leaves_the_call_and_the_real_one_ends_it() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("hangup-udp");
    let flow = call.answered_flow();
    h.send_all(&flow[..5]).await;
    h.send(&tagless_bye(&call, 2)).await;
    h.send(&call.bye(3, "callee")).await;
    h.send(&call.resp(200, 3, "BYE", Some("callee"))).await;
    let ev = h.events(4).await;
    assert_eq!(types(&ev), FOUR);
    assert_eq!(ev[3]["data"]["disposition"], "answered");
    assert_eq!(ev[3]["data"]["ended_by"], "caller");
    // The stray BYE was read and set aside (with the 100 and the ACK, which
    // change nothing either); the real one did not come after an ending.
    assert_eq!(
        h.metric(
            "siphook_sip_messages_ignored_total",
            &[("reason", "no_change")]
        ),
        3.0
    );
    assert_eq!(
        h.metric(
            "siphook_sip_messages_ignored_total",
            &[("reason", "after_end")]
        ),
        0.0
    );
}
