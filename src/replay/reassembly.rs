//! IPv4 and IPv6 fragments put back into datagrams (etherparse's pool does the
//! joining), with a count of each datagram's fragments, so that the summary can
//! name the fragments whose datagram never completed instead of every fragment
//! that was merely waiting.

use std::collections::HashMap;
use std::net::IpAddr;

use etherparse::defrag::IpDefragPool;
use etherparse::{IpNumber, Ipv6ExtensionSlice, NetSlice, SlicedPacket};

use super::skip::Skip;

/// Fragments older than this (capture time) are given up: their datagram will
/// not complete, and their buffers must not pile up over a long capture.
const FRAGMENT_TTL_NS: u128 = 10_000_000_000;
/// Datagrams waiting for fragments at once; past it the pool is swept early.
const MAX_WAITING: usize = 16_384;

/// Which datagram a fragment is of.
type Key = (IpAddr, IpAddr, u32, u8);

/// The datagrams being reassembled.
#[derive(Default)]
pub struct Fragments {
    pool: IpDefragPool<u128, ()>,
    /// Per datagram waiting: fragments held, capture time of the latest.
    waiting: HashMap<Key, (u64, u128)>,
    /// Fragments whose datagram never completed (timed out or capture ended).
    pub incomplete: u64,
}

impl Fragments {
    /// Nothing held.
    pub fn new() -> Fragments {
        Fragments::default()
    }

    /// Adds one fragment: the datagram's protocol and payload once it is whole,
    /// `None` while it waits.
    pub fn add(
        &mut self,
        sliced: &SlicedPacket<'_>,
        ts: u128,
    ) -> Result<Option<(IpNumber, Vec<u8>)>, Skip> {
        let key = key(sliced).ok_or(Skip::Truncated)?;
        if self.waiting.len() >= MAX_WAITING && !self.waiting.contains_key(&key) {
            self.sweep(ts);
        }
        match self.pool.process_sliced_packet(sliced, ts, ()) {
            Ok(Some(whole)) => {
                self.waiting.remove(&key);
                Ok(Some((whole.ip_number, whole.payload)))
            }
            Ok(None) => {
                let w = self.waiting.entry(key).or_insert((0, ts));
                w.0 += 1;
                w.1 = ts;
                Ok(None)
            }
            // Overlapping or misaligned fragments: this one is dropped; the
            // others wait and time out, counted then.
            Err(_) => Err(Skip::FragmentConflict),
        }
    }

    /// Gives up on datagrams that saw no fragment for the TTL before `now`.
    pub fn sweep(&mut self, now: u128) {
        let fresh = |t: &u128| t.abs_diff(now) < FRAGMENT_TTL_NS;
        self.pool.retain(fresh);
        let before = self.waiting.len();
        let mut given_up = 0;
        self.waiting.retain(|_, (n, t)| {
            let keep = fresh(t);
            if !keep {
                given_up += *n;
            }
            keep
        });
        // A pool past its bound with nothing stale: the oldest half goes.
        if before >= MAX_WAITING && self.waiting.len() == before {
            let mut times: Vec<u128> = self.waiting.values().map(|(_, t)| *t).collect();
            times.sort_unstable();
            let cut = times.get(times.len() / 2).copied().unwrap_or(now);
            self.pool.retain(|t| *t > cut);
            self.waiting.retain(|_, (n, t)| {
                let keep = *t > cut;
                if !keep {
                    given_up += *n;
                }
                keep
            });
        }
        self.incomplete += given_up;
    }

    /// At the end of the capture: whatever still waits never completed.
    pub fn finish(&mut self) {
        self.incomplete += self.waiting.values().map(|(n, _)| n).sum::<u64>();
        self.waiting.clear();
        self.pool = IpDefragPool::new();
    }
}

/// The datagram a fragment belongs to: addresses, identification, protocol.
fn key(sliced: &SlicedPacket<'_>) -> Option<Key> {
    match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            Some((
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                u32::from(h.identification()),
                ip.payload().ip_number.0,
            ))
        }
        Some(NetSlice::Ipv6(ip)) => {
            let id = ip.extensions().clone().into_iter().find_map(|e| match e {
                Ipv6ExtensionSlice::Fragment(f) => Some(f.identification()),
                _ => None,
            })?;
            Some((
                IpAddr::V6(ip.header().source_addr()),
                IpAddr::V6(ip.header().destination_addr()),
                id,
                ip.payload().ip_number.0,
            ))
        }
        _ => None,
    }
}
