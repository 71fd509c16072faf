//! Reads the header values the tracker needs out of rsip's parse: rsip types a few
//! headers, the rest arrive as `Other`, and all of them need our own small parsers.

use rsip::headers::UntypedHeader;

use super::addr::{NameAddr, Reason, ReferTo, Replaces, split_outside_quotes};
use super::message::{Method, ParseError, ParseOptions, SipMessage, Siptrace, StartLine};
use super::stir::{self, StirShaken};

/// Builds the typed view from the start line (read by `parse::parse`) and the
/// headers rsip parsed.
pub(super) fn build(
    start: StartLine,
    headers: rsip::Headers,
    body: &[u8],
    opts: &ParseOptions,
) -> Result<SipMessage, ParseError> {
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
    let mut siptrace = Siptrace::default();

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
                        siptrace: &mut siptrace,
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
        .and_then(|_| sipfrag_status(body));
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
        siptrace: (siptrace != Siptrace::default()).then_some(siptrace),
        user_agent: user_agent.map(clip),
        stir_shaken,
        event_package,
        event_id,
        refer_sub,
        sipfrag_status,
        has_sdp,
    })
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
    siptrace: &'a mut Siptrace,
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
    } else if is("X-Siptrace-Fromip") {
        if let Some((t, a)) = Siptrace::parse_addr(value) {
            o.siptrace.transport = Some(t);
            o.siptrace.source = Some(a);
        }
    } else if is("X-Siptrace-Toip") {
        o.siptrace.destination = Siptrace::parse_addr(value).map(|(_, a)| a);
    } else if is("X-Siptrace-Time") {
        o.siptrace.at = Siptrace::parse_time(value);
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
