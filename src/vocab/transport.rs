//! How a message travelled: its transport, the two addresses and when it was seen.
//! The parser reads a mirror copy's original transport, the listeners stamp
//! [`Meta`] on what they receive, and the tracker and the event contract report
//! both.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// The transport a SIP message travelled on (the original one, for a HEP or
/// X-Siptrace copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
}

impl Transport {
    /// Lower-case name, also a bounded metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Where and when a message was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Transport it arrived on.
    pub transport: Transport,
    /// Sender address.
    pub source: SocketAddr,
    /// Receiver address.
    pub destination: SocketAddr,
    /// Receive time; becomes the timestamp of events it triggers.
    pub received_at: Timestamp,
}
