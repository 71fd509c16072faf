//! The event contract (version 1), documented in `docs/events.md` and
//! `docs/events.schema.json`. An event is serialized once and stored and signed as
//! those exact bytes, so every field here is part of a public API.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sip::{NameAddr, StirShaken};
use crate::vocab::{EVENT_TYPES, Timestamp, Transport};

/// Version of the JSON contract; bumped only on breaking changes.
pub const EVENT_VERSION: u32 = 1;

/// The five kinds of call event.
// Serialized by its wire name, which `vocab::EVENT_TYPES` holds (the config's
// check of endpoint globs reads the same list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// First INVITE of a call.
    Initiated,
    /// First 180 or 183.
    Ringing,
    /// First 2xx to the initial INVITE.
    Answered,
    /// A successful transfer (REFER or Replaces).
    Transferred,
    /// The call is over; exactly once per call.
    Completed,
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl EventType {
    /// Every type, in the order a call can emit them.
    pub const ALL: [EventType; 5] = [
        EventType::Initiated,
        EventType::Ringing,
        EventType::Answered,
        EventType::Transferred,
        EventType::Completed,
    ];

    /// The type whose wire name is `name` (what a receiver reads back).
    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Position in [`EventType::ALL`]: an index into per-type tables.
    pub fn slot(self) -> usize {
        self as usize
    }

    /// The wire name, also a bounded metrics label.
    pub fn as_str(self) -> &'static str {
        // ALL and EVENT_TYPES have the same length and order (a test checks
        // the names), so every slot has its name.
        EVENT_TYPES[self.slot()]
    }
}

/// Where the initial INVITE was seen travelling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signaling {
    /// Transport of the initial INVITE.
    pub transport: Transport,
    /// Sender of the initial INVITE.
    pub source: SocketAddr,
    /// Receiver of the initial INVITE (our socket for a plain mirror).
    pub destination: SocketAddr,
}

/// The call as known when the event was emitted; repeated in every event so a
/// receiver never needs to join events to make sense of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    /// `call_` + hex SHA-256 of Call-ID and the caller's From tag.
    pub id: String,
    /// The SIP Call-ID.
    pub sip_call_id: String,
    /// First configured correlation header of the initial INVITE.
    pub correlation_id: Option<String>,
    /// The caller, from the initial INVITE.
    pub from: NameAddr,
    /// The callee; `tag` is the answering (or latest early) dialog's.
    pub to: NameAddr,
    /// Calling number: P-Asserted-Identity user, else From user.
    pub ani: Option<String>,
    /// Called number: To user.
    pub dnis: Option<String>,
    /// Initial INVITE received.
    pub started_at: Timestamp,
    /// First 180/183 received.
    pub ringing_at: Option<Timestamp>,
    /// First 2xx to the INVITE received.
    pub answered_at: Option<Timestamp>,
    /// The call ended (set in `call.completed` only).
    pub ended_at: Option<Timestamp>,
    /// How the initial INVITE travelled.
    pub signaling: Signaling,
}

/// `data` of `call.initiated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitiatedData {
    /// Request-URI of the initial INVITE.
    pub request_uri: String,
    /// User-Agent of the caller.
    pub user_agent: Option<String>,
    /// PASSporT claims of the Identity header, decoded and unverified.
    pub stir_shaken: Option<StirShaken>,
}

/// `data` of `call.ringing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RingingData {
    /// 180 or 183.
    pub sip_status: u16,
    /// A 183, or an 18x carrying SDP.
    pub early_media: bool,
}

/// `data` of `call.answered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnsweredData {
    /// The 2xx status.
    pub sip_status: u16,
    /// `answered_at - started_at`.
    pub ring_ms: u64,
}

/// Blind (Refer-To without Replaces) or attended (with Replaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferKind {
    /// The transferee is sent to a new target.
    Blind,
    /// The transferee replaces an existing dialog (RFC 3891).
    Attended,
}

/// `data` of `call.transferred`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferredData {
    /// Blind or attended.
    pub kind: TransferKind,
    /// Refer-To URI (without headers), or the replacing INVITE's To URI.
    pub target: String,
    /// Referred-By URI.
    pub referred_by: Option<String>,
    /// siphook id of the replaced call, when siphook saw that call.
    pub replaced_call_id: Option<String>,
    /// SIP Call-ID named by Replaces.
    pub replaced_sip_call_id: Option<String>,
}

/// How a call ended, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Answered, then ended.
    Answered,
    /// 486 or 600.
    Busy,
    /// 408, 480, or no final response within `invite_timeout`.
    NoAnswer,
    /// Caller cancelled before an answer (CANCEL, 487).
    Cancelled,
    /// 403 or 603.
    Rejected,
    /// Any other final failure.
    Failed,
}

impl Disposition {
    /// The final status code's meaning for an unanswered call.
    pub fn for_status(status: u16) -> Disposition {
        match status {
            486 | 600 => Disposition::Busy,
            408 | 480 => Disposition::NoAnswer,
            487 => Disposition::Cancelled,
            403 | 603 => Disposition::Rejected,
            _ => Disposition::Failed,
        }
    }

    /// Wire name, also a bounded metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Busy => "busy",
            Disposition::NoAnswer => "no_answer",
            Disposition::Cancelled => "cancelled",
            Disposition::Rejected => "rejected",
            Disposition::Failed => "failed",
        }
    }
}

/// Which side ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndedBy {
    /// BYE or CANCEL from the caller.
    Caller,
    /// BYE from the callee, or a final failure response.
    Callee,
    /// A siphook timer: `invite_timeout`, `max_call_duration` or Session-Expires.
    /// (A challenge or CANCEL whose outcome `challenge_window` decided keeps the
    /// side that acted: callee for the challenge, caller for the CANCEL.)
    Timeout,
    /// Not known.
    Unknown,
}

/// `data` of `call.completed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompletedData {
    /// Outcome of the call.
    pub disposition: Disposition,
    /// Final status of the INVITE, if one was seen.
    pub sip_status: Option<u16>,
    /// Reason header text, or which timer ended the call.
    pub reason: Option<String>,
    /// Q.850 cause of the Reason header.
    pub q850_cause: Option<u16>,
    /// Which side ended it.
    pub ended_by: EndedBy,
    /// Answer (or end, if unanswered) minus start.
    pub ring_ms: u64,
    /// End minus answer; 0 when unanswered.
    pub talk_ms: u64,
    /// End minus start.
    pub duration_ms: u64,
}

/// Per-type payload; serialized without a tag since `type` already says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EventData {
    /// For `call.initiated`.
    Initiated(InitiatedData),
    /// For `call.ringing`.
    Ringing(RingingData),
    /// For `call.answered`.
    Answered(AnsweredData),
    /// For `call.transferred`.
    Transferred(TransferredData),
    /// For `call.completed`.
    Completed(CompletedData),
}

impl EventData {
    /// The event type this payload belongs to.
    pub fn event_type(&self) -> EventType {
        match self {
            EventData::Initiated(_) => EventType::Initiated,
            EventData::Ringing(_) => EventType::Ringing,
            EventData::Answered(_) => EventType::Answered,
            EventData::Transferred(_) => EventType::Transferred,
            EventData::Completed(_) => EventType::Completed,
        }
    }
}

/// One call event, the unit that is stored, signed and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `evt_` + hex SHA-256 of (call id, type, discriminator): the same traffic seen
    /// twice yields the same id, so receivers can deduplicate.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Contract version, [`EVENT_VERSION`].
    pub version: u32,
    /// When the triggering SIP message was received (or the timer's instant).
    pub timestamp: Timestamp,
    /// Per call: 1, 2, 3 … without gaps.
    pub sequence: u32,
    /// The call as known at this event.
    pub call: CallInfo,
    /// Per-type payload.
    pub data: EventData,
    /// What the tracker needs, beyond the event itself, to resume this call after a
    /// restart; stored with the event, never sent.
    #[serde(skip)]
    pub resume: Resume,
}

/// Tracker state of a call that its events do not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resume {
    /// CSeq of the current initial INVITE.
    pub invite_cseq: u32,
    /// Negotiated Session-Expires, seconds.
    pub session_expires: Option<u32>,
    /// The mirror showed both legs of a proxy (absent in snapshots written
    /// before it was kept: one leg).
    #[serde(default)]
    pub two_legs: bool,
}

/// A live call as persisted in the outbox: enough to continue it after a restart
/// with the right sequence numbers and timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSnapshot {
    /// The call as of its last event.
    pub info: CallInfo,
    /// Sequence of its last event.
    pub sequence: u32,
    /// State the events do not carry.
    pub resume: Resume,
}

impl Event {
    /// The state to persist for this event's call.
    pub fn snapshot(&self) -> CallSnapshot {
        CallSnapshot {
            info: self.call.clone(),
            sequence: self.sequence,
            resume: self.resume,
        }
    }

    /// The JSON bytes that are stored, signed and sent.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Deterministic id: `prefix` + hex SHA-256 of the parts joined by newlines.
pub fn stable_id(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b"\n");
        }
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(prefix.len() + 64);
    out.push_str(prefix);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_their_names_and_slots() {
        for (i, t) in EventType::ALL.into_iter().enumerate() {
            assert_eq!(t.slot(), i);
            assert_eq!(EventType::from_name(t.as_str()), Some(t));
        }
        assert_eq!(EventType::from_name("webhook.test"), None);
        assert_eq!(EventType::Completed.as_str(), "call.completed");
        assert_eq!(
            serde_json::to_string(&EventType::Transferred).unwrap(),
            "\"call.transferred\""
        );
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = stable_id("call_", &["abc@h", "tag1"]);
        assert_eq!(a, stable_id("call_", &["abc@h", "tag1"]));
        assert_ne!(a, stable_id("call_", &["abc@h", "tag2"]));
        assert_eq!(a.len(), 5 + 64);
        // Known vector: SHA-256("abc") = ba7816bf...
        assert!(stable_id("", &["abc"]).starts_with("ba7816bf8f01cfea"));
    }
}
