//! The durability claim, shown by the system calls: under `strace`, every event
//! siphook prints as committed (`--print-events`, announced with the dispatchers)
//! comes after an `fdatasync` that finished after the last write into a segment
//! began. Events are sent one at a time, so each is its own commit batch.

mod common;

use std::time::Duration;

use common::CallSpec;
use common::process::Siphook;
use common::stage::can_stage;
use tokio::net::UdpSocket;
use tokio::process::Command;

fn strace_missing() -> Option<String> {
    match std::process::Command::new("strace").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("strace -V failed: {}", o.status)),
        Err(e) => Some(format!("strace not found: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_announced_event_follows_an_fdatasync() {
    if !can_stage("strace of the commit", strace_missing()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rx = common::receiver::Receiver::ok().await;
    let (config, target) = common::binary_config(dir.path(), &rx.url(), "");
    let trace = dir.path().join("trace");
    let mut cmd = Command::new("strace");
    // -y names each descriptor's file, so a write to a segment is told apart.
    cmd.args([
        "-f",
        "-qq",
        "-y",
        "-s",
        "48",
        "-e",
        "trace=fdatasync,fsync,sync_file_range,write,pwrite64",
        "-o",
    ])
    .arg(&trace)
    .arg("--")
    .arg(env!("CARGO_BIN_EXE_siphook"));
    let mut s = Siphook::spawn_with(cmd, &config);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.wait_ready(&sock, &target, "strace-probe").await;
    const CALLS: usize = 20;
    for i in 0..CALLS {
        let c = CallSpec::new(&format!("strace-{i}"));
        sock.send_to(c.invite(1).as_bytes(), &target).await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(30), s.next_committed())
            .await
            .expect("the event is committed");
        assert_eq!(e["type"], "call.initiated");
    }
    // Killing strace would detach siphook and leave it running: stop siphook,
    // and strace exits with it.
    let strace_pid = s.child.id().expect("strace runs");
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .expect("strace's children");
    let traced = children
        .split_whitespace()
        .next()
        .expect("siphook under strace");
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", traced])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    s.wait_exit().await;
    // strace wrote its file as the calls happened.
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut synced = false;
    let mut announced = 0;
    let mut syncs = 0;
    let mut writes = 0;
    for line in text.lines() {
        // A write into a segment, from the moment it starts, is not yet durable.
        if line.contains("pwrite64(") && line.contains("/log/seg-") {
            synced = false;
            writes += 1;
            continue;
        }
        let done = !line.contains("<unfinished") && line.contains("= 0");
        if line.contains("fdatasync(") || line.contains("fdatasync resumed") {
            if done {
                synced = true;
                syncs += 1;
            }
            continue;
        }
        assert!(
            !line.contains("sync_file_range"),
            "sync_file_range is not a durable commit: {line}"
        );
        // stdout, as fd 1 (`-y` adds the pipe's name: `write(1<pipe:[…]>, …`).
        let stdout = line.contains("write(1<") || line.contains("write(1, ");
        let event = stdout && line.contains("\"{\\\"id\\\"");
        if event {
            assert!(
                synced,
                "announced while a segment write had no fdatasync after it:\n{line}"
            );
            synced = false;
            announced += 1;
        }
    }
    assert!(
        announced >= CALLS,
        "{announced} announcements seen in the trace:\n{text}"
    );
    assert!(
        writes >= CALLS,
        "{writes} segment writes seen in the trace:\n{text}"
    );
    println!("{announced} events announced, {writes} segment writes, {syncs} fdatasync calls");
}
