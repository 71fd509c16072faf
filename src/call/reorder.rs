//! Messages that arrive before the INVITE they belong to. A proxy with many
//! worker processes (Kamailio, OpenSIPS) sends its siptrace copies from whichever
//! worker handled each message, so the copy of a 180 or a 200 can reach siphook
//! before the copy of its INVITE. Such a message is held here for
//! `sip.reorder_window`; when its INVITE comes, the tracker applies it right
//! after, in capture-time order. One that never finds its INVITE is dropped and
//! counted. Messages in the normal order never come here, so they are never
//! delayed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::sip::{Method, SipMessage, StartLine};
use crate::vocab::{Meta, Timestamp};

/// Held at most per Call-ID: a whole call's worth of early copies, not a flood.
const PER_CALL: usize = 16;
/// Held at most in all: at the default 200 ms window this is 50,000 early
/// copies a second, well past what reordering produces.
const TOTAL: usize = 10_000;

/// What became of held messages since the last [`Reorder::take_counts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeldCounts {
    /// Held, then applied after their INVITE.
    pub applied: u64,
    /// Held without finding their dialog (no INVITE within the window, or an
    /// INVITE that started no call): dropped.
    pub expired: u64,
    /// Not held, the bound being reached: dropped at once.
    pub shed: u64,
}

struct Held {
    msg: SipMessage,
    meta: Meta,
    seq: u64,
    until: Timestamp,
}

/// The held messages, by Call-ID, with their deadlines.
pub(super) struct Reorder {
    window: Duration,
    held: HashMap<String, Vec<Held>>,
    deadlines: BTreeMap<(Timestamp, u64), String>,
    total: usize,
    seq: u64,
    counts: HeldCounts,
}

impl Reorder {
    pub(super) fn new(window: Duration) -> Reorder {
        Reorder {
            window,
            held: HashMap::new(),
            deadlines: BTreeMap::new(),
            total: 0,
            seq: 0,
            counts: HeldCounts::default(),
        }
    }

    /// Whether `msg` (of no known dialog) may be one that overtook its INVITE:
    /// a response, or a CANCEL, ACK or BYE.
    fn may_be_early(msg: &SipMessage) -> bool {
        match msg.start {
            StartLine::Response { .. } => true,
            StartLine::Request { .. } => {
                matches!(msg.method(), Method::Cancel | Method::Ack | Method::Bye)
            }
        }
    }

    /// Holds `msg` if it may be early and there is room: whether it was held.
    pub(super) fn hold(&mut self, msg: &SipMessage, meta: &Meta) -> bool {
        if self.window.is_zero() || !Self::may_be_early(msg) {
            return false;
        }
        let queued = self.held.get(&msg.call_id).map_or(0, Vec::len);
        if self.total >= TOTAL || queued >= PER_CALL {
            self.counts.shed += 1;
            return false;
        }
        self.seq += 1;
        let until = meta.received_at.plus(self.window);
        self.deadlines
            .insert((until, self.seq), msg.call_id.clone());
        self.held
            .entry(msg.call_id.clone())
            .or_default()
            .push(Held {
                msg: msg.clone(),
                meta: *meta,
                seq: self.seq,
                until,
            });
        self.total += 1;
        true
    }

    /// The messages held for `call_id`, in capture-time order (arrival order
    /// among equal times), none received before `not_before`: a copy that came
    /// first still happened after the INVITE it answers.
    pub(super) fn take(&mut self, call_id: &str, not_before: Timestamp) -> Vec<(SipMessage, Meta)> {
        let Some(mut held) = self.held.remove(call_id) else {
            return Vec::new();
        };
        held.sort_by_key(|h| (h.meta.received_at, h.seq));
        self.total -= held.len();
        held.into_iter()
            .map(|h| {
                self.deadlines.remove(&(h.until, h.seq));
                let mut meta = h.meta;
                meta.received_at = meta.received_at.max(not_before);
                (h.msg, meta)
            })
            .collect()
    }

    /// Counts a taken message: applied to its call, or still of no dialog.
    pub(super) fn note(&mut self, applied: bool) {
        if applied {
            self.counts.applied += 1;
        } else {
            self.counts.expired += 1;
        }
    }

    /// Drops every message whose window ended at or before `now`.
    pub(super) fn expire(&mut self, now: Timestamp) {
        while let Some(entry) = self.deadlines.first_entry() {
            let (until, seq) = *entry.key();
            if until > now {
                break;
            }
            let call_id = entry.remove();
            if let Some(list) = self.held.get_mut(&call_id) {
                let before = list.len();
                list.retain(|h| h.seq != seq);
                let gone = before - list.len();
                self.total -= gone;
                self.counts.expired += gone as u64;
                if list.is_empty() {
                    self.held.remove(&call_id);
                }
            }
        }
    }

    /// When the next held message's window ends.
    pub(super) fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first_key_value().map(|((t, _), _)| *t)
    }

    /// What happened to held messages since the last call.
    pub(super) fn take_counts(&mut self) -> HeldCounts {
        std::mem::take(&mut self.counts)
    }
}
