//! Interop: SIPp (a SIP implementation nobody on this team wrote) plays mirrored
//! calls at siphook over UDP and TCP. CI installs SIPp and sets
//! `SIPHOOK_REQUIRE_SIPP=1`; elsewhere the test says loudly that it was skipped.

mod common;

use std::process::Stdio;

use common::{DEADLINE, Harness};

fn sipp_available() -> bool {
    let found = std::process::Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("SIPHOOK_REQUIRE_SIPP").is_none(),
            "SIPHOOK_REQUIRE_SIPP is set but sipp is not installed"
        );
        eprintln!("SKIPPED: sipp not installed (apt-get install sip-tester)");
    }
    found
}

/// A loopback port that was free a moment ago, for SIPp's own socket.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn play(h: &mut Harness, transport: &str, calls: usize) {
    let target = if transport == "t1" {
        h.tcp_target
    } else {
        h.udp_target
    };
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/mirror_call.xml");
    let mut child = tokio::process::Command::new("sipp")
        .args([
            "-sf",
            scenario,
            "-t",
            transport,
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
        ])
        .args([
            "-m",
            &calls.to_string(),
            "-r",
            "50",
            "-timeout",
            "30",
            "-timeout_error",
            "-nostdin",
        ])
        .arg(target.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp starts");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("sipp finishes")
        .unwrap();
    assert!(status.success(), "sipp failed: {status}");
    let transport = if transport == "t1" { "tcp" } else { "udp" };
    for e in h.expect_answered_calls(calls).await {
        assert_eq!(e["call"]["signaling"]["transport"], transport);
    }
    assert!(h.barrier().await.is_empty());
}

#[tokio::test]
async fn sipp_mirrored_calls_over_udp() {
    if sipp_available() {
        play(&mut Harness::start().await, "u1", 20).await;
    }
}

#[tokio::test]
async fn sipp_mirrored_calls_over_tcp() {
    if sipp_available() {
        play(&mut Harness::start().await, "t1", 10).await;
    }
}
