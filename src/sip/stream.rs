//! A byte stream of SIP messages or of HEP packets, cut into units: what the live
//! TCP listeners and capture replay's TCP reassembly both need.

use bytes::{Bytes, BytesMut};

use super::framer::Framer;
use super::hep::{self, HepFramer};

/// One unit cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// A whole SIP message.
    Sip(Bytes),
    /// A whole HEP packet.
    Hep(Bytes),
}

/// Why a stream cannot be cut any further: its next unit's start is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// Bounded metrics label.
    pub reason: &'static str,
    /// What was wrong, without stream content.
    pub message: String,
}

/// A stream's framing: SIP by Content-Length, or HEP by its length field.
#[derive(Debug)]
pub enum StreamFramer {
    /// SIP messages; larger than the limit breaks the stream.
    Sip(Framer),
    /// HEPv3 packets.
    Hep(HepFramer),
}

impl StreamFramer {
    /// Framing chosen by the stream's first bytes: HEP when they are `HEP3`.
    pub fn detect(first: &[u8], max_message_bytes: usize) -> StreamFramer {
        if first.starts_with(hep::MAGIC) {
            StreamFramer::Hep(HepFramer::new())
        } else {
            StreamFramer::Sip(Framer::new(max_message_bytes))
        }
    }

    /// Where the stream's bytes go.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        match self {
            StreamFramer::Sip(f) => f.buffer_mut(),
            StreamFramer::Hep(f) => f.buffer_mut(),
        }
    }

    /// Bytes held that do not yet form a whole unit (once `next_unit` said so).
    pub fn buffered(&self) -> usize {
        match self {
            StreamFramer::Sip(f) => f.buffered(),
            StreamFramer::Hep(f) => f.buffered(),
        }
    }

    /// The next whole unit, `Ok(None)` until one is buffered.
    pub fn next_unit(&mut self) -> Result<Option<Unit>, StreamError> {
        match self {
            StreamFramer::Sip(f) => {
                f.next_message()
                    .map(|m| m.map(Unit::Sip))
                    .map_err(|e| StreamError {
                        reason: e.reason(),
                        message: e.to_string(),
                    })
            }
            StreamFramer::Hep(f) => {
                f.next_packet()
                    .map(|p| p.map(Unit::Hep))
                    .map_err(|e| StreamError {
                        reason: e.reason(),
                        message: e.to_string(),
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::labels;
    use crate::sip::hep::HepError;
    use crate::sip::normalize::NormalizeError;
    use crate::sip::{FrameError, ParseError};

    /// metrics exports every reason at 0 from the start, from its own lists: a
    /// reason added here must be added there, or its series appears late.
    #[test]
    fn every_reason_counted_is_one_metrics_exports_at_zero() {
        let parse = [
            ParseError::Normalize(NormalizeError::NotUtf8),
            ParseError::Normalize(NormalizeError::BadHeaderLine),
            ParseError::Normalize(NormalizeError::Empty),
            ParseError::Malformed,
            ParseError::MissingHeader("Call-ID"),
            ParseError::MissingHeader("From"),
            ParseError::MissingHeader("To"),
            ParseError::MissingHeader("CSeq"),
            ParseError::MissingHeader("Via"),
            ParseError::TooLarge,
            ParseError::TooLong("Call-ID"),
        ];
        for e in &parse {
            assert!(labels::PARSE_REASONS.contains(&e.reason()), "{e:?}");
        }
        for e in [
            FrameError::TooLarge,
            FrameError::MissingContentLength,
            FrameError::BadContentLength,
            FrameError::BadHeaders,
        ] {
            assert!(labels::FRAME_REASONS.contains(&e.reason()), "{e:?}");
        }
        for e in [
            HepError::Truncated,
            HepError::BadMagic,
            HepError::BadLength,
            HepError::BadChunk,
            HepError::NoPayload,
        ] {
            assert!(labels::HEP_DECODE_REASONS.contains(&e.reason()), "{e:?}");
        }
    }
}
