//! Why a frame gives replay nothing to read: the vocabulary the link-layer,
//! tunnel, fragment and SCTP readers share, so none of them imports another
//! for it, and the summary counts each reason under one label.

/// Why a frame yields no segment; each is a summary counter, none an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// A link type replay does not read.
    LinkType,
    /// Not IP (ARP, LLDP, STP, PPP control …), or IP that did not parse.
    NotIp,
    /// An IP protocol replay does not read (ICMP, ESP, OSPF …).
    NotUdpOrTcp,
    /// A fragment kept until the rest of its datagram arrives; counted only by
    /// the decoder's caller when the datagram never completes.
    Fragment,
    /// A fragment overlapping or contradicting the others of its datagram.
    FragmentConflict,
    /// GRE carrying neither IP nor Ethernet (nor anything leading to them).
    GreOther,
    /// A GTP-U message without user data (echo, error indication, end marker).
    GtpSignalling,
    /// Headers or tunnels nested past the bound replay follows.
    TooDeep,
    /// Cut short by the snap length, or otherwise malformed.
    Truncated,
}

impl Skip {
    /// Summary label.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::LinkType => "unsupported link type",
            Skip::NotIp => "not IP",
            Skip::NotUdpOrTcp => "neither UDP, TCP nor SCTP",
            Skip::Fragment => "IP fragment (held for reassembly)",
            Skip::FragmentConflict => "IP fragment overlapping its datagram's others",
            Skip::GreOther => "GRE carrying neither IP nor Ethernet",
            Skip::GtpSignalling => "GTP-U without user data (echo, end marker, error)",
            Skip::TooDeep => "headers or tunnels nested too deep",
            Skip::Truncated => "truncated or malformed",
        }
    }
}
