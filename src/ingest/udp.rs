//! SIP over UDP: one datagram, one message (RFC 3261 §18.3); HEP over UDP: one
//! datagram, one packet.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{IngestContext, Wire};
use crate::vocab::Transport;

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
    let mut kernel = KernelDrops::new(
        &socket,
        local.is_ipv6(),
        ctx.metrics
            .sip_dropped
            .with_label_values(&[label, "receive_buffer_full"]),
    );
    let mut recount = tokio::time::interval(DROPS_EVERY);
    recount.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => {
                kernel.count();
                return;
            }
            _ = recount.tick() => {
                kernel.count();
                continue;
            }
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, peer)) => {
                bytes.inc_by(n as u64);
                // A datagram holds no slot, so what came of it matters only to
                // the metrics its handler counted.
                let _ = match wire {
                    Wire::Sip => ctx.handle(&buf[..n], Transport::Udp, peer, local),
                    Wire::Hep => ctx.handle_hep(&buf[..n], Transport::Udp, peer, local),
                };
            }
            // ICMP port-unreachable and similar surface here on some systems; the
            // socket stays usable.
            Err(e) => tracing::debug!(error = %e, %local, "UDP receive error"),
        }
    }
}

/// How often the kernel's drop count is read: often enough for a flood to show on
/// the next scrape, rarely enough that reading the socket table costs nothing.
const DROPS_EVERY: Duration = Duration::from_millis(500);

/// Datagrams the kernel dropped because this socket's receive buffer was full.
/// siphook never sees them, so without this the largest shed of a flood (the one
/// before any siphook code runs) would be silent. Linux reports it per socket in
/// the `drops` column of /proc/net/udp{,6}; elsewhere it stays unknown (0).
struct KernelDrops {
    inode: Option<u64>,
    ipv6: bool,
    seen: u64,
    counter: prometheus::IntCounter,
}

impl KernelDrops {
    fn new(socket: &UdpSocket, ipv6: bool, counter: prometheus::IntCounter) -> KernelDrops {
        let mut k = KernelDrops {
            inode: socket_inode(socket),
            ipv6,
            seen: 0,
            counter,
        };
        // A socket bound a moment ago has dropped nothing that siphook could
        // have read, but start from what the kernel says rather than assume.
        k.seen = k.read().unwrap_or(0);
        k
    }

    /// Adds what the kernel dropped since the last look.
    fn count(&mut self) {
        if let Some(now) = self.read() {
            self.counter.inc_by(now.saturating_sub(self.seen));
            self.seen = self.seen.max(now);
        }
    }

    fn read(&self) -> Option<u64> {
        let inode = self.inode?;
        let path = if self.ipv6 {
            "/proc/net/udp6"
        } else {
            "/proc/net/udp"
        };
        let table = std::fs::read_to_string(path).ok()?;
        drops_of(&table, inode)
    }
}

/// The socket's inode, which names it in /proc/net/udp.
#[cfg(target_os = "linux")]
fn socket_inode(socket: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
        .ok()
        .map(|m| m.ino())
}

#[cfg(not(target_os = "linux"))]
fn socket_inode(_: &UdpSocket) -> Option<u64> {
    None
}

/// The `drops` column (the last) of the /proc/net/udp line whose `inode` column
/// (the tenth) is `inode`.
fn drops_of(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.get(9)?.parse::<u64>().ok()? != inode {
            return None;
        }
        fields.last()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::drops_of;

    #[test]
    fn reads_the_drops_column_of_the_socket_by_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
  2: 0100007F:A1B2 00000000:0000 07 00000000:00030000 00:00000000 00000000     0        0 5151 2 0000000000000000 1234
";
        assert_eq!(drops_of(table, 5151), Some(1234));
        assert_eq!(drops_of(table, 4242), Some(0));
        assert_eq!(drops_of(table, 9), None);
        assert_eq!(drops_of("", 5151), None);
    }
}
