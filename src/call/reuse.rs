//! Calls that reuse an ended call's Call-ID and From tag (buggy phones, some
//! B2BUAs). A call's id is a hash of the two, so without this the second call
//! would get the first one's `call.id` and event ids, and a receiver that
//! deduplicates by id (as docs/events.md tells it to) would drop it silently.
//!
//! The tracker remembers, for a while after each call ends, which initial
//! INVITEs it had (CSeq and top Via branch). A later initial INVITE on the same
//! Call-ID and From tag that is none of them starts a new call whose id also
//! hashes that INVITE's CSeq and branch: deterministic, so two instances fed the
//! same mirror agree, and no call that does not reuse sees its id change.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::sip::SipMessage;
use crate::vocab::Timestamp;

/// How long an ended call's INVITEs are remembered: the reuses seen in the
/// field come seconds to a minute after the end; a retransmission of the old
/// INVITE cannot come later than its transaction's 32 s.
pub const REUSE_MEMORY_MS: i64 = 300_000;

/// An initial INVITE's identity within its dialog: CSeq and a hash of the top
/// Via branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct InviteMark {
    cseq: u32,
    branch: u64,
}

impl InviteMark {
    pub(super) fn of(msg: &SipMessage) -> InviteMark {
        InviteMark {
            cseq: msg.cseq,
            branch: hash(&msg.via_branch),
        }
    }

    /// A call restored after a restart knows its CSeq only.
    pub(super) fn restored(cseq: u32) -> InviteMark {
        InviteMark { cseq, branch: 0 }
    }

    /// What goes into a reusing call's id beside its Call-ID and From tag.
    pub(super) fn discriminator(msg: &SipMessage) -> String {
        format!(
            "reuse\n{}\n{}",
            msg.cseq,
            msg.via_branch.as_deref().unwrap_or("")
        )
    }
}

/// The first and the latest initial INVITE of a call (a retry after a
/// challenge is the latest).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Invites {
    pub(super) first: InviteMark,
    pub(super) latest: InviteMark,
}

impl Invites {
    pub(super) fn new(m: InviteMark) -> Invites {
        Invites {
            first: m,
            latest: m,
        }
    }
}

/// Most INVITEs remembered for one dialog, over all its ended calls.
const MARKS_PER_DIALOG: usize = 8;

/// What is remembered of a dialog whose calls ended: when the last one did, and
/// the initial INVITEs of all of them (so no two get the same id).
struct Remembered {
    ended: Timestamp,
    marks: Vec<InviteMark>,
}

/// An initial INVITE on an ended call's dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reuse {
    /// A late copy of one of the ended call's own INVITEs: it starts nothing.
    Copy,
    /// Another INVITE: a new call on the same Call-ID and From tag.
    NewCall,
}

/// Ended calls' INVITEs by dialog key, for [`REUSE_MEMORY_MS`] and at most `cap`
/// of them (the oldest forgotten first): a few dozen bytes per call.
pub(super) struct EndedDialogs {
    by_key: HashMap<u64, Remembered>,
    order: VecDeque<(Timestamp, u64)>,
    cap: usize,
}

impl EndedDialogs {
    pub(super) fn new(cap: usize) -> EndedDialogs {
        EndedDialogs {
            by_key: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    pub(super) fn remember(&mut self, key: &str, ended: Timestamp, invites: Invites) {
        self.forget_before(Timestamp(ended.0.saturating_sub(REUSE_MEMORY_MS)));
        while self.order.len() >= self.cap.max(1) {
            self.pop_oldest();
        }
        let k = hash(&key);
        let r = self.by_key.entry(k).or_insert_with(|| Remembered {
            ended,
            marks: Vec::new(),
        });
        r.ended = ended;
        for m in [invites.first, invites.latest] {
            if !r.marks.contains(&m) {
                if r.marks.len() >= MARKS_PER_DIALOG {
                    r.marks.remove(0);
                }
                r.marks.push(m);
            }
        }
        self.order.push_back((ended, k));
    }

    /// What `msg`, an initial INVITE for `key` while no call is live on it,
    /// is to an ended call there: `None` when none ended within the memory.
    pub(super) fn judge(&self, key: &str, msg: &SipMessage, now: Timestamp) -> Option<Reuse> {
        let r = self.by_key.get(&hash(&key))?;
        if now.0.saturating_sub(r.ended.0) > REUSE_MEMORY_MS {
            return None;
        }
        Some(if r.marks.contains(&InviteMark::of(msg)) {
            Reuse::Copy
        } else {
            Reuse::NewCall
        })
    }

    fn forget_before(&mut self, limit: Timestamp) {
        while self.order.front().is_some_and(|(t, _)| *t < limit) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((t, k)) = self.order.pop_front()
            && self.by_key.get(&k).is_some_and(|r| r.ended == t)
        {
            self.by_key.remove(&k);
        }
    }
}

fn hash<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}
