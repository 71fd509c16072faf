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
/// INVITE cannot come later than its transaction's 32 s. Each ended call costs
/// about 60 bytes for this long (about 4 MB at 500 calls/s).
pub const REUSE_MEMORY_MS: i64 = 120_000;

/// An initial INVITE's identity within its dialog: a hash of its CSeq number and
/// top Via branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct InviteMark(u64);

impl InviteMark {
    pub(super) fn of(msg: &SipMessage) -> InviteMark {
        InviteMark(hash(&(msg.cseq, &msg.via_branch)))
    }

    /// A call restored after a restart knows its CSeq only.
    pub(super) fn restored(cseq: u32) -> InviteMark {
        InviteMark(hash(&(cseq, "restored")))
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

/// INVITEs remembered for one dialog (the oldest overwritten past it): inline,
/// so a call or an ended dialog remembers them without an allocation.
const MARKS: usize = 4;

/// The initial INVITEs seen on a dialog: its calls' first INVITE, a retry after
/// a challenge, a proxy's forwarded copy (its own top Via).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Invites {
    marks: [InviteMark; MARKS],
    len: u8,
}

impl Invites {
    pub(super) fn new(m: InviteMark) -> Invites {
        let mut i = Invites::default();
        i.add(m);
        i
    }

    pub(super) fn holds(&self, m: InviteMark) -> bool {
        self.marks[..usize::from(self.len)].contains(&m)
    }

    pub(super) fn add(&mut self, m: InviteMark) {
        if self.holds(m) {
            return;
        }
        if usize::from(self.len) < MARKS {
            self.marks[usize::from(self.len)] = m;
            self.len += 1;
        } else {
            self.marks.rotate_left(1);
            self.marks[MARKS - 1] = m;
        }
    }

    fn add_all(&mut self, other: &Invites) {
        for m in &other.marks[..usize::from(other.len)] {
            self.add(*m);
        }
    }
}

/// What is remembered of a dialog whose calls ended: when the last one did, and
/// the initial INVITEs of all of them (so no two get the same id).
struct Remembered {
    ended: Timestamp,
    invites: Invites,
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
/// of them (the oldest forgotten first).
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
        let r = self.by_key.entry(k).or_insert(Remembered {
            ended,
            invites: Invites::default(),
        });
        r.ended = ended;
        r.invites.add_all(&invites);
        self.order.push_back((ended, k));
    }

    /// What `msg`, an initial INVITE for `key` while no call is live on it,
    /// is to an ended call there: `None` when none ended within the memory.
    pub(super) fn judge(&self, key: &str, msg: &SipMessage, now: Timestamp) -> Option<Reuse> {
        let r = self.by_key.get(&hash(&key))?;
        if now.0.saturating_sub(r.ended.0) > REUSE_MEMORY_MS {
            return None;
        }
        Some(if r.invites.holds(InviteMark::of(msg)) {
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
