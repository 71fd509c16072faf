//! Capture replay of TCP streams the capture did not see whole: segments lost
//! before the capture (operator VoLTE/VoWiFi captures report "20 gaps"),
//! segments cut mid-message, segments out of order. Each call must come out as
//! it happened, on the times the capture saw its messages, with what was
//! missing and what was skipped counted in the summary.

mod common;

use std::net::IpAddr;
use std::path::Path;

use common::CallSpec;
use common::wire::{self, ACK, PSH};
use pcap_file::DataLink;
use serde_json::Value;

const T0_US: u64 = 1_795_330_800_000_000;
const T0_MS: i64 = (T0_US / 1000) as i64;

fn caller() -> (IpAddr, u16) {
    (IpAddr::from([10, 45, 0, 7]), 41000)
}
fn pcscf() -> (IpAddr, u16) {
    (IpAddr::from([10, 45, 0, 1]), 5060)
}

fn types(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["call"]["sip_call_id"].as_str().unwrap_or("?").to_owned(),
                e["type"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

fn answered(id: &str) -> Vec<(String, String)> {
    common::FOUR
        .iter()
        .map(|t| (id.to_owned(), (*t).to_owned()))
        .collect()
}

/// A capture being written: one TCP connection, both directions, with the
/// segments the test decides the capture lost.
struct Capture {
    conn: wire::TcpConn,
    frames: Vec<(u64, Vec<u8>)>,
}

impl Capture {
    fn new() -> Capture {
        let mut conn = wire::TcpConn::new(caller(), pcscf());
        let frames = conn
            .handshake()
            .into_iter()
            .map(|p| (T0_US - 10_000, wire::ether(0x0800, &p)))
            .collect();
        Capture { conn, frames }
    }

    /// A segment sent at `ms` after T0; kept in the capture unless `lost`.
    fn send(&mut self, ms: u64, from_caller: bool, data: &[u8], lost: bool) {
        let p = self.conn.send(from_caller, data);
        if !lost {
            self.frames
                .push((T0_US + ms * 1000, wire::ether(0x0800, &p)));
        }
    }

    fn write(mut self, path: &Path) {
        self.frames.sort_by_key(|f| f.0);
        wire::write_pcap(path, DataLink::ETHERNET, &self.frames);
    }
}

/// The answered call's messages, with who sends each and when (ms after T0).
fn call(id: &str, start_ms: u64) -> Vec<(u64, bool, Vec<u8>)> {
    let from_caller = [true, false, false, false, true, true, false];
    let at = [0, 20, 200, 300, 320, 5_000, 5_020];
    CallSpec::new(id)
        .answered_flow()
        .into_iter()
        .zip(from_caller)
        .zip(at)
        .map(|((m, a), t)| (start_ms + t, a, m.into_bytes()))
        .collect()
}

/// The VoLTE capture: the capture lost the P-CSCF's segment with the
/// 100 Trying of the first call. The caller's next segment acknowledges past
/// it, so the gap is given up at once: both calls on the connection come out
/// answered and completed, on their own times, never `failed` with a null
/// status.
#[test]
fn a_segment_the_capture_lost_costs_its_message_not_the_side_of_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut cap = Capture::new();
    let mut lost_bytes = 0;
    for (id, start) in [("volte-1", 0), ("volte-2", 10_000)] {
        for (i, (t, a, m)) in call(id, start).into_iter().enumerate() {
            let lost = id == "volte-1" && i == 1;
            if lost {
                lost_bytes = m.len() as u64;
            }
            cap.send(t, a, &m, lost);
        }
    }
    let path = dir.path().join("volte.pcap");
    cap.write(&path);
    let (events, summary) = wire::replay_file(&path, false);
    let mut want = answered("volte-1");
    want.extend(answered("volte-2"));
    assert_eq!(types(&events), want, "{summary}");
    // Ringing and answer on the capture's times of the 180 and the 200.
    assert_eq!(common::ms(&events[1]["call"]["ringing_at"]), T0_MS + 200);
    assert_eq!(common::ms(&events[2]["call"]["answered_at"]), T0_MS + 300);
    assert_eq!(events[3]["data"]["disposition"], "answered");
    assert_eq!(events[3]["data"]["sip_status"], 200);
    assert_eq!(
        (
            summary.tcp_gaps,
            summary.tcp_gap_bytes,
            summary.tcp_skipped_bytes
        ),
        (1, lost_bytes, 0)
    );
    assert!(summary.open_calls.is_empty());
    assert!(
        summary
            .to_string()
            .contains(&format!("1 gaps ({lost_bytes} bytes not captured)")),
        "{summary}"
    );
}

/// A lost segment that ends mid-message: the 180 is cut (its tail arrives in
/// the same segment as the whole 200), so replay resynchronises on the 200's
/// status line and counts the bytes of the 180 it had to skip.
#[test]
fn after_a_gap_mid_message_the_stream_resumes_at_the_next_message_start() {
    let dir = tempfile::tempdir().unwrap();
    let id = "cut-180";
    let msgs = call(id, 0);
    let mut cap = Capture::new();
    let (ringing, ok) = (&msgs[2].2, &msgs[3].2);
    let half = ringing.len() / 2;
    cap.send(0, true, &msgs[0].2, false);
    let mut first = msgs[1].2.clone();
    first.extend_from_slice(&ringing[..half]);
    cap.send(200, false, &first, false);
    cap.send(201, false, &ringing[half..ringing.len() - 10], true);
    let mut third = ringing[ringing.len() - 10..].to_vec();
    third.extend_from_slice(ok);
    cap.send(300, false, &third, false);
    for (t, a, m) in &msgs[4..] {
        cap.send(*t, *a, m, false);
    }
    let path = dir.path().join("cut.pcap");
    cap.write(&path);
    let (events, summary) = wire::replay_file(&path, false);
    let want: Vec<(String, String)> = ["call.initiated", "call.answered", "call.completed"]
        .iter()
        .map(|t| (id.to_owned(), (*t).to_owned()))
        .collect();
    assert_eq!(types(&events), want, "{summary}");
    assert_eq!(common::ms(&events[1]["call"]["answered_at"]), T0_MS + 300);
    let noise = |b: &[u8]| b.iter().filter(|&&c| c != b'\r' && c != b'\n').count() as u64;
    assert_eq!(
        (
            summary.tcp_gaps,
            summary.tcp_gap_bytes,
            summary.tcp_skipped_bytes
        ),
        (
            1,
            (ringing.len() - half - 10) as u64,
            noise(&ringing[..half]) + noise(&ringing[ringing.len() - 10..])
        ),
        "{summary}"
    );
    assert!(summary.parse_errors.is_empty(), "{summary}");
}

/// Segments captured out of order (the 200 before the 180 that precedes it in
/// the stream) are put back in order: the call rings, then is answered.
#[test]
fn out_of_order_segments_are_put_back_in_stream_order() {
    let dir = tempfile::tempdir().unwrap();
    let id = "reordered";
    let msgs = call(id, 0);
    let mut cap = Capture::new();
    for (i, (t, a, m)) in msgs.iter().enumerate() {
        // The 180 reaches the capture 2 ms after the 200 sent after it.
        let t = if i == 2 { 302 } else { *t };
        cap.send(t, *a, m, false);
    }
    let path = dir.path().join("reorder.pcap");
    cap.write(&path);
    let (events, summary) = wire::replay_file(&path, false);
    assert_eq!(types(&events), answered(id), "{summary}");
    assert_eq!(
        (
            summary.tcp_gaps,
            summary.tcp_skipped_bytes,
            summary.tcp_retransmissions
        ),
        (0, 0, 0)
    );
}

/// A capture of one side's acknowledgments is not always there (a mirror of
/// one direction, a peer that sends no ACK flag on its segments): a gap nobody
/// acknowledges is given up after `GAP_WAIT_MS` of capture time, and the
/// messages held behind it keep the times they were captured.
#[test]
fn a_gap_nobody_acknowledges_is_given_up_after_the_wait_on_capture_time() {
    let dir = tempfile::tempdir().unwrap();
    let id = "no-acks";
    let mut cap = Capture::new();
    let mut frames = Vec::new();
    for (i, (t, a, m)) in call(id, 0).into_iter().enumerate() {
        let (s, d) = if a {
            (caller(), pcscf())
        } else {
            (pcscf(), caller())
        };
        let seq = if a { cap.conn.seq_a } else { cap.conn.seq_b };
        // The caller's segments carry no acknowledgment.
        let flags = if a { PSH } else { PSH | ACK };
        let tcp = wire::tcp(s.0, d.0, s.1, d.1, seq, 0, flags, &m);
        let next = seq.wrapping_add(m.len() as u32);
        if a {
            cap.conn.seq_a = next;
        } else {
            cap.conn.seq_b = next;
        }
        if i != 1 {
            frames.push((
                T0_US + t * 1000,
                wire::ether(0x0800, &wire::ip(s.0, d.0, 6, &tcp)),
            ));
        }
    }
    cap.frames.extend(frames);
    let path = dir.path().join("noack.pcap");
    cap.write(&path);
    let (events, summary) = wire::replay_file(&path, false);
    assert_eq!(types(&events), answered(id), "{summary}");
    assert_eq!(common::ms(&events[1]["call"]["ringing_at"]), T0_MS + 200);
    assert_eq!(common::ms(&events[2]["call"]["answered_at"]), T0_MS + 300);
    assert_eq!(summary.tcp_gaps, 1);
}

/// A segment lost on the network, not by the capture: the caller's
/// acknowledgments stop at the gap (it lacks the bytes too), so replay waits
/// past `GAP_WAIT_MS` for the retransmission, which the capture sees 1.2 s
/// later. The 180 is read, and it and the 200 held behind it reach the
/// tracker when the caller could have read them.
#[test]
fn a_gap_the_receiver_also_waits_on_is_filled_by_the_retransmission() {
    let dir = tempfile::tempdir().unwrap();
    let id = "retransmitted";
    let msgs = call(id, 0);
    let mut cap = Capture::new();
    cap.send(0, true, &msgs[0].2, false);
    cap.send(20, false, &msgs[1].2, false);
    let ringing_seq = cap.conn.seq_b;
    cap.send(200, false, &msgs[2].2, true);
    cap.send(300, false, &msgs[3].2, false);
    let (c, p) = (caller(), pcscf());
    let ack_at = |seq_a: u32, ack: u32| {
        wire::ip(
            c.0,
            p.0,
            6,
            &wire::tcp(c.0, p.0, c.1, p.1, seq_a, ack, ACK, &[]),
        )
    };
    // Duplicate acknowledgments: up to the 180, not past it.
    for ms in [301, 302, 303] {
        let dup = ack_at(cap.conn.seq_a, ringing_seq);
        cap.frames
            .push((T0_US + ms * 1000, wire::ether(0x0800, &dup)));
    }
    let again = wire::tcp(
        p.0,
        c.0,
        p.1,
        c.1,
        ringing_seq,
        cap.conn.seq_a,
        PSH | ACK,
        &msgs[2].2,
    );
    cap.frames.push((
        T0_US + 1_200_000,
        wire::ether(0x0800, &wire::ip(p.0, c.0, 6, &again)),
    ));
    for (t, a, m) in &msgs[4..] {
        let t = if *t == 320 { 1_220 } else { *t };
        cap.send(t, *a, m, false);
    }
    let path = dir.path().join("retransmitted.pcap");
    cap.write(&path);
    let (events, summary) = wire::replay_file(&path, false);
    assert_eq!(types(&events), answered(id), "{summary}");
    assert_eq!(common::ms(&events[1]["call"]["ringing_at"]), T0_MS + 1_200);
    assert_eq!(common::ms(&events[2]["call"]["answered_at"]), T0_MS + 1_200);
    assert_eq!(
        (
            summary.tcp_gaps,
            summary.tcp_skipped_bytes,
            summary.tcp_retransmissions
        ),
        (0, 0, 0),
        "{summary}"
    );
}
