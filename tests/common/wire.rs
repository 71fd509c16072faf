//! A packet writer for replay's tests: IP, UDP, TCP and SCTP built byte by byte,
//! and every encapsulation replay claims to read (VLAN, PPPoE, GRE, ERSPAN,
//! GTP-U, cooked and loopback link layers) wrapped around them, so each capture a
//! test replays is one whose every byte the test chose.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};

/// One's-complement sum of 16-bit words, folded: the Internet checksum.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed address families"),
    }
    p
}

/// An IPv4 packet (no options), or an IPv6 one, around `payload`.
pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4_frag(s.octets(), d.octets(), proto, 1, 0, false, payload)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            h.extend_from_slice(&[proto, 64]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(payload);
            h
        }
        _ => panic!("mixed address families"),
    }
}

/// An IPv4 packet with its fragment fields chosen (`offset` in bytes).
pub fn ipv4_frag(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    offset: usize,
    more: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    let frag = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// IPv6 fragments of an upper-layer `payload` (next header `proto`), `size`
/// payload bytes each (a multiple of 8), in order.
pub fn ipv6_fragments(
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    proto: u8,
    id: u32,
    size: usize,
    payload: &[u8],
) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = payload.chunks(size).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let more = i + 1 < chunks.len();
            let mut frag = vec![proto, 0];
            let off = ((i * size / 8) as u16) << 3 | u16::from(more);
            frag.extend_from_slice(&off.to_be_bytes());
            frag.extend_from_slice(&id.to_be_bytes());
            frag.extend_from_slice(c);
            ip(IpAddr::V6(src), IpAddr::V6(dst), 44, &frag)
        })
        .collect()
}

/// A UDP datagram with its checksum, addresses from the IP header it goes in.
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = checksum(&[&pseudo_header(src, dst, 17, len), &u]);
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    u
}

/// A whole IP packet carrying a UDP datagram.
pub fn ip_udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ip(src, dst, 17, &udp(src, dst, sport, dport, payload))
}

/// TCP flags used here.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;
pub const FIN: u8 = 0x01;

/// A TCP segment with its checksum.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = checksum(&[&pseudo_header(src, dst, 6, t.len()), &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// CRC32c (Castagnoli), which SCTP's common header carries.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet with one DATA chunk per message (unfragmented, PPID 0), each
/// chunk padded to 4 bytes.
pub fn sctp(sport: u16, dport: u16, tsn: u32, messages: &[&[u8]]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // verification tag
    p.extend_from_slice(&[0, 0, 0, 0]);
    for (i, m) in messages.iter().enumerate() {
        let len = 16 + m.len();
        p.extend_from_slice(&[0, 0x03]); // DATA, B and E: the whole message
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p.extend_from_slice(&(tsn + i as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]); // stream 0, sequence 0
        p.extend_from_slice(&[0, 0, 0, 0]); // PPID
        p.extend_from_slice(m);
        p.resize(p.len() + (4 - len % 4) % 4, 0);
    }
    let c = crc32c(&p);
    p[8..12].copy_from_slice(&c.to_le_bytes());
    p
}

/// An Ethernet II frame.
pub fn ether(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The EtherType of an IP packet, from its version nibble.
pub fn ip_ether_type(ip: &[u8]) -> u16 {
    if ip.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    }
}

/// A VLAN tag (`tpid` 0x8100, or 0x88a8 for a QinQ service tag) before the
/// payload's EtherType.
pub fn vlan(tpid: u16, id: u16, inner_type: u16, payload: &[u8]) -> (u16, Vec<u8>) {
    let mut t = id.to_be_bytes().to_vec();
    t.extend_from_slice(&inner_type.to_be_bytes());
    t.extend_from_slice(payload);
    (tpid, t)
}

/// A PPPoE session frame's payload (EtherType 0x8864) around an IP packet.
pub fn pppoe(ip: &[u8]) -> Vec<u8> {
    let proto: u16 = if ip_ether_type(ip) == 0x86dd {
        0x0057
    } else {
        0x0021
    };
    let mut p = vec![0x11, 0x00, 0x12, 0x34];
    p.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
    p.extend_from_slice(&proto.to_be_bytes());
    p.extend_from_slice(ip);
    p
}

/// A GRE header (RFC 2784/2890) with an optional key and sequence number.
pub fn gre(proto: u16, key: Option<u32>, seq: Option<u32>, payload: &[u8]) -> Vec<u8> {
    let mut flags = 0u16;
    if key.is_some() {
        flags |= 0x2000;
    }
    if seq.is_some() {
        flags |= 0x1000;
    }
    let mut g = flags.to_be_bytes().to_vec();
    g.extend_from_slice(&proto.to_be_bytes());
    if let Some(k) = key {
        g.extend_from_slice(&k.to_be_bytes());
    }
    if let Some(s) = seq {
        g.extend_from_slice(&s.to_be_bytes());
    }
    g.extend_from_slice(payload);
    g
}

/// An ERSPAN type II header (8 bytes) before a mirrored Ethernet frame; it goes
/// in GRE 0x88be with a sequence number.
pub fn erspan2(session: u16, frame: &[u8]) -> Vec<u8> {
    let mut h = vec![0x10, 0x00]; // version 1 (type II), VLAN 0
    h.extend_from_slice(&(session & 0x3ff).to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h.extend_from_slice(frame);
    h
}

/// An ERSPAN type III header (12 bytes, and the 8-byte platform subheader when
/// `optional`) before a mirrored Ethernet frame; it goes in GRE 0x22eb.
pub fn erspan3(session: u16, optional: bool, frame: &[u8]) -> Vec<u8> {
    let mut h = vec![0x20, 0x00]; // version 2 (type III)
    h.extend_from_slice(&(session & 0x3ff).to_be_bytes());
    h.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // timestamp
    h.extend_from_slice(&[0, 0, 0, if optional { 1 } else { 0 }]); // SGT, flags: O bit
    if optional {
        h.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 0, 0]);
    }
    h.extend_from_slice(frame);
    h
}

/// A GTPv1-U G-PDU (UDP port 2152) carrying an IP packet; with a sequence
/// number when `seq` is set, as some PGWs send.
pub fn gtpu(teid: u32, seq: Option<u16>, inner: &[u8]) -> Vec<u8> {
    let opt = if seq.is_some() { 4 } else { 0 };
    let mut g = vec![if seq.is_some() { 0x32 } else { 0x30 }, 0xff];
    g.extend_from_slice(&((inner.len() + opt) as u16).to_be_bytes());
    g.extend_from_slice(&teid.to_be_bytes());
    if let Some(s) = seq {
        g.extend_from_slice(&s.to_be_bytes());
        g.extend_from_slice(&[0, 0]);
    }
    g.extend_from_slice(inner);
    g
}

/// A Linux cooked (SLL v1) header, with the given ARPHRD hardware type.
pub fn sll(hatype: u16, proto: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0];
    f.extend_from_slice(&hatype.to_be_bytes());
    f.extend_from_slice(&[0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend_from_slice(&proto.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A Linux cooked v2 (SLL2) header.
pub fn sll2(hatype: u16, proto: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = proto.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&hatype.to_be_bytes());
    f.extend_from_slice(&[0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A BSD loopback (DLT_NULL) frame: the address family in host (little-endian
/// here) order; 2 is AF_INET, 30 macOS's AF_INET6.
pub fn null(af: u32, ip: &[u8]) -> Vec<u8> {
    let mut f = af.to_le_bytes().to_vec();
    f.extend_from_slice(ip);
    f
}

/// Writes a classic pcap file (µs), every frame whole.
pub fn write_pcap(path: &Path, link: DataLink, frames: &[(u64, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let header = PcapHeader {
        datalink: link,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(file, header).unwrap();
    for (us, bytes) in frames {
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(*us),
            bytes.len() as u32,
            bytes,
        ))
        .unwrap();
    }
}

/// The two ends of a TCP connection and the next sequence number of each side,
/// so a test writes a conversation message by message.
pub struct TcpConn {
    pub a: (IpAddr, u16),
    pub b: (IpAddr, u16),
    pub seq_a: u32,
    pub seq_b: u32,
}

impl TcpConn {
    pub fn new(a: (IpAddr, u16), b: (IpAddr, u16)) -> TcpConn {
        TcpConn {
            a,
            b,
            seq_a: 1000,
            seq_b: 5_000_000,
        }
    }

    /// The three-way handshake's IP packets.
    pub fn handshake(&mut self) -> Vec<Vec<u8>> {
        let (a, b) = (self.a, self.b);
        let out = vec![
            ip(
                a.0,
                b.0,
                6,
                &tcp(a.0, b.0, a.1, b.1, self.seq_a, 0, SYN, &[]),
            ),
            ip(
                b.0,
                a.0,
                6,
                &tcp(
                    b.0,
                    a.0,
                    b.1,
                    a.1,
                    self.seq_b,
                    self.seq_a + 1,
                    SYN | ACK,
                    &[],
                ),
            ),
            ip(
                a.0,
                b.0,
                6,
                &tcp(a.0, b.0, a.1, b.1, self.seq_a + 1, self.seq_b + 1, ACK, &[]),
            ),
        ];
        self.seq_a += 1;
        self.seq_b += 1;
        out
    }

    /// One segment from `a` (when `from_a`) or `b`, its sequence number taken
    /// and advanced.
    pub fn send(&mut self, from_a: bool, data: &[u8]) -> Vec<u8> {
        let (s, d, seq, ack) = if from_a {
            (self.a, self.b, self.seq_a, self.seq_b)
        } else {
            (self.b, self.a, self.seq_b, self.seq_a)
        };
        let packet = ip(
            s.0,
            d.0,
            6,
            &tcp(s.0, d.0, s.1, d.1, seq, ack, PSH | ACK, data),
        );
        let next = seq.wrapping_add(data.len() as u32);
        if from_a {
            self.seq_a = next;
        } else {
            self.seq_b = next;
        }
        packet
    }
}

/// Replays `path` on the default configuration (`drain`: end open calls by
/// their timers), every event checked against the schema: its events as JSON
/// and the summary.
pub fn replay_file(path: &Path, drain: bool) -> (Vec<serde_json::Value>, siphook::replay::Summary) {
    use siphook::replay::{ReplayOptions, replay};
    let mut events = Vec::new();
    let summary = replay(
        path,
        &ReplayOptions::from_config(&siphook::config::Config::default(), drain),
        |e| {
            let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
            super::assert_valid(&v);
            events.push(v);
        },
    )
    .unwrap();
    (events, summary)
}
