//! The log on its own: order, torn tails, cut batches, reuse, a segment that
//! cannot start.

use super::*;

const SEG: u64 = 64 * 1024;

type Seen = Vec<(Position, u8, Vec<u8>)>;

fn reopen(dir: &Path) -> (Log, Recovery, Seen) {
    let mut seen = Vec::new();
    let (log, rec) = Log::open(dir, SEG, |p, k, b| seen.push((p, k, b.to_vec()))).unwrap();
    (log, rec, seen)
}

#[test]
fn committed_records_come_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, seen) = reopen(dir.path());
    assert!(seen.is_empty());
    let mut wrote = Vec::new();
    for i in 0..300u32 {
        let body = vec![(i % 251) as u8; 500 + i as usize];
        let p = log.append((i % 7) as u8 + 1, &body).unwrap();
        wrote.push((p, (i % 7) as u8 + 1, body));
        if i % 10 == 9 {
            log.commit().unwrap();
        }
    }
    log.commit().unwrap();
    assert!(
        log.segment() > 2,
        "300 records of ~650 B span several 64 KiB segments"
    );
    let (p, k, b) = &wrote[123];
    assert_eq!(log.read(*p).unwrap(), Some((*k, b.clone())));
    drop(log);
    let (_, rec, seen) = reopen(dir.path());
    assert_eq!(seen, wrote);
    assert_eq!(rec.records, 300);
    assert_eq!((rec.tail_bytes, rec.damaged.len()), (0, 0));
}

#[test]
fn a_torn_tail_is_cut_at_the_last_whole_record_and_zeroed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = reopen(dir.path());
    for i in 0..20u8 {
        log.append(1, &[i; 100]).unwrap();
    }
    log.commit().unwrap();
    let last = log.append(1, &[99; 100]).unwrap();
    log.commit().unwrap();
    drop(log);
    // The last record's second half never reached the disk.
    let path = dir.path().join(segment_name(1));
    let f = File::options().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 60], last.at + 60).unwrap();
    drop(f);
    let (mut log, rec, seen) = reopen(dir.path());
    assert_eq!(seen.len(), 20);
    assert_eq!(rec.tail_bytes, 60, "the torn record's first 60 bytes");
    // The next commit is shorter than the torn one: its leftovers must not read
    // as a record after it.
    log.append(2, &[7; 10]).unwrap();
    log.commit().unwrap();
    drop(log);
    let (_, rec, seen) = reopen(dir.path());
    assert_eq!(seen.len(), 21);
    assert_eq!(seen[20].1, 2);
    assert_eq!(rec.tail_bytes, 0);
}

#[test]
fn retired_segments_are_reused_and_their_old_records_never_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = reopen(dir.path());
    for i in 0..400u32 {
        log.append(3, &i.to_le_bytes().repeat(100)).unwrap();
        log.commit().unwrap();
        log.retire_below(log.segment()).unwrap();
    }
    let live: Vec<u64> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(segment_number))
        .collect();
    assert_eq!(live, vec![log.segment()], "only the newest segment is kept");
    assert!(dir.path().join(SPARE).exists());
    assert_eq!(log.size_on_disk(), 2 * SEG);
    let newest = log.segment();
    drop(log);
    let (log, rec, seen) = reopen(dir.path());
    assert_eq!(log.segment(), newest);
    assert!(seen.iter().all(|(p, _, _)| p.segment == newest));
    let first = u32::from_le_bytes(seen[0].2[..4].try_into().unwrap());
    assert_eq!(
        seen.len() as u32,
        400 - first,
        "every record of the newest segment"
    );
    assert_eq!(rec.damaged, vec![]);
}

#[test]
fn a_batch_cut_between_its_segments_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = reopen(dir.path());
    for i in 0..10u8 {
        log.append(1, &[i; 1000]).unwrap();
    }
    log.commit().unwrap();
    // One batch that starts a new segment halfway through.
    let first = log.segment();
    while log.segment() == first {
        log.append(2, &[7; 1000]).unwrap();
    }
    log.append(2, &[8; 1000]).unwrap();
    log.commit().unwrap();
    let second = log.segment();
    drop(log);
    // The crash came after the first segment's part was synced, before the
    // second's was written: only its header is there.
    let path = dir.path().join(segment_name(second));
    let f = File::options().write(true).open(&path).unwrap();
    f.write_all_at(&vec![0u8; (SEG - SEGMENT_HEADER) as usize], SEGMENT_HEADER)
        .unwrap();
    drop(f);
    let (mut log, rec, seen) = reopen(dir.path());
    assert_eq!(seen.len(), 10, "none of the cut batch is handed over");
    assert!(seen.iter().all(|(_, k, _)| *k == 1));
    assert!(rec.tail_bytes > 0 && rec.damaged.is_empty());
    assert_eq!(
        log.segment(),
        first,
        "appending goes on after the last commit"
    );
    assert!(!path.exists());
    log.append(3, b"after").unwrap();
    log.commit().unwrap();
    drop(log);
    let (_, rec, seen) = reopen(dir.path());
    assert_eq!(seen.len(), 11);
    assert_eq!(seen[10].1, 3);
    assert_eq!((rec.tail_bytes, rec.damaged.len()), (0, 0));
}

#[test]
fn a_segment_that_cannot_start_leaves_the_batch_before_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = reopen(dir.path());
    // Something holds the next segment's name: starting it fails.
    std::fs::write(dir.path().join(segment_name(2)), b"in the way").unwrap();
    let mut kept = 0;
    let failed = loop {
        match log.append(1, &[5; 1000]) {
            Ok(_) => kept += 1,
            Err(e) => break e,
        }
        assert!(kept < 1000, "the segment never filled");
    };
    assert!(matches!(failed, LogError::Io { .. }), "{failed}");
    assert!(matches!(log.append(1, b"x"), Err(LogError::Stopped)));
    log.commit().unwrap();
    drop(log);
    let (_, rec, seen) = reopen(dir.path());
    assert_eq!(
        seen.len(),
        kept,
        "every record before the failure, committed"
    );
    assert!(rec.damaged.is_empty());
}

#[test]
fn a_reused_segments_old_bytes_are_not_reported_as_a_cut_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = reopen(dir.path());
    // Enough turnover that the newest segment is a reused one.
    for i in 0..400u32 {
        log.append(3, &i.to_le_bytes().repeat(100)).unwrap();
        log.commit().unwrap();
        log.retire_below(log.segment()).unwrap();
    }
    drop(log);
    let (_, rec, seen) = reopen(dir.path());
    assert!(!seen.is_empty());
    assert_eq!((rec.tail_bytes, rec.damaged.len()), (0, 0), "a clean stop");
}

#[test]
fn a_spare_made_while_a_retired_segment_became_the_spare_leaves_that_one_in_place() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = reopen(dir.path());
    // Fill the first segment and move on, then retire it: it becomes the spare.
    while log.segment() < 2 {
        log.append(1, &[7; 1000]).unwrap();
        log.commit().unwrap();
    }
    let spare = dir.path().join(SPARE);
    let _ = std::fs::remove_file(&spare);
    log.retire_below(2).unwrap();
    let reused = std::fs::metadata(&spare).unwrap().ino();
    // A maker that started before the retire finishes after it.
    prepare_spare(dir.path(), SEG).unwrap();
    assert_eq!(std::fs::metadata(&spare).unwrap().ino(), reused);
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(SPARE_TMP))
        .collect();
    assert!(left.is_empty(), "the maker's zeros are removed: {left:?}");
}

#[test]
fn a_spare_is_made_only_once_the_newest_segment_is_half_full() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = reopen(dir.path());
    while log.segment() < 2 {
        log.append(1, &[7; 1000]).unwrap();
    }
    log.commit().unwrap();
    assert!(
        !log.spare_due(),
        "a fresh segment does not call for a spare"
    );
    while log.end * 2 < SEG {
        log.append(1, &[7; 1000]).unwrap();
    }
    assert!(log.spare_due());
}

#[test]
fn a_segment_started_and_never_committed_is_gone_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = reopen(dir.path());
    for i in 0..5u8 {
        log.append(1, &[i; 1000]).unwrap();
    }
    log.commit().unwrap();
    // The append that starts the next segment syncs nothing: the crash comes
    // before the batch that would have made it durable.
    while log.segment() < 2 {
        log.append(2, &[9; 1000]).unwrap();
    }
    let started = dir.path().join(segment_name(2));
    assert!(started.exists(), "the rotation named it");
    // Its syncs travel with the batch, first: taken, never written (the crash).
    let batch = log.take();
    let carried: Vec<u64> = batch.started.iter().map(|(n, _)| *n).collect();
    assert_eq!(carried, vec![2]);
    assert!(!batch.is_empty());
    drop(batch);
    drop(log);
    let (log, rec, seen) = reopen(dir.path());
    assert_eq!(seen.len(), 5, "only what was committed");
    assert!(seen.iter().all(|(_, k, _)| *k == 1));
    assert!(
        rec.damaged.is_empty(),
        "an unsealed segment is not damage here"
    );
    assert_eq!(log.segment(), 1);
    assert!(!started.exists(), "the segment with no commit goes");
}

#[test]
fn a_retirement_applied_later_never_replaces_a_spare_made_meanwhile() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = reopen(dir.path());
    while log.segment() < 3 {
        log.append(1, &[7; 1000]).unwrap();
        log.commit().unwrap();
    }
    let spare = dir.path().join(SPARE);
    let _ = std::fs::remove_file(&spare);
    let retired = log.plan_retire(3);
    assert_eq!((retired.len(), log.oldest()), (2, 3), "off the log at once");
    // The log goes on while the files are still there, and a spare is made.
    log.append(2, b"meanwhile").unwrap();
    log.commit().unwrap();
    prepare_spare(dir.path(), SEG).unwrap();
    let made = std::fs::metadata(&spare).unwrap().ino();
    assert_eq!(retired.apply().unwrap(), 2);
    assert_eq!(std::fs::metadata(&spare).unwrap().ino(), made);
    for n in [1, 2] {
        assert!(
            !dir.path().join(segment_name(n)).exists(),
            "seg {n} removed"
        );
    }
    drop(log);
    let (_, rec, seen) = reopen(dir.path());
    assert_eq!(seen.last().map(|s| s.2.as_slice()), Some(&b"meanwhile"[..]));
    assert_eq!((rec.tail_bytes, rec.damaged.len()), (0, 0));
}
