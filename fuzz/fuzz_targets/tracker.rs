//! The call tracker fed a sequence of valid-looking SIP messages that the input
//! bytes choose (method or status, which of a few Call-IDs and tags, CSeq,
//! headers that drive transfers and session timers, which of a few addresses,
//! how far the clock moves), with its timers ticked as the gateway ticks them.
//!
//! Invariants, from docs/events.md: no panic; per call `sequence` runs 1, 2, 3 …
//! without gaps and starts with `call.initiated`; `call.ringing` and
//! `call.answered` at most once, ringing never after answered; nothing after
//! `call.completed`; a completed call's durations add up and its timestamp is its
//! `ended_at`; the table never holds more than `max_active_calls` and its count
//! matches the calls open; and once every timer has run, every call that was
//! initiated has completed exactly once and the table is empty.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use siphook::call::{Disposition, EndedBy, Event, EventData, EventType, Tracker, TrackerConfig};
use siphook::sip::{ParseOptions, parse};
use siphook::vocab::{Meta, Timestamp, Transport};

/// Few enough that messages collide with each other's dialogs often.
const CALL_IDS: [&str; 4] = ["a84b4c76e66710", "f81d4fae-7dec", "c3", "x@h"];
/// "" means no tag parameter at all.
const TAGS: [&str; 4] = ["1928301774", "314159", "b", ""];
/// Caller, proxy, callee, another branch.
const ADDRS: [&str; 4] = [
    "10.0.0.1:5060",
    "10.0.0.2:5060",
    "10.0.0.3:5060",
    "10.0.0.4:5062",
];
const METHODS: [&str; 12] = [
    "INVITE", "INVITE", "ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "REFER", "NOTIFY", "INFO",
    "OPTIONS", "REGISTER",
];
const STATUSES: [u16; 20] = [
    100, 180, 183, 181, 200, 202, 302, 401, 403, 407, 408, 422, 480, 486, 487, 491, 500, 503, 600,
    603,
];
/// Clock steps in ms: retransmission gaps up to past every timer.
const STEPS: [i64; 8] = [0, 1, 500, 4_000, 33_000, 95_000, 181_000, 3_600_000];
const T0: i64 = 1_700_000_000_000;

const CHALLENGE_WINDOW: Duration = Duration::from_secs(32);

/// Reads the input a byte per choice (0 once it runs out), so a seed is easy to
/// write by hand: see `seeds/tracker/make.py`.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()]
    }
}

fn tag_param(tag: &str) -> String {
    if tag.is_empty() {
        String::new()
    } else {
        format!(";tag={tag}")
    }
}

/// One message's text from the input's choices.
fn message(u: &mut Cursor) -> String {
    let call_id = u.pick(&CALL_IDS);
    let from_tag = u.pick(&TAGS);
    let to_tag = u.pick(&TAGS);
    let cseq: u32 = match u.byte() {
        255 => u32::MAX,
        b => u32::from(b % 5) + 1,
    };
    let method = u.pick(&METHODS);
    let is_response = u.byte() & 1 == 1;
    let mut m = if is_response {
        let status = u.pick(&STATUSES);
        format!("SIP/2.0 {status} X\r\n")
    } else {
        format!("{method} sip:+15551234567@10.0.0.2 SIP/2.0\r\n")
    };
    let branch = u.byte() % 4;
    m.push_str(&format!(
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{branch}{cseq}\r\n"
    ));
    m.push_str(&format!(
        "From: \"Alice\" <sip:+15557654321@10.0.0.1>{}\r\nTo: <sip:+15551234567@10.0.0.2>{}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n",
        tag_param(from_tag),
        tag_param(to_tag),
    ));
    let extras = u16::from_le_bytes([u.byte(), u.byte()]);
    let mut body = String::new();
    if extras & 1 != 0 {
        let se = u.pick(&[1u32, 90, 120, 1800]);
        m.push_str(&format!("Session-Expires: {se};refresher=uac\r\n"));
    }
    if extras & 2 != 0 {
        m.push_str("Reason: Q.850;cause=16;text=\"Normal call clearing\"\r\n");
    }
    if extras & 4 != 0 {
        let (cid, tt, ft) = (u.pick(&CALL_IDS), u.pick(&TAGS), u.pick(&TAGS));
        if u.byte() & 1 == 1 {
            m.push_str(&format!(
                "Refer-To: <sip:carol@10.0.0.3?Replaces={cid}%3Bto-tag%3D{tt}%3Bfrom-tag%3D{ft}>\r\n"
            ));
        } else {
            m.push_str("Refer-To: <sip:carol@10.0.0.3>\r\n");
        }
    }
    if extras & 8 != 0 {
        let (cid, tt, ft) = (u.pick(&CALL_IDS), u.pick(&TAGS), u.pick(&TAGS));
        m.push_str(&format!("Replaces: {cid};to-tag={tt};from-tag={ft}\r\n"));
        m.push_str("Referred-By: <sip:bob@10.0.0.2>\r\n");
    }
    if extras & 16 != 0 {
        let status = u.pick(&[100u16, 180, 200, 486, 503]);
        m.push_str("Event: refer;id=1\r\nSubscription-State: active\r\nContent-Type: message/sipfrag;version=2.0\r\n");
        body = format!("SIP/2.0 {status} X\r\n");
    } else if extras & 32 != 0 {
        m.push_str("Content-Type: application/sdp\r\n");
        body = "v=0\r\n".to_owned();
    }
    if extras & 64 != 0 {
        m.push_str("Refer-Sub: false\r\n");
    }
    if extras & 128 != 0 {
        m.push_str("P-Asserted-Identity: <sip:+15550000000@10.0.0.1>\r\n");
    }
    if extras & 256 != 0 {
        m.push_str("RSeq: 1\r\nRequire: 100rel\r\n");
    }
    m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    m
}

/// What the checker knows of one call id's current life.
#[derive(Default)]
struct Life {
    open: bool,
    seq: u32,
    ringing: bool,
    answered: bool,
    /// When its last `call.completed` said it ended.
    ended_at: Option<i64>,
}

struct Checker {
    lives: HashMap<String, Life>,
    open: usize,
    /// With a small table the ended-call memory is capped too, so a call id may
    /// start again sooner than `challenge_window` after it ended.
    small_table: bool,
    log: Vec<String>,
    /// TRACKER_FUZZ_TRACE set: print each step and event (to turn a finding
    /// into a unit test, or to check what a seed plays).
    trace: bool,
}

impl Checker {
    fn fail(&self, why: String) -> ! {
        panic!("{why}\nsteps:\n{}", self.log.join("\n"));
    }

    fn event(&mut self, e: &Event, now: i64) {
        let id = e.call.id.clone();
        if self.trace {
            eprintln!(
                "  => {} {} seq {} {:?}",
                &id[..12],
                e.event_type.as_str(),
                e.sequence,
                e.data
            );
        }
        if e.timestamp.millis() > now {
            self.fail(format!(
                "{id}: event stamped after now ({:?})",
                e.event_type
            ));
        }
        let life = self.lives.entry(id.clone()).or_default();
        if e.event_type == EventType::Initiated {
            if life.open {
                let why = format!("{id}: initiated while open");
                self.fail(why);
            }
            if e.sequence != 1 {
                let why = format!("{id}: initiated with sequence {}", e.sequence);
                self.fail(why);
            }
            if !self.small_table
                && let Some(ended) = life.ended_at
                && now < ended + CHALLENGE_WINDOW.as_millis() as i64
            {
                let why = format!("{id}: started again within challenge_window of its end");
                self.fail(why);
            }
            *life = Life {
                open: true,
                seq: 1,
                ..Life::default()
            };
            self.open += 1;
            return;
        }
        if !life.open {
            let why = format!("{id}: {:?} outside a live call", e.event_type);
            self.fail(why);
        }
        if e.sequence != life.seq + 1 {
            let why = format!("{id}: sequence {} after {}", e.sequence, life.seq);
            self.fail(why);
        }
        life.seq = e.sequence;
        let mut why = None;
        match &e.data {
            EventData::Ringing(_) => {
                if life.ringing || life.answered {
                    why = Some("ringing twice or after the answer");
                }
                life.ringing = true;
            }
            EventData::Answered(_) => {
                if life.answered {
                    why = Some("answered twice");
                }
                life.answered = true;
            }
            EventData::Transferred(_) => {}
            EventData::Completed(c) => {
                life.open = false;
                life.ended_at = Some(e.timestamp.millis());
                self.open -= 1;
                if e.call.ended_at != Some(e.timestamp) {
                    why = Some("completed timestamp is not ended_at");
                } else if c.duration_ms != c.ring_ms + c.talk_ms {
                    why = Some("duration is not ring + talk");
                } else if (c.disposition == Disposition::Answered) != life.answered {
                    why = Some("disposition answered without call.answered, or the reverse");
                } else if !life.answered && c.talk_ms != 0 {
                    why = Some("talk time on an unanswered call");
                } else if c.ended_by == EndedBy::Timeout && c.q850_cause.is_some() {
                    why = Some("a timer ending with a Q.850 cause");
                }
            }
            EventData::Initiated(_) => why = Some("initiated data on another type"),
        }
        if let Some(why) = why {
            self.fail(format!("{id}: {why}"));
        }
    }
}

fn run(data: &[u8]) {
    let mut u = Cursor(data);
    let small_table = u.byte() % 4 == 1;
    let mut tracker = Tracker::new(TrackerConfig {
        invite_timeout: Duration::from_secs(180),
        max_call_duration: Duration::from_secs(4 * 3600),
        challenge_window: CHALLENGE_WINDOW,
        max_active_calls: if small_table { 2 } else { 1000 },
        // Off: the checker follows each message's effect at once, and a held
        // message's comes later (tests/reorder.rs covers the window).
        reorder_window: Duration::ZERO,
    });
    let max = if small_table { 2 } else { 1000 };
    let opts = ParseOptions {
        correlation_headers: vec!["X-CID".to_owned()],
        max_message_bytes: 65_535,
    };
    let mut check = Checker {
        lives: HashMap::new(),
        open: 0,
        small_table,
        log: Vec::new(),
        trace: std::env::var_os("TRACKER_FUZZ_TRACE").is_some(),
    };
    let mut now = T0;
    let mut out = Vec::new();
    for _ in 0..64 {
        if u.0.is_empty() {
            break;
        }
        now += u.pick(&STEPS) + i64::from(u.byte()) * 4;
        let text = message(&mut u);
        let meta = Meta {
            transport: if u.byte() % 4 == 1 {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            source: pick_addr(&mut u),
            destination: pick_addr(&mut u),
            received_at: Timestamp(now),
        };
        check.log.push(format!(
            "t+{} {} -> {}\n{}",
            now - T0,
            meta.source,
            meta.destination,
            text
        ));
        if check.trace {
            eprintln!("{}", check.log[check.log.len() - 1]);
        }
        // As the gateway does: timers due before the message go first.
        tracker.on_time(Timestamp(now), &mut out);
        if let Ok(msg) = parse(text.as_bytes(), &opts) {
            let _ = tracker.on_message(&msg, &meta, &mut out);
        }
        for e in out.drain(..) {
            check.event(&e, now);
        }
        if tracker.active_calls() != check.open || check.open > max {
            let why = format!(
                "table holds {} calls, {} open by events (max {max})",
                tracker.active_calls(),
                check.open
            );
            check.fail(why);
        }
    }
    // Every timer runs out: each call ends, and the ended-call memory empties.
    let end = now + 30 * 24 * 3600 * 1000;
    tracker.on_time(Timestamp(end), &mut out);
    for e in out.drain(..) {
        check.event(&e, end);
    }
    if let Some((id, _)) = check.lives.iter().find(|(_, l)| l.open) {
        let why = format!("{id}: never completed");
        check.fail(why);
    }
    if tracker.active_calls() != 0 || tracker.next_deadline().is_some() {
        check.fail("table or timers not empty after every timer ran".to_owned());
    }
}

fn pick_addr(u: &mut Cursor) -> SocketAddr {
    let a = u.pick(&ADDRS);
    // Constant, valid literals.
    a.parse().unwrap_or_else(|_| unreachable!("{a}"))
}

fuzz_target!(|data: &[u8]| run(data));
