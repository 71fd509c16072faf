//! The ring on its own: eviction, catch-up across a gap, outcomes.

use super::ring::Ring;
use super::*;

fn ring() -> Ring {
    Ring::new()
}

fn committed(offset: Option<u64>) -> Note {
    Note::Committed {
        item: Arc::new(StreamItem {
            offset,
            kind: "call.initiated",
            body: Bytes::from(format!(
                r#"{{"call":{{"id":"call_{offset:?}","sip_call_id":"c","ani":"1","dnis":null}}}}"#
            )),
        }),
        id: format!("evt_{offset:?}"),
        endpoints: vec!["crm".into()],
        at_ms: 1,
    }
}

#[test]
fn the_ring_forgets_its_oldest_and_a_subscriber_from_before_is_told() {
    let mut r = ring();
    // Unstored events (no offset) between stored ones.
    for o in 0..(HISTORY_EVENTS as u64 + 10) {
        r.apply(committed(Some(o)));
        if o % 3 == 0 {
            r.apply(committed(None));
        }
    }
    assert_eq!(r.entries.len(), HISTORY_EVENTS);
    let oldest = r.entries.iter().find_map(|e| e.item.offset).unwrap();
    let last = HISTORY_EVENTS as u64 + 9;
    let sub = r.subscribe(Some(oldest), 0);
    assert!(!sub.gap, "everything after {oldest} is held");
    assert_eq!(sub.missed.len() as u64, last - oldest);
    let sub = r.subscribe(Some(2), 0);
    assert!(sub.gap);
    assert_eq!(sub.missed.first().and_then(|i| i.offset), Some(oldest));
    // A note dropped on a full queue after `last - 1` is a gap too.
    assert!(!r.subscribe(Some(last - 1), 0).gap);
    assert!(r.subscribe(Some(last - 1), last + 1).gap);
    // An outcome for a forgotten event changes nothing; one for a held event
    // is recorded against its endpoint only.
    let endpoint: Arc<str> = "crm".into();
    for (offset, endpoint) in [(1, endpoint.clone()), (last, endpoint), (last, "bi".into())] {
        r.apply(Note::Outcome {
            endpoint,
            offset,
            outcome: Outcome::Delivered,
            at_ms: 7,
        });
    }
    let found = r.find(
        &Search {
            call_id: Some(format!("call_Some({last})")),
            ..Search::default()
        },
        10,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].deliveries.len(), 1);
    assert_eq!(found[0].deliveries[0].state, "delivered");
    assert_eq!(found[0].call.ani.as_deref(), Some("1"));
}
