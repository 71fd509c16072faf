//! Many calls at once over UDP: nothing lost, nothing duplicated, every call
//! completed exactly once.

mod common;

use common::{CallSpec, Harness};

/// Datagrams sent before waiting for siphook to have read them all; keeps the
/// burst inside the kernel's socket buffer so the test measures siphook, not
/// loopback drops.
const WINDOW: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_parallel_calls_complete_exactly_once() {
    const CALLS: usize = 10_000;
    let mut h = Harness::start().await;
    let calls: Vec<CallSpec> = (0..CALLS)
        .map(|i| CallSpec::new(&format!("load-{i}")))
        .collect();
    // Step every call through its dialog together, so all 10,000 are active at once.
    let steps: [&dyn Fn(&CallSpec) -> String; 6] = [
        &|c| c.invite(1),
        &|c| c.resp(180, 1, "INVITE", Some("b")),
        &|c| c.resp(200, 1, "INVITE", Some("b")),
        &|c| c.ack(1, "b"),
        &|c| c.bye(2, "b"),
        &|c| c.resp(200, 2, "BYE", Some("b")),
    ];
    let mut sent = 0usize;
    for (i, step) in steps.iter().enumerate() {
        for chunk in calls.chunks(WINDOW) {
            for c in chunk {
                h.send(&step(c)).await;
            }
            sent += chunk.len();
            h.wait_metric(
                "siphook_sip_messages_total",
                &[("transport", "udp")],
                sent as f64,
            )
            .await;
        }
        if i == 0 {
            h.wait_metric("siphook_calls_active", &[], CALLS as f64)
                .await;
        }
    }
    h.expect_answered_calls(CALLS).await;
    assert!(h.barrier().await.is_empty());
    assert_eq!(
        h.metric("siphook_calls_total", &[("disposition", "answered")]),
        CALLS as f64
    );
    assert_eq!(h.metric("siphook_sip_messages_dropped_total", &[]), 0.0);
    assert_eq!(
        h.metric("siphook_calls_active", &[]),
        1.0,
        "only the barrier call is open"
    );
}
