//! One call's dialog state machine: what each message or timer does to a call.
//! The call table and its timers live in [`super::tracker`].

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use super::event::{
    AnsweredData, CallInfo, Disposition, EVENT_VERSION, EndedBy, Event, EventData, Resume,
    RingingData, stable_id,
};
use super::reuse::Invites;
use super::settings::{TimerKey, TrackerConfig};
use crate::sip::{Method, SipMessage, StartLine};
use crate::vocab::{Meta, Timestamp};

/// Where a live call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// INVITE sent, no final response yet.
    Proceeding,
    /// A 401/407/3xx/422/491 came; the caller may retry within `challenge_window`.
    Challenged { status: u16, at: Timestamp },
    /// CANCEL seen; waiting for the final response (a 200 still wins).
    Cancelling { at: Timestamp },
    /// One fork failed while another early dialog is still alive: its 2xx may
    /// yet come (a proxy's mirror shows every branch's answer).
    Failing { status: u16, at: Timestamp },
    /// A 2xx came.
    Answered,
}

/// A REFER waiting for its outcome.
#[derive(Debug, Clone)]
pub(super) struct PendingRefer {
    pub(super) cseq: u32,
    pub(super) from_tag: Option<String>,
    pub(super) target: String,
    pub(super) referred_by: Option<String>,
    pub(super) replaces: Option<crate::sip::Replaces>,
    pub(super) no_notify: bool,
    /// A 2xx (202) accepted it.
    pub(super) accepted: bool,
}

/// An INVITE with Replaces that names a call we know: transferred once answered.
#[derive(Debug, Clone)]
pub(super) struct ReplacingInvite {
    pub(super) replaced_call_id: String,
    pub(super) replaced_sip_call_id: String,
    pub(super) referred_by: Option<String>,
}

#[derive(Debug)]
pub(super) struct Call {
    pub(super) info: CallInfo,
    pub(super) phase: Phase,
    /// CSeq of the current initial INVITE (raised by a retry after a challenge).
    pub(super) invite_cseq: u32,
    /// Last sequence number used.
    pub(super) seq: u32,
    pub(super) deadline: Timestamp,
    /// The timer entry scheduled for `deadline`, if any.
    pub(super) armed: Option<TimerKey>,
    /// Session-Expires interval negotiated, for refreshes (RFC 4028).
    pub(super) session_expires: Option<Duration>,
    /// The deadline is the Session-Expires lapse, not `max_call_duration`.
    pub(super) session_limited: bool,
    /// Status of the answering 2xx.
    pub(super) answer_status: Option<u16>,
    pub(super) refers: Vec<PendingRefer>,
    pub(super) replacing: Option<Box<ReplacingInvite>>,
    /// Early dialogs seen (hash of the To tag, and whether that fork failed).
    pub(super) early: Vec<(u64, bool)>,
    /// The mirror shows both legs of a proxy (it forwarded the initial INVITE,
    /// and the copy came from it): only what the caller is sent decides the call.
    pub(super) two_legs: bool,
    /// Hashes of recently seen messages (bounded ring) for deduplication.
    pub(super) seen: [u64; SEEN],
    pub(super) seen_next: u8,
    /// A BYE of the answered dialog whose answer is awaited (see `hangup`).
    pub(super) bye: Option<Box<PendingBye>>,
    /// Its initial INVITEs, remembered once it ends (see `reuse`).
    pub(super) invites: Invites,
}

pub(super) const SEEN: usize = 16;
const MAX_PENDING_REFERS: usize = 4;
const MAX_EARLY_DIALOGS: usize = 8;
/// RFC 4028 §4: no Session-Expires below Min-SE's floor of 90 seconds.
const MIN_SESSION_EXPIRES: u32 = 90;

fn session_interval(se: Option<u32>) -> Option<Duration> {
    se.map(|s| Duration::from_secs(u64::from(s.max(MIN_SESSION_EXPIRES))))
}

/// What a final failure status means, and whose doing it was: a 487 answers the
/// caller's CANCEL, anything else is the callee's side refusing.
fn failure_outcome(status: u16) -> (Disposition, EndedBy) {
    let disposition = Disposition::for_status(status);
    let ended_by = if disposition == Disposition::Cancelled {
        EndedBy::Caller
    } else {
        EndedBy::Callee
    };
    (disposition, ended_by)
}

fn tag_hash(tag: &str) -> u64 {
    let mut h = DefaultHasher::new();
    tag.hash(&mut h);
    h.finish()
}

/// Which side of a proxy a message travelled, when the mirror shows both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hop {
    /// One leg only (an SBC mirror, a direct call): every message counts as is.
    Single,
    /// Between the caller and the first hop: what the caller sends and is sent.
    CallerSide,
    /// Between the proxy and a branch: a branch's failure is the proxy's to
    /// handle (it may try another), a CANCEL is the proxy's own.
    ProxySide,
}

/// What a message does to a call.
pub(super) enum Step {
    Nothing,
    /// Only the deadline moved.
    Rearm,
    Ringing(RingingData),
    Answered(AnsweredData),
    Transferred(PendingRefer),
    End(End),
}

/// The BYEs of the answered dialog waiting for an answer (see `hangup`): one per
/// side at most, both when the two hung up at once.
#[derive(Debug)]
pub(super) struct PendingBye {
    /// Each one's CSeq and From tag: what its responses carry back.
    pub(super) byes: Vec<(u32, Option<String>)>,
    /// The ending the first one makes, dated at it.
    pub(super) end: End,
}

/// How a call ends.
#[derive(Debug)]
pub(super) struct End {
    pub(super) disposition: Disposition,
    pub(super) sip_status: Option<u16>,
    pub(super) reason: Option<String>,
    pub(super) q850_cause: Option<u16>,
    pub(super) ended_by: EndedBy,
    /// When the call really ended, if earlier than the event (a challenge or
    /// CANCEL whose outcome a timer decided).
    pub(super) ended_at: Option<Timestamp>,
}

impl End {
    pub(super) fn new(
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

    pub(super) fn timer(
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

/// Statuses after which a caller typically retries the INVITE with a higher CSeq.
fn invites_retry(status: u16) -> bool {
    matches!(status, 300..=399 | 401 | 407 | 422 | 491)
}

impl Call {
    /// Records a message's identity; false if it was seen before. The Via branch
    /// is deliberately left out: a proxy's mirror shows each message twice with
    /// different top Vias.
    /// Where `msg` travelled relative to the proxy the call's first INVITE went
    /// to (its first copy's destination). The proxy forwarding the INVITE (a
    /// copy from that address) shows the mirror sees both legs; from then on,
    /// requests to the proxy and responses from it are the caller's side.
    pub(super) fn hop(&mut self, msg: &SipMessage, meta: &Meta) -> Hop {
        let caller = self.info.signaling.source;
        let proxy = self.info.signaling.destination;
        if !self.two_legs
            && msg.method() == Method::Invite
            && matches!(msg.start, StartLine::Request { .. })
            && msg.to.tag.is_none()
            && meta.source == proxy
            && proxy != caller
        {
            self.two_legs = true;
        }
        if !self.two_legs {
            return Hop::Single;
        }
        // By direction relative to the proxy, not by the caller's address: a
        // hairpin (the proxy routing back to the caller's host) must not look like
        // the caller's side.
        let towards_caller = match msg.start {
            StartLine::Request { .. } => meta.destination == proxy && meta.source != proxy,
            StartLine::Response { .. } => meta.source == proxy && meta.destination != proxy,
        };
        if towards_caller {
            Hop::CallerSide
        } else {
            Hop::ProxySide
        }
    }

    pub(super) fn remember(&mut self, msg: &SipMessage, hop: Hop) -> bool {
        let mut h = DefaultHasher::new();
        // A final failure reaches the proxy and then, maybe, the caller: two
        // different facts when both legs are seen, not a retransmission.
        if let StartLine::Response { status: 300.. } = msg.start {
            (hop == Hop::CallerSide).hash(&mut h);
        }
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

    pub(super) fn event(&mut self, data: EventData, at: Timestamp, discriminator: &str) -> Event {
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
                two_legs: self.two_legs,
                session_expires: self
                    .session_expires
                    .and_then(|d| u32::try_from(d.as_secs()).ok()),
            },
        }
    }

    /// Arms the answered call's timer: `max_call_duration` after the answer, or
    /// one Session-Expires interval after the last refresh, whichever is first.
    pub(super) fn arm_answered(&mut self, now: Timestamp, cfg: &TrackerConfig) {
        if self.bye.is_some() {
            return; // a refresh racing the BYE: the BYE's wait decides
        }
        let max_end = self
            .info
            .answered_at
            .unwrap_or(now)
            .plus(cfg.max_call_duration);
        let session_end = self.session_expires.map(|se| now.plus(se));
        self.session_limited = session_end.is_some_and(|s| s < max_end);
        self.deadline = session_end.map_or(max_end, |s| s.min(max_end));
    }

    pub(super) fn on_request(
        &mut self,
        msg: &SipMessage,
        by_caller: bool,
        hop: Hop,
        now: Timestamp,
        cfg: &TrackerConfig,
    ) -> Step {
        let answered = self.phase == Phase::Answered;
        match msg.method() {
            Method::Invite if msg.to.tag.is_none() => {
                // The caller's retry after a challenge or redirect continues the call.
                // The proxy re-sending to a branch (after the branch challenged it)
                // is not the caller's retry.
                if by_caller && msg.cseq > self.invite_cseq && !answered && hop != Hop::ProxySide {
                    self.invite_cseq = msg.cseq;
                    self.phase = Phase::Proceeding;
                    self.deadline = now.plus(cfg.invite_timeout);
                    return Step::Rearm;
                }
                Step::Nothing
            }
            Method::Invite | Method::Update if answered => {
                // A refresh (RFC 4028): the session lives another interval; its 2xx
                // says for how long.
                self.arm_answered(now, cfg);
                Step::Rearm
            }
            // A proxy cancelling its other branches is not the caller giving up.
            Method::Cancel if by_caller && !answered && hop != Hop::ProxySide => {
                if !matches!(self.phase, Phase::Cancelling { .. }) {
                    self.phase = Phase::Cancelling { at: now };
                    self.deadline = now.plus(cfg.challenge_window);
                    return Step::Rearm;
                }
                Step::Nothing
            }
            Method::Bye => self.on_bye(msg, by_caller, now, cfg),
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
                    accepted: false,
                });
                Step::Nothing
            }
            Method::Notify if msg.event_package.as_deref() == Some("refer") => {
                let Some(status) = msg.sipfrag_status else {
                    return Step::Nothing;
                };
                // The NOTIFY travels opposite to its REFER: its To tag is the REFER's
                // From tag, and its `id` parameter (when present) the REFER's CSeq.
                let matches = |r: &PendingRefer| {
                    r.from_tag == msg.to.tag
                        && msg
                            .event_id
                            .as_deref()
                            .is_none_or(|id| id == r.cseq.to_string())
                };
                let Some(idx) = self.refers.iter().position(matches) else {
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

    pub(super) fn on_response(
        &mut self,
        msg: &SipMessage,
        status: u16,
        hop: Hop,
        now: Timestamp,
        cfg: &TrackerConfig,
    ) -> Step {
        match msg.cseq_method {
            // A higher CSeq answers the caller's retry (after a challenge), which a
            // call restored after a restart may not have seen.
            // A branch's answer to the proxy's own re-sent INVITE carries the
            // proxy's CSeq: it counts, but does not move the caller's.
            Method::Invite
                if self.phase != Phase::Answered
                    && (hop == Hop::ProxySide || msg.cseq >= self.invite_cseq) =>
            {
                if hop != Hop::ProxySide {
                    self.invite_cseq = msg.cseq;
                }
                self.on_invite_response(msg, status, hop, now, cfg)
            }
            Method::Invite | Method::Update
                if self.phase == Phase::Answered && (200..300).contains(&status) =>
            {
                // RFC 4028 §7.2: a 2xx without Session-Expires means no session timer.
                self.session_expires = session_interval(msg.session_expires);
                self.arm_answered(now, cfg);
                Step::Rearm
            }
            Method::Bye => self.on_bye_response(msg, status, now, cfg),
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
                    200..=299 => {
                        self.refers[idx].accepted = true;
                        Step::Nothing
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
        hop: Hop,
        now: Timestamp,
        cfg: &TrackerConfig,
    ) -> Step {
        match status {
            100..=199 => {
                if let Some(tag) = &msg.to.tag {
                    let h = tag_hash(tag);
                    if !self.early.iter().any(|(e, _)| *e == h)
                        && self.early.len() < MAX_EARLY_DIALOGS
                    {
                        self.early.push((h, false));
                    }
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
                // The 2xx carries the negotiated interval; none means no timer.
                self.session_expires = session_interval(msg.session_expires);
                self.arm_answered(now, cfg);
                Step::Answered(AnsweredData {
                    sip_status: status,
                    ring_ms: now.since(self.info.started_at),
                })
            }
            _ if hop == Hop::ProxySide => {
                // A branch failed towards the proxy, which may try another or
                // send the caller its own answer: that answer decides.
                let _ = self.fork_failed_while_others_live(msg);
                Step::Nothing
            }
            _ => {
                // With both legs seen, a final answer to the caller means every
                // branch is done (a stateful proxy sends one only then).
                if hop == Hop::Single && self.fork_failed_while_others_live(msg) {
                    // Another branch may still answer; a CANCEL's own deadline already
                    // bounds the wait, otherwise the challenge window does.
                    if !matches!(self.phase, Phase::Cancelling { .. } | Phase::Failing { .. }) {
                        self.phase = Phase::Failing { status, at: now };
                        self.deadline = now.plus(cfg.challenge_window);
                        return Step::Rearm;
                    }
                    return Step::Nothing;
                }
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
                    self.early.clear(); // the retry starts new branches
                    self.phase = Phase::Challenged { status, at: now };
                    self.deadline = now.plus(cfg.challenge_window);
                    return Step::Rearm;
                }
                let (disposition, ended_by) = failure_outcome(status);
                Step::End(End::new(disposition, Some(status), ended_by, Some(msg)))
            }
        }
    }

    /// Records a fork's failure; true when another early dialog is still alive.
    fn fork_failed_while_others_live(&mut self, msg: &SipMessage) -> bool {
        let Some(tag) = &msg.to.tag else {
            // A UAS tags every final answer (RFC 3261 §8.2.6.2): one without a
            // tag names no fork, so a live early dialog may still answer.
            return self.early.iter().any(|(_, failed)| !failed);
        };
        let h = tag_hash(tag);
        if let Some(entry) = self.early.iter_mut().find(|(e, _)| *e == h) {
            entry.1 = true;
        } else if self.early.len() < MAX_EARLY_DIALOGS {
            self.early.push((h, true));
        }
        self.early.iter().any(|(e, failed)| *e != h && !failed)
    }

    /// The call's deadline passed: which timer it was decides the outcome.
    pub(super) fn on_deadline(&mut self) -> End {
        if let Some(end) = self.take_pending_bye() {
            return end;
        }
        match self.phase {
            Phase::Failing { status, at } => {
                let (disposition, ended_by) = failure_outcome(status);
                End::timer(
                    disposition,
                    Some(status),
                    "no_answer_from_other_forks",
                    ended_by,
                    Some(at),
                )
            }
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
