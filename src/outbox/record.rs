//! The outbox's records in the segment log: what each change to the store looks
//! like on disk. One encoder and one decoder per kind, so the running store and
//! the replay at open read the same bytes the same way (`index.rs` applies them).
//!
//! All integers are little-endian; names and ids are length-prefixed.

use super::DeliveryState;

/// An event with, per endpoint, where its delivery stands: written when the event
/// is stored (every endpoint fresh), and again when it is carried forward out of
/// an old segment (with its states then).
pub(super) const EVENT: u8 = 1;
/// A failed attempt's state for one endpoint.
pub(super) const ATTEMPT: u8 = 2;
/// Deliveries of one endpoint that finished.
pub(super) const DELIVERED: u8 = 3;
/// A delivery given up: moves to the dead letters with its state.
pub(super) const DEAD: u8 = 4;
/// A dead letter moved back to pending.
pub(super) const REPLAY: u8 = 5;
/// A live call's snapshot.
pub(super) const CALL: u8 = 6;
/// A call no longer live.
pub(super) const CALL_GONE: u8 = 7;
/// An endpoint paused (410 Gone) or resumed.
pub(super) const PAUSE: u8 = 8;
/// The next offset to hand out: in every segment, right after the record that
/// started it, and at every open, so offsets
/// never go back once the segments that held the newest events are retired.
pub(super) const NEXT: u8 = 9;

/// Where one endpoint's delivery of an event stands, as an event record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// Pending, never tried: due at this time (ms since the epoch).
    Fresh(i64),
    /// Pending after attempts.
    Pending(DeliveryState),
    /// A dead letter.
    Dead(DeliveryState),
}

/// An event record's fixed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub offset: u64,
    pub call_key: u64,
    pub sequence: u32,
    pub received_ms: i64,
}

/// A decoded event record, borrowing from its bytes.
pub(super) struct EventRecord<'a> {
    pub head: Head,
    pub id: &'a str,
    pub targets: Vec<(&'a str, Target)>,
    pub body: &'a [u8],
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&b[..usize::from(n)]);
}

fn put_state(out: &mut Vec<u8>, state: &DeliveryState) {
    let json = serde_json::to_vec(state).unwrap_or_default();
    let n = u16::try_from(json.len()).unwrap_or(0);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&json[..usize::from(n)]);
}

/// Encodes an event record. Ids and names are cut at 255 and 65,535 bytes; the
/// config keeps both far shorter.
pub(super) fn event(head: Head, id: &str, targets: &[(&str, Target)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + id.len() + 24 * targets.len() + body.len());
    out.extend_from_slice(&head.offset.to_le_bytes());
    out.extend_from_slice(&head.call_key.to_le_bytes());
    out.extend_from_slice(&head.sequence.to_le_bytes());
    out.extend_from_slice(&head.received_ms.to_le_bytes());
    let id = &id.as_bytes()[..id.len().min(255)];
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    let n = u16::try_from(targets.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    for (name, target) in targets.iter().take(usize::from(n)) {
        put_str16(&mut out, name);
        match target {
            Target::Fresh(at) => {
                out.push(0);
                out.extend_from_slice(&at.to_le_bytes());
            }
            Target::Pending(s) => {
                out.push(1);
                put_state(&mut out, s);
            }
            Target::Dead(s) => {
                out.push(2);
                put_state(&mut out, s);
            }
        }
    }
    out.extend_from_slice(body);
    out
}

/// `ATTEMPT` and `DEAD`: an endpoint, an offset, a state.
pub(super) fn state(endpoint: &str, offset: u64, state: &DeliveryState) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + endpoint.len());
    out.extend_from_slice(&offset.to_le_bytes());
    put_str16(&mut out, endpoint);
    put_state(&mut out, state);
    out
}

/// `DELIVERED`: an endpoint and the offsets it has.
pub(super) fn delivered(endpoint: &str, offsets: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + endpoint.len() + 8 * offsets.len());
    put_str16(&mut out, endpoint);
    for o in offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out
}

/// `REPLAY`: an endpoint, an offset, when it is due again.
pub(super) fn replay(endpoint: &str, offset: u64, next_at_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + endpoint.len());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&next_at_ms.to_le_bytes());
    put_str16(&mut out, endpoint);
    out
}

/// `CALL` (with its snapshot) and `CALL_GONE` (without).
pub(super) fn call(id: &str, snapshot: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + id.len() + snapshot.len());
    put_str16(&mut out, id);
    out.extend_from_slice(snapshot);
    out
}

/// `PAUSE`: whether, then the endpoint.
pub(super) fn pause(endpoint: &str, paused: bool) -> Vec<u8> {
    let mut out = vec![u8::from(paused)];
    put_str16(&mut out, endpoint);
    out
}

/// `NEXT`.
pub(super) fn next(offset: u64) -> Vec<u8> {
    offset.to_le_bytes().to_vec()
}

/// Reads fields off a record's bytes; every read is bounds-checked, so a damaged
/// record decodes to `None`, never a panic.
pub(super) struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    pub fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn str16(&mut self) -> Option<&'a str> {
        let n = usize::from(self.u16()?);
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn str8(&mut self) -> Option<&'a str> {
        let n = usize::from(self.u8()?);
        std::str::from_utf8(self.take(n)?).ok()
    }

    pub fn state(&mut self) -> Option<DeliveryState> {
        let n = usize::from(self.u16()?);
        serde_json::from_slice(self.take(n)?).ok()
    }

    /// What is left.
    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Decodes an event record.
pub(super) fn decode_event(bytes: &[u8]) -> Option<EventRecord<'_>> {
    let mut c = Cursor(bytes);
    let head = Head {
        offset: c.u64()?,
        call_key: c.u64()?,
        sequence: c.u32()?,
        received_ms: c.i64()?,
    };
    let id = c.str8()?;
    let n = c.u16()?;
    let mut targets = Vec::with_capacity(usize::from(n).min(64));
    for _ in 0..n {
        let name = c.str16()?;
        let target = match c.u8()? {
            0 => Target::Fresh(c.i64()?),
            1 => Target::Pending(c.state()?),
            2 => Target::Dead(c.state()?),
            _ => return None,
        };
        targets.push((name, target));
    }
    Some(EventRecord {
        head,
        id,
        targets,
        body: c.rest(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_record_reads_back_as_written_and_a_cut_one_reads_as_none() {
        let head = Head {
            offset: 7,
            call_key: 0xfeed,
            sequence: 3,
            received_ms: -1,
        };
        let late = DeliveryState {
            attempts: 2,
            next_at_ms: 99,
            last_status: Some(503),
            last_error: Some("busy".into()),
        };
        let targets = [
            ("crm", Target::Fresh(5)),
            ("billing", Target::Pending(late.clone())),
            ("bi", Target::Dead(late)),
        ];
        let bytes = event(head, "evt_1", &targets, b"{\"a\":1}");
        let r = decode_event(&bytes).unwrap();
        assert_eq!((r.head, r.id, r.body), (head, "evt_1", &b"{\"a\":1}"[..]));
        assert_eq!(r.targets, targets.to_vec());
        for cut in 0..bytes.len() - 7 {
            assert!(
                decode_event(&bytes[..cut]).is_none(),
                "cut at {cut} decodes"
            );
        }
    }
}
