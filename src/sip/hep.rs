//! HEPv3 (EEP v3), the encapsulation capture agents (Kamailio siptrace, OpenSIPS
//! proto_hep, FreeSWITCH, Asterisk res_hep, rtpengine, heplify) use to ship a copy
//! of each packet with its original addresses and capture time.
//!
//! Wire format: `"HEP3"`, a big-endian u16 total length (the whole packet), then
//! chunks of `vendor u16 | type u16 | length u16 (incl. these 6 bytes) | body`.
//! Vendor 0 chunks are the generic ones below; other vendors' are skipped. The
//! decoder borrows from the packet and never panics: every length is checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::vocab::Timestamp;

/// The magic that opens every HEPv3 packet.
pub const MAGIC: &[u8; 4] = b"HEP3";
/// Magic and total length.
const HEADER: usize = 6;
/// Vendor, type and length of a chunk.
const CHUNK_HEADER: usize = 6;

/// HEP protocol type of SIP (chunk 11).
pub const PROTO_SIP: u8 = 1;

/// Why a packet is not usable HEPv3. Each is a bounded metrics label; none carries
/// packet content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HepError {
    /// Shorter than the 6-byte header, or than its own length field says.
    #[error("truncated HEP packet")]
    Truncated,
    /// Does not start with `HEP3` (HEPv1/v2 or not HEP at all).
    #[error("not a HEPv3 packet (bad magic)")]
    BadMagic,
    /// The length field disagrees with the datagram size, or is below the header.
    #[error("HEP length field does not match the packet")]
    BadLength,
    /// A chunk's length runs past the packet or below its own header.
    #[error("malformed HEP chunk")]
    BadChunk,
    /// No payload chunk (15), or only a compressed one (16), which siphook does
    /// not inflate.
    #[error("HEP packet without an uncompressed payload")]
    NoPayload,
}

impl HepError {
    /// Metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            HepError::Truncated => "hep_truncated",
            HepError::BadMagic => "hep_bad_magic",
            HepError::BadLength => "hep_bad_length",
            HepError::BadChunk => "hep_bad_chunk",
            HepError::NoPayload => "hep_no_payload",
        }
    }
}

/// What a HEP packet says about the packet it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HepPacket<'a> {
    /// IP protocol of the original packet (6 TCP, 17 UDP), chunk 2.
    pub ip_protocol: Option<u8>,
    /// Original source address and port (chunks 3 or 5, and 7).
    pub source: Option<SocketAddr>,
    /// Original destination address and port (chunks 4 or 6, and 8).
    pub destination: Option<SocketAddr>,
    /// Capture time (chunks 9 and 10).
    pub timestamp: Option<Timestamp>,
    /// What the payload is (chunk 11): 1 SIP, 5 RTCP, 100 log …
    pub protocol_type: Option<u8>,
    /// Capture agent id (chunk 12; senders write u16 or u32).
    pub capture_id: Option<u32>,
    /// Shared secret the agent sends (chunk 14).
    pub auth_key: Option<&'a [u8]>,
    /// The captured packet's payload (chunk 15).
    pub payload: &'a [u8],
    /// Correlation id (chunk 17).
    pub correlation_id: Option<&'a [u8]>,
    /// Capture node name (chunk 19).
    pub node_name: Option<&'a [u8]>,
}

/// Length of the HEP packet at the start of `buf`, once its 6-byte header is in:
/// how a TCP stream of HEP packets is framed. `Ok(None)` asks for more bytes.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, HepError> {
    if buf.len() < HEADER {
        // Refuse early what can never become HEP, so a stray peer is dropped fast.
        let n = buf.len().min(4);
        if buf[..n] != MAGIC[..n] {
            return Err(HepError::BadMagic);
        }
        return Ok(None);
    }
    if &buf[..4] != MAGIC {
        return Err(HepError::BadMagic);
    }
    let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    if len < HEADER {
        return Err(HepError::BadLength);
    }
    Ok(Some(len))
}

/// Cuts a TCP byte stream into HEP packets by their length field.
#[derive(Debug, Default)]
pub struct HepFramer {
    buf: bytes::BytesMut,
}

impl HepFramer {
    /// An empty stream.
    pub fn new() -> HepFramer {
        HepFramer::default()
    }

    /// Where the socket reads into.
    pub fn buffer_mut(&mut self) -> &mut bytes::BytesMut {
        &mut self.buf
    }

    /// Bytes held that do not yet form a whole packet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole packet, `Ok(None)` until one is buffered. An error means the
    /// stream is lost (the next packet's start is unknown): close the connection.
    pub fn next_packet(&mut self) -> Result<Option<bytes::Bytes>, HepError> {
        match frame_len(&self.buf)? {
            Some(len) if self.buf.len() >= len => Ok(Some(self.buf.split_to(len).freeze())),
            _ => Ok(None),
        }
    }
}

/// Decodes one whole HEPv3 packet; `buf` must be exactly the packet (one UDP
/// datagram, or one frame cut by [`frame_len`]).
pub fn decode(buf: &[u8]) -> Result<HepPacket<'_>, HepError> {
    chunks(buf)?.finish()
}

/// The auth-key chunk (14) of a packet whose chunks can be read, payload or not:
/// a keyed listener checks it before anything else.
pub fn auth_key(buf: &[u8]) -> Option<&[u8]> {
    chunks(buf).ok()?.auth_key
}

fn chunks(buf: &[u8]) -> Result<Chunks<'_>, HepError> {
    if buf.len() < HEADER {
        return Err(HepError::Truncated);
    }
    let len = frame_len(buf)?.ok_or(HepError::Truncated)?;
    if len != buf.len() {
        return Err(HepError::BadLength);
    }
    let mut p = Chunks::default();
    let mut rest = &buf[HEADER..];
    while !rest.is_empty() {
        let Some(head) = rest.get(..CHUNK_HEADER) else {
            return Err(HepError::BadChunk);
        };
        let vendor = u16::from_be_bytes([head[0], head[1]]);
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let clen = usize::from(u16::from_be_bytes([head[4], head[5]]));
        if clen < CHUNK_HEADER {
            return Err(HepError::BadChunk);
        }
        let body = rest.get(CHUNK_HEADER..clen).ok_or(HepError::BadChunk)?;
        rest = &rest[clen..];
        if vendor == 0 {
            p.take(kind, body);
        }
    }
    Ok(p)
}

/// Chunks as they are read; assembled into a [`HepPacket`] at the end, because
/// address and port chunks may come in any order.
#[derive(Default)]
struct Chunks<'a> {
    ip_protocol: Option<u8>,
    src_ip: Option<IpAddr>,
    dst_ip: Option<IpAddr>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    secs: Option<u32>,
    usecs: Option<u32>,
    protocol_type: Option<u8>,
    capture_id: Option<u32>,
    auth_key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    correlation_id: Option<&'a [u8]>,
    node_name: Option<&'a [u8]>,
}

fn u8_of(b: &[u8]) -> Option<u8> {
    (b.len() == 1).then(|| b[0])
}

fn u16_of(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.try_into().ok()?))
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

impl<'a> Chunks<'a> {
    /// Records one generic chunk. A chunk of the wrong size is ignored rather than
    /// fatal: the payload is what matters, and agents differ in small ways.
    fn take(&mut self, kind: u16, b: &'a [u8]) {
        match kind {
            2 => self.ip_protocol = u8_of(b),
            3 => {
                self.src_ip = <[u8; 4]>::try_from(b)
                    .ok()
                    .map(|a| Ipv4Addr::from(a).into())
            }
            4 => {
                self.dst_ip = <[u8; 4]>::try_from(b)
                    .ok()
                    .map(|a| Ipv4Addr::from(a).into())
            }
            5 => {
                self.src_ip = <[u8; 16]>::try_from(b)
                    .ok()
                    .map(|a| Ipv6Addr::from(a).into())
            }
            6 => {
                self.dst_ip = <[u8; 16]>::try_from(b)
                    .ok()
                    .map(|a| Ipv6Addr::from(a).into())
            }
            7 => self.src_port = u16_of(b),
            8 => self.dst_port = u16_of(b),
            9 => self.secs = u32_of(b),
            10 => self.usecs = u32_of(b),
            11 => self.protocol_type = u8_of(b),
            // HEPv3 says u32; some agents (older Kamailio, heplify options) send u16.
            12 => self.capture_id = u32_of(b).or_else(|| u16_of(b).map(u32::from)),
            14 => self.auth_key = Some(b),
            15 => self.payload = Some(b),
            17 => self.correlation_id = Some(b).filter(|c| !c.is_empty()),
            19 => self.node_name = Some(b).filter(|c| !c.is_empty()),
            // 1 family (implied by the address chunks), 13 keep-alive, 16 compressed
            // payload, 18 VLAN, and anything newer: nothing siphook uses.
            _ => {}
        }
    }

    fn finish(self) -> Result<HepPacket<'a>, HepError> {
        let payload = self.payload.ok_or(HepError::NoPayload)?;
        let addr = |ip: Option<IpAddr>, port: Option<u16>| Some(SocketAddr::new(ip?, port?));
        let timestamp = self.secs.map(|s| {
            let usecs = i64::from(self.usecs.unwrap_or(0).min(999_999));
            Timestamp(i64::from(s) * 1000 + usecs / 1000)
        });
        Ok(HepPacket {
            ip_protocol: self.ip_protocol,
            source: addr(self.src_ip, self.src_port),
            destination: addr(self.dst_ip, self.dst_port),
            timestamp,
            protocol_type: self.protocol_type,
            capture_id: self.capture_id,
            auth_key: self.auth_key,
            payload,
            correlation_id: self.correlation_id,
            node_name: self.node_name,
        })
    }
}

/// Builds a HEPv3 packet: what tests, the load tool and capture fixtures send.
#[derive(Debug, Clone, Default)]
pub struct HepBuilder {
    chunks: Vec<u8>,
}

impl HepBuilder {
    /// An empty packet.
    pub fn new() -> HepBuilder {
        HepBuilder::default()
    }

    /// Appends a chunk of `vendor` and `kind` (bodies over 65,529 bytes are cut).
    pub fn chunk(mut self, vendor: u16, kind: u16, body: &[u8]) -> HepBuilder {
        let body = &body[..body.len().min(usize::from(u16::MAX) - CHUNK_HEADER)];
        let len = u16::try_from(body.len() + CHUNK_HEADER).unwrap_or(u16::MAX);
        self.chunks.extend_from_slice(&vendor.to_be_bytes());
        self.chunks.extend_from_slice(&kind.to_be_bytes());
        self.chunks.extend_from_slice(&len.to_be_bytes());
        self.chunks.extend_from_slice(body);
        self
    }

    /// The usual chunks of a captured SIP packet: family, protocol, addresses,
    /// ports, time, protocol type SIP, capture id, payload.
    pub fn sip(
        self,
        ip_protocol: u8,
        source: SocketAddr,
        destination: SocketAddr,
        at: Timestamp,
        payload: &[u8],
    ) -> HepBuilder {
        let (family, src, dst, src_kind, dst_kind): (u8, Vec<u8>, Vec<u8>, u16, u16) =
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => (2, s.octets().into(), d.octets().into(), 3, 4),
                (s, d) => (10, v6(s).octets().into(), v6(d).octets().into(), 5, 6),
            };
        let secs = u32::try_from(at.0.div_euclid(1000)).unwrap_or(0);
        let usecs = u32::try_from(at.0.rem_euclid(1000) * 1000).unwrap_or(0);
        self.chunk(0, 1, &[family])
            .chunk(0, 2, &[ip_protocol])
            .chunk(0, src_kind, &src)
            .chunk(0, dst_kind, &dst)
            .chunk(0, 7, &source.port().to_be_bytes())
            .chunk(0, 8, &destination.port().to_be_bytes())
            .chunk(0, 9, &secs.to_be_bytes())
            .chunk(0, 10, &usecs.to_be_bytes())
            .chunk(0, 11, &[PROTO_SIP])
            .chunk(0, 12, &2001u32.to_be_bytes())
            .chunk(0, 15, payload)
    }

    /// The finished packet (the total length field saturates at 65,535).
    pub fn build(self) -> Vec<u8> {
        let total = u16::try_from(HEADER + self.chunks.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(HEADER + self.chunks.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&self.chunks);
        out
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        HepBuilder::new()
            .sip(
                17,
                "10.0.0.1:5060".parse().unwrap(),
                "10.0.0.2:5080".parse().unwrap(),
                Timestamp(1_795_330_803_512),
                b"INVITE sip:x SIP/2.0\r\n\r\n",
            )
            .chunk(0, 17, b"corr-1")
            .chunk(0, 14, b"s3cret")
            .chunk(2, 99, b"kamailio vendor chunk")
            .build()
    }

    #[test]
    fn decodes_every_generic_chunk_and_skips_vendor_ones() {
        let buf = sample();
        let p = decode(&buf).unwrap();
        assert_eq!(p.ip_protocol, Some(17));
        assert_eq!(p.source, Some("10.0.0.1:5060".parse().unwrap()));
        assert_eq!(p.destination, Some("10.0.0.2:5080".parse().unwrap()));
        assert_eq!(p.timestamp, Some(Timestamp(1_795_330_803_512)));
        assert_eq!(p.protocol_type, Some(PROTO_SIP));
        assert_eq!(p.capture_id, Some(2001));
        assert_eq!(p.auth_key, Some(&b"s3cret"[..]));
        assert_eq!(p.correlation_id, Some(&b"corr-1"[..]));
        assert_eq!(p.payload, b"INVITE sip:x SIP/2.0\r\n\r\n");
        assert_eq!(frame_len(&buf), Ok(Some(buf.len())));
    }

    #[test]
    fn a_stream_is_cut_at_each_length_in_any_chunking() {
        let one = sample();
        let stream: Vec<u8> = [one.clone(), one.clone(), one.clone()].concat();
        for step in [
            1,
            5,
            6,
            7,
            one.len() - 1,
            one.len(),
            one.len() + 3,
            stream.len(),
        ] {
            let mut f = HepFramer::new();
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                f.buffer_mut().extend_from_slice(piece);
                while let Some(p) = f.next_packet().unwrap() {
                    got.push(p);
                }
            }
            assert_eq!(got.len(), 3, "step {step}");
            assert!(got.iter().all(|p| p[..] == one[..]));
        }
        let mut f = HepFramer::new();
        f.buffer_mut().extend_from_slice(b"INVITE sip:");
        assert_eq!(f.next_packet(), Err(HepError::BadMagic));
    }

    #[test]
    fn ipv6_and_a_u16_capture_id() {
        let buf = HepBuilder::new()
            .sip(
                6,
                "[2001:db8::1]:5060".parse().unwrap(),
                "[2001:db8::2]:5061".parse().unwrap(),
                Timestamp(5_000),
                b"x",
            )
            .chunk(0, 12, &7u16.to_be_bytes())
            .build();
        let p = decode(&buf).unwrap();
        assert_eq!(p.source, Some("[2001:db8::1]:5060".parse().unwrap()));
        assert_eq!(p.destination, Some("[2001:db8::2]:5061".parse().unwrap()));
        assert_eq!(p.capture_id, Some(7), "the later u16 chunk wins");
        assert_eq!(p.ip_protocol, Some(6));
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let buf = sample();
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_err(), "prefix of {n} bytes");
        }
        assert_eq!(decode(b"HEP2\x00\x06"), Err(HepError::BadMagic));
        assert_eq!(frame_len(b"HE"), Ok(None));
        assert_eq!(frame_len(b"GET / HTTP/1.1"), Err(HepError::BadMagic));
        assert_eq!(frame_len(b"HEP3\x00\x02"), Err(HepError::BadLength));
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(HepError::BadLength));
        // A chunk claiming fewer bytes than its own header.
        let mut bad = buf.clone();
        bad[6 + 4..6 + 6].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(decode(&bad), Err(HepError::BadChunk));
        // Every single-byte corruption either decodes or errs.
        for i in 0..buf.len() {
            for v in [0u8, 0xff, 0x06] {
                let mut m = buf.clone();
                m[i] = v;
                let _ = decode(&m);
            }
        }
        let no_payload = HepBuilder::new().chunk(0, 16, b"zz").build();
        assert_eq!(decode(&no_payload), Err(HepError::NoPayload));
    }
}
