//! SIP over UDP: one datagram, one message (RFC 3261 §18.3); HEP over UDP: one
//! datagram, one packet.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{IngestContext, Wire};
use crate::call::Transport;

/// Largest UDP payload (65,535 minus IP and UDP headers still fits in this buffer).
const MAX_DATAGRAM: usize = 65_535;

/// Binds a UDP socket with the requested kernel receive buffer, so bursts queue in
/// the kernel rather than being dropped while the task is busy parsing.
pub fn bind(addr: SocketAddr, receive_buffer: usize) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // The kernel may cap this at net.core.rmem_max; a smaller buffer still works.
    if let Err(e) = socket.set_recv_buffer_size(receive_buffer) {
        tracing::warn!(%addr, error = %e, "could not set UDP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives datagrams until `shutdown`; each (a SIP message, or a HEP packet) is
/// parsed and queued.
pub async fn serve(socket: UdpSocket, wire: Wire, ctx: IngestContext, shutdown: CancellationToken) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "UDP socket has no local address");
            return;
        }
    };
    let label = match wire {
        Wire::Sip => "udp",
        Wire::Hep => "hep",
    };
    let bytes = ctx.metrics.sip_received_bytes.with_label_values(&[label]);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, peer)) => {
                bytes.inc_by(n as u64);
                match wire {
                    Wire::Sip => ctx.handle(&buf[..n], Transport::Udp, peer, local),
                    Wire::Hep => ctx.handle_hep(&buf[..n], Transport::Udp, peer, local),
                }
            }
            // ICMP port-unreachable and similar surface here on some systems; the
            // socket stays usable.
            Err(e) => tracing::debug!(error = %e, %local, "UDP receive error"),
        }
    }
}
