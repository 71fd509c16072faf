//! Parsing one complete message into the typed view ([`SipMessage`]): the start
//! line read here, the headers by rsip behind a stand-in status line, then the
//! view built from rsip's headers (`super::view`).

use super::message::{Method, ParseError, ParseOptions, SipMessage, StartLine};
use super::normalize;

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
}
