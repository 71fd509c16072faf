//! An endpoint whose host name does not resolve is retried like a connection
//! error, and delivered once the name resolves. The test runs itself again in a
//! network namespace of its own with only `lo`, so no lookup leaves the machine;
//! it needs root (unshare, mount) and, without it, prints why and passes unless
//! `SIPHOOK_REQUIRE_TOOLS=1` (CI) makes that a failure.

mod common;

use std::time::Duration;

use common::DEADLINE;
use common::admin::{self, sum};
use common::process::Siphook;
use common::receiver::Receiver;
use common::stage::{can_stage, not_root};
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Set in the copy of this test binary that runs inside the test's own network
/// and mount namespaces.
const IN_NETNS: &str = "SIPHOOK_FAULTS_IN_NETNS";
const DNS_TEST: &str = "an_unresolvable_endpoint_host_is_retried_like_a_connection_error";
/// The endpoint's host: unresolvable until the test lists it in /etc/hosts.
const HOOK_HOST: &str = "hook.siphook.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_endpoint_host_is_retried_like_a_connection_error() {
    if std::env::var(IN_NETNS).is_ok() {
        return dns_failure_inside_the_namespace().await;
    }
    if !can_stage("DNS failure", not_root()) {
        return;
    }
    // This test runs again inside `unshare`: a network namespace with only `lo`
    // (no lookup can leave the machine) and a mount namespace in which the test's
    // own files are /etc/hosts and /etc/resolv.conf (a resolver on 127.0.0.1,
    // where nothing answers).
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let script = "ip link set lo up && mount --bind \"$SIPHOOK_HOSTS\" /etc/hosts \
        && mount --bind \"$SIPHOOK_RESOLV\" /etc/resolv.conf && exec \"$0\" \"$@\"";
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--net", "--mount", "sh", "-c", script])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", DNS_TEST, "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .env("SIPHOOK_HOSTS", &hosts)
        .env("SIPHOOK_RESOLV", &resolv)
        .kill_on_drop(true);
    let out = match tokio::time::timeout(DEADLINE * 3, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            assert!(can_stage(
                "DNS failure",
                Some(format!("cannot run unshare: {e}"))
            ));
            return;
        }
        Err(_) => panic!("the run inside the namespace did not finish in time"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("unshare failed") {
        assert!(can_stage("DNS failure", Some(stderr.trim().to_owned())));
        return;
    }
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "inside the namespace ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Polls `/v1/endpoints` until crm's entry satisfies `ok`.
async fn wait_crm(addr: std::net::SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let crm = admin::endpoint(addr, "crm").await;
        if ok(&crm) {
            return crm;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "crm stayed {crm}, wanted {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn dns_failure_inside_the_namespace() {
    let hosts = std::env::var("SIPHOOK_HOSTS").expect("hosts file named");
    // Proof of where we are: the host's resolver is not reachable from here.
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    assert!(resolv.starts_with("nameserver 127.0.0.1"), "{resolv}");
    let mut rx = Receiver::ok().await;
    let url = format!("http://{HOOK_HOST}:{}/hook", rx.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let schedule = std::iter::once("\"0s\"".to_owned())
        .chain(std::iter::repeat_n("\"200ms\"".to_owned(), 60))
        .collect::<Vec<_>>()
        .join(", ");
    let (config, target) = common::binary_config(
        dir.path(),
        &url,
        &format!(
            "events = [\"call.initiated\"]\ncircuit_probe_interval = \"200ms\"\nretry_schedule = [{schedule}]"
        ),
    );
    let admin_addr = common::admin_addr(&config);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut s = Siphook::spawn(&config);
    s.wait_ready(&sock, &target, "dns-1").await;
    // Failing lookups are retried on the schedule, like a refused connection.
    let crm = wait_crm(admin_addr, "three failed lookups", |c| {
        c["last_error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("dns error"))
    })
    .await;
    assert_eq!(crm["last_error"]["status"], Value::Null, "{crm}");
    assert_eq!(crm["pending"], 1, "{crm}");
    assert_eq!(crm["dead_letters"], 0, "{crm}");
    let samples = admin::wait_metric(
        admin_addr,
        "siphook_deliveries_total",
        &[("endpoint", "crm"), ("outcome", "retry"), ("code", "none")],
        3.0,
    )
    .await;
    assert_eq!(
        sum(
            &samples,
            "siphook_deliveries_total",
            &[("outcome", "delivered")]
        ),
        0.0
    );
    assert!(
        rx.requests.try_recv().is_err(),
        "nothing reached the receiver"
    );
    // The name resolves again (written in place: the bind mount keeps the inode).
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&hosts)
        .unwrap()
        .write_all(format!("127.0.0.1 {HOOK_HOST}\n").as_bytes())
        .unwrap();
    let req = rx.next().await;
    assert_eq!(req.json()["call"]["sip_call_id"], "dns-1");
    assert_eq!(
        req.header("host"),
        format!("{HOOK_HOST}:{}", rx.addr.port())
    );
    let crm = wait_crm(admin_addr, "nothing pending", |c| c["pending"] == 0).await;
    assert_eq!(crm["dead_letters"], 0, "{crm}");
    drop(s);
}
