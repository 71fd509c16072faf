//! Rewrites a raw SIP message into the strict shape rsip 0.4 accepts.
//!
//! rsip only knows long header names, wants `Name: value` with no space before the
//! colon, CRLF line ends and no folded lines. Real stacks send compact forms
//! (RFC 3261 §7.3.3), fold long headers and sometimes use bare LF, so every message
//! passes through here before rsip sees it.

use std::borrow::Cow;

/// Maps a compact header letter to its full name; `None` for letters we do not know,
/// which then stay as they are (rsip keeps them as `Other`).
pub fn expand_compact(name: &str) -> Option<&'static str> {
    let [c] = name.as_bytes() else {
        return None;
    };
    Some(match c.to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'x' => "Session-Expires",
        b'u' => "Allow-Events",
        b'y' => "Identity",
        _ => return None,
    })
}

/// Where the header section ends: `(end of headers, start of body)`.
/// Accepts CRLFCRLF and, leniently, LFLF; `None` when the message has no blank line.
pub fn header_end(raw: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(pos) = memchr_lf(&raw[i..]) {
        let lf = i + pos;
        // A blank line is LF followed by LF or by CRLF.
        match raw.get(lf + 1) {
            Some(b'\n') => return Some((lf + 1, lf + 2)),
            Some(b'\r') if raw.get(lf + 2) == Some(&b'\n') => return Some((lf + 1, lf + 3)),
            _ => {}
        }
        i = lf + 1;
    }
    None
}

fn memchr_lf(hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == b'\n')
}

/// One header of the header section, after unfolding, with its name expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader<'a> {
    /// Full header name as sent, or the long form of a compact name.
    pub name: Cow<'a, str>,
    /// Value with folding collapsed to single spaces and outer whitespace trimmed.
    pub value: Cow<'a, str>,
}

/// Why a header section could not be normalized. Carries no message bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// A byte sequence that is not UTF-8 sits in the start line or a header.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// A line without a colon, or a continuation line before any header.
    #[error("malformed header line")]
    BadHeaderLine,
    /// Nothing but whitespace.
    #[error("empty message")]
    Empty,
}

/// The start line and unfolded headers of a message, borrowed from the input.
#[derive(Debug)]
pub struct HeaderSection<'a> {
    /// Request-Line or Status-Line, trimmed.
    pub start_line: &'a str,
    /// Headers in order of appearance.
    pub headers: Vec<RawHeader<'a>>,
    /// Bytes after the blank line (may be empty).
    pub body: &'a [u8],
}

/// Splits a message into start line, unfolded headers and body.
pub fn split(raw: &[u8]) -> Result<HeaderSection<'_>, NormalizeError> {
    let raw = trim_leading_crlf(raw);
    if raw.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let (head, body) = match header_end(raw) {
        Some((end, body_start)) => (&raw[..end], &raw[body_start..]),
        None => (raw, &raw[raw.len()..]),
    };
    let head = std::str::from_utf8(head).map_err(|_| NormalizeError::NotUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default().trim();
    if start_line.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let mut headers: Vec<RawHeader<'_>> = Vec::with_capacity(16);
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // RFC 3261 §7.3.1: a continuation line is joined with a single space.
            let last = headers.last_mut().ok_or(NormalizeError::BadHeaderLine)?;
            let more = line.trim();
            if !more.is_empty() {
                let value = last.value.to_mut();
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(NormalizeError::BadHeaderLine)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(NormalizeError::BadHeaderLine);
        }
        let name = match expand_compact(name) {
            Some(full) => Cow::Borrowed(full),
            None => Cow::Borrowed(name),
        };
        headers.push(RawHeader {
            name,
            value: Cow::Borrowed(value.trim()),
        });
    }
    Ok(HeaderSection {
        start_line,
        headers,
        body,
    })
}

/// Writes the section back in the canonical form rsip parses: long names,
/// `Name: value`, CRLF everywhere, the body cut to `body_len`.
pub fn canonical_bytes(section: &HeaderSection<'_>, start_line: &str, body_len: usize) -> Vec<u8> {
    let body = &section.body[..body_len.min(section.body.len())];
    let mut out = Vec::with_capacity(
        start_line.len()
            + section
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.len() + 4)
                .sum::<usize>()
            + body.len()
            + 8,
    );
    out.extend_from_slice(start_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in &section.headers {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn trim_leading_crlf(raw: &[u8]) -> &[u8] {
    let start = raw
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        .unwrap_or(raw.len());
    &raw[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_compact_names_and_unfolds() {
        let raw = b"INVITE sip:b@h SIP/2.0\r\ni: abc\r\nf : <sip:a@h>;tag=1\r\nSubject: one\r\n  two\r\n\tthree\r\nl: 0\r\n\r\n";
        let s = split(raw).unwrap();
        let got: Vec<(String, String)> = s
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Call-ID".into(), "abc".into()),
                ("From".into(), "<sip:a@h>;tag=1".into()),
                ("Subject".into(), "one two three".into()),
                ("Content-Length".into(), "0".into()),
            ]
        );
    }

    #[test]
    fn bare_lf_and_body() {
        let raw = b"SIP/2.0 200 OK\nCall-ID: x\n\nv=0\n";
        let s = split(raw).unwrap();
        assert_eq!(s.start_line, "SIP/2.0 200 OK");
        assert_eq!(s.body, b"v=0\n");
        let bytes = canonical_bytes(&s, s.start_line, 2);
        assert_eq!(bytes, b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\nv=");
    }

    #[test]
    fn rejects_continuation_before_header_and_colonless_line() {
        assert_eq!(
            split(b"INVITE sip:a@b SIP/2.0\r\n cont\r\n\r\n").unwrap_err(),
            NormalizeError::BadHeaderLine
        );
        assert_eq!(
            split(b"INVITE sip:a@b SIP/2.0\r\nnocolon\r\n\r\n").unwrap_err(),
            NormalizeError::BadHeaderLine
        );
        assert_eq!(split(b"\r\n\r\n").unwrap_err(), NormalizeError::Empty);
    }
}
