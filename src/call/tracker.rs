//! The dialog state machine: SIP messages in, call events out.
//!
//! The tracker is synchronous and owns its clock input: live ingest passes wall-clock
//! receive times, replay passes capture times, tests pass whatever they like. That
//! keeps every duration exact and every run reproducible.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::dialog::{Call, End, Hop, PendingRefer, Phase, ReplacingInvite, SEEN, Step};
use super::event::{
    CallInfo, CallSnapshot, CompletedData, Event, EventData, InitiatedData, Signaling,
    TransferKind, TransferredData, stable_id,
};
use super::reorder::{HeldCounts, Reorder};
use super::reuse::{EndedDialogs, InviteMark, Invites, Reuse};
use super::settings::{TimerKey, TrackerConfig};
use crate::sip::{Method, SipMessage, StartLine};
use crate::vocab::{Meta, Timestamp};

/// Why a message changed nothing; each is a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// Same Call-ID, CSeq, method, status and To tag as one already seen:
    /// a retransmission or the second copy of a proxy mirror.
    Duplicate,
    /// Belongs to a call whose start siphook never saw.
    UnknownDialog,
    /// REGISTER, OPTIONS, SUBSCRIBE, PUBLISH, MESSAGE: not part of a call.
    NotACall,
    /// A new call while the table holds `max_active_calls`.
    TableFull,
    /// Arrived after the call completed (late retransmissions, ACK to 487).
    AfterEnd,
    /// Part of a known call but no state change (ACK, 100, INFO, …).
    NoChange,
}

impl Ignored {
    /// Bounded label.
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::Duplicate => "duplicate",
            Ignored::UnknownDialog => "unknown_dialog",
            Ignored::NotACall => "not_a_call",
            Ignored::TableFull => "table_full",
            Ignored::AfterEnd => "after_end",
            Ignored::NoChange => "no_change",
        }
    }
}

enum Slot {
    Live(Box<Call>),
    /// Kept for `challenge_window` after completion so late retransmissions are
    /// recognised instead of starting a new call; its purge timer, to cancel if
    /// a new call reuses the dialog first.
    Ended(TimerKey),
}

/// Orders calls by their `id` alone (ids are unique).
struct ById<'a>(&'a CallInfo);

impl PartialEq for ById<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for ById<'_> {}
impl PartialOrd for ById<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ById<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.id.cmp(&other.0.id)
    }
}

/// The call table and its timers.
pub struct Tracker {
    cfg: TrackerConfig,
    calls: HashMap<Arc<str>, Slot>,
    /// Exactly one entry per slot (live call or tombstone): a call that ends
    /// early leaves nothing behind to wait for its hours-away deadline.
    timers: BTreeMap<TimerKey, Arc<str>>,
    next_timer: u64,
    live: usize,
    /// Tombstones held; capped at `max_active_calls` so a flood of short calls
    /// cannot grow the table past twice its bound.
    ended: usize,
    /// Ended calls' INVITEs, to tell a call that reuses a dialog from a late copy.
    ended_dialogs: EndedDialogs,
    /// Messages that came before their INVITE, waiting for it.
    early: Reorder,
}

impl Tracker {
    /// An empty table.
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            calls: HashMap::new(),
            timers: BTreeMap::new(),
            next_timer: 0,
            live: 0,
            ended: 0,
            ended_dialogs: EndedDialogs::new(cfg.max_active_calls),
            early: Reorder::new(cfg.reorder_window),
            cfg,
        }
    }

    /// Calls started and not yet completed.
    pub fn active_calls(&self) -> usize {
        self.live
    }

    /// Up to `limit` live calls in `id` order, starting after the id `after`: a
    /// stable cursor for paging through a table that changes between pages.
    /// Costs one pass over the table and O(limit) memory.
    pub fn calls_page(&self, after: Option<&str>, limit: usize) -> Vec<CallInfo> {
        let mut best = std::collections::BinaryHeap::with_capacity(limit + 1);
        for slot in self.calls.values() {
            let Slot::Live(call) = slot else { continue };
            if after.is_some_and(|a| call.info.id.as_str() <= a) {
                continue;
            }
            best.push(ById(&call.info));
            if best.len() > limit {
                best.pop(); // the largest id goes: the heap keeps the `limit` smallest
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|c| c.0.clone())
            .collect()
    }

    /// Puts back the calls that were live when the process stopped. Their timers are
    /// recomputed from their own timestamps, so a call whose deadline passed while
    /// siphook was down completes at that deadline on the first [`Tracker::on_time`].
    pub fn restore(&mut self, snapshots: Vec<CallSnapshot>, now: Timestamp) {
        for snap in snapshots {
            let tag = snap.info.from.tag.clone().unwrap_or_default();
            let key: Arc<str> = Arc::from(call_key(&snap.info.sip_call_id, &tag));
            if self.calls.contains_key(&key) || self.live >= self.cfg.max_active_calls {
                continue;
            }
            let mut call = Box::new(Call {
                phase: if snap.info.answered_at.is_some() {
                    Phase::Answered
                } else {
                    Phase::Proceeding
                },
                invite_cseq: snap.resume.invite_cseq,
                seq: snap.sequence,
                deadline: snap.info.started_at.plus(self.cfg.invite_timeout),
                armed: None,
                session_expires: snap
                    .resume
                    .session_expires
                    .map(|s| Duration::from_secs(u64::from(s))),
                session_limited: false,
                answer_status: snap.info.answered_at.map(|_| 200),
                refers: Vec::new(),
                replacing: None,
                early: Vec::new(),
                two_legs: snap.resume.two_legs,
                seen: [0; SEEN],
                seen_next: 0,
                bye: None,
                invites: Invites::new(InviteMark::restored(snap.resume.invite_cseq)),
                info: snap.info,
            });
            if call.phase == Phase::Answered {
                call.arm_answered(now, &self.cfg);
            }
            self.calls.insert(key.clone(), Slot::Live(call));
            self.live += 1;
            self.rearm(&key);
        }
    }

    /// Earliest instant at which [`Tracker::on_time`] has work; lets the driver sleep.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let call = self.timers.first_key_value().map(|((t, _), _)| *t);
        match (call, self.early.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What became of messages held for their INVITE since the last call (for
    /// the metrics): applied, expired, shed.
    pub fn take_held_counts(&mut self) -> HeldCounts {
        self.early.take_counts()
    }

    /// Feeds one message; events it causes are appended to `out`. A message of
    /// no known dialog that may have overtaken its INVITE is held instead (see
    /// [`super::reorder`]): it answers `Ok` now, and is applied when the INVITE
    /// comes or counted as expired.
    pub fn on_message(
        &mut self,
        msg: &SipMessage,
        meta: &Meta,
        out: &mut Vec<Event>,
    ) -> Result<(), Ignored> {
        let result = self.dispatch(msg, meta, out);
        if is_initial_invite(msg) {
            // Applied through `dispatch`, not here: one that still finds no
            // dialog is dropped, never held again.
            for (m, meta) in self.early.take(&msg.call_id, meta.received_at) {
                // What it changes nothing for is not the INVITE's answer.
                let r = self.dispatch(&m, &meta, out);
                self.early.note(!matches!(r, Err(Ignored::UnknownDialog)));
            }
        }
        match result {
            Err(Ignored::UnknownDialog)
                if !is_initial_invite(msg) && self.early.hold(msg, meta) =>
            {
                Ok(())
            }
            r => r,
        }
    }

    fn dispatch(
        &mut self,
        msg: &SipMessage,
        meta: &Meta,
        out: &mut Vec<Event>,
    ) -> Result<(), Ignored> {
        let method = msg.method();
        if matches!(
            method,
            Method::Register
                | Method::Options
                | Method::Subscribe
                | Method::Publish
                | Method::Message
        ) {
            return Err(Ignored::NotACall);
        }
        let from_tag = msg.from.tag.as_deref().unwrap_or("");
        let own_key = call_key(&msg.call_id, from_tag);
        if is_initial_invite(msg) {
            // A new call on the dialog while the old one's BYE waits for its
            // answer: that BYE ended the old one.
            let bye_ended = match self.calls.get_mut(own_key.as_str()) {
                Some(Slot::Live(call)) if !call.invites.holds(InviteMark::of(msg)) => {
                    call.take_pending_bye()
                }
                _ => None,
            };
            if let Some(end) = bye_ended {
                self.complete(&own_key, end, meta.received_at, out);
            }
        }
        if is_initial_invite(msg)
            && !matches!(self.calls.get(own_key.as_str()), Some(Slot::Live(_)))
        {
            match self.ended_dialogs.judge(&own_key, msg, meta.received_at) {
                Some(Reuse::Copy) => return Err(Ignored::AfterEnd),
                Some(Reuse::NewCall) => {
                    if let Some(Slot::Ended(purge)) = self.calls.remove(own_key.as_str()) {
                        self.timers.remove(&purge);
                        self.ended -= 1;
                    }
                    let reuse = InviteMark::discriminator(msg);
                    return self.start_call(msg, meta, own_key, Some(&reuse), out);
                }
                None => {}
            }
        }
        let (key, by_caller) = if self.calls.contains_key(own_key.as_str()) {
            (own_key, true)
        } else if msg.from.tag.is_some()
            && let peer_key = call_key(&msg.call_id, msg.to.tag.as_deref().unwrap_or(""))
            && self.calls.contains_key(peer_key.as_str())
        {
            // The callee's side. A caller without a From tag (RFC 2543) is keyed by
            // the empty tag, which the callee's requests carry as a tagless To.
            (peer_key, false)
        } else {
            return self.start_call(msg, meta, own_key, None, out);
        };
        let now = meta.received_at;
        let Some(Slot::Live(call)) = self.calls.get_mut(key.as_str()) else {
            return Err(Ignored::AfterEnd);
        };
        if is_initial_invite(msg) {
            // Every copy counts, a proxy's forwarded one (its own top Via)
            // included: once the call ends, none of them may start another.
            call.invites.add(InviteMark::of(msg));
        }
        let hop = call.hop(msg, meta);
        if !call.remember(msg, hop) {
            return Err(Ignored::Duplicate);
        }
        let step = match &msg.start {
            StartLine::Request { .. } => call.on_request(msg, by_caller, hop, now, &self.cfg),
            StartLine::Response { status } => call.on_response(msg, *status, hop, now, &self.cfg),
        };
        self.apply(&key, step, meta.received_at, out)
    }

    /// Fires every timer due at or before `now`.
    pub fn on_time(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        self.early.expire(now);
        while let Some(entry) = self.timers.first_entry() {
            let at = entry.key().0;
            if at > now {
                break;
            }
            let key = entry.remove();
            match self.calls.get_mut(&key) {
                Some(Slot::Ended(_)) => {
                    self.calls.remove(&key);
                    self.ended -= 1;
                }
                Some(Slot::Live(call)) => {
                    call.armed = None;
                    let end = call.on_deadline();
                    self.complete(&key, end, at, out);
                }
                None => {}
            }
        }
    }

    /// Starts a call on `msg`, its initial INVITE; `reuse` when it reuses an
    /// ended call's dialog (see [`super::reuse`]).
    fn start_call(
        &mut self,
        msg: &SipMessage,
        meta: &Meta,
        key: String,
        reuse: Option<&str>,
        out: &mut Vec<Event>,
    ) -> Result<(), Ignored> {
        if !is_initial_invite(msg) {
            return Err(Ignored::UnknownDialog);
        }
        if self.live >= self.cfg.max_active_calls {
            return Err(Ignored::TableFull);
        }
        let StartLine::Request { uri, .. } = &msg.start else {
            return Err(Ignored::UnknownDialog);
        };
        let now = meta.received_at;
        let from_tag = msg.from.tag.as_deref().unwrap_or("");
        let info = CallInfo {
            id: match reuse {
                None => stable_id("call_", &[&msg.call_id, from_tag]),
                Some(r) => stable_id("call_", &[&msg.call_id, from_tag, r]),
            },
            sip_call_id: msg.call_id.clone(),
            correlation_id: msg.correlation_id.clone(),
            from: msg.from.clone(),
            to: msg.to.clone(),
            ani: msg
                .p_asserted_identity
                .as_ref()
                .and_then(|p| p.user.clone())
                .or_else(|| msg.from.user.clone()),
            dnis: msg.to.user.clone(),
            started_at: now,
            ringing_at: None,
            answered_at: None,
            ended_at: None,
            signaling: Signaling {
                transport: meta.transport,
                source: meta.source,
                destination: meta.destination,
            },
        };
        let replacing = msg.replaces.as_ref().and_then(|r| {
            Some(Box::new(ReplacingInvite {
                replaced_call_id: self.known_call_id(&r.call_id, &r.to_tag, &r.from_tag)?,
                replaced_sip_call_id: r.call_id.clone(),
                referred_by: msg.referred_by.clone(),
            }))
        });
        let mut call = Box::new(Call {
            info,
            phase: Phase::Proceeding,
            invite_cseq: msg.cseq,
            seq: 0,
            deadline: now.plus(self.cfg.invite_timeout),
            // Only the 2xx says whether a session timer applies (RFC 4028 §7.2).
            session_expires: None,
            session_limited: false,
            answer_status: None,
            refers: Vec::new(),
            replacing,
            early: Vec::new(),
            two_legs: false,
            seen: [0; SEEN],
            seen_next: 0,
            armed: None,
            bye: None,
            invites: Invites::new(InviteMark::of(msg)),
        });
        call.remember(msg, Hop::Single);
        let data = EventData::Initiated(InitiatedData {
            request_uri: uri.clone(),
            user_agent: msg.user_agent.clone(),
            stir_shaken: msg.stir_shaken.clone(),
        });
        out.push(call.event(data, now, ""));
        let key: Arc<str> = Arc::from(key);
        self.calls.insert(key.clone(), Slot::Live(call));
        self.live += 1;
        self.rearm(&key);
        Ok(())
    }

    /// The id of a call siphook tracks or recently completed, found by its dialog
    /// identifiers in either orientation (Replaces names tags, not roles).
    fn known_call_id(&self, call_id: &str, tag_a: &str, tag_b: &str) -> Option<String> {
        [tag_a, tag_b]
            .into_iter()
            .find(|tag| self.calls.contains_key(call_key(call_id, tag).as_str()))
            .map(|tag| stable_id("call_", &[call_id, tag]))
    }

    fn apply(
        &mut self,
        key: &str,
        step: Step,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) -> Result<(), Ignored> {
        match step {
            Step::Nothing => Err(Ignored::NoChange),
            Step::Rearm => {
                self.rearm(key);
                Ok(())
            }
            Step::Ringing(data) => {
                if let Some(Slot::Live(call)) = self.calls.get_mut(key) {
                    out.push(call.event(EventData::Ringing(data), now, ""));
                }
                Ok(())
            }
            Step::Answered(data) => {
                if let Some(Slot::Live(call)) = self.calls.get_mut(key) {
                    out.push(call.event(EventData::Answered(data), now, ""));
                    if let Some(r) = call.replacing.take() {
                        let data = TransferredData {
                            kind: TransferKind::Attended,
                            target: call.info.to.uri.clone(),
                            referred_by: r.referred_by,
                            replaced_call_id: Some(r.replaced_call_id),
                            replaced_sip_call_id: Some(r.replaced_sip_call_id),
                        };
                        out.push(call.event(EventData::Transferred(data), now, "replaces"));
                    }
                }
                self.rearm(key);
                Ok(())
            }
            Step::Transferred(refer) => {
                self.transferred(key, refer, now, out);
                // A BYE that sent its accepted transfer out also moved the deadline.
                self.rearm(key);
                Ok(())
            }
            Step::End(end) => {
                self.complete(key, end, now, out);
                Ok(())
            }
        }
    }

    fn transferred(
        &mut self,
        key: &str,
        refer: PendingRefer,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let replaced_call_id = refer
            .replaces
            .as_ref()
            .and_then(|r| self.known_call_id(&r.call_id, &r.to_tag, &r.from_tag));
        let Some(Slot::Live(call)) = self.calls.get_mut(key) else {
            return;
        };
        let data = TransferredData {
            kind: if refer.replaces.is_some() {
                TransferKind::Attended
            } else {
                TransferKind::Blind
            },
            target: refer.target,
            referred_by: refer.referred_by,
            replaced_call_id,
            replaced_sip_call_id: refer.replaces.map(|r| r.call_id),
        };
        let disc = format!(
            "refer:{}:{}",
            refer.from_tag.as_deref().unwrap_or(""),
            refer.cseq
        );
        out.push(call.event(EventData::Transferred(data), now, &disc));
    }

    /// Moves the call's timer to its current deadline.
    fn rearm(&mut self, key: &str) {
        let Some((k, Slot::Live(call))) = self.calls.get_key_value(key) else {
            return;
        };
        if call.armed.is_some_and(|(at, _)| at == call.deadline) {
            return;
        }
        let (k, deadline, old) = (k.clone(), call.deadline, call.armed);
        if let Some(old) = old {
            self.timers.remove(&old);
        }
        let timer = self.add_timer(deadline, k.clone());
        if let Some(Slot::Live(call)) = self.calls.get_mut(&k) {
            call.armed = Some(timer);
        }
    }

    fn add_timer(&mut self, at: Timestamp, key: Arc<str>) -> TimerKey {
        self.next_timer += 1;
        let timer = (at, self.next_timer);
        self.timers.insert(timer, key);
        timer
    }

    fn complete(&mut self, key: &str, end: End, at: Timestamp, out: &mut Vec<Event>) {
        let Some((k, slot)) = self.calls.remove_entry(key) else {
            return;
        };
        let Slot::Live(mut call) = slot else {
            self.calls.insert(k, slot);
            return;
        };
        if let Some(timer) = call.armed.take() {
            self.timers.remove(&timer);
        }
        let ended_at = end.ended_at.unwrap_or(at);
        call.info.ended_at = Some(ended_at);
        let started = call.info.started_at;
        let ring_end = call.info.answered_at.unwrap_or(ended_at);
        let data = CompletedData {
            disposition: end.disposition,
            sip_status: end.sip_status,
            reason: end.reason,
            q850_cause: end.q850_cause,
            ended_by: end.ended_by,
            ring_ms: ring_end.since(started),
            talk_ms: call.info.answered_at.map_or(0, |a| ended_at.since(a)),
            duration_ms: ended_at.since(started),
        };
        out.push(call.event(EventData::Completed(data), ended_at, ""));
        self.live -= 1;
        self.ended_dialogs.remember(&k, at, call.invites);
        if self.ended < self.cfg.max_active_calls {
            let purge_at = at.plus(self.cfg.challenge_window);
            let purge = self.add_timer(purge_at, k.clone());
            self.calls.insert(k, Slot::Ended(purge));
            self.ended += 1;
        }
    }
}

/// An INVITE that starts a dialog (no To tag yet).
fn is_initial_invite(msg: &SipMessage) -> bool {
    matches!(
        msg.start,
        StartLine::Request {
            method: Method::Invite,
            ..
        }
    ) && msg.to.tag.is_none()
}

fn call_key(call_id: &str, tag: &str) -> String {
    let mut k = String::with_capacity(call_id.len() + tag.len() + 1);
    k.push_str(call_id);
    k.push('\n');
    k.push_str(tag);
    k
}
