//! SIP over TCP: frames each connection's stream by Content-Length; HEP over TCP:
//! by each packet's length field. A bad frame closes only that connection, since
//! the next message's start is unknown. Slots are shared fairly between sources
//! ([`super::slots`]), and a connection stays only while it brings messages:
//! keep-alives prove a peer alive but do not hold a slot past the idle timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::slots::{Slot, Slots};
use super::{Handled, IngestContext, Wire};
use crate::sip::Framer;
use crate::sip::hep::HepFramer;
use crate::sip::stream::{StreamError, StreamFramer, Unit};
use crate::vocab::Transport;

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Largest message; a larger one closes the connection.
    pub max_message_bytes: usize,
    /// A connection that brings no message for this long is closed, keep-alives
    /// or not; so is one whose message takes longer than this to arrive whole.
    pub idle_timeout: Duration,
    /// Connections past this take an idle one's slot from the largest source,
    /// or are refused.
    pub max_connections: usize,
    /// Connections one source (an IPv4 address, an IPv6 /64) may hold, unless
    /// it is trusted.
    pub max_per_source: usize,
    /// On a keyed HEP listener, a connection must send an authenticated packet
    /// within this.
    pub auth_timeout: Duration,
}

/// Binds a TCP listener.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts connections until `shutdown`, then closes them all. `trusted` sources
/// always get a slot.
pub async fn serve(
    listener: TcpListener,
    wire: Wire,
    ctx: IngestContext,
    limits: TcpLimits,
    trusted: Arc<[IpAddr]>,
    shutdown: CancellationToken,
) {
    let slots = Slots::new(limits.max_connections, limits.max_per_source, trusted);
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match slots.admit(peer.ip()) {
            Ok(s) => s,
            Err(reason) => {
                ctx.metrics.tcp_closed.with_label_values(&[reason]).inc();
                if let Some(suppressed) = ctx.allow_log() {
                    tracing::warn!(%peer, reason, max = limits.max_connections, per_source = limits.max_per_source, suppressed, "TCP connection refused");
                }
                drop(stream);
                continue;
            }
        };
        let gauge = ConnGauge::new(ctx.metrics.tcp_connections.clone());
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let _gauge = gauge;
            let reason = connection(stream, peer, wire, &ctx, limits, &slot, shutdown).await;
            ctx.metrics.tcp_closed.with_label_values(&[reason]).inc();
        });
    }
    conns.shutdown().await;
}

/// Counts a connection in the open-connections gauge for its lifetime.
struct ConnGauge(prometheus::IntGauge);

impl ConnGauge {
    fn new(gauge: prometheus::IntGauge) -> ConnGauge {
        gauge.inc();
        ConnGauge(gauge)
    }
}

impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves one connection; returns why it closed (a metrics label).
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    wire: Wire,
    ctx: &IngestContext,
    limits: TcpLimits,
    slot: &Slot,
    shutdown: CancellationToken,
) -> &'static str {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return "io_error",
    };
    let (label, mut framer) = match wire {
        Wire::Sip => (
            "tcp",
            StreamFramer::Sip(Framer::new(limits.max_message_bytes)),
        ),
        Wire::Hep => ("hep", StreamFramer::Hep(HepFramer::new())),
    };
    let bytes = ctx.metrics.sip_received_bytes.with_label_values(&[label]);
    let opened = tokio::time::Instant::now();
    // The last whole message: only messages keep a connection open, so a peer
    // sending CRLF keep-alives (or unparseable frames) alone is still idle.
    let mut last_message = opened;
    // A keyed HEP listener wants proof of the key before anything else.
    let mut unauthenticated = wire == Wire::Hep && ctx.hep_keyed();
    // When the unit now buffered began: it must be whole within the idle timeout
    // too, or a peer sending a byte at a time (slowloris) would hold the slot
    // for ever while never being idle.
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        framer.buffer_mut().reserve(8192);
        // A message under way has the idle timeout to arrive whole (closed as
        // slow if not); otherwise the last whole message must be recent. A
        // connection bringing no message is gone within twice the timeout even
        // if each write finishes one unparseable frame and starts the next.
        let later =
            |at: tokio::time::Instant, d: Duration| at.checked_add(d).unwrap_or(far_future());
        let idle_at = later(last_message, limits.idle_timeout);
        let partial_at = partial_since
            .map(|t| later(t, limits.idle_timeout).min(later(idle_at, limits.idle_timeout)));
        let idle_at = partial_at.unwrap_or(idle_at);
        let auth_at = unauthenticated.then(|| later(opened, limits.auth_timeout));
        let deadline = auth_at.map_or(idle_at, |a| a.min(idle_at));
        let read = tokio::select! {
            biased;
            _ = slot.evicted.cancelled() => {
                if let Some(suppressed) = ctx.allow_log() {
                    tracing::warn!(%peer, suppressed, "closing the idlest {label} TCP connection of the largest source: every slot was taken");
                }
                return "evicted";
            }
            _ = shutdown.cancelled() => return "shutdown",
            r = tokio::time::timeout_at(deadline, stream.read_buf(framer.buffer_mut())) => r,
        };
        match read {
            Err(_) if auth_at == Some(deadline) => {
                ctx.metrics
                    .hep_dropped
                    .with_label_values(&["tcp", "auth_failed"])
                    .inc();
                if let Some(suppressed) = ctx.allow_log() {
                    tracing::warn!(%peer, suppressed, "closing HEP TCP connection: nothing authenticated within hep.auth_timeout");
                }
                return "auth_timeout";
            }
            Err(_) if partial_at == Some(deadline) => {
                if let Some(suppressed) = ctx.allow_log() {
                    tracing::warn!(%peer, suppressed, "closing {label} TCP connection: a message took longer than tcp_idle_timeout to arrive");
                }
                return "slow_message";
            }
            Err(_) => {
                tracing::debug!(%peer, "TCP connection brought no message within tcp_idle_timeout, closing");
                return "idle_timeout";
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TCP read error");
                return "io_error";
            }
            Ok(Ok(0)) => return "peer_closed",
            Ok(Ok(n)) => bytes.inc_by(n as u64),
        }
        loop {
            let handled = match framer.next_unit() {
                Ok(Some(Unit::Sip(msg))) => ctx.handle(&msg, Transport::Tcp, peer, local),
                Ok(Some(Unit::Hep(packet))) => ctx.handle_hep(&packet, Transport::Tcp, peer, local),
                Ok(None) => {
                    partial_since = match (framer.buffered(), partial_since) {
                        (0, _) => None,
                        (_, Some(t)) => Some(t),
                        (_, None) => Some(tokio::time::Instant::now()),
                    };
                    break;
                }
                Err(StreamError { reason, message }) => {
                    match wire {
                        Wire::Sip => &ctx.metrics.sip_parse_errors,
                        Wire::Hep => &ctx.metrics.hep_dropped,
                    }
                    .with_label_values(&["tcp", reason])
                    .inc();
                    if let Some(suppressed) = ctx.allow_log() {
                        tracing::warn!(%peer, reason, suppressed, "closing {label} TCP connection: {message}");
                    }
                    return reason;
                }
            };
            // A whole unit arrived: a message buffered after it starts its own clock.
            partial_since = None;
            match handled {
                Handled::Message => {
                    last_message = tokio::time::Instant::now();
                    unauthenticated = false;
                    slot.message_seen();
                }
                Handled::Authenticated => unauthenticated = false,
                Handled::Rejected => {}
            }
        }
    }
}

/// A deadline no configured duration reaches (about 30 years on): what an
/// absurd timeout in the file saturates to instead of overflowing.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}
