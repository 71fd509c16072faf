//! `siphook tail` as an operator runs it beside a running siphook: the real
//! binary twice, one following the other's event stream over loopback.

mod common;

use std::process::Stdio;

use common::CallSpec;
use common::process::Siphook;
use common::receiver::Receiver;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_one_safe_line_per_event_of_the_types_asked_for() {
    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, target) = common::binary_config(dir.path(), &rx.url(), "");
    let mut siphook = Siphook::spawn(&config);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    siphook.wait_ready(&sock, &target, "tail-probe").await;
    let admin = common::admin_addr(&config);

    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
        .args([
            "tail",
            "--types",
            "call.answered,call.completed",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    common::admin::wait_metric(admin, "siphook_admin_stream_clients", &[], 1.0).await;

    // A caller-chosen number holding a terminal escape and a bidi override.
    let mut call = CallSpec::new("tail-1");
    call.from = "<sip:+1555\u{1b}[2J\u{202e}0100@10.0.0.1>".into();
    for m in call.answered_flow() {
        sock.send_to(m.as_bytes(), &target).await.unwrap();
    }
    let mut printed = Vec::new();
    for _ in 0..2 {
        let line = tokio::time::timeout(common::DEADLINE, lines.next_line())
            .await
            .expect("a line within the deadline")
            .unwrap()
            .expect("tail goes on");
        printed.push(line);
    }
    let answered = &printed[0];
    let fields: Vec<&str> = answered.split_whitespace().collect();
    assert_eq!(fields[1], "call.answered", "{answered}");
    assert_eq!(
        &fields[2..5],
        ["+1555?[2J?0100", "→", "+15551234567"],
        "{answered}"
    );
    assert!(fields[5].starts_with("call_"), "{answered}");
    let completed: Vec<&str> = printed[1].split_whitespace().collect();
    assert_eq!(completed[1], "call.completed");
    assert_eq!(completed[5], "answered", "the disposition: {}", printed[1]);
    assert!(!printed.concat().contains('\u{1b}'));
    let _ = tail.start_kill();
    siphook.kill9().await;
}

#[tokio::test]
async fn tail_without_a_token_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("siphook.toml");
    std::fs::write(&config, "[admin]\nlisten = \"127.0.0.1:9\"\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
        .args(["tail", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no admin token"), "{err}");
}
