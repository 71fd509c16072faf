//! Outbox compaction: sled does not give the space of delivered events back, so the
//! store is copied into a fresh generation when most of its file is garbage. These
//! tests grow real garbage, compact, and check that every record survives, that the
//! space comes back, that an interrupted compaction leaves a usable store, and that
//! a running service compacts without losing or reordering a webhook.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::receiver::Receiver;
use common::stage::{Tmpfs, can_stage, not_root};
use common::{CallSpec, DEADLINE};
use siphook::outbox::{DeliveryState, Outbox, OutboxError, Verdict};

/// Most events a test churns through while growing garbage.
const MAX_CHURN: usize = 200_000;

/// One test at a time churns a store: they share two cores and sled's one I/O
/// thread pool, and a churn that competes with three others measures little.
static CHURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Appends copies of one event until the file reaches `size` bytes, then delivers
/// them all: the garbage a drained backlog leaves behind, which sled keeps.
async fn grow_garbage(ob: &Outbox, size: u64) {
    let event = common::initiated_event("churn");
    let body = event.to_json();
    let mut offsets = Vec::new();
    while ob.size_on_disk() < size {
        assert!(
            offsets.len() < MAX_CHURN,
            "{} events did not grow the store to {size} bytes",
            offsets.len()
        );
        for _ in 0..PER_COMMIT {
            offsets.push(ob.append(&event, &body, &["a"], 0).unwrap());
        }
        ob.commit().await.unwrap();
    }
    for chunk in offsets.chunks(PER_COMMIT) {
        ob.delivered_many("a", chunk).unwrap();
        ob.commit().await.unwrap();
    }
}

/// Events written between two commits, as the writer does under moderate load.
const PER_COMMIT: usize = 100;

/// What an operator and the dispatchers can read back from a store.
#[derive(Debug, PartialEq)]
struct Contents {
    pending: Vec<(String, u64, DeliveryState, String)>,
    dead: Vec<(String, u64, String, DeliveryState)>,
    paused: Vec<bool>,
    calls: Vec<String>,
}

fn contents(ob: &Outbox) -> Contents {
    let mut pending = Vec::new();
    for endpoint in ob.pending_endpoints().unwrap() {
        for (offset, state) in ob.pending(&endpoint).unwrap() {
            let event = ob.event(offset).unwrap().expect("a pending event's record");
            let body = String::from_utf8(event.body.to_vec()).unwrap();
            pending.push((endpoint.clone(), offset, state, body));
        }
    }
    let dead = ob
        .dead_letters(None)
        .unwrap()
        .into_iter()
        .map(|d| (d.endpoint, d.offset, d.event_id, d.state))
        .collect();
    let mut calls: Vec<String> = ob
        .active_calls()
        .unwrap()
        .into_iter()
        .map(|c| format!("{c:?}"))
        .collect();
    calls.sort();
    Contents {
        pending,
        dead,
        paused: ["a", "b", "c"].iter().map(|e| ob.is_paused(e)).collect(),
        calls,
    }
}

/// Live records of every kind beside the garbage: pending for two endpoints, one
/// with an attempt recorded, a dead letter, a paused endpoint, a live call.
async fn keep_some(ob: &Outbox) {
    for i in 0..3 {
        let e = common::initiated_event(&format!("keep-{i}"));
        ob.append(&e, &e.to_json(), &["a", "b"], 1_000 + i).unwrap();
        ob.track_call(&e).unwrap();
    }
    let first = ob.pending("b").unwrap()[0].0;
    let failing = DeliveryState {
        attempts: 3,
        next_at_ms: 9_000,
        last_status: Some(503),
        last_error: None,
    };
    ob.record_attempt("a", first, &failing).unwrap();
    ob.dead_letter("b", first, &failing).unwrap();
    ob.set_paused("c", true).unwrap();
    ob.commit().await.unwrap();
}

/// A new store in a temporary directory, and the store's path.
fn new_store() -> (tempfile::TempDir, PathBuf, Outbox) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let ob = Outbox::open(&path, 1 << 30).unwrap();
    (dir, path, ob)
}

fn current(path: &Path) -> String {
    std::fs::read_to_string(path.join("CURRENT")).unwrap()
}

fn generations(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gen-"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn compaction_gives_the_space_back_and_keeps_every_record() {
    let _one_at_a_time = CHURN.lock().await;
    let (_dir, path, ob) = new_store();
    assert_eq!(current(&path), "1\n", "a new store starts as generation 1");
    grow_garbage(&ob, 16 << 20).await;
    keep_some(&ob).await;
    let before = contents(&ob);
    let size = ob.size_on_disk();

    let Verdict::Done(done) = ob.compact_if_sparse(1 << 20, u64::MAX).unwrap() else {
        panic!("a store of {size} bytes with three live events is worth compacting");
    };
    assert_eq!(done.before, size);
    assert_eq!(done.after, ob.size_on_disk());
    assert!(
        done.after * 4 < done.before,
        "compaction took {} bytes to {}",
        done.before,
        done.after
    );
    assert!(done.live > 0 && done.live < 64 << 10, "live {}", done.live);
    assert_eq!(contents(&ob), before);
    assert_eq!(current(&path), "2\n");
    assert_eq!(
        generations(&path),
        ["gen-2"],
        "the old generation is removed"
    );

    // Offsets go on from where they were, and the store takes writes and commits.
    let last = before.pending.iter().map(|p| p.1).max().unwrap();
    let e = common::initiated_event("after");
    assert_eq!(ob.append(&e, &e.to_json(), &["a"], 0).unwrap(), last + 1);
    ob.commit().await.unwrap();
    let after = contents(&ob);
    drop(ob);

    let ob = common::reopen_outbox(&path).await;
    assert_eq!(
        contents(&ob),
        after,
        "the compacted generation is what opens"
    );
    let e = common::initiated_event("reopened");
    assert_eq!(ob.append(&e, &e.to_json(), &["a"], 0).unwrap(), last + 2);
}

#[tokio::test]
async fn a_store_mostly_live_or_too_live_to_copy_is_left_alone() {
    let _one_at_a_time = CHURN.lock().await;
    let (_dir, path, ob) = new_store();
    let event = common::initiated_event("backlog");
    let body = event.to_json();
    while ob.size_on_disk() < 2 << 20 {
        for _ in 0..PER_COMMIT {
            ob.append(&event, &body, &["a"], 0).unwrap();
        }
        ob.commit().await.unwrap();
    }
    let verdict = ob.compact_if_sparse(1 << 20, u64::MAX).unwrap();
    assert!(
        matches!(verdict, Verdict::Dense { .. }),
        "an undelivered backlog is live data: {verdict:?}"
    );
    assert_eq!(
        ob.compact_if_sparse(u64::MAX, u64::MAX).unwrap(),
        Verdict::NotDue
    );

    grow_garbage(&ob, 16 << 20).await;
    let verdict = ob.compact_if_sparse(1 << 20, 64 << 10).unwrap();
    let Verdict::TooMuchLive { live } = verdict else {
        panic!("more live data than may be copied: {verdict:?}");
    };
    assert!(live > 64 << 10);
    assert_eq!(current(&path), "1\n", "nothing was copied");
    assert_eq!(generations(&path), ["gen-1"]);
}

#[tokio::test]
async fn leftovers_of_an_interrupted_compaction_are_removed_at_open() {
    let (_dir, path, ob) = new_store();
    keep_some(&ob).await;
    ob.compact().unwrap();
    let before = contents(&ob);
    drop(ob);
    // A crash while copying: a half-made next generation and an unrenamed pointer.
    std::fs::create_dir(path.join("gen-3")).unwrap();
    std::fs::write(path.join("gen-3").join("db"), b"half a copy").unwrap();
    std::fs::write(path.join("CURRENT.tmp"), b"3\n").unwrap();
    // A crash after the switch: the previous generation still there.
    copy_dir(&path.join("gen-2"), &path.join("gen-1"));

    let ob = common::reopen_outbox(&path).await;
    assert_eq!(contents(&ob), before);
    assert_eq!(generations(&path), ["gen-2"]);
    drop(ob);

    // A pointer to a generation that is gone, or no pointer beside generations, is
    // an error, never a new empty store over the data.
    std::fs::write(path.join("CURRENT"), b"9\n").unwrap();
    let err = open_error(&path).await;
    assert!(err.contains("names generation 9"), "{err}");
    std::fs::remove_file(path.join("CURRENT")).unwrap();
    let err = open_error(&path).await;
    assert!(err.contains("CURRENT is missing but"), "{err}");
    assert!(
        path.join("gen-2").join("db").exists(),
        "the data is untouched"
    );
    std::fs::write(path.join("CURRENT"), b"2\n").unwrap();
    assert_eq!(contents(&common::reopen_outbox(&path).await), before);
}

async fn open_error(path: &Path) -> String {
    let started = std::time::Instant::now();
    loop {
        match Outbox::open(path, 1 << 30) {
            Err(OutboxError::Locked) if started.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return e.to_string(),
            Ok(_) => panic!("opened a store whose generation is missing"),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Stores from before generations kept sled's files in the outbox directory itself.
#[tokio::test]
async fn a_store_from_before_generations_opens_and_moves_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    {
        let db = sled::open(&path).unwrap();
        let mut key = b"crm\0".to_vec();
        key.extend_from_slice(&7u64.to_be_bytes());
        db.open_tree("pending")
            .unwrap()
            .insert(key, serde_json::to_vec(&DeliveryState::default()).unwrap())
            .unwrap();
        db.open_tree("dead").unwrap();
        db.flush().unwrap();
    }
    let ob = common::reopen_outbox(&path).await;
    assert_eq!(ob.pending_endpoints().unwrap(), ["crm"]);
    assert!(
        !path.join("CURRENT").exists(),
        "opening alone changes nothing"
    );
    ob.compact().unwrap();
    assert_eq!(current(&path), "1\n");
    for legacy in ["db", "conf", "blobs"] {
        assert!(!path.join(legacy).exists(), "{legacy} is removed");
    }
    drop(ob);
    let ob = common::reopen_outbox(&path).await;
    assert_eq!(ob.pending("crm").unwrap(), [(7, DeliveryState::default())]);
    drop(ob);

    // An older siphook run here since wrote sled's files beside the generations:
    // they may hold events the generations lack, so an open leaves them alone.
    {
        let db = sled::open(&path).unwrap();
        db.open_tree("pending")
            .unwrap()
            .insert(b"x", b"{}")
            .unwrap();
        db.flush().unwrap();
    }
    let ob = common::reopen_outbox(&path).await;
    assert_eq!(
        ob.pending_endpoints().unwrap(),
        ["crm"],
        "generation 1 is used"
    );
    assert!(path.join("db").exists() && path.join("conf").exists());
}

#[tokio::test]
async fn a_second_open_is_refused_while_the_store_is_in_use() {
    let (_dir, path, _first) = new_store();
    assert!(matches!(
        Outbox::open(&path, 1 << 30),
        Err(OutboxError::Locked)
    ));
}

/// A copy that runs out of disk is abandoned: the old generation stays in use,
/// whole and writable, and the partial copy is removed.
#[tokio::test]
async fn a_compaction_that_runs_out_of_disk_leaves_the_store_as_it_was() {
    let _one_at_a_time = CHURN.lock().await;
    if !can_stage("compaction on a full disk", not_root()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(&dir.path().join("small"), "32m") {
        Ok(fs) => fs,
        Err(e) => {
            assert!(can_stage("compaction on a full disk", Some(e)));
            return;
        }
    };
    let path = fs.dir.join("outbox");
    let ob = Outbox::open(&path, 1 << 30).unwrap();
    grow_garbage(&ob, 8 << 20).await;
    keep_some(&ob).await;
    // About 1 MB of live data to copy, and room for less than half of it.
    let event = common::initiated_event("backlog");
    for _ in 0..10 {
        for _ in 0..PER_COMMIT {
            ob.append(&event, &event.to_json(), &["b"], 0).unwrap();
        }
        ob.commit().await.unwrap();
    }
    let before = contents(&ob);
    let free = free_bytes(&fs.dir);
    let filler = fs.dir.join("filler");
    std::fs::write(&filler, vec![0u8; (free - (256 << 10)) as usize]).unwrap();

    let err = ob.compact().expect_err("no room for a copy");
    assert!(
        matches!(err, OutboxError::Storage(_) | OutboxError::Layout(_)),
        "{err}"
    );
    assert_eq!(generations(&path), ["gen-1"], "the partial copy is removed");
    assert_eq!(current(&path), "1\n");
    assert_eq!(contents(&ob), before);

    std::fs::remove_file(&filler).unwrap();
    let e = common::initiated_event("after");
    ob.append(&e, &e.to_json(), &["a"], 0).unwrap();
    ob.commit().await.unwrap();
    assert!(matches!(
        ob.compact_if_sparse(1 << 20, u64::MAX),
        Ok(Verdict::Done(_))
    ));
    assert_eq!(contents(&ob).pending.len(), before.pending.len() + 1);
}

fn free_bytes(dir: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// The writer compacts between batches while calls keep coming: every webhook
/// arrives once, each call's in order, before, during and after the switch.
#[tokio::test]
async fn a_running_service_compacts_without_losing_or_reordering_a_webhook() {
    let _one_at_a_time = CHURN.lock().await;
    let mut rx = Receiver::ok().await;
    let config = format!(
        "compact_above = \"1MiB\"\ncompact_check_interval = \"100ms\"\n[[endpoints]]\nname = \"crm\"\nurl = \"{}\"\nallow_http = true\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n",
        rx.url()
    );
    let (h, delivery, dir) = common::start_delivery(&config).await;
    let path = dir.path().join("outbox");
    let done = || h.metric("siphook_outbox_compactions_total", &[("result", "done")]);
    let mut sent = 0;
    let started = tokio::time::Instant::now();
    while done() < 1.0 {
        assert!(
            started.elapsed() < DEADLINE && sent < 2_000,
            "no compaction after {sent} calls"
        );
        for _ in 0..20 {
            h.send_all(&CallSpec::new(&format!("online-{sent}")).answered_flow())
                .await;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        h.send_all(&CallSpec::new(&format!("online-{sent}")).answered_flow())
            .await;
        sent += 1;
    }
    let mut by_call: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..sent * 4 {
        let event = rx.next().await.json();
        by_call
            .entry(event["call"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(event["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_call.len(), sent, "one set of webhooks per call");
    for (call, types) in &by_call {
        assert_eq!(
            types,
            &[
                "call.initiated",
                "call.ringing",
                "call.answered",
                "call.completed"
            ],
            "{call}"
        );
    }
    // Each compaction moved the store one generation on, and left only that one
    // (polled: one may be between its switch and its count).
    let started = tokio::time::Instant::now();
    while current(&path) != format!("{}\n", done() as u64 + 1) || generations(&path).len() != 1 {
        assert!(
            started.elapsed() < DEADLINE,
            "{} after {} compactions",
            current(&path),
            done()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing is left to send, and nothing was sent twice.
    let started = tokio::time::Instant::now();
    while h.metric("siphook_outbox_pending", &[("endpoint", "crm")]) > 0.0 {
        assert!(started.elapsed() < DEADLINE, "deliveries left pending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Ok(extra) = rx.requests.try_recv() {
        panic!("a webhook arrived twice: {}", extra.json());
    }
    drop(delivery);
}
