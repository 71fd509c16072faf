//! Listeners: SIP over UDP and TCP, and HEPv3 (SIP as a capture agent saw it) over
//! UDP and TCP. Each parses what it receives and hands typed
//! messages to the tracker through a bounded queue it never waits on, so a slow
//! tracker or a flood sheds load (counted) instead of stalling the sockets.

pub mod slots;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics::{Metrics, RateLog};
use crate::sip::{self, ParseOptions, SipMessage, StartLine, hep};
use crate::vocab::{Meta, Timestamp, Transport, same_secret};

/// A parsed message and where it came from: what flows from ingest to the tracker.
#[derive(Debug)]
pub struct Inbound {
    /// The message view.
    pub msg: SipMessage,
    /// Transport, addresses and receive time.
    pub meta: Meta,
}

/// What every listener shares: the queue to the tracker, parse settings, metrics.
#[derive(Clone)]
pub struct IngestContext {
    /// Queue to the tracker.
    pub tx: mpsc::Sender<Inbound>,
    /// Correlation headers and size limit.
    pub parse: Arc<ParseOptions>,
    /// Counters.
    pub metrics: Metrics,
    /// Limits one parse-error log line per second across listeners.
    log_limit: Arc<Mutex<RateLog>>,
    /// HEP packets must carry this auth key, when set.
    hep_auth: Option<Arc<[u8]>>,
    /// Senders whose X-Siptrace headers are believed.
    siptrace_from: Arc<[std::net::IpAddr]>,
}

/// How far a capture time (HEP, X-Siptrace-Time) may be from this host's clock
/// and still be used. The tracker's timers run on this host's clock; an agent
/// whose clock is off by more would fire (or hold back) invite and session timers
/// wrongly, so its messages get the local receive time instead, counted.
pub const MAX_CAPTURE_SKEW_MS: u64 = 10_000;

/// What came of one unit a listener handed over: what the TCP listener needs to
/// tell a live peer from one that only keeps its connection open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// A SIP message was parsed (and queued, or shed and counted).
    Message,
    /// A HEP packet carried the listener's auth key but no SIP message.
    Authenticated,
    /// Nothing usable: unparseable, unauthenticated, or not SIP.
    Rejected,
}

/// What a listener's bytes are: plain SIP, or SIP inside HEPv3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// SIP messages as sent.
    Sip,
    /// HEPv3 packets from a capture agent.
    Hep,
}

impl IngestContext {
    /// A context feeding `tx`.
    pub fn new(tx: mpsc::Sender<Inbound>, parse: ParseOptions, metrics: Metrics) -> IngestContext {
        IngestContext {
            tx,
            parse: Arc::new(parse),
            metrics,
            log_limit: Arc::new(Mutex::new(RateLog::new(Duration::from_secs(1)))),
            hep_auth: None,
            siptrace_from: Arc::new([]),
        }
    }

    /// Believes X-Siptrace headers from these senders only (Kamailio proxies).
    pub fn with_siptrace_from(mut self, senders: &[std::net::IpAddr]) -> IngestContext {
        self.siptrace_from = senders.into();
        self
    }

    /// Whether HEP packets must carry an auth key here.
    pub fn hep_keyed(&self) -> bool {
        self.hep_auth.is_some()
    }

    /// Requires HEP packets to carry `key` in their auth-key chunk.
    pub fn with_hep_auth(mut self, key: Option<&[u8]>) -> IngestContext {
        self.hep_auth = key.map(Arc::from);
        self
    }

    /// Unwraps one HEPv3 packet and handles its SIP payload as if seen on the wire
    /// it was captured on: the original addresses, protocol and capture time, and
    /// HEP's correlation id when no configured header gives one. `wire` is the
    /// transport the HEP packet itself came over (a metrics label).
    pub fn handle_hep(
        &self,
        raw: &[u8],
        wire: Transport,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Handled {
        let dropped = |reason: &str| {
            self.metrics
                .hep_dropped
                .with_label_values(&[wire.as_str(), reason])
                .inc();
        };
        // On a keyed listener the key is checked first: a packet without it is an
        // authentication failure, whatever else is wrong with it (an empty
        // `HEP3` header sent to hold a connection open is one).
        let keyed = self
            .hep_auth
            .as_ref()
            .map(|key| hep::auth_key(raw).is_some_and(|k| same_secret(k, key)));
        if keyed == Some(false) {
            dropped("auth_failed");
            if let Some(suppressed) = self.allow_log() {
                tracing::warn!(%peer, suppressed, "HEP packet dropped: missing or wrong auth key");
            }
            return Handled::Rejected;
        }
        let otherwise = if keyed == Some(true) {
            Handled::Authenticated
        } else {
            Handled::Rejected
        };
        let packet = match hep::decode(raw) {
            Ok(p) => p,
            Err(e) => {
                dropped(e.reason());
                if let Some(suppressed) = self.allow_log() {
                    tracing::warn!(%peer, reason = e.reason(), suppressed, "HEP packet dropped: {e}");
                }
                return otherwise;
            }
        };
        if packet.protocol_type != Some(hep::PROTO_SIP) {
            dropped("not_sip");
            return otherwise;
        }
        let (mut meta, fallback) = hep_meta(&packet, peer, local, Timestamp::now());
        meta.received_at = self.capture_time(packet.timestamp, "hep");
        // HEP's own chunks say where the packet was: a header inside it is the
        // sender's claim.
        match self.handle_meta(packet.payload, "hep", meta, fallback, false) {
            Handled::Message => Handled::Message,
            _ => otherwise,
        }
    }

    /// Parses one message and queues it; counts every outcome. Never blocks.
    pub fn handle(
        &self,
        raw: &[u8],
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
    ) -> Handled {
        let meta = Meta {
            transport,
            source,
            destination,
            received_at: Timestamp::now(),
        };
        // A dual-stack listener sees an IPv4 proxy as ::ffff:a.b.c.d.
        let trusted = self.siptrace_from.contains(&source.ip().to_canonical());
        self.handle_meta(raw, transport.as_str(), meta, None, trusted)
    }

    /// The capture time when it is within [`MAX_CAPTURE_SKEW_MS`] of now, else now
    /// (counted under `source`).
    fn capture_time(&self, at: Option<Timestamp>, source: &str) -> Timestamp {
        let now = Timestamp::now();
        match at {
            Some(t) if t.millis().abs_diff(now.millis()) <= MAX_CAPTURE_SKEW_MS => t,
            Some(_) => {
                self.metrics
                    .capture_clock_skew
                    .with_label_values(&[source])
                    .inc();
                now
            }
            None => now,
        }
    }

    /// Parses, counts under the `t` transport label, and queues one message.
    /// A plain mirror copy that carries Kamailio's X-Siptrace headers is taken
    /// as the original packet they describe.
    fn handle_meta(
        &self,
        raw: &[u8],
        t: &str,
        mut meta: Meta,
        correlation: Option<&str>,
        siptrace_trusted: bool,
    ) -> Handled {
        let source = meta.source;
        let mut msg = match sip::parse(raw, &self.parse) {
            Ok(m) => m,
            Err(e) => {
                self.metrics
                    .sip_parse_errors
                    .with_label_values(&[t, e.reason()])
                    .inc();
                self.log_parse_error(e.reason(), raw, source);
                return Handled::Rejected;
            }
        };
        let kind = match msg.start {
            StartLine::Request { .. } => "request",
            StartLine::Response { .. } => "response",
        };
        self.metrics
            .sip_messages
            .with_label_values(&[t, kind, msg.method().as_str()])
            .inc();
        apply_hints(&mut msg, &mut meta, correlation, siptrace_trusted);
        if let Some(at) = msg.siptrace.and_then(|t| t.at) {
            meta.received_at = self.capture_time(Some(at), "siptrace");
        }
        if let Err(e) = self.tx.try_send(Inbound { msg, meta }) {
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => "queue_full",
                mpsc::error::TrySendError::Closed(_) => "shutting_down",
            };
            self.metrics
                .sip_dropped
                .with_label_values(&[t, reason])
                .inc();
        }
        Handled::Message
    }

    /// Whether a hot-path warning may be logged now (one a second across every
    /// listener), with the count suppressed since the last: a flood of bad input
    /// must not turn into a flood of log lines.
    pub fn allow_log(&self) -> Option<u64> {
        self.log_limit.lock().ok().and_then(|mut l| l.allow())
    }

    /// Logs a parse failure by Call-ID at most: the raw bytes carry phone numbers.
    fn log_parse_error(&self, reason: &str, raw: &[u8], source: SocketAddr) {
        if let Some(suppressed) = self.allow_log() {
            let call_id = sip::sniff_call_id(raw);
            tracing::warn!(
                reason,
                %source,
                call_id = call_id.as_deref().unwrap_or("-"),
                suppressed,
                "unparseable SIP message dropped"
            );
        }
    }
}

/// Where and when the packet inside a HEP packet was seen: its captured transport
/// and addresses (the socket's when a chunk is missing) and capture time (else
/// `fallback_time`), with HEP's correlation id when it is printable.
pub fn hep_meta<'a>(
    packet: &hep::HepPacket<'a>,
    peer: SocketAddr,
    local: SocketAddr,
    fallback_time: Timestamp,
) -> (Meta, Option<&'a str>) {
    let transport = match packet.ip_protocol {
        Some(6) => Transport::Tcp,
        _ => Transport::Udp,
    };
    let meta = Meta {
        transport,
        source: packet.source.unwrap_or(peer),
        destination: packet.destination.unwrap_or(local),
        received_at: packet.timestamp.unwrap_or(fallback_time),
    };
    let correlation = packet
        .correlation_id
        .and_then(|c| std::str::from_utf8(c).ok())
        .filter(|c| c.len() <= 256 && c.chars().all(|ch| !ch.is_control()));
    (meta, correlation)
}

/// What a message says about itself: Kamailio's X-Siptrace headers on a mirror
/// copy name the original packet when its sender is trusted (taken as is: live
/// ingest re-checks the time against its clock; from anyone else the headers are
/// dropped), and a capture agent's correlation id fills in when no configured
/// header gave one.
pub fn apply_hints(
    msg: &mut SipMessage,
    meta: &mut Meta,
    correlation: Option<&str>,
    siptrace_trusted: bool,
) {
    if msg.correlation_id.is_none() {
        msg.correlation_id = correlation.map(str::to_owned);
    }
    if !siptrace_trusted {
        msg.siptrace = None;
    }
    if let Some(trace) = msg.siptrace {
        meta.source = trace.source.unwrap_or(meta.source);
        meta.destination = trace.destination.unwrap_or(meta.destination);
        meta.transport = trace.transport.unwrap_or(meta.transport);
        meta.received_at = trace.at.unwrap_or(meta.received_at);
    }
}
