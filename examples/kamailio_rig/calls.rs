//! What happened to each call on the wire, from the loopback capture: when each
//! message of the caller↔proxy and proxy↔callee legs was seen, how often
//! (retransmissions), and which error answers the caller got. This is the ground
//! truth both systems' webhooks are judged against.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use siphook::replay::capture::Capture;
use siphook::replay::packet::{Decoder, Segment};

use crate::Ports;

/// Which leg and direction a datagram took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Caller to proxy.
    UacIn,
    /// Proxy to caller.
    UacOut,
    /// Proxy to callee.
    UasOut,
    /// Callee to proxy.
    UasIn,
}

/// A message's kind: the request method or the response code, with its CSeq
/// method (a 200 to the INVITE is not a 200 to the BYE).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kind {
    /// Method of a request; None for a response.
    pub method: Option<String>,
    /// Code of a response.
    pub code: Option<u16>,
    /// CSeq method.
    pub cseq: String,
}

/// Every sighting of one call's messages, in capture order.
#[derive(Debug, Default)]
pub struct CallWire {
    /// (direction, kind) → capture times, nanoseconds since the epoch.
    pub seen: HashMap<(Dir, Kind), Vec<u64>>,
}

impl CallWire {
    /// Times of a request in a direction.
    pub fn req(&self, dir: Dir, method: &str) -> &[u64] {
        self.get(dir, Some(method), None, method)
    }

    /// Times of a response to `cseq` in a direction.
    pub fn resp(&self, dir: Dir, code: u16, cseq: &str) -> &[u64] {
        self.get(dir, None, Some(code), cseq)
    }

    fn get(&self, dir: Dir, method: Option<&str>, code: Option<u16>, cseq: &str) -> &[u64] {
        let k = Kind {
            method: method.map(str::to_owned),
            code,
            cseq: cseq.to_owned(),
        };
        self.seen.get(&(dir, k)).map_or(&[], Vec::as_slice)
    }

    /// First final answer ≥ 300 to the INVITE in a direction.
    pub fn first_failure(&self, dir: Dir) -> Option<(u16, u64)> {
        self.seen
            .iter()
            .filter(|((d, k), _)| {
                *d == dir && k.cseq == "INVITE" && k.code.is_some_and(|c| c >= 300)
            })
            .filter_map(|((_, k), t)| Some((k.code?, *t.first()?)))
            .min_by_key(|&(_, t)| t)
    }
}

/// The capture, read.
pub struct Wire {
    /// Per Call-ID.
    pub calls: HashMap<String, CallWire>,
    /// Datagrams on the rig's SIP legs that were not SIP with a Call-ID.
    pub unparsed: u64,
}

/// Reads the SIP legs of a capture.
pub fn read(path: &Path, ports: Ports) -> anyhow::Result<Wire> {
    let mut cap = Capture::open(path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| crate::shown(path))?;
    let mut decoder = Decoder::new();
    let mut wire = Wire {
        calls: HashMap::new(),
        unparsed: 0,
    };
    while let Some(frame) = cap.next_frame() {
        let Ok(frame) = frame else { break };
        let Ok(Segment::Udp { src, dst, payload }) = decoder.decode(&frame) else {
            continue;
        };
        let dir = match (src.port(), dst.port()) {
            (s, d) if s == ports.uac_port && d == ports.proxy_port => Dir::UacIn,
            (s, d) if s == ports.proxy_port && d == ports.uac_port => Dir::UacOut,
            (s, d) if s == ports.proxy_port && d == ports.uas_port => Dir::UasOut,
            (s, d) if s == ports.uas_port && d == ports.proxy_port => Dir::UasIn,
            _ => continue,
        };
        let Some((call_id, kind)) = sip_summary(&payload) else {
            wire.unparsed += 1;
            continue;
        };
        let t = u64::try_from(frame.ts_ns).unwrap_or(u64::MAX);
        wire.calls
            .entry(call_id)
            .or_default()
            .seen
            .entry((dir, kind))
            .or_default()
            .push(t);
    }
    Ok(wire)
}

/// Call-ID and kind of a SIP message; the rig's SIPp scenarios use long header
/// names, the compact `i:` is accepted too.
fn sip_summary(raw: &[u8]) -> Option<(String, Kind)> {
    let text = std::str::from_utf8(raw).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let first = lines.next()?;
    let (method, code) = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        (None, Some(rest.get(..3)?.parse::<u16>().ok()?))
    } else {
        (Some(first.split(' ').next()?.to_owned()), None)
    };
    let mut call_id = None;
    let mut cseq = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i") {
            call_id = Some(value.trim().to_owned());
        } else if name.eq_ignore_ascii_case("cseq") {
            cseq = value.split_whitespace().nth(1).map(str::to_owned);
        }
    }
    Some((
        call_id?,
        Kind {
            method,
            code,
            cseq: cseq?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_with_long_or_compact_call_id() {
        let inv = b"INVITE sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\ni: abc@h\r\nCSeq: 1 INVITE\r\n\r\nv=0\r\n";
        let (id, k) = sip_summary(inv).expect("parses");
        assert_eq!(id, "abc@h");
        assert_eq!(
            (k.method.as_deref(), k.code, k.cseq.as_str()),
            (Some("INVITE"), None, "INVITE")
        );
        let ok = b"SIP/2.0 200 OK\r\nCall-ID:  abc@h \r\nCSeq: 2 BYE\r\n\r\n";
        let (id, k) = sip_summary(ok).expect("parses");
        assert_eq!(id, "abc@h");
        assert_eq!(
            (k.method, k.code, k.cseq.as_str()),
            (None, Some(200), "BYE")
        );
        assert!(sip_summary(b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n").is_none());
        assert!(sip_summary(b"\x16\x03\x01 not sip").is_none());
    }
}
