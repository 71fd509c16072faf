//! From a captured frame to a UDP datagram, TCP segment or SCTP messages: the
//! link layer and tunnels peeled by `encap`, IPv4 and IPv6 read by etherparse,
//! fragments joined by `reassembly`, and every IP-in-something tunnel (IP-in-IP,
//! GRE, GTP-U, VXLAN) followed back down to the IP packet it carries.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use etherparse::{IpNumber, NetSlice, SlicedPacket, TcpSlice, UdpSlice};

use super::capture::Frame;
use super::encap::{self, Inner};
use super::reassembly::Fragments;
use super::sctp::Sctp;
use super::skip::Skip;

/// What a frame carried, as far as replay cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A UDP datagram.
    Udp {
        /// Sender.
        src: SocketAddr,
        /// Receiver.
        dst: SocketAddr,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// A TCP segment.
    Tcp {
        /// Sender.
        src: SocketAddr,
        /// Receiver.
        dst: SocketAddr,
        /// Sequence number of its first byte.
        seq: u32,
        /// The acknowledgment number, when the ACK flag is set: what the sender
        /// has received of the reverse direction.
        ack: Option<u32>,
        /// SYN: the stream starts at `seq + 1`.
        syn: bool,
        /// FIN or RST: the stream ends.
        end: bool,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// The SCTP user messages a packet completed (none for control chunks).
    Sctp {
        /// Sender.
        src: SocketAddr,
        /// Receiver.
        dst: SocketAddr,
        /// Each a whole message, in chunk order.
        messages: Vec<Vec<u8>>,
    },
}

/// Deepest nesting of tunnels (IP-in-IP, GRE, GTP-U, VXLAN) unwrapped.
const MAX_TUNNEL_DEPTH: usize = 8;
/// How often (in frames) stale fragments are dropped.
const FRAGMENT_SWEEP_EVERY: u64 = 256;

/// Decodes frames, keeping fragments and split SCTP messages until whole.
#[derive(Default)]
pub struct Decoder {
    fragments: Fragments,
    sctp: Sctp,
    frames: u64,
}

impl Decoder {
    /// A decoder with nothing held.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// The UDP datagram, TCP segment or SCTP messages a frame carries.
    pub fn decode(&mut self, frame: &Frame) -> Result<Segment, Skip> {
        self.frames += 1;
        if self.frames.is_multiple_of(FRAGMENT_SWEEP_EVERY) {
            self.fragments.sweep(frame.ts_ns);
        }
        let ip = encap::link(frame.link, &frame.data)?;
        self.ip(ip, frame.ts_ns, 0)
    }

    /// At the end of the capture: what was held and never completed, as
    /// (IP fragments, SCTP chunks).
    pub fn finish(&mut self) -> (u64, u64) {
        self.fragments.finish();
        self.sctp.finish();
        (self.fragments.incomplete, self.sctp.lost_fragments)
    }

    fn ip(&mut self, data: &[u8], ts: u128, depth: usize) -> Result<Segment, Skip> {
        if depth > MAX_TUNNEL_DEPTH {
            return Err(Skip::TooDeep);
        }
        let data = tso_length(data);
        let sliced = SlicedPacket::from_ip(&data).map_err(|_| Skip::Truncated)?;
        let (src, dst, payload) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => (
                IpAddr::V4(ip.header().source_addr()),
                IpAddr::V4(ip.header().destination_addr()),
                ip.payload(),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                IpAddr::V6(ip.header().source_addr()),
                IpAddr::V6(ip.header().destination_addr()),
                ip.payload(),
            ),
            _ => return Err(Skip::NotIp),
        };
        let (ip_number, data): (IpNumber, Cow<'_, [u8]>) = if payload.fragmented {
            match self.fragments.add(&sliced, ts)? {
                Some((n, whole)) => (n, whole.into()),
                None => return Err(Skip::Fragment),
            }
        } else {
            (payload.ip_number, payload.payload.into())
        };
        match ip_number {
            IpNumber::UDP => {
                let udp = UdpSlice::from_slice_lax(&data).map_err(|_| Skip::Truncated)?;
                let (sport, dport) = (udp.source_port(), udp.destination_port());
                let body = udp.payload();
                if (sport == encap::GTPU_PORT || dport == encap::GTPU_PORT) && encap::is_gtpu(body)
                {
                    return self.ip(encap::gtpu(body)?, ts, depth + 1);
                }
                if dport == encap::VXLAN_PORT
                    && let Some(frame) = encap::vxlan(body)
                {
                    return self.ip(encap::ether(frame)?, ts, depth + 1);
                }
                Ok(Segment::Udp {
                    src: SocketAddr::new(src, sport),
                    dst: SocketAddr::new(dst, dport),
                    payload: body.to_vec(),
                })
            }
            IpNumber::TCP => {
                let tcp = TcpSlice::from_slice(&data).map_err(|_| Skip::Truncated)?;
                Ok(Segment::Tcp {
                    src: SocketAddr::new(src, tcp.source_port()),
                    dst: SocketAddr::new(dst, tcp.destination_port()),
                    seq: tcp.sequence_number(),
                    ack: tcp.ack().then(|| tcp.acknowledgment_number()),
                    syn: tcp.syn(),
                    end: tcp.fin() || tcp.rst(),
                    payload: tcp.payload().to_vec(),
                })
            }
            IpNumber::SCTP => {
                let (src, dst, messages) = self.sctp.packet(src, dst, &data)?;
                Ok(Segment::Sctp { src, dst, messages })
            }
            IpNumber::IPV4 | IpNumber::IPV6 => self.ip(&data, ts, depth + 1),
            IpNumber::GRE => match encap::gre(&data)? {
                Inner::Ip(inner) => self.ip(inner, ts, depth + 1),
                Inner::Ether(frame) => self.ip(encap::ether(frame)?, ts, depth + 1),
            },
            _ => Err(Skip::NotUdpOrTcp),
        }
    }
}

/// A sender's capture with segmentation offload writes IPv4 total length 0 for
/// segments larger than the MTU (Wireshark: "assuming TSO"): the length is the
/// captured one.
fn tso_length(d: &[u8]) -> Cow<'_, [u8]> {
    if d.len() > 20 && d[0] >> 4 == 4 && d[2] == 0 && d[3] == 0 {
        let mut owned = d.to_vec();
        let len = u16::try_from(d.len()).unwrap_or(u16::MAX).to_be_bytes();
        owned[2..4].copy_from_slice(&len);
        return Cow::Owned(owned);
    }
    Cow::Borrowed(d)
}

#[cfg(test)]
mod tests {
    use pcap_file::DataLink;

    use super::*;

    /// xorshift: a fixed, dependency-free stream of bytes for the smoke test.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Malformed input is a counted skip, never a panic: random frames on every
    /// link type, and valid tunnel headers (GRE, ERSPAN, GTP-U, SCTP, PPPoE)
    /// followed by random bytes or cut at every length.
    #[test]
    fn random_and_truncated_frames_never_panic() {
        let links = [
            DataLink::ETHERNET,
            DataLink::LINUX_SLL,
            DataLink::LINUX_SLL2,
            DataLink::RAW,
            DataLink::NULL,
            DataLink::PPP,
        ];
        let mut d = Decoder::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000u64 {
            let len = (next(&mut state) % 200) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
            // Often an IPv4 or IPv6 start, so the deeper readers are reached.
            if let Some(b) = data.first_mut()
                && i % 2 == 0
            {
                *b = if i % 4 == 0 { 0x45 } else { 0x60 };
            }
            for link in links {
                let _ = d.decode(&Frame {
                    ts_ns: u128::from(i),
                    link,
                    data: data.clone(),
                });
            }
        }
        // IPv4 packets of each tunnelling protocol, their headers valid, then cut.
        for (proto, body) in [
            (47u8, vec![0x90, 0, 0x22, 0xeb, 0, 0, 0, 0, 0, 0, 0, 1]),
            (47, vec![0x10, 0, 0x88, 0xbe, 0, 0, 0, 1, 0x10, 0, 0, 5]),
            (
                132,
                vec![0x13, 0xc4, 0x13, 0xc4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 40],
            ),
            (
                17,
                vec![0x08, 0x68, 0x08, 0x68, 0, 40, 0, 0, 0x34, 0xff, 0, 30],
            ),
        ] {
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
            ip.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            ip.extend_from_slice(&body);
            ip.extend((0..64).map(|_| next(&mut state) as u8));
            for cut in 20..ip.len() {
                let mut p = ip[..cut].to_vec();
                p[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
                let _ = d.decode(&Frame {
                    ts_ns: 0,
                    link: DataLink::RAW,
                    data: p,
                });
            }
        }
        let _ = d.finish();
    }
}
