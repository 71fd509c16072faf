//! Mirrors that reorder: a copy of a 180, 200 or BYE that overtakes the copy of
//! its INVITE (a multi-worker proxy's siptrace) is held for `sip.reorder_window`
//! and applied right after the INVITE; one that never finds its INVITE is
//! dropped and counted. Driven through the tracker on chosen receive times, and
//! over UDP against a running siphook.

mod common;

use common::FOUR;

use std::time::Duration;

use common::timeline::{T0, feed_until, tracker};
use common::{CallSpec, Harness, ms, types};
use siphook::call::{HeldCounts, Tracker, TrackerConfig};

#[test]
fn a_ringing_that_overtook_its_invite_is_applied_right_after_it() {
    let call = CallSpec::new("reorder-180");
    let mut t = tracker();
    let ev = feed_until(
        &mut t,
        &[
            (0, call.resp(180, 1, "INVITE", Some("b"))),
            (3, call.invite(1)),
            (2_000, call.resp(200, 1, "INVITE", Some("b"))),
            (2_010, call.ack(1, "b")),
            (9_000, call.bye(2, "b")),
            (9_010, call.resp(200, 2, "BYE", Some("b"))),
        ],
        9_010,
    );
    assert_eq!(types(&ev), FOUR);
    // The copy came first, but the ringing cannot precede the call it is of.
    assert_eq!(ms(&ev[1]["timestamp"]), T0 + 3);
    assert_eq!(ms(&ev[1]["call"]["ringing_at"]), T0 + 3);
    assert_eq!(ms(&ev[1]["call"]["started_at"]), T0 + 3);
    assert_eq!(
        t.take_held_counts(),
        HeldCounts {
            applied: 1,
            expired: 0,
            shed: 0
        }
    );
}

#[test]
fn a_whole_early_burst_is_applied_in_capture_order_after_its_invite() {
    let call = CallSpec::new("reorder-burst");
    let mut t = tracker();
    // 180, 200 and ACK all overtook the INVITE (arriving 180 last of the three).
    let ev = feed_until(
        &mut t,
        &[
            (10, call.resp(200, 1, "INVITE", Some("b"))),
            (11, call.ack(1, "b")),
            (20, call.resp(180, 1, "INVITE", Some("b"))),
            (150, call.invite(1)),
        ],
        1_000,
    );
    // Capture order is 200 before 180: the 180 after an answer changes nothing.
    assert_eq!(types(&ev), ["call.initiated", "call.answered"]);
    assert_eq!(ms(&ev[1]["call"]["answered_at"]), T0 + 150);
    assert_eq!(t.take_held_counts().applied, 3);
}

#[test]
fn a_message_that_never_finds_its_invite_is_dropped_and_counted() {
    let lost = CallSpec::new("reorder-lost");
    let late = CallSpec::new("reorder-late");
    let mut t = tracker();
    let ev = feed_until(
        &mut t,
        &[
            (0, lost.resp(180, 1, "INVITE", Some("b"))),
            (0, late.resp(180, 1, "INVITE", Some("b"))),
            // 250 ms later: past the 200 ms window, so the held 180 is gone.
            (250, late.invite(1)),
        ],
        1_000,
    );
    assert_eq!(types(&ev), ["call.initiated"]);
    assert_eq!(
        t.take_held_counts(),
        HeldCounts {
            applied: 0,
            expired: 2,
            shed: 0
        }
    );
    assert_eq!(t.next_deadline().map(|d| d.0 > T0 + 1_000), Some(true));
}

#[test]
fn in_order_messages_are_never_held_and_a_zero_window_holds_nothing() {
    let call = CallSpec::new("reorder-none");
    let mut t = tracker();
    let msgs: Vec<(i64, String)> = vec![
        (0, call.invite(1)),
        (5, call.resp(180, 1, "INVITE", Some("b"))),
    ];
    let ev = feed_until(&mut t, &msgs, 5);
    assert_eq!(types(&ev), ["call.initiated", "call.ringing"]);
    assert_eq!(ms(&ev[1]["timestamp"]), T0 + 5, "not delayed");
    assert_eq!(t.take_held_counts(), HeldCounts::default());

    let mut off = Tracker::new(TrackerConfig {
        invite_timeout: Duration::from_secs(180),
        max_call_duration: Duration::from_secs(4 * 3600),
        challenge_window: Duration::from_secs(32),
        max_active_calls: 1000,
        reorder_window: Duration::ZERO,
    });
    let early = CallSpec::new("reorder-off");
    let ev = feed_until(
        &mut off,
        &[
            (0, early.resp(180, 1, "INVITE", Some("b"))),
            (3, early.invite(1)),
        ],
        10,
    );
    assert_eq!(types(&ev), ["call.initiated"]);
    assert_eq!(off.take_held_counts(), HeldCounts::default());
}

#[tokio::test]
async fn over_udp_an_early_ringing_still_makes_call_ringing_and_the_metrics_say_so() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("reorder-udp");
    let mut flow = call.answered_flow();
    // The 180 (index 2) before the INVITE (index 0), the 100 dropped.
    let ringing = flow.remove(2);
    flow.remove(1);
    flow.insert(0, ringing);
    h.send_all(&flow).await;
    let ev = h.events(4).await;
    assert_eq!(types(&ev), FOUR);
    assert_eq!(
        h.metric("siphook_sip_messages_held_total", &[("outcome", "applied")]),
        1.0
    );
    h.send(&CallSpec::new("reorder-udp-orphan").resp(180, 1, "INVITE", Some("b")))
        .await;
    h.wait_metric(
        "siphook_sip_messages_held_total",
        &[("outcome", "expired")],
        1.0,
    )
    .await;
    assert!(h.barrier().await.is_empty());
}
