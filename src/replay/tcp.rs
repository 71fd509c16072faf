//! TCP streams in a capture: segments put back in sequence order per flow,
//! retransmissions dropped, then framed into SIP messages (by Content-Length) or
//! HEP packets (by their length), like the live listeners do.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use super::packet::Segment;
use crate::sip::stream::StreamFramer;

/// Out-of-order bytes held per flow before the gap is given up on.
const MAX_HELD: usize = 1 << 20;
/// Flows followed at once; the oldest is forgotten past it.
const MAX_FLOWS: usize = 65_536;

pub use crate::sip::stream::Unit;

struct Flow {
    /// Sequence number of the next byte expected.
    next: Option<u32>,
    /// Sequence number of the stream's first byte (offsets are from it).
    base: u32,
    /// Segments past a gap, by offset in the stream: (sequence number, bytes).
    held: BTreeMap<u32, (u32, Vec<u8>)>,
    held_bytes: usize,
    /// Chosen by the first bytes; `None` until then, and again after a framing
    /// error, so the stream resynchronises on the next segment.
    frames: Option<StreamFramer>,
    last_used: u64,
}

/// Every TCP flow of a capture.
#[derive(Default)]
pub struct Streams {
    flows: HashMap<(SocketAddr, SocketAddr), Flow>,
    max_message_bytes: usize,
    clock: u64,
    /// Segments dropped as retransmissions (already-seen bytes).
    pub retransmissions: u64,
    /// Times a stream could not be framed (mid-message start, garbage) and
    /// its buffer was dropped to resynchronise.
    pub framing_errors: u64,
    /// Gaps given up on (bytes missing from the capture).
    pub gaps: u64,
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

    /// Feeds one TCP segment (anything else is ignored); whole messages it
    /// completes go to `out`.
    pub fn segment(&mut self, seg: &Segment, out: &mut Vec<Unit>) {
        let &Segment::Tcp {
            src,
            dst,
            seq,
            syn,
            end,
            ref payload,
        } = seg
        else {
            return;
        };
        self.clock += 1;
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
        let flow = self.flows.entry(key).or_insert_with(|| Flow {
            next: None,
            base: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            frames: None,
            last_used: 0,
        });
        flow.last_used = self.clock;
        let mut stats = (0, 0, 0);
        if syn {
            flow.next = Some(seq.wrapping_add(1));
            flow.base = seq.wrapping_add(1);
            flow.held.clear();
            flow.held_bytes = 0;
            flow.frames = None;
        }
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        if !payload.is_empty() {
            // A capture that starts mid-stream starts at the first byte it has.
            if flow.next.is_none() {
                flow.next = Some(data_seq);
                flow.base = data_seq;
            }
            accept(flow, data_seq, payload, max, out, &mut stats);
        }
        if end {
            // Nothing more comes: what is held after a gap is all there is.
            skip_gap(flow, max, out, &mut stats);
            self.flows.remove(&key);
        }
        self.count(stats);
    }

    /// At the end of the capture: every flow gives up its gaps and hands over
    /// what it held, with the flow it came from.
    pub fn finish(&mut self, out: &mut Vec<((SocketAddr, SocketAddr), Unit)>) {
        let max = self.max_message_bytes;
        let mut stats = (0, 0, 0);
        let mut units = Vec::new();
        for (key, flow) in self.flows.iter_mut() {
            skip_gap(flow, max, &mut units, &mut stats);
            out.extend(units.drain(..).map(|u| (*key, u)));
        }
        self.flows.clear();
        self.count(stats);
    }

    fn count(&mut self, (retransmissions, framing_errors, gaps): (u64, u64, u64)) {
        self.retransmissions += retransmissions;
        self.framing_errors += framing_errors;
        self.gaps += gaps;
    }

    fn evict_oldest(&mut self) {
        if let Some(key) = self
            .flows
            .iter()
            .min_by_key(|(_, f)| f.last_used)
            .map(|(k, _)| *k)
        {
            self.flows.remove(&key);
        }
    }
}

fn accept(
    flow: &mut Flow,
    seq: u32,
    payload: &[u8],
    max: usize,
    out: &mut Vec<Unit>,
    stats: &mut (u64, u64, u64),
) {
    let Some(next) = flow.next else { return };
    let end = seq.wrapping_add(payload.len() as u32);
    if !before(next, end) {
        stats.0 += 1; // every byte seen already
        return;
    }
    if before(next, seq) {
        // A gap: hold until it fills. Held segments are keyed by their offset in
        // the stream, so ordering survives the sequence number wrapping.
        let offset = seq.wrapping_sub(flow.base);
        if flow.held.contains_key(&offset) {
            stats.0 += 1; // the same out-of-order segment again
            return;
        }
        flow.held_bytes += payload.len();
        flow.held.insert(offset, (seq, payload.to_vec()));
        if flow.held_bytes > MAX_HELD {
            // The missing bytes are not in the capture: go on without them.
            skip_gap(flow, max, out, stats);
        }
        return;
    }
    // Overlap with what was seen: keep only the new bytes.
    let skip = next.wrapping_sub(seq) as usize;
    push(flow, &payload[skip..], max, out, stats);
    flow.next = Some(end);
    follow_on(flow, max, out, stats, false);
}

/// Hands over held segments in order. Stops at a gap, unless `skip` says the
/// missing bytes will not come: then the stream resumes after it (counted, and
/// framing starts afresh since a message was cut).
fn follow_on(
    flow: &mut Flow,
    max: usize,
    out: &mut Vec<Unit>,
    stats: &mut (u64, u64, u64),
    skip: bool,
) {
    while let Some((_, &(s, _))) = flow.held.first_key_value() {
        let n = flow.next.unwrap_or(s);
        if before(n, s) {
            if !skip {
                break;
            }
            stats.2 += 1;
            flow.frames = None;
            flow.next = Some(s);
        }
        let n = flow.next.unwrap_or(s);
        let Some((_, (s, data))) = flow.held.pop_first() else {
            break;
        };
        flow.held_bytes -= data.len();
        let e = s.wrapping_add(data.len() as u32);
        if before(n, e) {
            let from = n.wrapping_sub(s) as usize;
            push(flow, &data[from..], max, out, stats);
            flow.next = Some(e);
        } else {
            stats.0 += 1;
        }
    }
}

fn skip_gap(flow: &mut Flow, max: usize, out: &mut Vec<Unit>, stats: &mut (u64, u64, u64)) {
    follow_on(flow, max, out, stats, true);
}

fn push(
    flow: &mut Flow,
    data: &[u8],
    max: usize,
    out: &mut Vec<Unit>,
    stats: &mut (u64, u64, u64),
) {
    let framer = flow
        .frames
        .get_or_insert_with(|| StreamFramer::detect(data, max));
    framer.buffer_mut().extend_from_slice(data);
    loop {
        match framer.next_unit() {
            Ok(Some(unit)) => out.push(unit),
            Ok(None) => break,
            Err(_) => {
                stats.1 += 1;
                flow.frames = None;
                break;
            }
        }
    }
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
            syn,
            end: false,
            payload: payload.to_vec(),
        }
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
        s.segment(&seg(1000, true, &[]), &mut out);
        // Reverse pairs, and every piece twice.
        let mut order: Vec<usize> = (0..pieces.len()).collect();
        for pair in order.chunks_mut(2) {
            pair.reverse();
        }
        for i in order {
            let (seq, data) = pieces[i];
            s.segment(&seg(seq, false, data), &mut out);
            s.segment(&seg(seq, false, data), &mut out);
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
        s.segment(&seg(start, false, &m[..10]), &mut out);
        s.segment(&seg(start.wrapping_add(10), false, &m[10..]), &mut out);
        assert_eq!(out, [Unit::Sip(m.into())]);
    }

    #[test]
    fn a_capture_starting_mid_message_resynchronises() {
        let m = msg(1);
        let mut s = Streams::new(65536);
        let mut out = Vec::new();
        // The tail of an earlier message, then whole ones.
        s.segment(&seg(50, false, b"garbage tail\r\n\r\n"), &mut out);
        let mut seq = 50 + 16;
        for _ in 0..2 {
            s.segment(&seg(seq, false, &m), &mut out);
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
        s.segment(&seg(100, true, &[]), &mut out);
        // Message by message, but the third never reached the capture.
        for i in 0..7u32 {
            if i == 2 {
                continue;
            }
            let from = (i * one) as usize;
            let data = &stream[from..from + one as usize];
            s.segment(&seg(101 + i * one, false, data), &mut out);
        }
        assert_eq!(out.len(), 2, "held behind the gap until the stream ends");
        let mut fin = seg(101 + 7 * one, false, &[]);
        if let Segment::Tcp { end, .. } = &mut fin {
            *end = true;
        }
        s.segment(&fin, &mut out);
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
        s.segment(&seg(start, false, &m[..10]), &mut out);
        // The two later pieces arrive in reverse, the second past the wrap.
        s.segment(&seg(start.wrapping_add(40), false, &m[40..]), &mut out);
        s.segment(&seg(start.wrapping_add(10), false, &m[10..40]), &mut out);
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
            s.segment(&rst, &mut out);
        }
        assert!(s.flows.is_empty());
    }
}
