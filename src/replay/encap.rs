//! Link layers and tunnels, peeled down to an IP packet: Ethernet with any stack
//! of VLAN tags (802.1Q, QinQ), PPPoE sessions and MPLS labels; Linux cooked SLL
//! and SLL2 whatever the interface's hardware type; BSD loopback; PPP; and the
//! tunnel headers found inside IP (GRE with ERSPAN II/III or bridged Ethernet,
//! GTP-U, VXLAN). Pure functions on bytes: the decoder owns the recursion.
//!
//! Hand-written rather than etherparse's link slicing because etherparse refuses
//! SLL of any hardware type but Ethernet (`tcpdump -i any` on loopback or a
//! tunnel), stops after two VLAN tags, and knows no PPPoE or GRE.

use pcap_file::DataLink;

use super::skip::Skip;

/// Link-layer headers followed before giving up (VLAN tags, MPLS labels, PPPoE).
const MAX_LINK_HEADERS: usize = 16;
/// GRE routing entries (RFC 1701 SREs) read before giving up.
const MAX_SRES: usize = 16;
/// GTP-U extension headers read before giving up.
const MAX_GTP_EXTENSIONS: usize = 16;

/// UDP port of GTP-U (3GPP TS 29.281).
pub const GTPU_PORT: u16 = 2152;
/// UDP port of VXLAN (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;

/// What a tunnel header carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Inner<'a> {
    /// An IP packet.
    Ip(&'a [u8]),
    /// An Ethernet frame (bridged GRE, ERSPAN, VXLAN).
    Ether(&'a [u8]),
}

fn be16(d: &[u8], at: usize) -> Result<u16, Skip> {
    d.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(Skip::Truncated)
}

fn rest(d: &[u8], at: usize) -> Result<&[u8], Skip> {
    d.get(at..).ok_or(Skip::Truncated)
}

/// The IP packet a captured frame carries, by the capture's link type.
pub fn link(link: DataLink, d: &[u8]) -> Result<&[u8], Skip> {
    match link {
        DataLink::ETHERNET => ether(d),
        // packet type (2), ARPHRD (2), address length (2), address (8), protocol (2).
        DataLink::LINUX_SLL => sll_payload(be16(d, 2)?, be16(d, 14)?, rest(d, 16)?),
        // protocol (2), reserved (2), ifindex (4), ARPHRD (2), packet type (1),
        // address length (1), address (8).
        DataLink::LINUX_SLL2 => sll_payload(be16(d, 8)?, be16(d, 0)?, rest(d, 20)?),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Ok(d),
        // A 4-byte address family, host order (NULL) or network order (LOOP); the
        // IP version nibble says the same, whichever BSD wrote it.
        DataLink::NULL | DataLink::LOOP => rest(d, 4),
        DataLink::PPP => {
            // HDLC address and control (0xff 0x03) are optional.
            let d = if d.starts_with(&[0xff, 0x03]) {
                rest(d, 2)?
            } else {
                d
            };
            ppp(d)
        }
        _ => Err(Skip::LinkType),
    }
}

/// SLL's protocol field is an EtherType for every hardware type that carries
/// IP (Ethernet, loopback, none, raw IP, PPP, IP-GRE); netlink and the 802.2 /
/// 802.3 pseudo-types (below 0x0600) carry no IP.
fn sll_payload(hatype: u16, protocol: u16, payload: &[u8]) -> Result<&[u8], Skip> {
    const ARPHRD_NETLINK: u16 = 824;
    if hatype == ARPHRD_NETLINK || protocol < 0x0600 {
        return Err(Skip::NotIp);
    }
    ether_type(protocol, payload)
}

/// The IP packet of an Ethernet II frame.
pub fn ether(d: &[u8]) -> Result<&[u8], Skip> {
    let ty = be16(d, 12)?;
    if ty < 0x0600 {
        // 802.3 with a length: LLC (STP, CDP …), never IP here.
        return Err(Skip::NotIp);
    }
    ether_type(ty, rest(d, 14)?)
}

/// Follows VLAN tags, PPPoE and MPLS from an EtherType to the IP packet.
pub fn ether_type(mut ty: u16, mut d: &[u8]) -> Result<&[u8], Skip> {
    for _ in 0..MAX_LINK_HEADERS {
        match ty {
            0x0800 | 0x86dd => return Ok(d),
            // 802.1Q, 802.1ad (QinQ) and the older pre-standard QinQ TPIDs.
            0x8100 | 0x88a8 | 0x9100 | 0x9200 | 0x9300 => {
                ty = be16(d, 2)?;
                d = rest(d, 4)?;
            }
            // PPPoE session: version and type 0x11, code 0, session id, length.
            0x8864 => {
                if d.first() != Some(&0x11) {
                    return Err(Skip::Truncated);
                }
                return ppp(rest(d, 6)?);
            }
            0x8847 | 0x8848 => return mpls(d),
            _ => return Err(Skip::NotIp),
        }
    }
    Err(Skip::TooDeep)
}

/// A PPP frame's IP packet; LCP, IPCP and the rest carry none.
fn ppp(d: &[u8]) -> Result<&[u8], Skip> {
    // Protocol-field compression (RFC 1661 §6.5): an odd first byte is the whole field.
    let (proto, at) = match d.first() {
        Some(&b) if b & 1 == 1 => (u16::from(b), 1),
        Some(_) => (be16(d, 0)?, 2),
        None => return Err(Skip::Truncated),
    };
    match proto {
        0x0021 | 0x0057 => rest(d, at),
        _ => Err(Skip::NotIp),
    }
}

/// Pops MPLS labels to the bottom of the stack; what follows is told by its
/// first nibble (IPv4, IPv6, or a pseudowire control word before Ethernet).
fn mpls(mut d: &[u8]) -> Result<&[u8], Skip> {
    for _ in 0..MAX_LINK_HEADERS {
        let bottom = d.get(2).ok_or(Skip::Truncated)? & 0x01 != 0;
        d = rest(d, 4)?;
        if bottom {
            return match d.first().map(|b| b >> 4) {
                Some(4 | 6) => Ok(d),
                Some(0) => ether(rest(d, 4)?),
                Some(_) => Err(Skip::NotIp),
                None => Err(Skip::Truncated),
            };
        }
    }
    Err(Skip::TooDeep)
}

/// What a GRE packet (IP protocol 47) carries: RFC 2784/2890 GRE, the RFC 1701
/// routing field, PPTP's enhanced GRE (version 1), and by protocol type an IP
/// packet, bridged Ethernet (0x6558) or an ERSPAN mirror (type I/II 0x88be,
/// type III 0x22eb).
pub fn gre(d: &[u8]) -> Result<Inner<'_>, Skip> {
    let flags = be16(d, 0)?;
    let proto = be16(d, 2)?;
    let (checksum, routing, key, seq) = (
        flags & 0x8000 != 0,
        flags & 0x4000 != 0,
        flags & 0x2000 != 0,
        flags & 0x1000 != 0,
    );
    let version = flags & 0x7;
    if version > 1 {
        return Err(Skip::Truncated);
    }
    let mut at = 4;
    if checksum || routing {
        at += 4;
    }
    if key {
        at += 4;
    }
    if seq {
        at += 4;
    }
    if version == 1 && flags & 0x0080 != 0 {
        at += 4; // PPTP acknowledgment number
    }
    if routing {
        // Source route entries, each address family (2), offset (1), length (1)
        // and its bytes, ended by one of length 0.
        let mut ended = false;
        for _ in 0..MAX_SRES {
            let len = usize::from(*d.get(at + 3).ok_or(Skip::Truncated)?);
            at += 4 + len;
            if len == 0 {
                ended = true;
                break;
            }
        }
        if !ended {
            return Err(Skip::TooDeep);
        }
    }
    let payload = rest(d, at)?;
    match proto {
        0x6558 => Ok(Inner::Ether(payload)),
        // ERSPAN type II has an 8-byte header and GRE's sequence number; type I
        // has neither.
        0x88be if seq => Ok(Inner::Ether(rest(payload, 8)?)),
        0x88be => Ok(Inner::Ether(payload)),
        0x22eb => {
            // 12 bytes; the O flag (last bit) adds an 8-byte platform subheader.
            let optional = payload.get(11).ok_or(Skip::Truncated)? & 0x01 != 0;
            Ok(Inner::Ether(rest(payload, if optional { 20 } else { 12 })?))
        }
        0x880b => Ok(Inner::Ip(ppp(payload)?)),
        ty => match ether_type(ty, payload) {
            Ok(ip) => Ok(Inner::Ip(ip)),
            Err(Skip::NotIp) => Err(Skip::GreOther),
            Err(e) => Err(e),
        },
    }
}

/// Whether a UDP payload on the GTP-U port is GTPv1-U (version 1, protocol
/// type GTP), not some other traffic that happens to use the port.
pub fn is_gtpu(d: &[u8]) -> bool {
    d.first().is_some_and(|&b| b >> 5 == 1 && b & 0x10 != 0) && d.len() >= 8
}

/// The IP packet of a GTP-U G-PDU (3GPP TS 29.281 §5): VoLTE's user plane,
/// where SIP rides between the UE and the P-CSCF. Echo, error indication and
/// end marker messages carry none.
pub fn gtpu(d: &[u8]) -> Result<&[u8], Skip> {
    let flags = *d.first().ok_or(Skip::Truncated)?;
    let kind = *d.get(1).ok_or(Skip::Truncated)?;
    if kind != 0xff {
        return Err(Skip::GtpSignalling);
    }
    let length = usize::from(be16(d, 2)?);
    let body = d.get(8..8 + length).ok_or(Skip::Truncated)?;
    if flags & 0x07 == 0 {
        return Ok(body);
    }
    // Sequence number (2), N-PDU number (1), next extension type (1).
    let mut next = *body.get(3).ok_or(Skip::Truncated)?;
    let mut at = 4;
    for _ in 0..MAX_GTP_EXTENSIONS {
        if flags & 0x04 == 0 || next == 0 {
            return rest(body, at);
        }
        // Length in 4-byte units, the contents, then the next type in its last byte.
        let units = usize::from(*body.get(at).ok_or(Skip::Truncated)?);
        if units == 0 {
            return Err(Skip::Truncated);
        }
        at += units * 4;
        next = *body.get(at - 1).ok_or(Skip::Truncated)?;
    }
    Err(Skip::TooDeep)
}

/// The Ethernet frame of a VXLAN packet (flags with the I bit, 8 bytes).
pub fn vxlan(d: &[u8]) -> Option<&[u8]> {
    if d.first().is_some_and(|b| b & 0x08 != 0) {
        d.get(8..)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gre_with_checksum_key_and_sequence_carries_ip() {
        let mut d = vec![0xb0, 0x00, 0x08, 0x00];
        d.extend_from_slice(&[0; 12]);
        d.extend_from_slice(&[0x45, 1, 2]);
        assert_eq!(gre(&d), Ok(Inner::Ip(&[0x45, 1, 2][..])));
    }

    #[test]
    fn gre_routing_without_an_end_is_refused() {
        let mut d = vec![0x40, 0x00, 0x08, 0x00, 0, 0, 0, 0];
        for _ in 0..MAX_SRES + 1 {
            d.extend_from_slice(&[0, 0x08, 0, 1, 0xaa]);
        }
        assert!(gre(&d).is_err());
        assert_eq!(gre(&d[..6]), Err(Skip::Truncated));
    }

    #[test]
    fn gtpu_extension_headers_are_skipped() {
        // E flag, next type 0x85 (PDU session container), one 4-byte unit.
        let mut d = vec![0x34, 0xff, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0x85];
        d.extend_from_slice(&[1, 0x10, 0x09, 0]);
        d.extend_from_slice(&[0x45, 0, 0, 0]);
        assert_eq!(gtpu(&d), Ok(&[0x45, 0, 0, 0][..]));
        // An extension claiming zero length would never advance.
        d[12] = 0;
        assert_eq!(gtpu(&d), Err(Skip::Truncated));
    }

    #[test]
    fn a_vlan_stack_deeper_than_the_bound_is_refused_not_followed() {
        let d: Vec<u8> = std::iter::repeat_n([0, 1, 0x81, 0x00], MAX_LINK_HEADERS + 1)
            .flatten()
            .collect();
        assert_eq!(ether_type(0x8100, &d), Err(Skip::TooDeep));
    }
}
