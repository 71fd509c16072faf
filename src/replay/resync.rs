//! A captured TCP stream's framing that survives damage. The live listener
//! closes a connection it cannot frame; a capture cannot ask the peer to start
//! again, so after a gap, a mid-stream start or bytes that do not frame, this
//! hunts for the next message start (a SIP request or status line, or `HEP3`),
//! as tshark's dissector does, and counts the bytes it skipped on the way.

use std::borrow::Cow;

use crate::sip::stream::{StreamFramer, Unit};

/// A line longer than this is no start line (request lines are short): the
/// hunt stops keeping it.
const MAX_START_LINE: usize = 8192;

/// The framing of one direction of a TCP stream.
pub struct Resync {
    framer: Option<StreamFramer>,
    /// Bytes not yet known to begin at a message start.
    hunt: Vec<u8>,
    max_message_bytes: usize,
    /// Captured bytes discarded to find a message start (CRLF keep-alives not counted).
    pub skipped_bytes: u64,
    /// Times framing failed on bytes that looked like a message start.
    pub framing_errors: u64,
}

impl Resync {
    /// Hunting for the first message start.
    pub fn new(max_message_bytes: usize) -> Resync {
        Resync {
            framer: None,
            hunt: Vec::new(),
            max_message_bytes,
            skipped_bytes: 0,
            framing_errors: 0,
        }
    }

    /// Bytes are missing before what comes next: a message in progress is cut,
    /// so it is dropped (counted) and the next start hunted for.
    pub fn lost_sync(&mut self) {
        if let Some(mut f) = self.framer.take() {
            self.skipped_bytes += noise(f.buffer_mut());
        }
        self.skipped_bytes += noise(&self.hunt);
        self.hunt.clear();
    }

    /// Bytes held that are not yet a whole unit.
    pub fn buffered(&mut self) -> usize {
        self.hunt.len() + self.framer.as_mut().map_or(0, |f| f.buffer_mut().len())
    }

    /// Feeds the stream's next bytes; whole units go to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Unit>) {
        let mut data: Cow<'_, [u8]> = Cow::Borrowed(data);
        // Each turn either ends or drops at least one byte, so the buffer's
        // length bounds the turns.
        let bound = data.len() + self.buffered() + 2;
        for _ in 0..bound {
            let Some(framer) = self.framer.as_mut() else {
                self.hunt.extend_from_slice(&data);
                data = Cow::Borrowed(&[]);
                match find_start(&self.hunt, self.max_message_bytes) {
                    Hunt::Found(at) => {
                        self.skipped_bytes += noise(&self.hunt[..at]);
                        let mut f = StreamFramer::detect(&self.hunt[at..], self.max_message_bytes);
                        f.buffer_mut().extend_from_slice(&self.hunt[at..]);
                        self.hunt.clear();
                        self.framer = Some(f);
                        continue;
                    }
                    Hunt::Wait(keep) => {
                        self.skipped_bytes += noise(&self.hunt[..keep]);
                        self.hunt.drain(..keep);
                        return;
                    }
                }
            };
            if !data.is_empty() {
                framer.buffer_mut().extend_from_slice(&data);
                data = Cow::Borrowed(&[]);
            }
            match framer.next_unit() {
                Ok(Some(unit)) => out.push(unit),
                Ok(None) => return,
                Err(_) => {
                    // It looked like a start and was not one (a sipfrag body, a
                    // bad Content-Length): skip its first line and hunt again.
                    self.framing_errors += 1;
                    let buf = std::mem::take(framer.buffer_mut());
                    self.framer = None;
                    let cut = buf
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(buf.len(), |i| i + 1)
                        .max(1)
                        .min(buf.len());
                    self.skipped_bytes += noise(&buf[..cut]);
                    data = Cow::Owned(buf[cut..].to_vec());
                }
            }
        }
    }
}

/// Bytes that count as skipped: all but CR and LF, which between messages are
/// keep-alives (RFC 5626), not content.
fn noise(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b != b'\r' && b != b'\n').count() as u64
}

enum Hunt {
    /// A message starts at this offset.
    Found(usize),
    /// None yet: the bytes before this offset can go; from it, a partial line
    /// (or partial `HEP3`) may still become a start.
    Wait(usize),
}

/// The first message start in `buf`: a `HEP3`, or a start line followed by
/// header lines up to a blank line. A start line followed by another start line
/// or a line that is no header (a sipfrag body's status line, a line of SDP) is
/// no message start, and the hunt goes on from the line after it.
fn find_start(buf: &[u8], max_message_bytes: usize) -> Hunt {
    let hep = buf.windows(4).position(|w| w == b"HEP3");
    let limit = hep.unwrap_or(buf.len());
    let mut line = 0;
    // Each turn moves `line` forward by at least one byte.
    while line < limit {
        let Some(len) = buf[line..].iter().position(|&b| b == b'\n') else {
            if buf.len() - line > MAX_START_LINE {
                return Hunt::Wait(buf.len());
            }
            return hep.map_or(Hunt::Wait(line), Hunt::Found);
        };
        let next = line + len + 1;
        if !is_start_line(&buf[line..line + len]) {
            line = next;
            continue;
        }
        match header_section(&buf[next..]) {
            Section::Whole => return Hunt::Found(line),
            Section::Partial if buf.len() - line <= max_message_bytes => {
                return match hep {
                    Some(at) if at < line => Hunt::Found(at),
                    _ => Hunt::Wait(line),
                };
            }
            Section::Partial | Section::NotHeaders => line = next,
        }
    }
    match hep {
        Some(at) => Hunt::Found(at),
        // A trailing "HEP" or "HE" could become "HEP3".
        None => Hunt::Wait(buf.len().saturating_sub(3).max(line.min(buf.len()))),
    }
}

enum Section {
    /// Header lines, then the blank line.
    Whole,
    /// Header lines so far, no blank line yet.
    Partial,
    /// A line that no header section has.
    NotHeaders,
}

/// Whether the bytes after a start line read as a header section.
fn header_section(buf: &[u8]) -> Section {
    let mut at = 0;
    // Each turn moves past one whole line.
    while let Some(len) = buf
        .get(at..)
        .and_then(|b| b.iter().position(|&c| c == b'\n'))
    {
        let line = &buf[at..at + len];
        let l = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(&first) = l.first() else {
            return Section::Whole;
        };
        let folded = first == b' ' || first == b'\t';
        if is_start_line(l) || (!folded && !l.contains(&b':')) {
            return Section::NotHeaders;
        }
        at += len + 1;
    }
    Section::Partial
}

/// A SIP status line (`SIP/2.0 200 …`) or request line (`METHOD uri SIP/2.0`).
pub fn is_start_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(rest) = line.strip_prefix(b"SIP/2.0 ") {
        return rest.len() >= 3
            && rest[..3].iter().all(u8::is_ascii_digit)
            && rest.get(3).is_none_or(|&b| b == b' ');
    }
    let Some(rest) = line.strip_suffix(b" SIP/2.0") else {
        return false;
    };
    let mut parts = rest.splitn(2, |&b| b == b' ');
    let method = parts.next().unwrap_or(&[]);
    let uri = parts.next().unwrap_or(&[]);
    !method.is_empty()
        && method
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
        && !uri.is_empty()
        && uri.contains(&b':')
        && !uri.contains(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32, body: &str) -> Vec<u8> {
        format!(
            "NOTIFY sip:x@h SIP/2.0\r\nCall-ID: {n}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn start_lines() {
        assert!(is_start_line(b"SIP/2.0 180 Ringing\r"));
        assert!(is_start_line(
            b"INVITE sip:+1555@10.0.0.2;user=phone SIP/2.0\r"
        ));
        assert!(!is_start_line(b"Via: SIP/2.0/TCP 10.0.0.1"));
        assert!(!is_start_line(b"v=0\r"));
        assert!(!is_start_line(b"SIP/2.0 18 Ringing"));
        assert!(!is_start_line(b"invite sip:x SIP/2.0"));
    }

    #[test]
    fn the_tail_of_a_cut_message_is_skipped_and_counted_and_what_follows_is_read() {
        let mut r = Resync::new(65536);
        let mut out = Vec::new();
        let whole = msg(1, "");
        let mut data = b"o=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\n".to_vec();
        data.extend_from_slice(&whole);
        // Fed a byte at a time: the partial line must wait, not be dropped.
        for b in &data {
            r.push(&[*b], &mut out);
        }
        assert_eq!(out, [Unit::Sip(whole.into())]);
        assert_eq!(r.skipped_bytes, 26);
    }

    #[test]
    fn a_status_line_inside_a_body_does_not_swallow_the_next_message() {
        let mut r = Resync::new(65536);
        let mut out = Vec::new();
        let after = msg(2, "");
        // The cut reaches into a sipfrag body: its status line is no message.
        let mut data = b"SIP/2.0 200 OK\r\n".to_vec();
        data.extend_from_slice(&after);
        r.push(&data, &mut out);
        assert_eq!(out, [Unit::Sip(after.into())]);
        assert_eq!((r.skipped_bytes, r.framing_errors), (14, 0));
    }

    #[test]
    fn lost_sync_drops_the_message_in_progress() {
        let mut r = Resync::new(65536);
        let mut out = Vec::new();
        let m = msg(3, "body");
        r.push(&m[..20], &mut out);
        r.lost_sync();
        assert_eq!(r.skipped_bytes, 20);
        r.push(&m, &mut out);
        assert_eq!(out, [Unit::Sip(m.into())]);
    }

    /// Random bytes with message starts and header pieces sprinkled in, fed in
    /// random cuts: never a panic, never more bytes skipped than were fed.
    #[test]
    fn random_streams_never_panic() {
        let pieces: [&[u8]; 6] = [
            b"SIP/2.0 200 OK\r\n",
            b"INVITE sip:a@b SIP/2.0\r\n",
            b"Content-Length: 5\r\n",
            b"\r\n",
            b"HEP3\x00\x10",
            b"Via: x\r\n",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut step = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut r = Resync::new(4096);
        let mut out = Vec::new();
        let mut fed = 0u64;
        for _ in 0..5_000 {
            let mut chunk = Vec::new();
            for _ in 0..step() % 8 {
                match step() % 3 {
                    0 => chunk.extend((0..step() % 40).map(|_| step() as u8)),
                    _ => chunk.extend_from_slice(pieces[(step() % 6) as usize]),
                }
            }
            fed += chunk.len() as u64;
            r.push(&chunk, &mut out);
            if step() % 50 == 0 {
                r.lost_sync();
            }
        }
        assert!(r.skipped_bytes <= fed);
    }
}
