//! The calls the load generator plays: the "mirror" form, where both sides' messages
//! come from one sender, as an SBC's signalling mirror shows them.
//!
//! Every call has a kind (answered, busy, …) decided by its index alone, so the
//! generator, the receiver and the analysis agree on it without sharing state. Each
//! step of a flow says which event it causes, if any: that is the message whose send
//! time an event's latency is measured from.

pub(crate) use crate::call::EventType;

/// What a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// INVITE, 100, 180, 200, ACK, (hold), BYE, 200.
    Answered,
    /// INVITE, 100, 486, ACK.
    Busy,
    /// INVITE, 100, 180, CANCEL, 200 (CANCEL), 487, ACK.
    Cancel,
    /// INVITE, 100, 180, then nothing: siphook's `invite_timeout` ends it.
    NoAnswer,
    /// Answered, (hold), then the callee REFERs: 202, NOTIFY (sipfrag 200), 200,
    /// and the callee hangs up: BYE, 200.
    Transfer,
}

/// The mix of the `mixed` profile, repeated every ten calls: six answered, one each
/// of busy, cancelled, unanswered and transferred.
const MIXED: [Kind; 10] = [
    Kind::Answered,
    Kind::Busy,
    Kind::Answered,
    Kind::Cancel,
    Kind::Answered,
    Kind::NoAnswer,
    Kind::Answered,
    Kind::Transfer,
    Kind::Answered,
    Kind::Answered,
];

/// Which calls a run plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Every call answered (4 events each).
    Answered,
    /// Per ten calls: 6 answered, 1 busy (486), 1 cancelled (487), 1 unanswered
    /// (ended by `invite_timeout`), 1 transferred (REFER); 37 events.
    Mixed,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        match s {
            "answered" => Ok(Profile::Answered),
            "mixed" => Ok(Profile::Mixed),
            other => Err(format!("unknown profile {other:?} (answered or mixed)")),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Answered => "answered",
            Profile::Mixed => "mixed",
        })
    }
}

impl Profile {
    /// The kind of call number `index`.
    pub(crate) fn kind(self, index: usize) -> Kind {
        match self {
            Profile::Answered => Kind::Answered,
            Profile::Mixed => MIXED[index % MIXED.len()],
        }
    }

    /// Whether some calls end by siphook's `invite_timeout`.
    pub(crate) fn has_timers(self) -> bool {
        self == Profile::Mixed
    }
}

/// How a message names itself: the method, or the status code, of its start line,
/// and the method of its CSeq. Unique within each flow, so the baseline can tell
/// which step a relayed datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MsgKey {
    pub(crate) first: &'static str,
    pub(crate) cseq_method: &'static str,
}

/// The identifiers of one call.
pub(crate) struct CallIds {
    pub(crate) call_id: String,
    pub(crate) from_tag: String,
}

impl CallIds {
    /// Call number `index` of a run whose Call-IDs start with `prefix`.
    pub(crate) fn new(prefix: &str, index: usize) -> CallIds {
        CallIds {
            call_id: format!("{prefix}{index}@bench.invalid"),
            from_tag: format!("ft{index}"),
        }
    }
}

/// The index of a call from its Call-ID, if it belongs to the run of `prefix`.
pub(crate) fn call_index(prefix: &str, call_id: &str) -> Option<usize> {
    call_id
        .strip_prefix(prefix)?
        .strip_suffix("@bench.invalid")?
        .parse()
        .ok()
}

/// One message of a flow.
pub(crate) struct Step {
    pub(crate) key: MsgKey,
    /// The event this message makes siphook emit, if any.
    pub(crate) causes: Option<EventType>,
    /// Sent after the hold (the second half of the call).
    pub(crate) after_hold: bool,
    render: fn(&CallIds) -> String,
}

impl Step {
    /// The message text for one call.
    pub(crate) fn render(&self, ids: &CallIds) -> String {
        (self.render)(ids)
    }
}

/// The longest flow's length: the stride of per-call send-time tables.
pub(crate) const MAX_STEPS: usize = 11;

const CALLER: &str = "\"Alice\" <sip:+15557654321@10.0.0.1>";
const CALLEE: &str = "<sip:+15551234567@10.0.0.2>";
const RURI: &str = "sip:+15551234567@10.0.0.2";
const TO_TAG: &str = "callee";

/// A request from the caller.
fn request(
    ids: &CallIds,
    method: &str,
    cseq: u32,
    to_tag: Option<&str>,
    extra: &str,
    body: &str,
) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    // A CANCEL carries the branch of the INVITE it cancels; the rest get their own.
    let branch = match method {
        "CANCEL" => format!("invite{cseq}"),
        _ => format!("{}{cseq}", method.to_ascii_lowercase()),
    };
    format!(
        "{method} {RURI} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: {CALLER};tag={ft}\r\nTo: {CALLEE}{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:alice@10.0.0.1:5060>\r\nUser-Agent: siphook-bench\r\n{extra}Content-Length: {len}\r\n\r\n{body}",
        ft = ids.from_tag,
        cid = ids.call_id,
        len = body.len(),
    )
}

/// A response to one of the caller's requests.
fn response(ids: &CallIds, status: u16, cseq: u32, method: &str, to_tag: Option<&str>) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "SIP/2.0 {status} Reason\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKresp{cseq}\r\nFrom: {CALLER};tag={ft}\r\nTo: {CALLEE}{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        ft = ids.from_tag,
        cid = ids.call_id,
    )
}

/// A request from the callee inside the dialog (From and To swapped).
fn callee_request(ids: &CallIds, method: &str, cseq: u32, extra: &str) -> String {
    format!(
        "{method} sip:alice@10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKcallee{cseq}{method}\r\nMax-Forwards: 70\r\nFrom: {CALLEE};tag={TO_TAG}\r\nTo: {CALLER};tag={ft}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n",
        ft = ids.from_tag,
        cid = ids.call_id,
    )
}

/// A response to one of the callee's requests.
fn callee_response(ids: &CallIds, status: u16, cseq: u32, method: &str) -> String {
    format!(
        "SIP/2.0 {status} OK\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKcallee{cseq}{method}\r\nFrom: {CALLEE};tag={TO_TAG}\r\nTo: {CALLER};tag={ft}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        ft = ids.from_tag,
        cid = ids.call_id,
    )
}

const fn key(first: &'static str, cseq_method: &'static str) -> MsgKey {
    MsgKey { first, cseq_method }
}

const fn step(
    key: MsgKey,
    causes: Option<EventType>,
    after_hold: bool,
    render: fn(&CallIds) -> String,
) -> Step {
    Step {
        key,
        causes,
        after_hold,
        render,
    }
}

use EventType as E;

const INVITE: Step = step(key("INVITE", "INVITE"), Some(E::Initiated), false, |c| {
    request(c, "INVITE", 1, None, "", "")
});
const TRYING: Step = step(key("100", "INVITE"), None, false, |c| {
    response(c, 100, 1, "INVITE", None)
});
const RINGING: Step = step(key("180", "INVITE"), Some(E::Ringing), false, |c| {
    response(c, 180, 1, "INVITE", Some(TO_TAG))
});
const OK_INVITE: Step = step(key("200", "INVITE"), Some(E::Answered), false, |c| {
    response(c, 200, 1, "INVITE", Some(TO_TAG))
});
const ACK: Step = step(key("ACK", "ACK"), None, false, |c| {
    request(c, "ACK", 1, Some(TO_TAG), "", "")
});
const BYE: Step = step(key("BYE", "BYE"), None, true, |c| {
    request(c, "BYE", 2, Some(TO_TAG), "", "")
});
// An answered call ends once its BYE is accepted: the 2xx is what siphook acts on.
const OK_BYE: Step = step(key("200", "BYE"), Some(E::Completed), true, |c| {
    response(c, 200, 2, "BYE", Some(TO_TAG))
});

const ANSWERED: [Step; 7] = [INVITE, TRYING, RINGING, OK_INVITE, ACK, BYE, OK_BYE];

const BUSY: [Step; 4] = [
    INVITE,
    TRYING,
    step(key("486", "INVITE"), Some(E::Completed), false, |c| {
        response(c, 486, 1, "INVITE", Some(TO_TAG))
    }),
    // The ACK to a failure is hop-by-hop: it reuses the INVITE's CSeq number.
    step(key("ACK", "ACK"), None, false, |c| {
        request(c, "ACK", 1, Some(TO_TAG), "", "")
    }),
];

const CANCEL: [Step; 7] = [
    INVITE,
    TRYING,
    RINGING,
    step(key("CANCEL", "CANCEL"), None, false, |c| {
        request(c, "CANCEL", 1, None, "", "")
    }),
    step(key("200", "CANCEL"), None, false, |c| {
        response(c, 200, 1, "CANCEL", Some(TO_TAG))
    }),
    step(key("487", "INVITE"), Some(E::Completed), false, |c| {
        response(c, 487, 1, "INVITE", Some(TO_TAG))
    }),
    ACK,
];

const NO_ANSWER: [Step; 3] = [INVITE, TRYING, RINGING];

const TRANSFER: [Step; MAX_STEPS] = [
    INVITE,
    TRYING,
    RINGING,
    OK_INVITE,
    ACK,
    step(key("REFER", "REFER"), None, true, |c| {
        callee_request(
            c,
            "REFER",
            1,
            "Refer-To: <sip:carol@10.0.0.3>\r\nReferred-By: <sip:bob@10.0.0.2>\r\n",
        )
    }),
    step(key("202", "REFER"), None, true, |c| {
        callee_response(c, 202, 1, "REFER")
    }),
    step(key("NOTIFY", "NOTIFY"), Some(E::Transferred), true, |c| {
        request(
            c,
            "NOTIFY",
            2,
            Some(TO_TAG),
            "Event: refer;id=1\r\nSubscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag;version=2.0\r\n",
            "SIP/2.0 200 OK\r\n",
        )
    }),
    step(key("200", "NOTIFY"), None, true, |c| {
        response(c, 200, 2, "NOTIFY", Some(TO_TAG))
    }),
    step(key("BYE", "BYE"), None, true, |c| {
        callee_request(c, "BYE", 2, "")
    }),
    step(key("200", "BYE"), Some(E::Completed), true, |c| {
        callee_response(c, 200, 2, "BYE")
    }),
];

impl Kind {
    /// The messages of this kind of call, in sending order.
    pub(crate) fn steps(self) -> &'static [Step] {
        match self {
            Kind::Answered => &ANSWERED,
            Kind::Busy => &BUSY,
            Kind::Cancel => &CANCEL,
            Kind::NoAnswer => &NO_ANSWER,
            Kind::Transfer => &TRANSFER,
        }
    }

    /// The event siphook emits on a timer rather than on a message, if any.
    pub(crate) fn timer_event(self) -> Option<EventType> {
        match self {
            Kind::NoAnswer => Some(EventType::Completed),
            _ => None,
        }
    }

    /// Whether the call emits an event of type `t`, and which step causes it
    /// (`Some(None)`: a timer does).
    pub(crate) fn cause_of(self, t: EventType) -> Option<Option<usize>> {
        if let Some(i) = self.steps().iter().position(|s| s.causes == Some(t)) {
            return Some(Some(i));
        }
        (self.timer_event() == Some(t)).then_some(None)
    }

    /// How many events the call emits.
    #[cfg(test)]
    pub(crate) fn expected_events(self) -> usize {
        self.steps().iter().filter(|s| s.causes.is_some()).count()
            + usize::from(self.timer_event().is_some())
    }

    /// The step whose start line and CSeq method are these.
    pub(crate) fn step_of(self, first: &str, cseq_method: &str) -> Option<usize> {
        self.steps()
            .iter()
            .position(|s| s.key.first == first && s.key.cseq_method == cseq_method)
    }
}

/// The key of a raw SIP message: its start line's method or status code, and its
/// CSeq method. Only what the generator writes is recognised (no compact forms).
pub(crate) fn message_key(msg: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(msg).ok()?;
    let (start, rest) = text.split_once("\r\n")?;
    let first = match start.strip_prefix("SIP/2.0 ") {
        Some(status) => status.get(..3)?,
        None => start.split_once(' ')?.0,
    };
    let cseq = header(rest, "CSeq")?;
    let method = cseq.split_whitespace().nth(1)?;
    Some((first, method))
}

/// The value of the first header `name` of a raw message's header block.
pub(crate) fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers
        .split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_within_each_flow_and_match_the_rendered_messages() {
        let ids = CallIds::new("t-", 7);
        for kind in [
            Kind::Answered,
            Kind::Busy,
            Kind::Cancel,
            Kind::NoAnswer,
            Kind::Transfer,
        ] {
            let steps = kind.steps();
            assert!(steps.len() <= MAX_STEPS);
            for (i, s) in steps.iter().enumerate() {
                assert_eq!(
                    kind.step_of(s.key.first, s.key.cseq_method),
                    Some(i),
                    "{kind:?} step {i}"
                );
                let msg = s.render(&ids);
                let (first, method) = message_key(msg.as_bytes()).expect("a key");
                assert_eq!((first, method), (s.key.first, s.key.cseq_method));
                assert_eq!(
                    header(msg.split_once("\r\n").map_or("", |p| p.1), "Call-ID"),
                    Some("t-7@bench.invalid")
                );
            }
        }
        assert_eq!(call_index("t-", "t-7@bench.invalid"), Some(7));
        assert_eq!(call_index("u-", "t-7@bench.invalid"), None);
    }

    #[test]
    fn expected_events_per_kind() {
        assert_eq!(Kind::Answered.expected_events(), 4);
        assert_eq!(Kind::Busy.expected_events(), 2);
        assert_eq!(Kind::Cancel.expected_events(), 3);
        assert_eq!(Kind::NoAnswer.expected_events(), 3);
        assert_eq!(Kind::Transfer.expected_events(), 5);
        let per_ten: usize = (0..10)
            .map(|i| Profile::Mixed.kind(i).expected_events())
            .sum();
        assert_eq!(per_ten, 37);
        assert_eq!(Kind::NoAnswer.cause_of(EventType::Completed), Some(None));
        assert_eq!(Kind::Busy.cause_of(EventType::Ringing), None);
    }
}
