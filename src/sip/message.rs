//! The typed view of one SIP message that the call tracker needs, built from rsip's
//! parse of the normalized bytes. Keeping the tracker off rsip's types lets us fix
//! rsip's gaps here, in one place.

use rsip::headers::UntypedHeader;

use super::addr::{NameAddr, Reason, ReferTo, Replaces, split_outside_quotes};
use super::normalize::{self, NormalizeError};
use super::stir::{self, StirShaken};

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

    fn from_rsip(m: rsip::Method) -> Method {
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

    fn parse(s: &str) -> Option<Method> {
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
    // rsip 0.4's URI parser rejects tel: and urn: URIs and IPv6 literals, all common
    // in Request-URIs; it gets a placeholder and we keep the URI text ourselves.
    let (start_line, request_uri) = match section
        .start_line
        .split_ascii_whitespace()
        .collect::<Vec<_>>()[..]
    {
        [version, ..] if version.starts_with("SIP/") => (section.start_line.to_owned(), None),
        [method, uri, version] => (
            format!("{method} {PLACEHOLDER_URI} {version}"),
            Some(uri.to_owned()),
        ),
        _ => return Err(ParseError::Malformed),
    };
    let canonical = normalize::canonical_bytes(&section, &start_line, body_len);
    drop(section);
    let msg =
        rsip::SipMessage::try_from(canonical.as_slice()).map_err(|_| ParseError::Malformed)?;
    View::build(msg, request_uri, opts)
}

const PLACEHOLDER_URI: &str = "sip:siphook.invalid";

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

struct View;

impl View {
    fn build(
        msg: rsip::SipMessage,
        request_uri: Option<String>,
        opts: &ParseOptions,
    ) -> Result<SipMessage, ParseError> {
        let (start, headers, body) = match msg {
            rsip::SipMessage::Request(r) => (
                StartLine::Request {
                    method: Method::from_rsip(r.method),
                    uri: request_uri.ok_or(ParseError::Malformed)?,
                },
                r.headers,
                r.body,
            ),
            rsip::SipMessage::Response(r) => {
                let status = u16::from(r.status_code);
                if !(100..=699).contains(&status) {
                    return Err(ParseError::Malformed);
                }
                (StartLine::Response { status }, r.headers, r.body)
            }
        };
        let mut call_id = None;
        let mut from = None;
        let mut to = None;
        let mut cseq = None;
        let mut via_branch = None;
        let mut contact = None;
        let mut reason: Option<Reason> = None;
        let mut refer_to = None;
        let mut referred_by = None;
        let mut replaces = None;
        let mut pai = None;
        let mut session_expires = None;
        let mut correlation: Option<(usize, String)> = None;
        let mut user_agent = None;
        let mut stir_shaken = None;
        let mut event_package = None;
        let mut event_id = None;
        let mut refer_sub = None;
        let mut content_type: Option<String> = None;

        for header in headers.iter() {
            let (name, value) = name_value(header);
            let value = value.trim();
            if let Some(rank) = opts
                .correlation_headers
                .iter()
                .position(|c| c.eq_ignore_ascii_case(name))
                && !value.is_empty()
                && correlation.as_ref().is_none_or(|(r, _)| rank < *r)
            {
                correlation = Some((rank, value.to_owned()));
            }
            match header {
                rsip::Header::CallId(_) => {
                    call_id.get_or_insert_with(|| value.to_owned());
                }
                rsip::Header::From(_) => {
                    from.get_or_insert(NameAddr::parse(value));
                }
                rsip::Header::To(_) => {
                    to.get_or_insert(NameAddr::parse(value));
                }
                rsip::Header::CSeq(_) => {
                    cseq.get_or_insert(parse_cseq(value));
                }
                rsip::Header::Via(_) if via_branch.is_none() => {
                    let first = split_outside_quotes(value, ',').next().unwrap_or("");
                    via_branch = Some(super::addr::param(first, "branch").map(str::to_owned));
                }
                rsip::Header::Contact(_) if contact.is_none() => {
                    contact = NameAddr::parse(value).map(|c| c.uri);
                }
                rsip::Header::UserAgent(_) | rsip::Header::Server(_) => {
                    user_agent.get_or_insert_with(|| value.to_owned());
                }
                rsip::Header::ContentType(_) => {
                    content_type.get_or_insert_with(|| value.to_ascii_lowercase());
                }
                rsip::Header::Event(_) => {
                    if event_id.is_none() {
                        event_id = super::addr::param(value, "id").map(str::to_owned);
                    }
                    event_package.get_or_insert_with(|| {
                        let package = value.split(';').next().unwrap_or("");
                        package.trim().to_ascii_lowercase()
                    });
                }
                rsip::Header::Other(name, _) => {
                    match_other(
                        name,
                        value,
                        &mut Others {
                            reason: &mut reason,
                            refer_to: &mut refer_to,
                            referred_by: &mut referred_by,
                            replaces: &mut replaces,
                            pai: &mut pai,
                            session_expires: &mut session_expires,
                            stir_shaken: &mut stir_shaken,
                            refer_sub: &mut refer_sub,
                        },
                    );
                }
                _ => {}
            }
        }

        let call_id = call_id
            .filter(|c| !c.is_empty())
            .ok_or(ParseError::MissingHeader("Call-ID"))?;
        let from = from.flatten().ok_or(ParseError::MissingHeader("From"))?;
        let to = to.flatten().ok_or(ParseError::MissingHeader("To"))?;
        let (cseq, cseq_method) = cseq.flatten().ok_or(ParseError::MissingHeader("CSeq"))?;
        check_lengths(&start, &call_id, &from, &to)?;
        let is_sdp = |ct: &str| ct.starts_with("application/sdp");
        let has_sdp = !body.is_empty() && content_type.as_deref().is_some_and(is_sdp);
        let sipfrag_status = content_type
            .as_deref()
            .filter(|ct| ct.starts_with("message/sipfrag"))
            .and_then(|_| sipfrag_status(&body));
        Ok(SipMessage {
            start,
            call_id,
            from,
            to,
            cseq,
            cseq_method,
            via_branch: via_branch.flatten(),
            contact,
            reason,
            refer_to,
            referred_by,
            replaces,
            p_asserted_identity: pai,
            session_expires,
            correlation_id: correlation.map(|(_, v)| clip(v)),
            user_agent: user_agent.map(clip),
            stir_shaken,
            event_package,
            event_id,
            refer_sub,
            sipfrag_status,
            has_sdp,
        })
    }
}

/// Longest Call-ID, tag, URI and display name kept per call.
const MAX_CALL_ID: usize = 256;
const MAX_TAG: usize = 128;
const MAX_URI: usize = 1024;
const MAX_TEXT: usize = 256;

fn check_lengths(
    start: &StartLine,
    call_id: &str,
    from: &NameAddr,
    to: &NameAddr,
) -> Result<(), ParseError> {
    if call_id.len() > MAX_CALL_ID {
        return Err(ParseError::TooLong("Call-ID"));
    }
    if let StartLine::Request { uri, .. } = start
        && uri.len() > MAX_URI
    {
        return Err(ParseError::TooLong("Request-URI"));
    }
    for party in [from, to] {
        if party.uri.len() > MAX_URI {
            return Err(ParseError::TooLong("URI"));
        }
        if party.tag.as_ref().is_some_and(|t| t.len() > MAX_TAG) {
            return Err(ParseError::TooLong("tag"));
        }
        if party
            .display_name
            .as_ref()
            .is_some_and(|d| d.len() > MAX_TEXT)
        {
            return Err(ParseError::TooLong("display name"));
        }
    }
    Ok(())
}

/// Keeps at most `MAX_TEXT` bytes of a free-text value (on a char boundary).
fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Headers rsip does not type, which arrive as `Header::Other`.
struct Others<'a> {
    reason: &'a mut Option<Reason>,
    refer_to: &'a mut Option<ReferTo>,
    referred_by: &'a mut Option<String>,
    replaces: &'a mut Option<Replaces>,
    pai: &'a mut Option<NameAddr>,
    session_expires: &'a mut Option<u32>,
    stir_shaken: &'a mut Option<StirShaken>,
    refer_sub: &'a mut Option<bool>,
}

fn match_other(name: &str, value: &str, o: &mut Others<'_>) {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    if is("Reason") {
        o.reason.get_or_insert_with(Reason::default).merge(value);
    } else if is("Refer-To") {
        if o.refer_to.is_none() {
            *o.refer_to = ReferTo::parse(value);
        }
    } else if is("Referred-By") {
        if o.referred_by.is_none() {
            *o.referred_by = NameAddr::parse(value).map(|n| n.uri);
        }
    } else if is("Replaces") {
        if o.replaces.is_none() {
            *o.replaces = Replaces::parse(value);
        }
    } else if is("P-Asserted-Identity") {
        if o.pai.is_none() {
            *o.pai = NameAddr::parse(value);
        }
    } else if is("Session-Expires") {
        if o.session_expires.is_none() {
            *o.session_expires = value
                .split(';')
                .next()
                .and_then(|v| v.trim().parse::<u32>().ok());
        }
    } else if is("Identity") {
        if o.stir_shaken.is_none() {
            *o.stir_shaken = stir::decode_identity(value);
        }
    } else if is("Refer-Sub") {
        *o.refer_sub = Some(!value.trim().eq_ignore_ascii_case("false"));
    }
}

fn parse_cseq(value: &str) -> Option<(u32, Method)> {
    let mut parts = value.split_ascii_whitespace();
    let seq = parts.next()?.parse::<u32>().ok()?;
    let method = Method::parse(parts.next()?)?;
    Some((seq, method))
}

/// `SIP/2.0 200 OK` at the start of a message/sipfrag body → 200.
fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let line = body.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    parts.next()?.parse::<u16>().ok()
}

/// Header name and value of any rsip header, so configured correlation headers can
/// be any header, typed by rsip or not.
fn name_value(h: &rsip::Header) -> (&str, &str) {
    macro_rules! nv {
        ($($variant:ident => $name:literal),* $(,)?) => {
            match h {
                rsip::Header::Other(n, v) => (n.as_str(), v.as_str()),
                $(rsip::Header::$variant(x) => ($name, x.value()),)*
            }
        };
    }
    nv!(
        Accept => "Accept", AcceptEncoding => "Accept-Encoding",
        AcceptLanguage => "Accept-Language", AlertInfo => "Alert-Info", Allow => "Allow",
        AuthenticationInfo => "Authentication-Info", Authorization => "Authorization",
        CSeq => "CSeq", CallId => "Call-ID", CallInfo => "Call-Info", Contact => "Contact",
        ContentDisposition => "Content-Disposition", ContentEncoding => "Content-Encoding",
        ContentLanguage => "Content-Language", ContentLength => "Content-Length",
        ContentType => "Content-Type", Date => "Date", ErrorInfo => "Error-Info",
        Event => "Event", Expires => "Expires", From => "From", InReplyTo => "In-Reply-To",
        MaxForwards => "Max-Forwards", MimeVersion => "MIME-Version",
        MinExpires => "Min-Expires", Organization => "Organization", Priority => "Priority",
        ProxyAuthenticate => "Proxy-Authenticate", ProxyAuthorization => "Proxy-Authorization",
        ProxyRequire => "Proxy-Require", RecordRoute => "Record-Route", ReplyTo => "Reply-To",
        Require => "Require", RetryAfter => "Retry-After", Route => "Route", Server => "Server",
        Subject => "Subject", SubscriptionState => "Subscription-State",
        Supported => "Supported", Timestamp => "Timestamp", To => "To",
        Unsupported => "Unsupported", UserAgent => "User-Agent", Via => "Via",
        Warning => "Warning", WwwAuthenticate => "WWW-Authenticate",
    )
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
}
