//! Memory per active call: heap bytes the tracker holds per answered, still-open
//! call, measured with a counting allocator (not RSS, which the allocator and the
//! page cache blur). Run: `cargo bench --bench call_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use siphook::call::{Tracker, TrackerConfig};
use siphook::sip::{ParseOptions, parse};
use siphook::vocab::{Meta, Timestamp, Transport};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator, which upholds the
// GlobalAlloc contract; the counter is only arithmetic on the sizes passed in.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout the caller gave us, per the GlobalAlloc contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn msg(call: usize, kind: &str) -> String {
    let (start, cseq, to_tag) = match kind {
        "invite" => (
            format!("INVITE sip:+1555{call:07}@10.0.0.2 SIP/2.0"),
            "1 INVITE",
            String::new(),
        ),
        "bye" => (
            format!("BYE sip:+1555{call:07}@10.0.0.2 SIP/2.0"),
            "2 BYE",
            format!(";tag=callee-{call}"),
        ),
        "bye_ok" => (
            "SIP/2.0 200 OK".to_owned(),
            "2 BYE",
            format!(";tag=callee-{call}"),
        ),
        _ => (
            "SIP/2.0 200 OK".to_owned(),
            "1 INVITE",
            format!(";tag=callee-{call}"),
        ),
    };
    format!(
        "{start}\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{call}\r\nFrom: \"Caller {call}\" <sip:+1444{call:07}@10.0.0.1>;tag=caller-{call}-a8f3\r\nTo: <sip:+1555{call:07}@10.0.0.2>{to_tag}\r\nCall-ID: {call:08x}-4f1c-9a7e-3b2d@10.0.0.1\r\nCSeq: {cseq}\r\nX-CID: corr-{call}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn main() {
    const CALLS: usize = 100_000;
    let opts = ParseOptions {
        correlation_headers: vec!["X-CID".into()],
        max_message_bytes: 65536,
    };
    let meta = Meta {
        transport: Transport::Udp,
        source: "10.0.0.1:5060".parse().unwrap(),
        destination: "10.0.0.2:5060".parse().unwrap(),
        received_at: Timestamp(1_795_330_800_000),
    };
    let mut tracker = Tracker::new(TrackerConfig {
        invite_timeout: Duration::from_secs(180),
        max_call_duration: Duration::from_secs(4 * 3600),
        challenge_window: Duration::from_secs(32),
        max_active_calls: CALLS,
        reorder_window: std::time::Duration::from_millis(200),
    });
    let mut out = Vec::new();
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..CALLS {
        for kind in ["invite", "ok"] {
            let m = parse(msg(i, kind).as_bytes(), &opts).unwrap();
            let _ = tracker.on_message(&m, &meta, &mut out);
        }
        out.clear();
    }
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(tracker.active_calls(), CALLS);
    let per_call = (after - before) as f64 / CALLS as f64;
    println!("active calls: {CALLS}");
    println!("tracker heap: {} bytes", after - before);
    println!("bytes per active answered call: {per_call:.0}");

    // What an ended call leaves behind once its tombstone is purged: the reuse
    // memory (its initial INVITEs, for a call that reuses its dialog).
    for i in 0..CALLS {
        for kind in ["bye", "bye_ok"] {
            let m = parse(msg(i, kind).as_bytes(), &opts).unwrap();
            let _ = tracker.on_message(&m, &meta, &mut out);
        }
        out.clear();
    }
    assert_eq!(tracker.active_calls(), 0);
    tracker.on_time(Timestamp(meta.received_at.0 + 60_000), &mut out);
    let ended = LIVE.load(Ordering::Relaxed);
    println!(
        "bytes per ended call remembered (after its tombstone, for reuse): {:.0}",
        (ended - before) as f64 / CALLS as f64
    );
}
