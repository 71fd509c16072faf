//! The typed view of one SIP message that the call tracker needs: the types only.
//! [`super::parse`] builds it from rsip's parse of the normalized bytes; keeping the
//! tracker off rsip's types lets us fix rsip's gaps in one place.

use std::net::SocketAddr;

use super::addr::{NameAddr, Reason, ReferTo, Replaces};
use super::normalize::NormalizeError;
use super::stir::StirShaken;
use crate::vocab::{Timestamp, Transport};

/// SIP methods siphook distinguishes; rsip rejects any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Starts a call, or refreshes one when it carries a To tag.
    Invite,
    /// Confirms a final response to INVITE.
    Ack,
    /// Ends an established dialog.
    Bye,
    /// Cancels a pending INVITE.
    Cancel,
    /// Asks the peer to transfer (RFC 3515).
    Refer,
    /// Reports progress of a REFER (among other event packages).
    Notify,
    /// Mid-dialog session refresh (RFC 3311).
    Update,
    /// Acknowledges a reliable provisional (RFC 3262).
    Prack,
    /// Mid-dialog information (DTMF and the like).
    Info,
    /// Out-of-dialog capability query; ignored.
    Options,
    /// Registration; ignored.
    Register,
    /// Event subscription; ignored.
    Subscribe,
    /// Event publication; ignored.
    Publish,
    /// Instant message; ignored.
    Message,
}

impl Method {
    /// Upper-case name, also a bounded metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Info => "INFO",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Publish => "PUBLISH",
            Method::Message => "MESSAGE",
        }
    }

    pub(super) fn from_rsip(m: rsip::Method) -> Method {
        match m {
            rsip::Method::Ack => Method::Ack,
            rsip::Method::Bye => Method::Bye,
            rsip::Method::Cancel => Method::Cancel,
            rsip::Method::Info => Method::Info,
            rsip::Method::Invite => Method::Invite,
            rsip::Method::Message => Method::Message,
            rsip::Method::Notify => Method::Notify,
            rsip::Method::Options => Method::Options,
            rsip::Method::PRack => Method::Prack,
            rsip::Method::Publish => Method::Publish,
            rsip::Method::Refer => Method::Refer,
            rsip::Method::Register => Method::Register,
            rsip::Method::Subscribe => Method::Subscribe,
            rsip::Method::Update => Method::Update,
        }
    }

    pub(super) fn parse(s: &str) -> Option<Method> {
        s.parse::<rsip::Method>().ok().map(Method::from_rsip)
    }
}

/// Request or response, with what the start line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// A request and its Request-URI.
    Request {
        /// The method of the request line.
        method: Method,
        /// Request-URI as sent (a proxy may rewrite it; we do not dedupe on it).
        uri: String,
    },
    /// A response and its status code.
    Response {
        /// Status code, 100..=699.
        status: u16,
    },
}

/// The original packet behind a mirror copy, from `X-Siptrace-Fromip`,
/// `X-Siptrace-Toip` (`proto:ip:port`) and `X-Siptrace-Time` (`sec usec`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Siptrace {
    /// Original sender.
    pub source: Option<SocketAddr>,
    /// Original receiver.
    pub destination: Option<SocketAddr>,
    /// Original transport (from the `proto:` prefix).
    pub transport: Option<Transport>,
    /// When the proxy saw it.
    pub at: Option<Timestamp>,
}

impl Siptrace {
    /// Parses `udp:10.0.0.1:5060`, `tcp:[2001:db8::1]:5061` (or an unbracketed
    /// IPv6 address before the last colon).
    pub fn parse_addr(v: &str) -> Option<(Transport, SocketAddr)> {
        let (proto, rest) = v.trim().split_once(':')?;
        let transport = match proto.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" | "tls" | "ws" | "wss" | "sctp" => Transport::Tcp,
            _ => return None,
        };
        let addr = rest.parse::<SocketAddr>().ok().or_else(|| {
            let (ip, port) = rest.rsplit_once(':')?;
            Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
        })?;
        Some((transport, addr))
    }

    /// Parses `1795330803 512000`.
    pub fn parse_time(v: &str) -> Option<Timestamp> {
        let mut parts = v.split_ascii_whitespace();
        // Unsigned and 32-bit (before 2106): anything else is not a capture time.
        let secs: u32 = parts.next()?.parse().ok()?;
        let usecs: u32 = parts.next().map_or(Some(0), |u| u.parse().ok())?;
        Some(Timestamp(
            i64::from(secs) * 1000 + i64::from(usecs.min(999_999) / 1000),
        ))
    }
}

/// The facts of one message that drive the call tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    /// Request line or status.
    pub start: StartLine,
    /// Call-ID, the dialog's first key.
    pub call_id: String,
    /// From header: the request originator's side of the dialog.
    pub from: NameAddr,
    /// To header: the other side; its tag marks an in-dialog message.
    pub to: NameAddr,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method: tells which request a response answers.
    pub cseq_method: Method,
    /// Branch of the top Via (kept for diagnostics; dedupe ignores it).
    pub via_branch: Option<String>,
    /// First Contact URI.
    pub contact: Option<String>,
    /// Reason header(s) folded together.
    pub reason: Option<Reason>,
    /// Refer-To of a REFER.
    pub refer_to: Option<ReferTo>,
    /// Referred-By URI.
    pub referred_by: Option<String>,
    /// Replaces header of an INVITE (attended transfer, RFC 3891).
    pub replaces: Option<Replaces>,
    /// First P-Asserted-Identity, the network-asserted caller.
    pub p_asserted_identity: Option<NameAddr>,
    /// Session-Expires delta in seconds (RFC 4028).
    pub session_expires: Option<u32>,
    /// Value of the first configured correlation header present.
    pub correlation_id: Option<String>,
    /// What Kamailio's siptrace (`xheaders_write`) says about the original packet
    /// of a plain-SIP mirror copy.
    pub siptrace: Option<Siptrace>,
    /// User-Agent (requests) or Server (responses).
    pub user_agent: Option<String>,
    /// PASSporT claims of the Identity header.
    pub stir_shaken: Option<StirShaken>,
    /// Event package of a NOTIFY, lower-cased, without parameters.
    pub event_package: Option<String>,
    /// `id` parameter of the Event header (for `refer`, the REFER's CSeq).
    pub event_id: Option<String>,
    /// `Refer-Sub: false` (RFC 4488) means no NOTIFY will follow the 202.
    pub refer_sub: Option<bool>,
    /// Status code inside a message/sipfrag body (NOTIFY for REFER).
    pub sipfrag_status: Option<u16>,
    /// The body is SDP (an 18x with SDP means early media).
    pub has_sdp: bool,
}

impl SipMessage {
    /// The method of a request, or the CSeq method a response answers.
    pub fn method(&self) -> Method {
        match self.start {
            StartLine::Request { method, .. } => method,
            StartLine::Response { .. } => self.cseq_method,
        }
    }

    /// Status code for responses, `None` for requests.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status } => Some(status),
            StartLine::Request { .. } => None,
        }
    }
}

/// Why a message was not understood. Never contains message bytes: SIP carries
/// phone numbers, and rsip's own errors embed the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The header section could not be split into lines and headers.
    #[error("{0}")]
    Normalize(#[from] NormalizeError),
    /// rsip rejected the start line or a header.
    #[error("malformed message")]
    Malformed,
    /// A header every SIP message must carry is absent or unreadable.
    #[error("missing or invalid {0} header")]
    MissingHeader(&'static str),
    /// Larger than `max_message_bytes`.
    #[error("message too large")]
    TooLarge,
    /// A field the tracker keeps per call is longer than any real stack sends;
    /// refusing it bounds the memory a hostile peer can pin per call.
    #[error("{0} too long")]
    TooLong(&'static str),
}

impl ParseError {
    /// Bounded label for `siphook_sip_parse_errors_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Normalize(NormalizeError::NotUtf8) => "not_utf8",
            ParseError::Normalize(NormalizeError::BadHeaderLine) => "bad_header_line",
            ParseError::Normalize(NormalizeError::Empty) => "empty",
            ParseError::Malformed => "malformed",
            ParseError::MissingHeader("Call-ID") => "missing_call_id",
            ParseError::MissingHeader("From") => "missing_from",
            ParseError::MissingHeader("To") => "missing_to",
            ParseError::MissingHeader("CSeq") => "missing_cseq",
            ParseError::MissingHeader(_) => "missing_header",
            ParseError::TooLarge => "too_large",
            ParseError::TooLong(_) => "field_too_long",
        }
    }
}

/// Settings that shape the view; built once from the config.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// Header names whose first present value becomes the correlation id.
    pub correlation_headers: Vec<String>,
    /// Larger messages are refused before any work is done.
    pub max_message_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siptrace_addresses_and_time() {
        assert_eq!(
            Siptrace::parse_addr("udp:10.0.0.1:5060"),
            Some((Transport::Udp, "10.0.0.1:5060".parse().unwrap()))
        );
        assert_eq!(
            Siptrace::parse_addr("TLS:[2001:db8::1]:5061"),
            Some((Transport::Tcp, "[2001:db8::1]:5061".parse().unwrap()))
        );
        assert_eq!(
            Siptrace::parse_addr("udp:2001:db8::1:5060"),
            Some((Transport::Udp, "[2001:db8::1]:5060".parse().unwrap()))
        );
        assert_eq!(Siptrace::parse_addr("any:255.255.255.255"), None);
        assert_eq!(Siptrace::parse_addr("10.0.0.1:5060"), None);
        assert_eq!(
            Siptrace::parse_time("1795330803 512345"),
            Some(Timestamp(1_795_330_803_512))
        );
        assert_eq!(Siptrace::parse_time("x 1"), None);
        assert_eq!(Siptrace::parse_time("99999999999999999999 0"), None);
        assert_eq!(Siptrace::parse_time("-5 0"), None);
    }
}
