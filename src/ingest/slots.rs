//! Who holds a TCP listener's connection slots. One peer must not be able to take
//! them all: each source (an IPv4 address, or an IPv6 /64, which one host can fill
//! with addresses) holds at most `max_per_source`, and when every slot is taken a
//! newcomer from a smaller source takes the idlest connection of the largest one.
//! A trusted source (a proxy in `sip.siptrace_from`, an agent in `hep.agents`) is
//! never limited per source and never evicted, and gets a slot whenever an
//! untrusted connection can give one up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

/// What a connection is grouped by: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    /// The group `ip` belongs to (an IPv4-mapped IPv6 address is its IPv4).
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    SourceKey(IpAddr::V6(std::net::Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

/// Why a connection was not given a slot (a `tcp_connections_closed_total` reason).
pub const REFUSED_PER_SOURCE: &str = "refused_per_source";
/// Every slot is taken and none could be given up.
pub const REFUSED_FULL: &str = "refused_max_connections";

struct Entry {
    id: u64,
    trusted: bool,
    last_message: Arc<AtomicU64>,
    evict: CancellationToken,
}

struct Inner {
    next_id: u64,
    total: usize,
    by_source: HashMap<SourceKey, Vec<Entry>>,
}

/// One listener's slots. Shared by its accept loop and its connections.
pub struct Slots {
    max_total: usize,
    max_per_source: usize,
    trusted: Arc<[IpAddr]>,
    /// Orders admissions and messages exactly (a clock's milliseconds tie under
    /// a flood): a connection's stamp is the sequence number of its last one.
    sequence: AtomicU64,
    inner: Mutex<Inner>,
}

/// A connection's hold on its slot: released when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    key: SourceKey,
    id: u64,
    last_message: Arc<AtomicU64>,
    /// Cancelled when a newcomer takes this slot.
    pub evicted: CancellationToken,
}

impl Slot {
    /// Records that a whole message arrived: what makes a connection less idle
    /// than another when one must give up its slot.
    pub fn message_seen(&self) {
        self.last_message
            .store(self.slots.next(), Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self.slots.lock();
        let inner = &mut *guard;
        if let Some(list) = inner.by_source.get_mut(&self.key)
            && let Some(i) = list.iter().position(|e| e.id == self.id)
        {
            list.swap_remove(i);
            inner.total -= 1;
            if list.is_empty() {
                inner.by_source.remove(&self.key);
            }
        }
    }
}

impl Slots {
    /// Slots for a listener: `max_total` in all, `max_per_source` for any one
    /// untrusted source.
    pub fn new(max_total: usize, max_per_source: usize, trusted: Arc<[IpAddr]>) -> Arc<Slots> {
        Arc::new(Slots {
            max_total,
            max_per_source,
            trusted,
            sequence: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                next_id: 0,
                total: 0,
                by_source: HashMap::new(),
            }),
        })
    }

    fn next(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    // A poisoned lock only means a panic elsewhere while it was held; the counts
    // are updated in single statements, so they are still consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `ip`, or why not. May evict another
    /// connection, which then sees its [`Slot::evicted`] cancelled.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let key = SourceKey::of(ip);
        // A dual-stack listener sees an IPv4 proxy as ::ffff:a.b.c.d.
        let trusted = self.trusted.contains(&ip.to_canonical());
        let mut guard = self.lock();
        let inner = &mut *guard;
        // Trusted connections in the same /64 do not use up its neighbours' share.
        let held = inner
            .by_source
            .get(&key)
            .map_or(0, |list| list.iter().filter(|e| !e.trusted).count());
        if !trusted && held >= self.max_per_source {
            return Err(REFUSED_PER_SOURCE);
        }
        if inner.total >= self.max_total {
            // The largest untrusted holder gives up its idlest connection, if it
            // holds more than this source will: a trusted newcomer always wins.
            let victim = inner
                .by_source
                .iter()
                .map(|(k, list)| (*k, list.iter().filter(|e| !e.trusted).count()))
                .filter(|(k, n)| *n > 0 && (trusted || (*k != key && *n > held + 1)))
                .max_by_key(|(_, n)| *n)
                .map(|(k, _)| k);
            let Some(victim) = victim else {
                return Err(REFUSED_FULL);
            };
            let list = inner.by_source.entry(victim).or_default();
            let idlest = list
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.trusted)
                .min_by_key(|(_, e)| e.last_message.load(Ordering::Relaxed))
                .map(|(i, _)| i);
            if let Some(i) = idlest {
                let gone = list.swap_remove(i);
                gone.evict.cancel();
                if list.is_empty() {
                    inner.by_source.remove(&victim);
                }
                inner.total -= 1;
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let last_message = Arc::new(AtomicU64::new(self.next()));
        let evicted = CancellationToken::new();
        inner.by_source.entry(key).or_default().push(Entry {
            id,
            trusted,
            last_message: last_message.clone(),
            evict: evicted.clone(),
        });
        inner.total += 1;
        Ok(Slot {
            slots: self.clone(),
            key,
            id,
            last_message,
            evicted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            SourceKey::of(ip("::ffff:10.0.0.1")),
            SourceKey::of(ip("10.0.0.1"))
        );
    }

    #[test]
    fn refusals_are_reasons_metrics_exports_at_zero() {
        for r in [REFUSED_PER_SOURCE, REFUSED_FULL] {
            assert!(
                crate::metrics::labels::TCP_CLOSE_REASONS.contains(&r),
                "{r}"
            );
        }
    }

    #[test]
    fn per_source_cap_eviction_of_the_largest_and_trusted_slots() {
        let slots = Slots::new(4, 3, Arc::from([ip("10.0.0.9")]));
        let a: Vec<Slot> = (0..3)
            .map(|_| slots.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(slots.admit(ip("10.0.0.1")).err(), Some(REFUSED_PER_SOURCE));
        let b = slots.admit(ip("10.0.0.2")).unwrap();
        // Full: a newcomer from a third source takes the idlest of the largest.
        a[1].message_seen();
        a[0].message_seen();
        a[1].message_seen();
        let c = slots.admit(ip("10.0.0.3")).unwrap();
        assert!(a[2].evicted.is_cancelled());
        assert!(!a[0].evicted.is_cancelled() && !a[1].evicted.is_cancelled());
        // Sources of 1, 1 and 2: none holds more than a newcomer's source would
        // after it (2), so the newcomer is refused rather than evicting.
        drop(a);
        let d: Vec<Slot> = (0..2)
            .map(|_| slots.admit(ip("10.0.0.4")).unwrap())
            .collect();
        assert_eq!(slots.admit(ip("10.0.0.2")).err(), Some(REFUSED_FULL));
        // A trusted source always gets a slot, and is never the one evicted.
        let t: Vec<Slot> = (0..4)
            .map(|_| slots.admit(ip("10.0.0.9")).unwrap())
            .collect();
        assert!(b.evicted.is_cancelled() && c.evicted.is_cancelled());
        assert!(d.iter().all(|s| s.evicted.is_cancelled()));
        assert_eq!(slots.admit(ip("10.0.0.9")).err(), Some(REFUSED_FULL));
        assert!(t.iter().all(|s| !s.evicted.is_cancelled()));
        drop(t);
        assert_eq!(slots.lock().total, 0);
    }
}
