//! The outbox on its own: offsets, references, dead letters, across reopen; the
//! disk kept bounded without a copy; a torn tail; the move from the sled store.

mod common;

use siphook::outbox::{DeliveryState, Outbox};

#[tokio::test]
async fn offsets_are_never_reused_and_events_live_while_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let first = common::initiated_event("ob-1");
    {
        let ob = Outbox::open(&path, 1 << 30).unwrap();
        let off = ob.append(&first, &first.to_json(), &["a", "b"], 0).unwrap();
        assert_eq!(off, 0);
        ob.commit().await.unwrap();
        ob.delivered("a", off).unwrap();
        assert!(ob.event(off).unwrap().is_some(), "b still needs it");
        ob.delivered("a", off).unwrap(); // a second report changes nothing
        assert!(ob.event(off).unwrap().is_some());
        ob.dead_letter("b", off, &Default::default()).unwrap();
        assert_eq!(ob.pending_count("b"), 0);
        assert_eq!(ob.dead_letters(Some("b")).unwrap()[0].event_id, first.id);
        assert!(ob.replay("b", off, 0).unwrap());
        assert!(!ob.replay("b", off, 0).unwrap(), "already replayed");
        ob.delivered("b", off).unwrap();
        assert!(
            ob.event(off).unwrap().is_none(),
            "the last reference frees it"
        );
        ob.commit().await.unwrap();
    }
    // Every event was delivered and removed; a new one still gets a new offset.
    let ob = common::reopen_outbox(&path).await;
    let second = common::initiated_event("ob-2");
    assert_eq!(ob.append(&second, &second.to_json(), &["a"], 0).unwrap(), 1);
    let stored = ob.event(1).unwrap().unwrap();
    assert_eq!(stored.id, second.id);
    assert_eq!(stored.body, second.to_json());
    assert_eq!(stored.sequence, 1);
}

/// A small store (1 MiB: 64 KiB segments) under far more traffic than it holds,
/// with stragglers that live for ever (dead letters, calls that stay up): the
/// disk stays within a few segments because the stragglers are carried forward
/// and their old segments retired, and nothing the stragglers need is lost.
#[tokio::test]
async fn the_disk_stays_bounded_under_churn_with_stragglers_and_they_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let max = 1 << 20;
    let mut dead = Vec::new();
    let mut biggest = 0;
    let calls: Vec<_> = (0..3)
        .map(|i| common::initiated_event(&format!("long-{i}")))
        .collect();
    {
        let ob = Outbox::open(&path, max).unwrap();
        for c in &calls {
            ob.track_call(c).unwrap();
        }
        let event = common::initiated_event("churn");
        let body = event.to_json();
        // About 20 MiB written through a 1 MiB store.
        for batch in 0..600 {
            let mut offsets = Vec::new();
            for _ in 0..50 {
                offsets.push(ob.append(&event, &body, &["a"], 0).unwrap());
            }
            ob.commit().await.unwrap();
            for &o in &offsets {
                if o % 499 == 0 {
                    let state = DeliveryState {
                        attempts: 3,
                        last_status: Some(503),
                        ..DeliveryState::default()
                    };
                    ob.dead_letter("a", o, &state).unwrap();
                    dead.push(o);
                } else {
                    ob.delivered("a", o).unwrap();
                }
            }
            if batch % 10 == 9 {
                ob.commit().await.unwrap();
            }
            biggest = biggest.max(ob.size_on_disk());
        }
        ob.commit().await.unwrap();
        assert!(ob.pending_count("a") == 0);
    }
    // The bound: twice the live data, or the four segments kept before anything
    // is carried, plus the segment being filled and the spare.
    let segment = 64 << 10;
    let live = dead.len() as u64 * (common::initiated_event("churn").to_json().len() as u64 + 100);
    let bound = (2 * live).max(4 * segment) + 2 * segment;
    assert!(
        biggest <= bound,
        "the store took {biggest} bytes on disk for {} live events (bound {bound})",
        dead.len()
    );
    assert!(dead.len() > 50);
    let ob = common::reopen_outbox(&path).await;
    let letters = ob.dead_letters(Some("a")).unwrap();
    assert_eq!(letters.iter().map(|d| d.offset).collect::<Vec<_>>(), dead);
    assert!(letters.iter().all(|d| d.state.last_status == Some(503)));
    let body = common::initiated_event("churn").to_json();
    for &o in &dead {
        assert_eq!(ob.event(o).unwrap().unwrap().body, body);
    }
    let mut live: Vec<String> = ob
        .active_calls()
        .unwrap()
        .into_iter()
        .map(|s| s.info.id)
        .collect();
    live.sort();
    let mut want: Vec<String> = calls.iter().map(|c| c.call.id.clone()).collect();
    want.sort();
    assert_eq!(live, want, "the calls that stayed up are still known");
}

fn segment_files(dir: &std::path::Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_prefix("seg-")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// After a stop, the newest segment is cut short or its tail overwritten at a
/// random point, as a torn write would leave it. The store opens, keeps every
/// event whose batch was committed in an older segment and a prefix of the
/// others, whole batches only, all of them intact, reports the cut, and goes on
/// taking events after it.
#[tokio::test]
async fn a_torn_or_cut_tail_opens_with_every_event_before_it_intact() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let mut segment_of = Vec::new();
        let mut bodies = Vec::new();
        {
            let ob = Outbox::open(&path, 1 << 20).unwrap();
            // A batch is whole or not at all: an event counts as in the segment
            // its batch's commit record went to.
            let mut in_batch = 0;
            let n = 150 + next() % 100;
            for i in 0..n {
                let e = common::initiated_event(&format!("torn-{round}-{i}"));
                ob.append(&e, &e.to_json(), &["a"], 0).unwrap();
                bodies.push(e.to_json());
                in_batch += 1;
                if i % 7 == 6 || i + 1 == n {
                    ob.commit().await.unwrap();
                    let newest = segment_files(&path).last().unwrap().0;
                    segment_of.extend(std::iter::repeat_n(newest, in_batch));
                    in_batch = 0;
                }
            }
        }
        let (newest, file) = segment_files(&path).pop().unwrap();
        let used = {
            let bytes = std::fs::read(&file).unwrap();
            bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1
        };
        let cut = 16 + next() % (used - 16);
        let overwrite = round % 2 == 0;
        if overwrite {
            use std::os::unix::fs::FileExt;
            let garbage: Vec<u8> = (0..used - cut).map(|i| (i as u8) | 1).collect();
            let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            f.write_all_at(&garbage, cut).unwrap();
        } else {
            let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            f.set_len(cut).unwrap();
        }
        let ob = Outbox::open(&path, 1 << 20).unwrap();
        if overwrite {
            assert!(
                ob.opened().cut_bytes > 0,
                "round {round}: the cut is reported"
            );
        }
        assert_eq!(ob.opened().damaged_bytes, 0);
        let kept: Vec<u64> = ob
            .pending("a")
            .unwrap()
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        let n = kept.len();
        assert_eq!(
            kept,
            (0..n as u64).collect::<Vec<_>>(),
            "round {round}: a prefix survives"
        );
        let older = segment_of.iter().filter(|&&s| s < newest).count();
        assert!(
            n >= older,
            "round {round}: {n} kept, {older} were in older segments"
        );
        for (o, body) in bodies.iter().enumerate().take(n) {
            assert_eq!(
                &ob.event(o as u64).unwrap().unwrap().body,
                body,
                "round {round}"
            );
        }
        // It goes on after the cut, and what it takes next survives a reopen.
        let e = common::initiated_event(&format!("after-{round}"));
        let o = ob.append(&e, &e.to_json(), &["a"], 0).unwrap();
        assert!(o >= n as u64);
        ob.commit().await.unwrap();
        drop(ob);
        let ob = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(ob.event(o).unwrap().unwrap().body, e.to_json());
        assert_eq!(ob.pending_count("a"), n + 1);
        assert_eq!(
            ob.opened().cut_bytes,
            0,
            "round {round}: the cut was cleared"
        );
    }
}

/// The store as siphook wrote it with sled (a compacted generation): big-endian
/// keys `endpoint NUL offset`, event records with a header, JSON states.
fn write_sled_store(root: &std::path::Path, events: &[(u64, &siphook::call::Event)]) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("CURRENT"), "3\n").unwrap();
    let db = sled::open(root.join("gen-3")).unwrap();
    let tree = |n: &str| db.open_tree(n).unwrap();
    let (ev, pending, dead, calls, meta) = (
        tree("events"),
        tree("pending"),
        tree("dead"),
        tree("calls"),
        tree("meta"),
    );
    let key = |e: &str, o: u64| {
        let mut k = e.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&o.to_be_bytes());
        k
    };
    for (offset, e) in events {
        let mut rec = 2u16.to_be_bytes().to_vec();
        rec.extend_from_slice(&siphook::outbox::call_key(&e.call.id).to_be_bytes());
        rec.extend_from_slice(&e.sequence.to_be_bytes());
        rec.extend_from_slice(&e.timestamp.millis().to_be_bytes());
        rec.push(e.id.len() as u8);
        rec.extend_from_slice(e.id.as_bytes());
        rec.extend_from_slice(&e.to_json());
        ev.insert(offset.to_be_bytes(), rec).unwrap();
    }
    let state = |attempts: u32| {
        serde_json::to_vec(&DeliveryState {
            attempts,
            next_at_ms: 1000,
            last_status: Some(500),
            last_error: None,
        })
        .unwrap()
    };
    pending.insert(key("crm", 5), state(0)).unwrap();
    pending.insert(key("crm", 6), state(2)).unwrap();
    dead.insert(key("bi", 5), state(9)).unwrap();
    // Damaged or foreign keys are skipped, not fatal.
    pending.insert(b"legacy-key", b"{}".to_vec()).unwrap();
    let snap = serde_json::to_vec(&events[0].1.snapshot()).unwrap();
    calls.insert(events[0].1.call.id.as_bytes(), snap).unwrap();
    meta.insert(b"next_offset", &10u64.to_be_bytes()).unwrap();
    meta.insert(b"paused/bi", &[1u8]).unwrap();
    db.flush().unwrap();
}

/// Upgrading: a store written by the sled engine is moved into the log at the
/// first open (pending, dead, attempts, live calls, paused endpoints, offsets),
/// its files removed once the log is synced, and a second open finds the log.
#[tokio::test]
async fn a_store_of_the_sled_engine_is_moved_into_the_log_at_the_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let (a, b, gone) = (
        common::initiated_event("sled-a"),
        common::initiated_event("sled-b"),
        common::initiated_event("sled-delivered"),
    );
    write_sled_store(&path, &[(5, &a), (6, &b), (7, &gone)]);
    for open in 0..2 {
        let ob = Outbox::open(&path, 1 << 30).unwrap();
        assert_eq!(
            ob.opened().migrated,
            (open == 0).then_some(2),
            "two events still wanted are moved, once"
        );
        let pending = ob.pending("crm").unwrap();
        assert_eq!(pending.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(pending[1].1.attempts, 2, "the retry schedule goes on");
        let dead = ob.dead_letters(Some("bi")).unwrap();
        assert_eq!(
            (dead.len(), dead[0].offset, dead[0].state.attempts),
            (1, 5, 9)
        );
        assert_eq!(dead[0].event_id, a.id);
        let stored = ob.event(6).unwrap().unwrap();
        assert_eq!(
            (stored.id, stored.body.to_vec()),
            (b.id.clone(), b.to_json())
        );
        assert_eq!(stored.sequence, b.sequence);
        assert!(
            ob.event(7).unwrap().is_none(),
            "delivered everywhere: not moved"
        );
        assert!(ob.is_paused("bi") && !ob.is_paused("crm"));
        let calls = ob.active_calls().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].info.id, a.call.id);
        let names: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n == "CURRENT" || n.starts_with("gen-")),
            "the sled files are gone: {names:?}"
        );
        if open == 1 {
            let e = common::initiated_event("after-upgrade");
            assert_eq!(
                ob.append(&e, &e.to_json(), &["crm"], 0).unwrap(),
                10,
                "offsets go on"
            );
        }
    }
}

/// Right after a migration, an older siphook run in the same directory writes a
/// new sled store: the next start refuses the two, and deletes neither.
#[test]
fn a_sled_store_written_after_the_migration_is_refused_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let a = common::initiated_event("sled-again");
    write_sled_store(&path, &[(5, &a)]);
    drop(Outbox::open(&path, 1 << 30).unwrap());
    write_sled_store(&path, &[(5, &a)]);
    let refused = Outbox::open(&path, 1 << 30).err().expect("refused");
    assert!(refused.to_string().contains("older siphook"), "{refused}");
    assert!(path.join("CURRENT").exists() && path.join("gen-3").exists());
    assert!(path.join("log").exists());
}

/// An event larger than a segment (64 KiB in a 1 MiB store) is refused with a
/// clear error, alone: the store goes on taking the next one.
#[tokio::test]
async fn an_event_larger_than_a_segment_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ob = Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap();
    let e = common::initiated_event("huge");
    let err = ob
        .append(&e, &vec![b'x'; 100 << 10], &["a"], 0)
        .expect_err("too large");
    assert!(
        err.to_string().contains("does not fit in a segment"),
        "{err}"
    );
    let o = ob.append(&e, &e.to_json(), &["a"], 0).unwrap();
    ob.commit().await.unwrap();
    assert_eq!(ob.event(o).unwrap().unwrap().body, e.to_json());
}
