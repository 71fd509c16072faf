//! Capture replay: drives the same parser and call tracker as live ingest with
//! the packets of a pcap or pcapng file, on the capture's own clock, so durations
//! come out exactly as they happened. Engineers debug with captures; this is how
//! they see what siphook would have sent.

pub mod capture;
pub mod encap;
pub mod packet;
pub mod reassembly;
pub mod resync;
pub mod sctp;
pub mod skip;
pub mod tcp;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use crate::call::{Event, EventData, Tracker, TrackerConfig};
use crate::config::Config;
use crate::ingest::{MAX_CAPTURE_SKEW_MS, apply_hints, hep_meta};
use crate::sip::{self, ParseOptions, hep};
use crate::vocab::{Meta, Timestamp, Transport};

/// Why a capture could not be replayed (a damaged tail only ends it early).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    /// Not a pcap or pcapng file, or a damaged one.
    #[error("not a readable pcap or pcapng capture: {0}")]
    Format(String),
    /// A capture format replay does not read, recognised by its first bytes.
    #[error(
        "this is a {0} capture, which replay does not read: convert it with Wireshark's editcap (`editcap -F pcapng IN OUT.pcapng`) and replay the result"
    )]
    Unsupported(&'static str),
    /// A compressed file: the tool that decompresses it.
    #[error(
        "this is a compressed file: decompress it first, for example through a pipe: `siphook replay <({0} FILE)`"
    )]
    Compressed(&'static str),
    /// One of the files given could not be opened as a capture.
    #[error("{0}: {1}")]
    InFile(String, Box<ReplayError>),
}

/// What the replay saw and did: printed at the end, on stderr.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Frames read.
    pub packets: u64,
    /// Frames that gave no UDP or TCP payload, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// SIP messages parsed (directly, inside HEP, or from TCP streams).
    pub sip_messages: u64,
    /// SIP messages that did not parse, by reason.
    pub parse_errors: BTreeMap<&'static str, u64>,
    /// UDP payloads that were neither SIP nor HEP carrying SIP.
    pub other_payloads: u64,
    /// HEP packets read, and those dropped (malformed or not SIP).
    pub hep_packets: u64,
    /// HEP packets that were malformed or not SIP.
    pub hep_dropped: u64,
    /// TCP: segments dropped as retransmissions, resynchronisations, gaps.
    pub tcp_retransmissions: u64,
    /// TCP bytes that looked like a message start and did not frame (each
    /// followed by a hunt for the next start).
    pub tcp_framing_errors: u64,
    /// TCP gaps given up on: bytes the capture never had.
    pub tcp_gaps: u64,
    /// How many bytes those gaps were missing (sequence space).
    pub tcp_gap_bytes: u64,
    /// Captured TCP bytes skipped to resynchronise on the next message start:
    /// the rest of a message cut by a gap, a capture starting mid-message,
    /// bytes that did not frame.
    pub tcp_skipped_bytes: u64,
    /// Calls started.
    pub calls: u64,
    /// Events by type.
    pub events: BTreeMap<&'static str, u64>,
    /// Calls still open at the end of the capture (SIP Call-IDs), unless drained.
    pub open_calls: Vec<String>,
    /// Their siphook call ids (`call.id`), to forget them where they were stored.
    pub open_call_ids: Vec<String>,
    /// Times not believed: a frame jumping far ahead of the capture, or a HEP or
    /// X-Siptrace time more than 10 s from its frame's; the frame's time was used.
    pub bad_times: u64,
    /// The damage that ended the file early, if any.
    pub truncated: Option<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "packets: {}", self.packets)?;
        for (why, n) in &self.skipped {
            writeln!(f, "  skipped, {why}: {n}")?;
        }
        writeln!(f, "SIP messages: {}", self.sip_messages)?;
        for (why, n) in &self.parse_errors {
            writeln!(f, "  parse errors, {why}: {n}")?;
        }
        if self.other_payloads > 0 {
            writeln!(
                f,
                "  UDP payloads neither SIP nor HEP: {}",
                self.other_payloads
            )?;
        }
        if self.hep_packets > 0 {
            writeln!(
                f,
                "HEP packets: {} ({} dropped)",
                self.hep_packets, self.hep_dropped
            )?;
        }
        if self.tcp_retransmissions
            + self.tcp_framing_errors
            + self.tcp_gaps
            + self.tcp_skipped_bytes
            > 0
        {
            writeln!(
                f,
                "TCP: {} retransmissions dropped, {} gaps ({} bytes not captured), {} bytes skipped to resynchronise on a message start, {} framing errors",
                self.tcp_retransmissions,
                self.tcp_gaps,
                self.tcp_gap_bytes,
                self.tcp_skipped_bytes,
                self.tcp_framing_errors
            )?;
        }
        writeln!(f, "calls: {}", self.calls)?;
        for (t, n) in &self.events {
            writeln!(f, "  {t}: {n}")?;
        }
        writeln!(f, "calls still open: {}", self.open_calls.len())?;
        for c in &self.open_calls {
            writeln!(f, "  {c}")?;
        }
        if self.bad_times > 0 {
            writeln!(
                f,
                "times not believed (frame time used): {}",
                self.bad_times
            )?;
        }
        if let Some(t) = &self.truncated {
            writeln!(f, "capture ended early: {t}")?;
        }
        Ok(())
    }
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Parse settings (correlation headers, size limit).
    pub parse: ParseOptions,
    /// Tracker timers and limits.
    pub tracker: TrackerConfig,
    /// At the end, complete open calls as their timeouts would.
    pub drain: bool,
    /// Senders whose X-Siptrace headers are believed (`[sip] siptrace_from`).
    pub siptrace_from: Vec<std::net::IpAddr>,
}

impl ReplayOptions {
    /// Options from a configuration's `[sip]` section.
    pub fn from_config(config: &Config, drain: bool) -> ReplayOptions {
        ReplayOptions {
            parse: ParseOptions {
                correlation_headers: config.sip.correlation_headers.clone(),
                max_message_bytes: config.sip.max_message_bytes,
            },
            tracker: TrackerConfig::from(&config.sip),
            drain,
            siptrace_from: config.sip.siptrace_from.clone(),
        }
    }
}

/// Replays a capture file, calling `emit` with each event in order.
pub fn replay(
    path: &Path,
    opts: &ReplayOptions,
    emit: impl FnMut(&Event),
) -> Result<Summary, ReplayError> {
    replay_files(&[path.to_path_buf()], opts, emit)
}

/// Replays several capture files, in the order given, as one capture (a ring
/// buffer's files, a capture split by `editcap -c`): calls and TCP streams go on
/// across them. Every file is opened before the first frame is read, so a wrong
/// one fails the replay before any event.
pub fn replay_files(
    paths: &[std::path::PathBuf],
    opts: &ReplayOptions,
    mut emit: impl FnMut(&Event),
) -> Result<Summary, ReplayError> {
    let mut captures = Vec::with_capacity(paths.len());
    for path in paths {
        let cap = capture::Capture::open(path).map_err(|e| match e {
            ReplayError::Io(..) => e,
            other => ReplayError::InFile(path.display().to_string(), Box::new(other)),
        })?;
        captures.push((path, cap));
    }
    let mut r = Replayer::new(opts);
    for (path, mut cap) in captures {
        loop {
            match cap.next_frame() {
                None => break,
                Some(Ok(frame)) => r.frame(&frame, &mut emit),
                // A capture cut short (a crashed tcpdump) still replays up to
                // the damage, and the next file goes on.
                Some(Err(e)) => {
                    if r.summary.truncated.is_none() {
                        r.summary.truncated = Some(if paths.len() > 1 {
                            format!("{}: {e}", path.display())
                        } else {
                            e.to_string()
                        });
                    }
                    break;
                }
            }
        }
    }
    Ok(r.finish(&mut emit))
}

/// The state of one replay.
struct Replayer<'o> {
    opts: &'o ReplayOptions,
    decoder: packet::Decoder,
    streams: tcp::Streams,
    tracker: Tracker,
    out: Vec<Event>,
    units: Vec<tcp::Released>,
    last: Timestamp,
    summary: Summary,
}

impl<'o> Replayer<'o> {
    fn new(opts: &'o ReplayOptions) -> Replayer<'o> {
        Replayer {
            opts,
            decoder: packet::Decoder::new(),
            streams: tcp::Streams::new(opts.parse.max_message_bytes),
            tracker: Tracker::new(opts.tracker.clone()),
            out: Vec::new(),
            units: Vec::new(),
            last: Timestamp(0),
            summary: Summary::default(),
        }
    }

    fn frame(&mut self, frame: &capture::Frame, emit: &mut impl FnMut(&Event)) {
        self.summary.packets += 1;
        let at = Timestamp(i64::try_from(frame.ts_ns / 1_000_000).unwrap_or(i64::MAX));
        // Capture time never runs backwards for the tracker (merged captures can),
        // and a frame a day ahead of the one before is a corrupt timestamp, not a
        // day of silence: it would fire every call's timers at once.
        let at = if at.millis() < self.last.millis() {
            self.last
        } else if self.summary.packets > 1 && at.millis() - self.last.millis() > MAX_FRAME_JUMP_MS {
            self.summary.bad_times += 1;
            self.last
        } else {
            at
        };
        self.last = at;
        // Gaps that waited long enough are given up before this frame is read,
        // so what they held reaches the tracker before what comes after.
        let mut units = std::mem::take(&mut self.units);
        self.streams.tick(at.millis(), &mut units);
        self.released(&mut units, at, emit);
        self.units = units;
        match self.decoder.decode(frame) {
            // Counted at the end, and only if its datagram never completed.
            Err(skip::Skip::Fragment) => {}
            Err(skip) => *self.summary.skipped.entry(skip.as_str()).or_default() += 1,
            Ok(packet::Segment::Udp { src, dst, payload }) => {
                self.payload(&payload, Transport::Udp, src, dst, at, emit)
            }
            // SIP over SCTP is message-framed like UDP but reliable like TCP;
            // the event contract names two transports, and a Via of `SCTP` is
            // read as `tcp` too (sip/message.rs).
            Ok(packet::Segment::Sctp { src, dst, messages }) => {
                for m in messages {
                    self.payload(&m, Transport::Tcp, src, dst, at, emit);
                }
            }
            Ok(seg @ packet::Segment::Tcp { .. }) => {
                let mut units = std::mem::take(&mut self.units);
                self.streams.segment(&seg, at.millis(), &mut units);
                self.released(&mut units, at, emit);
                self.units = units;
            }
        }
    }

    /// Units TCP reassembly completed, each on the capture time of the segment
    /// that completed it (earlier than `now` when it waited behind a gap).
    fn released(
        &mut self,
        units: &mut Vec<tcp::Released>,
        now: Timestamp,
        emit: &mut impl FnMut(&Event),
    ) {
        for r in units.drain(..) {
            let at = Timestamp(r.at_ms.min(now.millis()));
            match r.unit {
                tcp::Unit::Sip(m) => self.sip(&m, Transport::Tcp, r.src, r.dst, at, None, emit),
                tcp::Unit::Hep(p) => self.hep(&p, r.src, r.dst, at, emit),
            }
        }
    }

    fn payload(
        &mut self,
        data: &[u8],
        transport: Transport,
        src: SocketAddr,
        dst: SocketAddr,
        at: Timestamp,
        emit: &mut impl FnMut(&Event),
    ) {
        if data.starts_with(hep::MAGIC) {
            self.hep(data, src, dst, at, emit);
        } else if looks_like_sip(data) {
            self.sip(data, transport, src, dst, at, None, emit);
        } else {
            self.summary.other_payloads += 1;
        }
    }

    fn hep(
        &mut self,
        data: &[u8],
        src: SocketAddr,
        dst: SocketAddr,
        at: Timestamp,
        emit: &mut impl FnMut(&Event),
    ) {
        self.summary.hep_packets += 1;
        let packet = match hep::decode(data) {
            Ok(p) if p.protocol_type == Some(hep::PROTO_SIP) => p,
            _ => {
                self.summary.hep_dropped += 1;
                return;
            }
        };
        let (meta, correlation) = hep_meta(&packet, src, dst, at);
        self.message(packet.payload, meta, correlation, false, at, emit);
    }

    #[allow(clippy::too_many_arguments)]
    fn sip(
        &mut self,
        data: &[u8],
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        at: Timestamp,
        correlation: Option<&str>,
        emit: &mut impl FnMut(&Event),
    ) {
        let meta = Meta {
            transport,
            source,
            destination,
            received_at: at,
        };
        let trusted = self.opts.siptrace_from.contains(&source.ip());
        self.message(data, meta, correlation, trusted, at, emit);
    }

    fn message(
        &mut self,
        data: &[u8],
        mut meta: Meta,
        correlation: Option<&str>,
        siptrace_trusted: bool,
        frame_at: Timestamp,
        emit: &mut impl FnMut(&Event),
    ) {
        let mut msg = match sip::parse(data, &self.opts.parse) {
            Ok(m) => m,
            Err(e) => {
                *self.summary.parse_errors.entry(e.reason()).or_default() += 1;
                return;
            }
        };
        self.summary.sip_messages += 1;
        apply_hints(&mut msg, &mut meta, correlation, siptrace_trusted);
        // The capture agent's time, within reason of when the capture saw it.
        if meta.received_at.millis().abs_diff(frame_at.millis()) > MAX_CAPTURE_SKEW_MS {
            self.summary.bad_times += 1;
            meta.received_at = frame_at;
        }
        // Timers run on capture time: what fell due before this message fires first.
        self.tracker.on_time(meta.received_at, &mut self.out);
        let _ = self.tracker.on_message(&msg, &meta, &mut self.out);
        self.flush(emit);
    }

    fn flush(&mut self, emit: &mut impl FnMut(&Event)) {
        for e in self.out.drain(..) {
            *self
                .summary
                .events
                .entry(e.event_type.as_str())
                .or_default() += 1;
            if matches!(e.data, EventData::Initiated(_)) {
                self.summary.calls += 1;
            }
            emit(&e);
        }
    }

    fn finish(mut self, emit: &mut impl FnMut(&Event)) -> Summary {
        // What TCP flows held after a gap that never filled.
        let mut held = Vec::new();
        self.streams.finish(&mut held);
        let at = self.last;
        self.released(&mut held, at, emit);
        let (fragments, chunks) = self.decoder.finish();
        for (why, n) in [(INCOMPLETE_FRAGMENTS, fragments), (INCOMPLETE_SCTP, chunks)] {
            if n > 0 {
                *self.summary.skipped.entry(why).or_default() += n;
            }
        }
        // What fell due by the last packet's time, as a live run would have seen.
        self.tracker.on_time(self.last, &mut self.out);
        self.flush(emit);
        if self.opts.drain {
            // Every remaining timer, in order, as if time ran on until all ended.
            // Each turn retires at least one timer; the bound is a backstop.
            for _ in 0..MAX_DRAIN_TURNS {
                let Some(t) = self.tracker.next_deadline() else {
                    break;
                };
                self.tracker.on_time(t, &mut self.out);
                self.flush(emit);
            }
        }
        let open = self.tracker.calls_page(None, self.tracker.active_calls());
        self.summary.open_call_ids = open.iter().map(|c| c.id.clone()).collect();
        self.summary.open_calls = open.into_iter().map(|c| c.sip_call_id).collect();
        self.summary.tcp_retransmissions = self.streams.retransmissions;
        self.summary.tcp_framing_errors = self.streams.framing_errors;
        self.summary.tcp_gaps = self.streams.gaps;
        self.summary.tcp_gap_bytes = self.streams.gap_bytes;
        self.summary.tcp_skipped_bytes = self.streams.skipped_bytes;
        self.summary
    }
}

/// Summary label of IP fragments whose datagram never completed.
pub const INCOMPLETE_FRAGMENTS: &str = "IP fragment whose datagram never completed";
/// Summary label of SCTP chunks of a split message that never completed.
pub const INCOMPLETE_SCTP: &str = "SCTP chunk of a message that never completed";

/// A frame further ahead of the previous one than this is a corrupt timestamp.
const MAX_FRAME_JUMP_MS: i64 = 24 * 3600 * 1000;

/// Upper bound on the timer turns of `--drain`.
const MAX_DRAIN_TURNS: usize = 100_000_000;

/// A request line (`METHOD uri SIP/2.0`) or status line (`SIP/2.0 …`) start;
/// lets RTP, DNS and the rest of a capture pass without counting as parse errors.
fn looks_like_sip(data: &[u8]) -> bool {
    let line = data.split(|&b| b == b'\n').next().unwrap_or(&[]);
    line.starts_with(b"SIP/2.0 ") || line.windows(8).any(|w| w == b" SIP/2.0")
}

/// Slowest pace accepted (`--speed`): a thousandth of real time.
pub const MIN_SPEED: f64 = 0.001;

/// Paces events to the capture's own rhythm, `speed` times faster; `None` is as
/// fast as possible.
#[derive(Debug)]
pub struct Pace {
    speed: Option<f64>,
    start: Option<(i64, std::time::Instant)>,
}

impl Pace {
    /// A pacer; `speed` must be positive when given.
    pub fn new(speed: Option<f64>) -> Pace {
        Pace {
            speed: speed.filter(|s| s.is_finite() && *s >= MIN_SPEED),
            start: None,
        }
    }

    /// Sleeps until `event` is due.
    pub fn wait(&mut self, event: &Event) {
        let Some(speed) = self.speed else { return };
        let at = event.timestamp.millis();
        let (first, wall) = *self.start.get_or_insert((at, std::time::Instant::now()));
        let Ok(due) =
            std::time::Duration::try_from_secs_f64(((at - first).max(0) as f64 / 1000.0) / speed)
        else {
            return;
        };
        if let Some(left) = due.checked_sub(wall.elapsed()) {
            std::thread::sleep(left);
        }
    }
}

/// Why `--deliver` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The capture could not be read.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The outbox or an endpoint could not start.
    #[error(transparent)]
    Delivery(#[from] crate::deliver::DeliveryError),
    /// The outbox failed.
    #[error("outbox: {0}")]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// Replays a capture into the configured outbox and endpoints, as a live run
/// would, and waits until every delivery is done or `stop` resolves (what is
/// left stays pending for the next start).
pub async fn replay_and_deliver(
    paths: &[std::path::PathBuf],
    config: &Config,
    opts: ReplayOptions,
    speed: Option<f64>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Summary, DeliverError> {
    let metrics = crate::metrics::Metrics::new();
    let outbox = crate::deliver::open_outbox(config)?;
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    let mut delivery = crate::deliver::Delivery::start(config, outbox.clone(), rx, None, metrics)?;
    let paths = paths.to_vec();
    let replayed = tokio::task::spawn_blocking(move || {
        let mut pace = Pace::new(speed);
        replay_files(&paths, &opts, |e| {
            pace.wait(e);
            let _ = tx.blocking_send(e.clone());
        })
    })
    .await
    .map_err(|e| ReplayError::Format(format!("replay task failed: {e}")))??;
    // The writer ends once the sender is gone and the last batch is committed;
    // then wait for the endpoints, bounded by the operator's patience.
    delivery.failed().await?;
    // Calls the capture left open would resume, and time out, at the next live
    // start on this outbox: they belong to the capture, not to live traffic.
    for id in &replayed.open_call_ids {
        outbox.forget_call(id)?;
    }
    tokio::pin!(stop);
    let names: Vec<String> = config.endpoints.iter().map(|e| e.name.clone()).collect();
    loop {
        let left: usize = names.iter().map(|n| outbox.pending_count(n)).sum();
        if left == 0 {
            break;
        }
        tokio::select! {
            _ = &mut stop => {
                tracing::warn!(pending = left, "stopped before every delivery was done; the rest goes out on the next start");
                break;
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
    delivery.shutdown().await?;
    Ok(replayed)
}
