//! Cuts a SIP byte stream (TCP) into messages by Content-Length (RFC 3261 §18.3).
//!
//! rsip parses one message from one buffer and would read two pipelined messages as
//! one, so stream transports frame here first. The framer remembers how far it has
//! scanned, so a peer trickling one byte at a time costs linear, not quadratic, work.

use bytes::{Buf, Bytes, BytesMut};

use super::normalize::{self, header_end};

/// Why a stream cannot be framed; the connection must be closed, since the
/// position of the next message is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Header section or whole message would exceed the configured limit.
    #[error("message exceeds max_message_bytes")]
    TooLarge,
    /// Stream transports require Content-Length (RFC 3261 §20.14).
    #[error("message without Content-Length")]
    MissingContentLength,
    /// Content-Length is not a decimal number, or appears twice with different values.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// The header section is not one the parser can read (not UTF-8, a line
    /// without a colon): where its message ends is unknown.
    #[error("malformed header section")]
    BadHeaders,
}

impl FrameError {
    /// Bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooLarge => "too_large",
            FrameError::MissingContentLength => "missing_content_length",
            FrameError::BadContentLength => "bad_content_length",
            FrameError::BadHeaders => "bad_header_section",
        }
    }
}

/// Incremental framer over one stream's bytes.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max: usize,
    /// Bytes of `buf` already searched for the end of the header section.
    scanned: usize,
    /// Total length of the message at the front, once its headers are complete:
    /// a body trickling in does not make us re-read the headers.
    pending_total: Option<usize>,
}

impl Framer {
    /// A framer that refuses messages larger than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Framer {
            buf: BytesMut::with_capacity(4096),
            max: max_message_bytes,
            scanned: 0,
            pending_total: None,
        }
    }

    /// The buffer to read more stream bytes into.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends bytes received from the stream.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that do not yet form a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        self.skip_keepalives();
        if self.buf.is_empty() {
            return Ok(None);
        }
        let total = match self.pending_total {
            Some(t) => t,
            None => {
                let Some(head_end) = self.find_header_end() else {
                    if self.buf.len() > self.max {
                        return Err(FrameError::TooLarge);
                    }
                    return Ok(None);
                };
                let body_len = content_length(&self.buf[..head_end])?;
                let total = head_end.checked_add(body_len).ok_or(FrameError::TooLarge)?;
                if total > self.max {
                    return Err(FrameError::TooLarge);
                }
                self.pending_total = Some(total);
                total
            }
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        self.scanned = 0;
        self.pending_total = None;
        Ok(Some(self.buf.split_to(total).freeze()))
    }

    /// RFC 5626 keep-alives (CRLF pings, CRLFCRLF) between messages carry nothing.
    fn skip_keepalives(&mut self) {
        let n = self
            .buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(self.buf.len());
        if n > 0 {
            self.buf.advance(n);
            self.scanned = self.scanned.saturating_sub(n);
        }
    }

    /// Offset just past the blank line ending the header section.
    fn find_header_end(&mut self) -> Option<usize> {
        // Restart a few bytes back so a terminator split across reads is found.
        let from = self.scanned.saturating_sub(3);
        let found = header_end(&self.buf[from..]).map(|(_, body)| from + body);
        if found.is_none() {
            self.scanned = self.buf.len();
        }
        found
    }
}

/// Reads Content-Length from a header section, on the same unfolded view the
/// parser reads ([`normalize::split`]), so the framer and the parser can never
/// disagree on where a message ends: a folded continuation line that reads
/// `Content-Length: …` is part of the header above it to both. Compact `l` is
/// expanded by the split.
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    let section = normalize::split(head).map_err(|_| FrameError::BadHeaders)?;
    let mut found: Option<usize> = None;
    for h in &section.headers {
        if !h.name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        let value = h.value.as_bytes();
        if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
            return Err(FrameError::BadContentLength);
        }
        let n = value
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        let n = usize::try_from(n).map_err(|_| FrameError::TooLarge)?;
        match found {
            Some(prev) if prev != n => return Err(FrameError::BadContentLength),
            _ => found = Some(n),
        }
    }
    found.ok_or(FrameError::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYE: &[u8] = b"BYE sip:a@h SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn frames_pipelined_messages_and_keepalives() {
        let mut f = Framer::new(65536);
        f.extend(b"\r\n\r\n");
        f.extend(BYE);
        f.extend(b"\r\n");
        f.extend(BYE);
        assert_eq!(f.next_message().unwrap().unwrap(), BYE);
        assert_eq!(f.next_message().unwrap().unwrap(), BYE);
        assert_eq!(f.next_message().unwrap(), None);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn frames_byte_by_byte() {
        let mut f = Framer::new(65536);
        let mut out = vec![];
        for b in BYE.iter().chain(BYE) {
            f.extend(&[*b]);
            while let Some(m) = f.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, vec![Bytes::from_static(BYE), Bytes::from_static(BYE)]);
    }

    #[test]
    fn errors() {
        let mut f = Framer::new(65536);
        f.extend(b"BYE sip:a@h SIP/2.0\r\nCall-ID: 1\r\n\r\n");
        assert_eq!(f.next_message(), Err(FrameError::MissingContentLength));
        let mut f = Framer::new(65536);
        f.extend(b"BYE sip:a@h SIP/2.0\r\nl: -1\r\n\r\n");
        assert_eq!(f.next_message(), Err(FrameError::BadContentLength));
        let mut f = Framer::new(100);
        f.extend(b"BYE sip:a@h SIP/2.0\r\nl: 200\r\n\r\n");
        assert_eq!(f.next_message(), Err(FrameError::TooLarge));
        let mut f = Framer::new(100);
        f.extend(&[b'x'; 101]);
        assert_eq!(f.next_message(), Err(FrameError::TooLarge));
        let mut f = Framer::new(100);
        f.extend(b"BYE sip:a@h SIP/2.0\r\nl: 99999999999\r\n\r\n");
        assert_eq!(f.next_message(), Err(FrameError::BadContentLength));
    }

    /// A folded line is part of the header above it, to the parser and so to the
    /// framer: it neither sets the length nor disagrees with the real one.
    #[test]
    fn a_folded_content_length_is_not_a_content_length() {
        let folded = b"OPTIONS sip:a@h SIP/2.0\r\nCall-ID: 1\r\nSubject: x\r\n Content-Length: 250\r\nContent-Length: 0\r\n\r\n";
        let mut f = Framer::new(65536);
        f.extend(folded);
        f.extend(BYE);
        assert_eq!(f.next_message().unwrap().unwrap(), &folded[..]);
        assert_eq!(f.next_message().unwrap().unwrap(), BYE);
        let section = normalize::split(folded).unwrap();
        assert_eq!(section.headers[1].value, "x Content-Length: 250");

        let mut f = Framer::new(65536);
        f.extend(b"OPTIONS sip:a@h SIP/2.0\r\nSubject: x\r\n Content-Length: 250\r\n\r\n");
        assert_eq!(f.next_message(), Err(FrameError::MissingContentLength));
        let mut f = Framer::new(65536);
        f.extend(b"OPTIONS sip:a@h SIP/2.0\r\nno colon here\r\nl: 0\r\n\r\n");
        assert_eq!(f.next_message(), Err(FrameError::BadHeaders));
    }
}
