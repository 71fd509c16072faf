//! From a captured frame to a UDP datagram or TCP segment: link layers
//! (Ethernet with VLAN tags, Linux cooked SLL and SLL2, raw IP, loopback), IPv4
//! and IPv6, fragments reassembled, IP-in-IP tunnels unwrapped.

use std::net::{IpAddr, SocketAddr};

use etherparse::defrag::IpDefragPool;
use etherparse::{EtherType, IpNumber, NetSlice, SlicedPacket, TcpSlice, UdpSlice};
use pcap_file::DataLink;

use super::capture::Frame;

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
        /// SYN: the stream starts at `seq + 1`.
        syn: bool,
        /// FIN or RST: the stream ends.
        end: bool,
        /// Its payload.
        payload: Vec<u8>,
    },
}

/// Why a frame yields no segment; each is a summary counter, none an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// A link type replay does not read.
    LinkType,
    /// Not IP (ARP, LLDP …), or IP that did not parse.
    NotIp,
    /// Neither UDP nor TCP (ICMP, SCTP …).
    NotUdpOrTcp,
    /// A fragment kept until the rest of its datagram arrives.
    Fragment,
    /// Cut short by the snap length, or otherwise malformed.
    Truncated,
}

impl Skip {
    /// Summary label.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::LinkType => "unsupported link type",
            Skip::NotIp => "not IP",
            Skip::NotUdpOrTcp => "neither UDP nor TCP",
            Skip::Fragment => "IP fragment (held for reassembly)",
            Skip::Truncated => "truncated or malformed",
        }
    }
}

/// Deepest IP-in-IP nesting unwrapped.
const MAX_TUNNEL_DEPTH: usize = 4;
/// Fragments older than this (capture time) are given up: their datagram will
/// not complete, and their buffers must not pile up over a long capture.
const FRAGMENT_TTL_NS: u128 = 10_000_000_000;
/// How often (in frames) stale fragments are dropped.
const FRAGMENT_SWEEP_EVERY: u64 = 256;

/// Decodes frames, keeping fragments until their datagram is whole.
#[derive(Default)]
pub struct Decoder {
    defrag: IpDefragPool<u128, ()>,
    frames: u64,
}

impl Decoder {
    /// A decoder with no fragments held.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// The UDP datagram or TCP segment a frame carries.
    pub fn decode(&mut self, frame: &Frame) -> Result<Segment, Skip> {
        self.frames += 1;
        if self.frames.is_multiple_of(FRAGMENT_SWEEP_EVERY) {
            let now = frame.ts_ns;
            self.defrag.retain(|t| t.abs_diff(now) < FRAGMENT_TTL_NS);
        }
        let d = frame.data.as_slice();
        let sliced = if frame.link == DataLink::ETHERNET {
            SlicedPacket::from_ethernet(d)
        } else if frame.link == DataLink::LINUX_SLL {
            SlicedPacket::from_linux_sll(d)
        } else if frame.link == DataLink::LINUX_SLL2 {
            // SLL2: protocol (2), reserved (2), ifindex (4), hatype (2), pkttype
            // (1), addr len (1), addr (8).
            let proto = d.get(..2).ok_or(Skip::Truncated)?;
            let payload = d.get(20..).ok_or(Skip::Truncated)?;
            SlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([proto[0], proto[1]])),
                payload,
            )
        } else if frame.link == DataLink::RAW
            || frame.link == DataLink::IPV4
            || frame.link == DataLink::IPV6
        {
            SlicedPacket::from_ip(d)
        } else if frame.link == DataLink::NULL || frame.link == DataLink::LOOP {
            // A 4-byte address family (host or network order), then IP.
            SlicedPacket::from_ip(d.get(4..).ok_or(Skip::Truncated)?)
        } else {
            return Err(Skip::LinkType);
        };
        let sliced = sliced.map_err(|_| Skip::Truncated)?;
        self.ip_payload(&sliced, frame.ts_ns, 0)
    }

    fn ip_payload(
        &mut self,
        sliced: &SlicedPacket<'_>,
        ts: u128,
        depth: usize,
    ) -> Result<Segment, Skip> {
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
        let (ip_number, data): (IpNumber, std::borrow::Cow<'_, [u8]>) = if payload.fragmented {
            match self.defrag.process_sliced_packet(sliced, ts, ()) {
                Ok(Some(whole)) => (whole.ip_number, whole.payload.into()),
                Ok(None) => return Err(Skip::Fragment),
                Err(_) => return Err(Skip::Truncated),
            }
        } else {
            (payload.ip_number, payload.payload.into())
        };
        match ip_number {
            IpNumber::UDP => {
                let udp = UdpSlice::from_slice_lax(&data).map_err(|_| Skip::Truncated)?;
                Ok(Segment::Udp {
                    src: SocketAddr::new(src, udp.source_port()),
                    dst: SocketAddr::new(dst, udp.destination_port()),
                    payload: udp.payload().to_vec(),
                })
            }
            IpNumber::TCP => {
                let tcp = TcpSlice::from_slice(&data).map_err(|_| Skip::Truncated)?;
                Ok(Segment::Tcp {
                    src: SocketAddr::new(src, tcp.source_port()),
                    dst: SocketAddr::new(dst, tcp.destination_port()),
                    seq: tcp.sequence_number(),
                    syn: tcp.syn(),
                    end: tcp.fin() || tcp.rst(),
                    payload: tcp.payload().to_vec(),
                })
            }
            IpNumber::IPV4 | IpNumber::IPV6 if depth < MAX_TUNNEL_DEPTH => {
                let inner = SlicedPacket::from_ip(&data).map_err(|_| Skip::Truncated)?;
                self.ip_payload(&inner, ts, depth + 1)
            }
            _ => Err(Skip::NotUdpOrTcp),
        }
    }
}
