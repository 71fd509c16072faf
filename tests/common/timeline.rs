//! The tracker driven directly on a timeline of chosen receive times: exact
//! durations and timers without sockets or wall-clock waits.

use std::time::Duration;

use serde_json::Value;
use siphook::call::{Event, Tracker, TrackerConfig};
use siphook::sip::{ParseOptions, parse};
use siphook::vocab::{Meta, Timestamp, Transport};

/// 2026-11-22T07:00:00.000Z: the timelines' zero.
pub const T0: i64 = 1_795_330_800_000;

/// The default timers with a 32 s `challenge_window`.
pub fn tracker() -> Tracker {
    Tracker::new(TrackerConfig {
        invite_timeout: Duration::from_secs(180),
        max_call_duration: Duration::from_secs(4 * 3600),
        challenge_window: Duration::from_secs(32),
        max_active_calls: 1000,
        reorder_window: std::time::Duration::from_millis(200),
    })
}

/// Feeds `(ms after T0, message)` pairs, firing the tracker's timers up to each
/// message's time and then up to `until` ms; the events as JSON, each checked
/// against the schema.
pub fn feed_until(t: &mut Tracker, msgs: &[(i64, String)], until: i64) -> Vec<Value> {
    let opts = ParseOptions {
        correlation_headers: vec![],
        max_message_bytes: 65536,
    };
    let mut out: Vec<Event> = Vec::new();
    for (at, raw) in msgs {
        t.on_time(Timestamp(T0 + at), &mut out);
        let msg = parse(raw.as_bytes(), &opts).expect("test message parses");
        let meta = Meta {
            transport: Transport::Udp,
            source: "10.0.0.1:5060".parse().unwrap(),
            destination: "10.0.0.2:5060".parse().unwrap(),
            received_at: Timestamp(T0 + at),
        };
        let _ = t.on_message(&msg, &meta, &mut out);
    }
    t.on_time(Timestamp(T0 + until), &mut out);
    out.iter()
        .map(|e| {
            let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
            super::assert_valid(&v);
            v
        })
        .collect()
}
