//! TCP streams in a capture: segments put back in sequence order per flow,
//! retransmissions dropped, then framed into SIP messages (by Content-Length) or
//! HEP packets (by their length), like the live listeners do.
//!
//! A capture misses segments (a mirror port drops, a ring wraps): waiting for
//! bytes that never come would hold one side of every call to the end, so its
//! 180 and 200 reach the tracker after the BYE. A gap is given up as soon as the
//! other side acknowledges bytes past it (the peer got them; the capture did
//! not), or when it has waited `GAP_WAIT_MS` of capture time (longer, up to
//! `MAX_GAP_WAIT_MS`, while the other side's acknowledgments stop at the gap:
//! the loss was on the network and the retransmission is coming), or holds
//! `MAX_HELD` bytes; the stream then resumes at the next message start
//! (`resync`), and the bytes missing and skipped are counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use super::packet::Segment;
use super::resync::Resync;

/// Out-of-order bytes held per flow before the gap is given up on.
const MAX_HELD: usize = 1 << 20;
/// Flows followed at once; the oldest is forgotten past it.
const MAX_FLOWS: usize = 65_536;
/// Capture time a gap is waited on when no acknowledgment says it is lost: long
/// enough for a retransmission after the minimum RTO (200 ms), short against
/// the seconds between a call's answer and its BYE.
pub const GAP_WAIT_MS: i64 = 500;
/// Longest a gap is waited on while the receiver's acknowledgments show it is
/// waiting for the same bytes (a loss on the network, whose retransmission
/// the capture will see), RTO backoff included.
pub const MAX_GAP_WAIT_MS: i64 = 30_000;

pub use crate::sip::stream::Unit;

/// A whole unit, with the flow it came from and the capture time (ms) of the
/// segment that completed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// When the capture saw its last byte, milliseconds since the epoch.
    pub at_ms: i64,
    /// The SIP message or HEP packet.
    pub unit: Unit,
}

type Key = (SocketAddr, SocketAddr);

struct Held {
    seq: u32,
    data: Vec<u8>,
    at_ms: i64,
}

struct Flow {
    /// Sequence number of the next byte expected.
    next: Option<u32>,
    /// Sequence number of the stream's first byte (offsets are from it).
    base: u32,
    /// Segments past a gap, by offset in the stream.
    held: BTreeMap<u32, Held>,
    held_bytes: usize,
    /// Since when (capture ms) the flow has waited on a gap.
    gap_since: Option<i64>,
    /// Since when (capture ms) the first gap still open has been there.
    gap_opened: Option<i64>,
    /// Highest sequence number the other side acknowledged, and when.
    acked: Option<u32>,
    acked_at: i64,
    sync: Resync,
    last_used: u64,
}

/// What one pass over a flow counted.
#[derive(Default)]
struct Stats {
    retransmissions: u64,
    gaps: u64,
    gap_bytes: u64,
}

/// Every TCP flow of a capture.
#[derive(Default)]
pub struct Streams {
    flows: HashMap<Key, Flow>,
    /// Flows waiting on a gap, by the capture time they started to.
    waiting: BTreeSet<(i64, Key)>,
    max_message_bytes: usize,
    clock: u64,
    /// Segments dropped as retransmissions (already-seen bytes).
    pub retransmissions: u64,
    /// Times bytes that looked like a message start did not frame.
    pub framing_errors: u64,
    /// Gaps given up on.
    pub gaps: u64,
    /// Bytes missing from the capture at those gaps (sequence space).
    pub gap_bytes: u64,
    /// Captured bytes skipped to reach the next message start (the rest of a
    /// message cut by a gap, a mid-stream start, bytes that did not frame).
    pub skipped_bytes: u64,
}

/// `a` is before `b` in sequence space (RFC 793 wrap-around).
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl Streams {
    /// No flows yet; SIP messages over `max_message_bytes` break their stream.
    pub fn new(max_message_bytes: usize) -> Streams {
        Streams {
            max_message_bytes,
            ..Streams::default()
        }
    }

    /// Feeds one TCP segment seen at `at_ms` (anything else is ignored); whole
    /// units it completes, on its flow or (by acknowledging a gap) on the
    /// reverse one, go to `out`.
    pub fn segment(&mut self, seg: &Segment, at_ms: i64, out: &mut Vec<Released>) {
        let &Segment::Tcp {
            src,
            dst,
            seq,
            ack,
            syn,
            end,
            ref payload,
        } = seg
        else {
            return;
        };
        self.clock += 1;
        if let Some(ack) = ack {
            self.acknowledged((dst, src), ack, at_ms, out);
        }
        let key = (src, dst);
        if !self.flows.contains_key(&key) {
            // Bare ACKs, FINs and RSTs of flows never seen (a port scan, the tail
            // of an earlier stream) carry nothing to follow.
            if !syn && payload.is_empty() {
                return;
            }
            if self.flows.len() >= MAX_FLOWS {
                self.evict_oldest();
            }
        }
        let max = self.max_message_bytes;
        let clock = self.clock;
        let flow = self.flows.entry(key).or_insert_with(|| Flow {
            next: None,
            base: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            gap_since: None,
            gap_opened: None,
            acked: None,
            acked_at: 0,
            sync: Resync::new(max),
            last_used: 0,
        });
        flow.last_used = clock;
        let mut stats = Stats::default();
        let mut units = Vec::new();
        if syn {
            flow.next = Some(seq.wrapping_add(1));
            flow.base = seq.wrapping_add(1);
            flow.held.clear();
            flow.held_bytes = 0;
            flow.gap_since = None;
            flow.gap_opened = None;
            // A new connection on the same ports: the old acknowledgments say
            // nothing of its sequence space.
            flow.acked = None;
            flow.sync.lost_sync();
        }
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        if !payload.is_empty() {
            // A capture that starts mid-stream starts at the first byte it has
            // (and the resync hunts for the first message start in it).
            if flow.next.is_none() {
                flow.next = Some(data_seq);
                flow.base = data_seq;
            }
            accept(flow, data_seq, payload, at_ms, &mut units, &mut stats);
        }
        if end {
            // Nothing more comes: what is held after a gap is all there is.
            follow_on(flow, Skip::All, &mut units, &mut stats);
        }
        let gap = flow.gap_since;
        self.note(key, gap, end, units, stats, out);
    }

    /// Gives up the gaps that have waited `GAP_WAIT_MS` by capture time `now_ms`.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Released>) {
        // Each turn removes an entry, so the set's size bounds the turns.
        for _ in 0..self.waiting.len() {
            let Some(&(since, key)) = self.waiting.first() else {
                break;
            };
            if now_ms.saturating_sub(since) < GAP_WAIT_MS {
                break;
            }
            self.waiting.remove(&(since, key));
            let Some(flow) = self.flows.get_mut(&key) else {
                continue;
            };
            // An entry left from an earlier gap of the same flow.
            if flow.gap_since != Some(since) {
                continue;
            }
            // The receiver acknowledged since, and not past the gap: it lacks
            // the bytes too, and their retransmission will be captured.
            let receiver_waits = flow.acked_at >= since
                && flow
                    .acked
                    .zip(flow.next)
                    .is_some_and(|(a, n)| !before(n, a));
            let opened = flow.gap_opened.unwrap_or(since);
            if receiver_waits && now_ms.saturating_sub(opened) < MAX_GAP_WAIT_MS {
                flow.gap_since = Some(now_ms);
                self.waiting.insert((now_ms, key));
                continue;
            }
            let mut stats = Stats::default();
            let mut units = Vec::new();
            follow_on(flow, Skip::All, &mut units, &mut stats);
            let gap = flow.gap_since;
            self.note(key, gap, false, units, stats, out);
        }
    }

    /// At the end of the capture: every flow gives up its gaps and hands over
    /// what it held.
    pub fn finish(&mut self, out: &mut Vec<Released>) {
        let keys: Vec<Key> = self.flows.keys().copied().collect();
        for key in keys {
            let Some(flow) = self.flows.get_mut(&key) else {
                continue;
            };
            let mut stats = Stats::default();
            let mut units = Vec::new();
            follow_on(flow, Skip::All, &mut units, &mut stats);
            self.note(key, None, true, units, stats, out);
        }
        self.waiting.clear();
    }

    /// The other side acknowledged `ack` on flow `key`: bytes before it that
    /// the capture lacks were delivered and will not be seen, so the gaps
    /// below it are given up now, before the acknowledging segment is read.
    fn acknowledged(&mut self, key: Key, ack: u32, at_ms: i64, out: &mut Vec<Released>) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        if flow.acked.is_none_or(|a| !before(ack, a)) {
            flow.acked = Some(ack);
            flow.acked_at = at_ms;
        }
        if flow.held.is_empty() {
            return;
        }
        let mut stats = Stats::default();
        let mut units = Vec::new();
        follow_on(flow, Skip::Before(ack), &mut units, &mut stats);
        let gap = flow.gap_since;
        self.note(key, gap, false, units, stats, out);
    }

    /// Books a pass over flow `key`: its counts, its units, whether it now
    /// waits on a gap, and its end.
    fn note(
        &mut self,
        key: Key,
        gap_since: Option<i64>,
        end: bool,
        units: Vec<(i64, Unit)>,
        stats: Stats,
        out: &mut Vec<Released>,
    ) {
        self.retransmissions += stats.retransmissions;
        self.gaps += stats.gaps;
        self.gap_bytes += stats.gap_bytes;
        out.extend(units.into_iter().map(|(at_ms, unit)| Released {
            src: key.0,
            dst: key.1,
            at_ms,
            unit,
        }));
        if let Some(since) = gap_since {
            self.waiting.insert((since, key));
        }
        if end && let Some(mut flow) = self.flows.remove(&key) {
            flow.sync.lost_sync();
            self.skipped_bytes += flow.sync.skipped_bytes;
            self.framing_errors += flow.sync.framing_errors;
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .flows
            .iter()
            .min_by_key(|(_, f)| f.last_used)
            .map(|(k, _)| *k);
        if let Some(mut flow) = oldest.and_then(|k| self.flows.remove(&k)) {
            flow.sync.lost_sync();
            self.skipped_bytes += flow.sync.skipped_bytes;
            self.framing_errors += flow.sync.framing_errors;
        }
    }
}

/// Which gaps a pass over the held segments may give up.
#[derive(Clone, Copy)]
enum Skip {
    /// None: stop at the first.
    None,
    /// Those that start before this sequence number (acknowledged by the peer).
    Before(u32),
    /// All of them (waited long enough, the stream ended).
    All,
}

fn accept(
    flow: &mut Flow,
    seq: u32,
    payload: &[u8],
    at_ms: i64,
    out: &mut Vec<(i64, Unit)>,
    stats: &mut Stats,
) {
    let Some(next) = flow.next else { return };
    let end = seq.wrapping_add(payload.len() as u32);
    if !before(next, end) {
        stats.retransmissions += 1; // every byte seen already
        return;
    }
    if before(next, seq) {
        // A gap: hold until it fills. Held segments are keyed by their offset in
        // the stream, so ordering survives the sequence number wrapping.
        let offset = seq.wrapping_sub(flow.base);
        if flow.held.contains_key(&offset) {
            stats.retransmissions += 1; // the same out-of-order segment again
            return;
        }
        flow.held_bytes += payload.len();
        flow.held.insert(
            offset,
            Held {
                seq,
                data: payload.to_vec(),
                at_ms,
            },
        );
        flow.gap_since.get_or_insert(at_ms);
        flow.gap_opened.get_or_insert(at_ms);
        if flow.held_bytes > MAX_HELD {
            // The missing bytes are not in the capture: go on without them.
            follow_on(flow, Skip::All, out, stats);
        } else if let Some(acked) = flow.acked
            && before(next, acked)
        {
            // Already acknowledged past the gap: it will not fill.
            follow_on(flow, Skip::Before(acked), out, stats);
        }
        return;
    }
    // Overlap with what was seen: keep only the new bytes.
    let skip = next.wrapping_sub(seq) as usize;
    push(flow, &payload[skip..], at_ms, out);
    flow.next = Some(end);
    // What waited behind this segment reaches the receiver with it, not before.
    follow_on_from(flow, Skip::None, Some(at_ms), out, stats);
}

/// Hands over held segments in order, stopping at a gap `skip` does not allow
/// giving up; a gap given up is counted, with its size, and the framing
/// resynchronises after it.
fn follow_on(flow: &mut Flow, skip: Skip, out: &mut Vec<(i64, Unit)>, stats: &mut Stats) {
    follow_on_from(flow, skip, None, out, stats);
}

/// `follow_on`, the held bytes delivered no earlier than `filled_at` when a
/// segment filling their gap has just arrived.
fn follow_on_from(
    flow: &mut Flow,
    skip: Skip,
    filled_at: Option<i64>,
    out: &mut Vec<(i64, Unit)>,
    stats: &mut Stats,
) {
    // Each turn pops a held segment or stops.
    for _ in 0..=flow.held.len() {
        let Some((_, first)) = flow.held.first_key_value() else {
            break;
        };
        let s = first.seq;
        let n = flow.next.unwrap_or(s);
        if before(n, s) {
            let allowed = match skip {
                Skip::None => false,
                Skip::Before(limit) => before(n, limit),
                Skip::All => true,
            };
            if !allowed {
                break;
            }
            stats.gaps += 1;
            stats.gap_bytes += u64::from(s.wrapping_sub(n));
            flow.sync.lost_sync();
            flow.next = Some(s);
        }
        let n = flow.next.unwrap_or(s);
        let Some((_, held)) = flow.held.pop_first() else {
            break;
        };
        flow.held_bytes -= held.data.len();
        let e = held.seq.wrapping_add(held.data.len() as u32);
        if before(n, e) {
            let from = n.wrapping_sub(held.seq) as usize;
            let at = filled_at.map_or(held.at_ms, |f| f.max(held.at_ms));
            push(flow, &held.data[from..], at, out);
            flow.next = Some(e);
        } else {
            stats.retransmissions += 1;
        }
    }
    if flow.held.is_empty() {
        flow.gap_since = None;
        flow.gap_opened = None;
    } else if !matches!(skip, Skip::None) {
        // Still waiting, on a later gap: its wait starts now.
        flow.gap_since = flow.held.first_key_value().map(|(_, h)| h.at_ms);
    }
}

fn push(flow: &mut Flow, data: &[u8], at_ms: i64, out: &mut Vec<(i64, Unit)>) {
    let mut units = Vec::new();
    flow.sync.push(data, &mut units);
    out.extend(units.into_iter().map(|u| (at_ms, u)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> SocketAddr {
        "10.0.0.1:5060".parse().unwrap()
    }
    fn b() -> SocketAddr {
        "10.0.0.2:5060".parse().unwrap()
    }
    fn seg(seq: u32, syn: bool, payload: &[u8]) -> Segment {
        Segment::Tcp {
            src: a(),
            dst: b(),
            seq,
            ack: None,
            syn,
            end: false,
            payload: payload.to_vec(),
        }
    }
    /// Feeds a segment at time 0 and appends the units it completes.
    fn feed(s: &mut Streams, seg: &Segment, out: &mut Vec<Unit>) {
        let mut released = Vec::new();
        s.segment(seg, 0, &mut released);
        out.extend(released.into_iter().map(|r| r.unit));
    }
    fn msg(n: u32) -> Vec<u8> {
        format!("OPTIONS sip:x SIP/2.0\r\nCall-ID: {n}\r\nContent-Length: 0\r\n\r\n").into_bytes()
    }

    #[test]
    fn out_of_order_and_retransmitted_segments_give_each_message_once() {
        let stream: Vec<u8> = (0..3).flat_map(msg).collect();
        let pieces: Vec<(u32, &[u8])> = stream
            .chunks(17)
            .enumerate()
            .map(|(i, c)| (1000 + 1 + (i * 17) as u32, c))
            .collect();
        let mut s = Streams::new(65536);
        let mut out = Vec::new();
        feed(&mut s, &seg(1000, true, &[]), &mut out);
        // Reverse pairs, and every piece twice.
        let mut order: Vec<usize> = (0..pieces.len()).collect();
        for pair in order.chunks_mut(2) {
            pair.reverse();
        }
        for i in order {
            let (seq, data) = pieces[i];
            feed(&mut s, &seg(seq, false, data), &mut out);
            feed(&mut s, &seg(seq, false, data), &mut out);
        }
        assert_eq!(
            out,
            (0..3).map(|n| Unit::Sip(msg(n).into())).collect::<Vec<_>>()
        );
        assert!(s.retransmissions >= pieces.len() as u64);
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let m = msg(7);
        let mut s = Streams::new(65536);
        let mut out = Vec::new();
        let start = u32::MAX - 5;
        feed(&mut s, &seg(start, false, &m[..10]), &mut out);
        feed(
            &mut s,
            &seg(start.wrapping_add(10), false, &m[10..]),
            &mut out,
        );
        assert_eq!(out, [Unit::Sip(m.into())]);
    }

    #[test]
    fn a_capture_starting_mid_message_resynchronises() {
        let m = msg(1);
        let mut s = Streams::new(65536);
        let mut out = Vec::new();
        // The tail of an earlier message, then whole ones.
        feed(&mut s, &seg(50, false, b"garbage tail\r\n\r\n"), &mut out);
        let mut seq = 50 + 16;
        for _ in 0..2 {
            feed(&mut s, &seg(seq, false, &m), &mut out);
            seq += m.len() as u32;
        }
        assert!(out.contains(&Unit::Sip(m.clone().into())), "{out:?}");
    }

    #[test]
    fn a_segment_missing_from_the_capture_costs_only_its_message() {
        let stream: Vec<u8> = (0..7).flat_map(msg).collect();
        let one = msg(0).len() as u32;
        let mut s = Streams::new(65536);
        let mut out = Vec::new();
        feed(&mut s, &seg(100, true, &[]), &mut out);
        // Message by message, but the third never reached the capture.
        for i in 0..7u32 {
            if i == 2 {
                continue;
            }
            let from = (i * one) as usize;
            let data = &stream[from..from + one as usize];
            feed(&mut s, &seg(101 + i * one, false, data), &mut out);
        }
        assert_eq!(out.len(), 2, "held behind the gap until the stream ends");
        let mut fin = seg(101 + 7 * one, false, &[]);
        if let Segment::Tcp { end, .. } = &mut fin {
            *end = true;
        }
        feed(&mut s, &fin, &mut out);
        let want: Vec<Unit> = [0, 1, 3, 4, 5, 6]
            .into_iter()
            .map(|n| Unit::Sip(msg(n).into()))
            .collect();
        assert_eq!(out, want);
        assert_eq!(s.gaps, 1);
    }

    #[test]
    fn held_segments_keep_their_order_across_the_sequence_wrap() {
        let m = msg(9);
        let mut s = Streams::new(65536);
        let mut out = Vec::new();
        let start = u32::MAX - 20;
        feed(&mut s, &seg(start, false, &m[..10]), &mut out);
        // The two later pieces arrive in reverse, the second past the wrap.
        feed(
            &mut s,
            &seg(start.wrapping_add(40), false, &m[40..]),
            &mut out,
        );
        feed(
            &mut s,
            &seg(start.wrapping_add(10), false, &m[10..40]),
            &mut out,
        );
        assert_eq!(out, [Unit::Sip(m.into())]);
    }

    #[test]
    fn bare_acks_and_resets_of_unknown_flows_open_nothing() {
        let mut s = Streams::new(65536);
        let mut out = Vec::new();
        for i in 0..1000u32 {
            let mut rst = seg(i, false, &[]);
            if let Segment::Tcp { src, end, .. } = &mut rst {
                *src = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 40000));
                *end = true;
            }
            feed(&mut s, &rst, &mut out);
        }
        assert!(s.flows.is_empty());
    }
}
