//! The dialog state machine: SIP messages in, call events out.
//!
//! The tracker is synchronous and owns its clock input: live ingest passes wall-clock
//! receive times, replay passes capture times, tests pass whatever they like. That
//! keeps every duration exact and every run reproducible.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::event::{
    AnsweredData, CallInfo, CallSnapshot, CompletedData, Disposition, EVENT_VERSION, EndedBy,
    Event, EventData, InitiatedData, Resume, RingingData, Signaling, Timestamp, TransferKind,
    TransferredData, Transport, stable_id,
};
use crate::sip::{Method, SipMessage, StartLine};

/// Timers and bounds of the tracker, from `[sip]`.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// No final response by then: `no_answer`.
    pub invite_timeout: Duration,
    /// Answered and no BYE by then: completes.
    pub max_call_duration: Duration,
    /// Wait for a retry after a challenge, or for a final response after CANCEL.
    pub challenge_window: Duration,
    /// Most live calls held at once.
    pub max_active_calls: usize,
}

impl From<&crate::config::SipConfig> for TrackerConfig {
    fn from(c: &crate::config::SipConfig) -> Self {
        TrackerConfig {
            invite_timeout: c.invite_timeout,
            max_call_duration: c.max_call_duration,
            challenge_window: c.challenge_window,
            max_active_calls: c.max_active_calls,
        }
    }
}

/// Where and when a message was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Transport it arrived on.
    pub transport: Transport,
    /// Sender address.
    pub source: SocketAddr,
    /// Receiver address.
    pub destination: SocketAddr,
    /// Receive time; becomes the timestamp of events it triggers.
    pub received_at: Timestamp,
}

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

/// Where a live call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE sent, no final response yet.
    Proceeding,
    /// A 401/407/3xx/422/491 came; the caller may retry within `challenge_window`.
    Challenged { status: u16, at: Timestamp },
    /// CANCEL seen; waiting for the final response (a 200 still wins).
    Cancelling { at: Timestamp },
    /// A 2xx came.
    Answered,
}

/// A REFER waiting for its outcome.
#[derive(Debug, Clone)]
struct PendingRefer {
    cseq: u32,
    from_tag: Option<String>,
    target: String,
    referred_by: Option<String>,
    replaces: Option<crate::sip::Replaces>,
    no_notify: bool,
}

/// An INVITE with Replaces that names a call we know: transferred once answered.
#[derive(Debug, Clone)]
struct ReplacingInvite {
    replaced_call_id: String,
    replaced_sip_call_id: String,
    referred_by: Option<String>,
}

#[derive(Debug)]
struct Call {
    info: CallInfo,
    phase: Phase,
    /// CSeq of the current initial INVITE (raised by a retry after a challenge).
    invite_cseq: u32,
    /// Last sequence number used.
    seq: u32,
    deadline: Timestamp,
    /// The timer entry scheduled for `deadline`, if any.
    armed: Option<TimerKey>,
    /// Session-Expires interval negotiated, for refreshes (RFC 4028).
    session_expires: Option<Duration>,
    /// The deadline is the Session-Expires lapse, not `max_call_duration`.
    session_limited: bool,
    /// Status of the answering 2xx.
    answer_status: Option<u16>,
    refers: Vec<PendingRefer>,
    replacing: Option<Box<ReplacingInvite>>,
    /// Hashes of recently seen messages (bounded ring) for deduplication.
    seen: [u64; SEEN],
    seen_next: u8,
}

const SEEN: usize = 16;

/// Orders timers by instant, then by creation.
type TimerKey = (Timestamp, u64);
const MAX_PENDING_REFERS: usize = 4;

enum Slot {
    Live(Box<Call>),
    /// Kept for `challenge_window` after completion so late retransmissions are
    /// recognised instead of starting a new call.
    Ended,
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
}

impl Tracker {
    /// An empty table.
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            calls: HashMap::new(),
            timers: BTreeMap::new(),
            next_timer: 0,
            live: 0,
        }
    }

    /// Calls started and not yet completed.
    pub fn active_calls(&self) -> usize {
        self.live
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
                seen: [0; SEEN],
                seen_next: 0,
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
        self.timers.first_key_value().map(|((t, _), _)| *t)
    }

    /// Feeds one message; events it causes are appended to `out`.
    pub fn on_message(
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
        let (key, by_caller) = if self.calls.contains_key(own_key.as_str()) {
            (own_key, true)
        } else if let Some(to_tag) = msg.to.tag.as_deref()
            && let peer_key = call_key(&msg.call_id, to_tag)
            && self.calls.contains_key(peer_key.as_str())
        {
            (peer_key, false)
        } else {
            return self.start_call(msg, meta, own_key, out);
        };
        let now = meta.received_at;
        let Some(Slot::Live(call)) = self.calls.get_mut(key.as_str()) else {
            return Err(Ignored::AfterEnd);
        };
        if !call.remember(msg) {
            return Err(Ignored::Duplicate);
        }
        let step = match &msg.start {
            StartLine::Request { .. } => call.on_request(msg, by_caller, now, &self.cfg),
            StartLine::Response { status } => call.on_response(msg, *status, now, &self.cfg),
        };
        self.apply(&key, step, meta.received_at, out)
    }

    /// Fires every timer due at or before `now`.
    pub fn on_time(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        while let Some(entry) = self.timers.first_entry() {
            let at = entry.key().0;
            if at > now {
                break;
            }
            let key = entry.remove();
            match self.calls.get_mut(&key) {
                Some(Slot::Ended) => {
                    self.calls.remove(&key);
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

    fn start_call(
        &mut self,
        msg: &SipMessage,
        meta: &Meta,
        key: String,
        out: &mut Vec<Event>,
    ) -> Result<(), Ignored> {
        let is_initial_invite = matches!(
            msg.start,
            StartLine::Request {
                method: Method::Invite,
                ..
            }
        ) && msg.to.tag.is_none();
        if !is_initial_invite {
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
            id: stable_id("call_", &[&msg.call_id, from_tag]),
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
            session_expires: msg
                .session_expires
                .map(|s| Duration::from_secs(u64::from(s))),
            session_limited: false,
            answer_status: None,
            refers: Vec::new(),
            replacing,
            seen: [0; SEEN],
            seen_next: 0,
            armed: None,
        });
        call.remember(msg);
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
                let replaced_call_id = refer
                    .replaces
                    .as_ref()
                    .and_then(|r| self.known_call_id(&r.call_id, &r.to_tag, &r.from_tag));
                if let Some(Slot::Live(call)) = self.calls.get_mut(key) {
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
                Ok(())
            }
            Step::End(end) => {
                self.complete(key, end, now, out);
                Ok(())
            }
        }
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
        let purge_at = at.plus(self.cfg.challenge_window);
        self.add_timer(purge_at, k.clone());
        self.calls.insert(k, Slot::Ended);
    }
}

/// What a message does to a call.
enum Step {
    Nothing,
    /// Only the deadline moved.
    Rearm,
    Ringing(RingingData),
    Answered(AnsweredData),
    Transferred(PendingRefer),
    End(End),
}

/// How a call ends.
struct End {
    disposition: Disposition,
    sip_status: Option<u16>,
    reason: Option<String>,
    q850_cause: Option<u16>,
    ended_by: EndedBy,
    /// When the call really ended, if earlier than the event (a challenge or
    /// CANCEL whose outcome a timer decided).
    ended_at: Option<Timestamp>,
}

impl End {
    fn new(
        disposition: Disposition,
        sip_status: Option<u16>,
        ended_by: EndedBy,
        msg: Option<&SipMessage>,
    ) -> End {
        let reason = msg.and_then(|m| m.reason.as_ref());
        End {
            disposition,
            sip_status,
            reason: reason.and_then(|r| r.text.clone()),
            q850_cause: reason.and_then(|r| r.q850_cause),
            ended_by,
            ended_at: None,
        }
    }

    fn timer(
        disposition: Disposition,
        sip_status: Option<u16>,
        reason: &str,
        ended_by: EndedBy,
        ended_at: Option<Timestamp>,
    ) -> End {
        End {
            disposition,
            sip_status,
            reason: Some(reason.to_owned()),
            q850_cause: None,
            ended_by,
            ended_at,
        }
    }
}

fn call_key(call_id: &str, tag: &str) -> String {
    let mut k = String::with_capacity(call_id.len() + tag.len() + 1);
    k.push_str(call_id);
    k.push('\n');
    k.push_str(tag);
    k
}

/// Statuses after which a caller typically retries the INVITE with a higher CSeq.
fn invites_retry(status: u16) -> bool {
    matches!(status, 300..=399 | 401 | 407 | 422 | 491)
}

impl Call {
    /// Records a message's identity; false if it was seen before. The Via branch
    /// is deliberately left out: a proxy's mirror shows each message twice with
    /// different top Vias.
    fn remember(&mut self, msg: &SipMessage) -> bool {
        let mut h = DefaultHasher::new();
        msg.cseq.hash(&mut h);
        msg.cseq_method.hash(&mut h);
        match &msg.start {
            StartLine::Request { method, .. } => (0u16, *method).hash(&mut h),
            StartLine::Response { status } => (*status, msg.cseq_method).hash(&mut h),
        }
        msg.from.tag.hash(&mut h);
        msg.to.tag.hash(&mut h);
        let fp = h.finish() | 1; // never 0, the empty-slot value
        if self.seen.contains(&fp) {
            return false;
        }
        self.seen[usize::from(self.seen_next) % SEEN] = fp;
        self.seen_next = self.seen_next.wrapping_add(1);
        true
    }

    fn event(&mut self, data: EventData, at: Timestamp, discriminator: &str) -> Event {
        self.seq += 1;
        let event_type = data.event_type();
        Event {
            id: stable_id("evt_", &[&self.info.id, event_type.as_str(), discriminator]),
            event_type,
            version: EVENT_VERSION,
            timestamp: at,
            sequence: self.seq,
            call: self.info.clone(),
            data,
            resume: Resume {
                invite_cseq: self.invite_cseq,
                session_expires: self
                    .session_expires
                    .and_then(|d| u32::try_from(d.as_secs()).ok()),
            },
        }
    }

    /// Arms the answered call's timer: `max_call_duration` after the answer, or
    /// one Session-Expires interval after the last refresh, whichever is first.
    fn arm_answered(&mut self, now: Timestamp, cfg: &TrackerConfig) {
        let max_end = self
            .info
            .answered_at
            .unwrap_or(now)
            .plus(cfg.max_call_duration);
        let session_end = self.session_expires.map(|se| now.plus(se));
        self.session_limited = session_end.is_some_and(|s| s < max_end);
        self.deadline = session_end.map_or(max_end, |s| s.min(max_end));
    }

    fn on_request(
        &mut self,
        msg: &SipMessage,
        by_caller: bool,
        now: Timestamp,
        cfg: &TrackerConfig,
    ) -> Step {
        let answered = self.phase == Phase::Answered;
        match msg.method() {
            Method::Invite if msg.to.tag.is_none() => {
                // The caller's retry after a challenge or redirect continues the call.
                if by_caller && msg.cseq > self.invite_cseq && !answered {
                    self.invite_cseq = msg.cseq;
                    self.phase = Phase::Proceeding;
                    self.deadline = now.plus(cfg.invite_timeout);
                    return Step::Rearm;
                }
                Step::Nothing
            }
            Method::Invite | Method::Update if answered => {
                // A refresh (RFC 4028): the session lives another interval.
                if let Some(se) = msg.session_expires {
                    self.session_expires = Some(Duration::from_secs(u64::from(se)));
                }
                self.arm_answered(now, cfg);
                Step::Rearm
            }
            Method::Cancel if by_caller && !answered => {
                if !matches!(self.phase, Phase::Cancelling { .. }) {
                    self.phase = Phase::Cancelling { at: now };
                    self.deadline = now.plus(cfg.challenge_window);
                    return Step::Rearm;
                }
                Step::Nothing
            }
            Method::Bye => {
                // Only the answered dialog ends the call: a caller hangs up the stray
                // dialog of a second fork's 2xx with a BYE of its own.
                let peer_tag = if by_caller {
                    &msg.to.tag
                } else {
                    &msg.from.tag
                };
                if answered && peer_tag.is_some() && *peer_tag != self.info.to.tag {
                    return Step::Nothing;
                }
                let ended_by = if by_caller {
                    EndedBy::Caller
                } else {
                    EndedBy::Callee
                };
                let (disposition, status) = match self.phase {
                    Phase::Answered => (Disposition::Answered, self.answer_status),
                    _ if by_caller => (Disposition::Cancelled, None),
                    _ => (Disposition::Failed, None),
                };
                Step::End(End::new(disposition, status, ended_by, Some(msg)))
            }
            Method::Refer if msg.to.tag.is_some() => {
                let Some(refer_to) = &msg.refer_to else {
                    return Step::Nothing;
                };
                if self.refers.len() >= MAX_PENDING_REFERS {
                    self.refers.remove(0);
                }
                self.refers.push(PendingRefer {
                    cseq: msg.cseq,
                    from_tag: msg.from.tag.clone(),
                    target: refer_to.target.clone(),
                    referred_by: msg.referred_by.clone(),
                    replaces: refer_to.replaces.clone(),
                    no_notify: msg.refer_sub == Some(false),
                });
                Step::Nothing
            }
            Method::Notify if msg.event_package.as_deref() == Some("refer") => {
                let Some(status) = msg.sipfrag_status else {
                    return Step::Nothing;
                };
                // The NOTIFY travels opposite to its REFER: its To tag is the REFER's From tag.
                let Some(idx) = self.refers.iter().position(|r| r.from_tag == msg.to.tag) else {
                    return Step::Nothing;
                };
                match status {
                    200..=299 => Step::Transferred(self.refers.remove(idx)),
                    300..=699 => {
                        self.refers.remove(idx);
                        Step::Nothing
                    }
                    _ => Step::Nothing,
                }
            }
            _ => Step::Nothing,
        }
    }

    fn on_response(
        &mut self,
        msg: &SipMessage,
        status: u16,
        now: Timestamp,
        cfg: &TrackerConfig,
    ) -> Step {
        match msg.cseq_method {
            // A higher CSeq answers the caller's retry (after a challenge), which a
            // call restored after a restart may not have seen.
            Method::Invite if msg.cseq >= self.invite_cseq && self.phase != Phase::Answered => {
                self.invite_cseq = msg.cseq;
                self.on_invite_response(msg, status, now, cfg)
            }
            Method::Invite | Method::Update
                if self.phase == Phase::Answered && (200..300).contains(&status) =>
            {
                if let Some(se) = msg.session_expires {
                    self.session_expires = Some(Duration::from_secs(u64::from(se)));
                }
                self.arm_answered(now, cfg);
                Step::Rearm
            }
            Method::Refer => {
                let Some(idx) = self
                    .refers
                    .iter()
                    .position(|r| r.cseq == msg.cseq && r.from_tag == msg.from.tag)
                else {
                    return Step::Nothing;
                };
                match status {
                    200..=299 if self.refers[idx].no_notify || msg.refer_sub == Some(false) => {
                        Step::Transferred(self.refers.remove(idx))
                    }
                    300..=699 => {
                        self.refers.remove(idx);
                        Step::Nothing
                    }
                    _ => Step::Nothing,
                }
            }
            _ => Step::Nothing,
        }
    }

    fn on_invite_response(
        &mut self,
        msg: &SipMessage,
        status: u16,
        now: Timestamp,
        cfg: &TrackerConfig,
    ) -> Step {
        match status {
            100..=199 => {
                if msg.to.tag.is_some() {
                    self.info.to.tag.clone_from(&msg.to.tag);
                }
                if (status == 180 || status == 183) && self.info.ringing_at.is_none() {
                    self.info.ringing_at = Some(now);
                    return Step::Ringing(RingingData {
                        sip_status: status,
                        early_media: status == 183 || msg.has_sdp,
                    });
                }
                Step::Nothing
            }
            200..=299 => {
                // A 2xx wins over a CANCEL that crossed it, and over a challenge.
                self.phase = Phase::Answered;
                self.answer_status = Some(status);
                self.info.answered_at = Some(now);
                self.info.to.tag.clone_from(&msg.to.tag);
                if let Some(se) = msg.session_expires {
                    self.session_expires = Some(Duration::from_secs(u64::from(se)));
                }
                self.arm_answered(now, cfg);
                Step::Answered(AnsweredData {
                    sip_status: status,
                    ring_ms: now.since(self.info.started_at),
                })
            }
            _ => {
                if let Phase::Cancelling { .. } = self.phase {
                    return Step::End(End::new(
                        Disposition::Cancelled,
                        Some(status),
                        EndedBy::Caller,
                        Some(msg),
                    ));
                }
                if invites_retry(status) {
                    if let Phase::Challenged { .. } = self.phase {
                        return Step::Nothing; // a second copy from another fork
                    }
                    self.phase = Phase::Challenged { status, at: now };
                    self.deadline = now.plus(cfg.challenge_window);
                    return Step::Rearm;
                }
                let disposition = Disposition::for_status(status);
                let ended_by = if disposition == Disposition::Cancelled {
                    EndedBy::Caller
                } else {
                    EndedBy::Callee
                };
                Step::End(End::new(disposition, Some(status), ended_by, Some(msg)))
            }
        }
    }

    /// The call's deadline passed: which timer it was decides the outcome.
    fn on_deadline(&self) -> End {
        match self.phase {
            Phase::Proceeding => End::timer(
                Disposition::NoAnswer,
                None,
                "invite_timeout",
                EndedBy::Timeout,
                None,
            ),
            Phase::Challenged { status, at } => End::timer(
                Disposition::Failed,
                Some(status),
                "no_retry_after_challenge",
                EndedBy::Callee,
                Some(at),
            ),
            Phase::Cancelling { at } => End::timer(
                Disposition::Cancelled,
                None,
                "no_final_response_to_cancel",
                EndedBy::Caller,
                Some(at),
            ),
            Phase::Answered => {
                let reason = if self.session_limited {
                    "session_expired"
                } else {
                    "max_call_duration"
                };
                End::timer(
                    Disposition::Answered,
                    self.answer_status,
                    reason,
                    EndedBy::Timeout,
                    None,
                )
            }
        }
    }
}
