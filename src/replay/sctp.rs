//! SIP over SCTP (RFC 4168): each SCTP user message is one SIP message, carried
//! in DATA (or I-DATA) chunks, several to a packet, a large one split over
//! chunks that are put back together here by TSN.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::skip::Skip;

/// Chunks read from one packet before giving up (a packet holds at most ~64 KiB).
const MAX_CHUNKS: usize = 4096;
/// A message split over chunks is given up past this size.
const MAX_MESSAGE: usize = 1 << 20;
/// Split messages followed at once; past it the oldest is forgotten.
const MAX_PARTIAL: usize = 4096;

const DATA: u8 = 0;
const I_DATA: u8 = 64;
/// Chunk flags: first and last fragment of a user message.
const BEGIN: u8 = 0x02;
const END: u8 = 0x01;

/// A message being put back together: the TSN expected next, the bytes so far.
struct Partial {
    next_tsn: u32,
    data: Vec<u8>,
    born: u64,
}

/// The SCTP associations of a capture, as far as split messages go.
#[derive(Default)]
pub struct Sctp {
    partial: HashMap<(SocketAddr, SocketAddr, u16), Partial>,
    clock: u64,
    /// Split messages given up: a chunk missing, out of order, or too large.
    pub lost_fragments: u64,
}

impl Sctp {
    /// No association seen yet.
    pub fn new() -> Sctp {
        Sctp::default()
    }

    /// The whole user messages an SCTP packet (after its IP header) completes,
    /// in chunk order. Control chunks (INIT, SACK, HEARTBEAT …) carry none.
    pub fn packet(
        &mut self,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        d: &[u8],
    ) -> Result<(SocketAddr, SocketAddr, Vec<Vec<u8>>), Skip> {
        let port = |at: usize| {
            d.get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or(Skip::Truncated)
        };
        let src = SocketAddr::new(src, port(0)?);
        let dst = SocketAddr::new(dst, port(2)?);
        let mut at = 12;
        let mut out = Vec::new();
        for _ in 0..MAX_CHUNKS {
            if at >= d.len() {
                break;
            }
            let head = d.get(at..at + 4).ok_or(Skip::Truncated)?;
            let (kind, flags) = (head[0], head[1]);
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            if len < 4 {
                return Err(Skip::Truncated);
            }
            let chunk = d.get(at..at + len).ok_or(Skip::Truncated)?;
            let header = match kind {
                DATA => 16,
                I_DATA => 20,
                _ => 0,
            };
            if header > 0 {
                let tsn = chunk
                    .get(4..8)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or(Skip::Truncated)?;
                let stream = chunk
                    .get(8..10)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .ok_or(Skip::Truncated)?;
                let data = chunk.get(header..).ok_or(Skip::Truncated)?;
                if let Some(m) = self.data((src, dst, stream), tsn, flags, data) {
                    out.push(m);
                }
            }
            // Chunks are padded to 4 bytes.
            at += len.div_ceil(4) * 4;
        }
        Ok((src, dst, out))
    }

    fn data(
        &mut self,
        key: (SocketAddr, SocketAddr, u16),
        tsn: u32,
        flags: u8,
        data: &[u8],
    ) -> Option<Vec<u8>> {
        self.clock += 1;
        let (begin, end) = (flags & BEGIN != 0, flags & END != 0);
        if begin && end {
            return Some(data.to_vec());
        }
        if begin {
            if self.partial.len() >= MAX_PARTIAL {
                self.forget_oldest();
            }
            let was = self.partial.insert(
                key,
                Partial {
                    next_tsn: tsn.wrapping_add(1),
                    data: data.to_vec(),
                    born: self.clock,
                },
            );
            self.lost_fragments += u64::from(was.is_some());
            return None;
        }
        // A middle or last chunk: only on from the one before it.
        let Some(p) = self.partial.get_mut(&key) else {
            self.lost_fragments += 1;
            return None;
        };
        if p.next_tsn != tsn || p.data.len() + data.len() > MAX_MESSAGE {
            self.partial.remove(&key);
            self.lost_fragments += 1;
            return None;
        }
        p.data.extend_from_slice(data);
        p.next_tsn = tsn.wrapping_add(1);
        if end {
            return self.partial.remove(&key).map(|p| p.data);
        }
        None
    }

    fn forget_oldest(&mut self) {
        if let Some(k) = self
            .partial
            .iter()
            .min_by_key(|(_, p)| p.born)
            .map(|(k, _)| *k)
        {
            self.partial.remove(&k);
            self.lost_fragments += 1;
        }
    }

    /// At the end of the capture: split messages still waiting for chunks.
    pub fn finish(&mut self) {
        self.lost_fragments += self.partial.len() as u64;
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: u8, flags: u8, tsn: u32, data: &[u8]) -> Vec<u8> {
        let header = if kind == I_DATA { 20 } else { 16 };
        let len = header + data.len();
        let mut c = vec![kind, flags];
        c.extend_from_slice(&(len as u16).to_be_bytes());
        c.extend_from_slice(&tsn.to_be_bytes());
        c.extend_from_slice(&[0, 7]); // stream 7
        c.resize(header, 0);
        c.extend_from_slice(data);
        c.resize(len.div_ceil(4) * 4, 0);
        c
    }

    fn packet(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![0x13, 0xc4, 0x13, 0xc4, 0, 0, 0, 1, 0, 0, 0, 0];
        for c in chunks {
            p.extend_from_slice(c);
        }
        p
    }

    #[test]
    fn a_message_split_over_chunks_and_packets_is_put_back_together() {
        let ip = std::net::IpAddr::from([10, 0, 0, 1]);
        let mut s = Sctp::new();
        let first = packet(&[
            chunk(DATA, BEGIN | END, 1, b"whole"),
            chunk(DATA, BEGIN, 2, b"spl"),
        ]);
        let (_, _, got) = s.packet(ip, ip, &first).unwrap();
        assert_eq!(got, [b"whole".to_vec()]);
        let second = packet(&[chunk(DATA, 0, 3, b"it a"), chunk(DATA, END, 4, b"cross")]);
        let (_, _, got) = s.packet(ip, ip, &second).unwrap();
        assert_eq!(got, [b"split across".to_vec()]);
        assert_eq!(s.lost_fragments, 0);
    }

    #[test]
    fn a_missing_chunk_loses_only_its_message_and_is_counted() {
        let ip = std::net::IpAddr::from([10, 0, 0, 1]);
        let mut s = Sctp::new();
        let p = packet(&[
            chunk(DATA, BEGIN, 1, b"a"),
            chunk(DATA, END, 3, b"c"),
            chunk(I_DATA, BEGIN | END, 4, b"next"),
        ]);
        let (_, _, got) = s.packet(ip, ip, &p).unwrap();
        assert_eq!(got, [b"next".to_vec()]);
        assert_eq!(s.lost_fragments, 1);
        // A chunk claiming less than its own header ends the packet, counted.
        let bad = packet(&[vec![0, 3, 0, 2]]);
        assert_eq!(s.packet(ip, ip, &bad).map(|_| ()), Err(Skip::Truncated));
    }
}
