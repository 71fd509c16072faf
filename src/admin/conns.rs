//! Who holds the admin listener's connections. A local process that opens idle
//! connections must not make `/healthz` time out, or the probes that watch
//! siphook would restart a healthy process. So a connection with no request in
//! flight gives way: when every slot is taken (in all, or for one source), the
//! one idle longest is closed for the newcomer. A probe sends its request at
//! once, so it is never the idlest. Only when every connection is busy with a
//! request is a newcomer refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

struct Entry {
    source: IpAddr,
    in_flight: Arc<AtomicUsize>,
    last_active: Arc<AtomicU64>,
    evict: CancellationToken,
}

/// The admin listener's connections.
pub(super) struct Conns {
    max_total: usize,
    max_per_source: usize,
    /// Orders admissions and finished requests exactly (milliseconds tie under
    /// a flood).
    sequence: AtomicU64,
    inner: Mutex<(u64, HashMap<u64, Entry>)>,
}

/// One connection's hold on its slot, released when dropped.
pub(super) struct Conn {
    conns: Arc<Conns>,
    id: u64,
    in_flight: Arc<AtomicUsize>,
    last_active: Arc<AtomicU64>,
    /// Cancelled when a newcomer takes this connection's slot.
    pub(super) evicted: CancellationToken,
}

/// Marks a request in flight; its drop marks the connection idle from now.
pub(super) struct Busy {
    conns: Arc<Conns>,
    in_flight: Arc<AtomicUsize>,
    last_active: Arc<AtomicU64>,
}

impl Conn {
    /// A request began on this connection.
    pub(super) fn busy(&self) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy {
            conns: self.conns.clone(),
            in_flight: self.in_flight.clone(),
            last_active: self.last_active.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.last_active.store(self.conns.next(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.conns.lock().1.remove(&self.id);
    }
}

impl Conns {
    pub(super) fn new(max_total: usize, max_per_source: usize) -> Arc<Conns> {
        Arc::new(Conns {
            max_total,
            max_per_source,
            sequence: AtomicU64::new(0),
            inner: Mutex::new((0, HashMap::new())),
        })
    }

    fn next(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    // Poisoning only means a panic elsewhere while held; each update is one
    // statement, so the map is still whole.
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<u64, Entry>)> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `source`: `Ok(true)` when another, idle
    /// connection was closed to make room, `Err` when every candidate is busy.
    pub(super) fn admit(self: &Arc<Self>, source: IpAddr) -> Result<(Conn, bool), ()> {
        let mut guard = self.lock();
        let (next_id, map) = &mut *guard;
        let same = map.values().filter(|e| e.source == source).count();
        let full = if same >= self.max_per_source {
            Some(Some(source))
        } else if map.len() >= self.max_total {
            Some(None)
        } else {
            None
        };
        let mut evicted = false;
        if let Some(within) = full {
            let idlest = map
                .iter()
                .filter(|(_, e)| within.is_none_or(|s| e.source == s))
                .filter(|(_, e)| e.in_flight.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, e)| e.last_active.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            let gone = idlest.and_then(|id| map.remove(&id)).ok_or(())?;
            gone.evict.cancel();
            evicted = true;
        }
        let id = *next_id;
        *next_id += 1;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let last_active = Arc::new(AtomicU64::new(self.next()));
        let evict = CancellationToken::new();
        map.insert(
            id,
            Entry {
                source,
                in_flight: in_flight.clone(),
                last_active: last_active.clone(),
                evict: evict.clone(),
            },
        );
        Ok((
            Conn {
                conns: self.clone(),
                id,
                in_flight,
                last_active,
                evicted: evict,
            },
            evicted,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idlest_idle_connection_gives_way_and_busy_ones_never_do() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let conns = Conns::new(3, 2);
        let (a, _) = conns.admit(local).unwrap();
        let (b, _) = conns.admit(local).unwrap();
        let busy_a = a.busy();
        // The source is at its share: its idle one (b) goes, not the busy one.
        let (c, evicted) = conns.admit(local).unwrap();
        assert!(evicted && b.evicted.is_cancelled() && !a.evicted.is_cancelled());
        let busy_c = c.busy();
        // Both of the source's connections are busy now: refused.
        assert!(conns.admit(local).is_err());
        let (d, evicted) = conns.admit(other).unwrap();
        assert!(!evicted);
        // Full in all, with only `d` idle: it gives way to a third source.
        assert!(
            conns
                .admit("127.0.0.3".parse().unwrap())
                .is_ok_and(|(_, e)| e)
        );
        assert!(d.evicted.is_cancelled());
        drop((busy_a, busy_c));
    }
}
