//! The typed view of one SIP message that the call tracker needs, built from rsip's
//! parse of the normalized bytes. Keeping the tracker off rsip's types lets us fix
//! rsip's gaps here, in one place.

use super::addr::{NameAddr, Reason, ReferTo, Replaces};
use super::normalize::{self, NormalizeError};
use super::stir::StirShaken;
use std::net::SocketAddr;

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
    pub transport: Option<crate::call::Transport>,
    /// When the proxy saw it.
    pub at: Option<crate::call::Timestamp>,
}

impl Siptrace {
    /// Parses `udp:10.0.0.1:5060`, `tcp:[2001:db8::1]:5061` (or an unbracketed
    /// IPv6 address before the last colon).
    pub fn parse_addr(v: &str) -> Option<(crate::call::Transport, SocketAddr)> {
        let (proto, rest) = v.trim().split_once(':')?;
        let transport = match proto.to_ascii_lowercase().as_str() {
            "udp" => crate::call::Transport::Udp,
            "tcp" | "tls" | "ws" | "wss" | "sctp" => crate::call::Transport::Tcp,
            _ => return None,
        };
        let addr = rest.parse::<SocketAddr>().ok().or_else(|| {
            let (ip, port) = rest.rsplit_once(':')?;
            Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
        })?;
        Some((transport, addr))
    }

    /// Parses `1795330803 512000`.
    pub fn parse_time(v: &str) -> Option<crate::call::Timestamp> {
        let mut parts = v.split_ascii_whitespace();
        // Unsigned and 32-bit (before 2106): anything else is not a capture time.
        let secs: u32 = parts.next()?.parse().ok()?;
        let usecs: u32 = parts.next().map_or(Some(0), |u| u.parse().ok())?;
        Some(crate::call::Timestamp(
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

/// Parses one complete message (a datagram, or a frame cut by [`super::Framer`]).
pub fn parse(raw: &[u8], opts: &ParseOptions) -> Result<SipMessage, ParseError> {
    if opts.max_message_bytes > 0 && raw.len() > opts.max_message_bytes {
        return Err(ParseError::TooLarge);
    }
    let section = normalize::split(raw)?;
    // A datagram may carry trailing bytes past Content-Length (RFC 3261 §18.3).
    let body_len = section
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Content-Length"))
        .and_then(|h| h.value.parse::<usize>().ok())
        .unwrap_or(section.body.len());
    // A request line is read here: rsip 0.4's URI parser rejects tel: and urn: URIs
    // and IPv6 literals, all common in Request-URIs, and on each alternative it
    // tries and drops it formats the whole rest of its input into an error string
    // (a third of a parse, under callgrind). rsip then parses the header section
    // behind a status line, which takes no alternatives, and without the body,
    // which would only lengthen those strings.
    let (start, status_line) = match section
        .start_line
        .split_ascii_whitespace()
        .collect::<Vec<_>>()[..]
    {
        [version, ..] if version.starts_with("SIP/") => (None, section.start_line),
        [method, uri, version] if is_sip_version(version) => (
            Some(StartLine::Request {
                method: Method::parse(method).ok_or(ParseError::Malformed)?,
                uri: uri.to_owned(),
            }),
            REQUEST_STAND_IN,
        ),
        _ => return Err(ParseError::Malformed),
    };
    let canonical = normalize::canonical_bytes(&section, status_line, 0);
    let response =
        rsip::Response::try_from(canonical.as_slice()).map_err(|_| ParseError::Malformed)?;
    let start = match start {
        Some(request) => request,
        None => {
            let status = u16::from(response.status_code);
            if !(100..=699).contains(&status) {
                return Err(ParseError::Malformed);
            }
            StartLine::Response { status }
        }
    };
    let body = &section.body[..body_len.min(section.body.len())];
    super::view::build(start, response.headers, body, opts)
}

/// `SIP/2.0` and its like (`SIP/` digits `.` digits), as rsip checks a response's.
fn is_sip_version(v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    v.strip_prefix("SIP/")
        .and_then(|n| n.split_once('.'))
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

/// The status line a request's headers are parsed behind (see `parse`).
const REQUEST_STAND_IN: &str = "SIP/2.0 200 OK";

/// Finds the Call-ID in raw bytes without a full parse, so a message that fails to
/// parse can still be logged by Call-ID (and by nothing else).
pub fn sniff_call_id(raw: &[u8]) -> Option<String> {
    let section = normalize::split(raw).ok()?;
    let id = section
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Call-ID"))?
        .value
        .chars()
        .take(128)
        .filter(|c| !c.is_control())
        .collect::<String>();
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ParseOptions {
        ParseOptions {
            correlation_headers: vec!["Session-ID".into(), "X-CID".into()],
            max_message_bytes: 65536,
        }
    }

    const COMPACT: &str = "INVITE tel:+15551234567;npdi SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1\r\n\
f: \"Alice\" <sip:+15557654321@10.0.0.1>;tag=a1\r\n\
t: <tel:+15551234567>\r\n\
i: c1@10.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
m: <sip:alice@10.0.0.1:5060>\r\n\
X-CID: corr-9\r\n\
Session-ID: sess-1\r\n\
x: 1800;refresher=uac\r\n\
User-Agent: Test UA\r\n\
\x201.0\r\n\
c: application/sdp\r\n\
l: 4\r\n\r\nv=0\r\ntrailing";

    #[test]
    fn a_request_line_needs_a_sip_version() {
        let ok = COMPACT.as_bytes();
        assert!(parse(ok, &opts()).is_ok());
        for v in [
            "SIP/3.0x",
            "SIP/2.0x",
            "SIP/",
            "SIP/banana",
            "SIP/.0",
            "HTTP/1.1",
        ] {
            let raw = COMPACT.replacen("SIP/2.0\r\n", &format!("{v}\r\n"), 1);
            assert!(raw.contains(v));
            assert_eq!(
                parse(raw.as_bytes(), &opts()),
                Err(ParseError::Malformed),
                "{v}"
            );
        }
        // Other versions of the same shape pass, as rsip lets them in a status line.
        let raw = COMPACT.replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1);
        assert!(parse(raw.as_bytes(), &opts()).is_ok());
    }

    #[test]
    fn compact_folded_tel_uri() {
        let m = parse(COMPACT.as_bytes(), &opts()).unwrap();
        assert_eq!(
            m.start,
            StartLine::Request {
                method: Method::Invite,
                uri: "tel:+15551234567;npdi".into()
            }
        );
        assert_eq!(m.call_id, "c1@10.0.0.1");
        assert_eq!(m.from.user.as_deref(), Some("+15557654321"));
        assert_eq!(m.from.tag.as_deref(), Some("a1"));
        assert_eq!(m.to.user.as_deref(), Some("+15551234567"));
        assert_eq!(m.to.tag, None);
        assert_eq!((m.cseq, m.cseq_method), (1, Method::Invite));
        assert_eq!(m.via_branch.as_deref(), Some("z9hG4bK-1"));
        assert_eq!(m.contact.as_deref(), Some("sip:alice@10.0.0.1:5060"));
        assert_eq!(m.correlation_id.as_deref(), Some("sess-1"));
        assert_eq!(m.session_expires, Some(1800));
        assert_eq!(m.user_agent.as_deref(), Some("Test UA 1.0"));
        assert!(m.has_sdp);
    }

    #[test]
    fn errors_carry_no_message_bytes() {
        let raw = b"INVITE sip:+15551234567@h SIP/2.0\r\nCall-ID: x\r\nFrom: <sip:+15557654321@h>;tag=1\r\n\r\n";
        let err = parse(raw, &opts()).unwrap_err();
        assert_eq!(err, ParseError::MissingHeader("To"));
        assert!(!err.to_string().contains("1555"));
        let err = parse(b"GARBAGE +15551234567\r\n\r\n", &opts()).unwrap_err();
        assert_eq!(err, ParseError::Malformed);
        assert!(!err.to_string().contains("1555"));
        assert_eq!(sniff_call_id(raw).as_deref(), Some("x"));
    }

    #[test]
    fn oversized_identifiers_are_refused_and_free_text_is_clipped() {
        let base = "INVITE sip:b@h SIP/2.0\r\nCall-ID: CID\r\nFrom: <sip:a@h>;tag=TAG\r\nTo: <sip:b@h>\r\nCSeq: 1 INVITE\r\nUser-Agent: UA\r\n\r\n";
        let msg = |cid: &str, tag: &str, ua: &str| {
            base.replace("CID", cid)
                .replace("TAG", tag)
                .replace("UA", ua)
        };
        let long = "x".repeat(300);
        assert_eq!(
            parse(msg(&long, "t", "ua").as_bytes(), &opts()),
            Err(ParseError::TooLong("Call-ID"))
        );
        assert_eq!(
            parse(msg("c", &long, "ua").as_bytes(), &opts()),
            Err(ParseError::TooLong("tag"))
        );
        let m = parse(msg("c", "t", &"é".repeat(200)).as_bytes(), &opts()).unwrap();
        assert_eq!(m.user_agent.unwrap().len(), 256);
        assert_eq!(ParseError::TooLong("tag").reason(), "field_too_long");
    }

    #[test]
    fn notify_sipfrag_and_reason() {
        let raw = "NOTIFY sip:a@h SIP/2.0\r\nCall-ID: n\r\nFrom: <sip:b@h>;tag=2\r\nTo: <sip:a@h>;tag=1\r\nCSeq: 5 NOTIFY\r\no: refer;id=3\r\nReason: Q.850;cause=16\r\nContent-Type: message/sipfrag;version=2.0\r\nContent-Length: 16\r\n\r\nSIP/2.0 200 OK\r\n";
        let m = parse(raw.as_bytes(), &opts()).unwrap();
        assert_eq!(m.event_package.as_deref(), Some("refer"));
        assert_eq!(m.event_id.as_deref(), Some("3"));
        assert_eq!(m.sipfrag_status, Some(200));
        assert_eq!(m.reason.unwrap().q850_cause, Some(16));
    }

    #[test]
    fn siptrace_addresses_and_time() {
        use crate::call::{Timestamp, Transport};
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
