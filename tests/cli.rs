//! The operator's command line, run as the real binary.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::receiver::{Receiver, Reply};
use common::{CallSpec, DEADLINE};
use siphook::config::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn siphook() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
}

#[test]
fn check_config_accepts_the_shipped_default_and_lists_every_problem() {
    let ok = siphook()
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/siphook.toml"),
        ])
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok\n");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[sip]\nudp = [\"127.0.0.1:99999\"]\nmax_active_calls = -1\ncolour = \"red\"\n",
    )
    .unwrap();
    let out = siphook().arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "sip.colour: unknown key\nsip.udp[0]: invalid socket address \"127.0.0.1:99999\"\nsip.max_active_calls: -1 is outside 1 to 100000000\n"
    );
}

/// The shipped config with one of its commented `[[endpoints]]` examples (the
/// `n`th) uncommented as its comment says: the `#` taken off each of its lines
/// that has no space after it.
fn uncommented_example(n: usize) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/siphook.toml"))
        .unwrap();
    let mut seen = 0;
    let mut inside = false;
    let mut out = String::new();
    for line in text.lines() {
        if line == "#[[endpoints]]" {
            seen += 1;
            inside = seen == n;
        } else if !line.starts_with('#') {
            inside = false;
        }
        let setting = line.len() > 1 && !line[1..].starts_with([' ', '#']);
        match line.strip_prefix('#') {
            Some(rest) if inside && setting => out.push_str(rest),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    assert!(seen >= n, "no example {n} in config/siphook.toml");
    out
}

#[test]
fn the_shipped_endpoint_examples_pass_check_config_once_uncommented() {
    for n in [1, 2, 3, 4] {
        let text = uncommented_example(n);
        assert!(text.contains("\n[[endpoints]]\n"), "{text}");
        let (code, out, err, _) = check(&text);
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "ok\n"),
            "example {n}:\n{err}"
        );
        // The example's public secret is named until it is replaced.
        assert!(err.contains("signs with the example secret"), "{err}");
    }
    let minimal = Config::parse(&uncommented_example(1)).unwrap();
    let e = &minimal.endpoints[0];
    let siphook::config::Target::Http(url) = &e.target else {
        panic!("the minimal example is a webhook: {:?}", e.target)
    };
    assert_eq!(url.to_string(), "http://127.0.0.1:8080/hook");
    assert!(e.match_dnis.is_empty() && e.redact.is_none());
    assert!(e.wants("call.completed", None, None));
}

/// Runs `siphook check-config` on `text`: exit status, stdout, stderr.
fn check(text: &str) -> (Option<i32>, String, String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("siphook.toml");
    std::fs::write(&path, text).unwrap();
    let out = siphook().arg("check-config").arg(&path).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
    )
}

const ENDPOINT: &str = "[sip]\nudp = []\ntcp = []\n[[endpoints]]\nname = \"crm\"\n\
                        url = \"http://127.0.0.1:8080/hook\"\nallow_http = true\n";
const SECRET_FILE_LINE: &str = "secret_files = [\"/dev/null/none\"]\n";

#[test]
fn check_config_says_what_a_new_user_got_wrong_and_where() {
    // A glob matching no event type loads, with a warning naming it.
    let (code, out, err, _) = check(&format!(
        "{ENDPOINT}secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\nevents = [\"call.complete\"]\n"
    ));
    assert_eq!((code, out.as_str()), (Some(0), "ok\n"), "{err}");
    assert!(
        err.starts_with(
            "warning: endpoints[0].events[0] \"call.complete\" matches no event type, so endpoint crm receives nothing"
        ),
        "{err}"
    );

    // A syntax error names the file, the line and the column.
    let (code, _, err, path) = check("[sip]\nudp = [\"127.0.0.1:5060\"\ntcp = []\n");
    assert_eq!(code, Some(2), "{err}");
    let at = format!("invalid TOML at {}:", path.display());
    assert!(err.starts_with(&at), "{err}");
    let place: Vec<&str> = err[at.len()..].splitn(3, ':').collect();
    assert!(
        place.len() == 3 && place[0].parse::<u32>().is_ok() && place[1].parse::<u32>().is_ok(),
        "no line and column: {err}"
    );

    // A bare number where a duration goes says a duration string is wanted.
    let (code, _, err, _) = check("[sip]\nchallenge_window = 32\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("sip.challenge_window: wrong type: expected a duration string with a unit, such as \"32s\""), "{err}");

    // A bad URL is quoted, credentials cut, with the reason; a secret that was
    // given but is bad is not also "required".
    let (code, _, err, _) = check(&format!(
        "{}secrets = [\"whsec_notbase64!!\"]\n",
        ENDPOINT.replace(
            "http://127.0.0.1:8080/hook",
            "https://bob:hunter2@crm example/hook?token=s3cret"
        )
    ));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("endpoints[0].url: invalid URL \"https://…@crm example/…\": "),
        "{err}"
    );
    assert!(!err.contains("hunter2") && !err.contains("s3cret"), "{err}");
    assert!(
        err.contains("endpoints[0].secrets[0]: secret is not valid base64"),
        "{err}"
    );
    assert!(!err.contains("at least one secret"), "{err}");
    // An unreadable secret file is named, and also not "required" on top.
    let (code, _, err, _) = check(&format!("{ENDPOINT}{SECRET_FILE_LINE}"));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("endpoints[0].secret_files[0]: cannot read"),
        "{err}"
    );
    assert!(!err.contains("at least one secret"), "{err}");
}

#[test]
fn an_error_and_its_cause_are_said_once() {
    // The library's error already says the io::Error it wraps: said once.
    let out = siphook()
        .args([
            "deadletters",
            "list",
            "--config",
            "/nonexistent/siphook.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("siphook: cannot read /nonexistent/siphook.toml: "),
        "{err}"
    );
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");

    // A port in use, through `run`.
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("siphook.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nudp = [\"{}\"]\ntcp = []\n[outbox]\npath = \"{}\"\n[admin]\nlisten = \"\"\n",
            held.local_addr().unwrap(),
            dir.path().join("outbox").display()
        ),
    )
    .unwrap();
    let out = siphook()
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse).to_string();
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("cannot listen"))
        .collect();
    assert!(!said.is_empty(), "{err}");
    for line in said {
        assert!(
            line.contains("os error 98") || line.contains(&in_use),
            "{line}"
        );
        assert_eq!(line.matches("os error 98").count(), 1, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_is_siphooks_and_a_reload_says_the_admin_token_changed() {
    let mut rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, target) = common::binary_config(dir.path(), &rx.url(), "");
    let mut env = Command::new("env");
    env.arg("RUST_LOG=debug").arg(env!("CARGO_BIN_EXE_siphook"));
    let mut s = common::process::Siphook::spawn_with(env, &config);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.wait_ready(&sock, &target, "cli-debug-1").await;
    rx.next().await;
    s.wait_log("call event emitted").await;

    // A new token and an events typo, then SIGHUP.
    let new_token = "a-new-admin-token-fedcba9876543210";
    std::fs::write(dir.path().join("admin.token"), format!("{new_token}\n")).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "allow_http = true",
            "allow_http = true\nevents = [\"call.*\", \"call.complete\"]",
        ),
    )
    .unwrap();
    let pid = s.child.id().unwrap().to_string();
    let kill = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    kill("-HUP");
    s.wait_log("\"call.complete\" matches no event type").await;
    let line = s.wait_log("configuration reloaded").await;
    assert!(
        line.contains("admin_token") && line.contains("changed"),
        "{line}"
    );
    kill("-TERM");
    assert!(s.wait_exit().await.success(), "{}", s.log_text());

    let log = s.log_text();
    assert!(
        !log.contains(new_token) && !log.contains(common::ADMIN_TOKEN),
        "{log}"
    );
    // siphook's debug lines, and no dependency's (sled, hyper, h2 at debug
    // print dozens per call).
    let debug: Vec<&str> = log.lines().filter(|l| l.contains(" DEBUG ")).collect();
    assert!(!debug.is_empty(), "{log}");
    for l in debug {
        let target = l.split(" DEBUG ").nth(1).unwrap_or_default();
        assert!(
            target.starts_with("siphook"),
            "a dependency's debug line: {l}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_endpoint_is_shown_how_to_resume_it_while_siphook_runs() {
    let mut rx = Receiver::start(Arc::new(|_| Reply::status(410))).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, target) = common::binary_config(dir.path(), &rx.url(), "");
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stop = |s: &common::process::Siphook| {
        let pid = s.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    let mut s = common::process::Siphook::spawn(&config);
    s.wait_ready(&sock, &target, "cli-gone-1").await;
    rx.next().await;
    s.wait_log("endpoint answered 410 Gone").await;
    stop(&s);
    assert!(s.wait_exit().await.success(), "{}", s.log_text());

    // At the next start the CLI cannot run (the outbox is locked): the line
    // names the admin API's resume.
    let mut s = common::process::Siphook::spawn(&config);
    let line = s.wait_log("endpoint paused after 410 Gone").await;
    assert!(line.contains("POST /v1/endpoints/crm/resume"), "{line}");
    stop(&s);
    assert!(s.wait_exit().await.success(), "{}", s.log_text());
    let resumed = siphook()
        .args(["endpoints", "resume", "crm", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&resumed.stdout),
        "endpoint crm resumed; it is sent to again on the next start\n",
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}

/// Runs siphook until `until` resolves and, when given, its log has shown
/// `log_line`; then stops it with SIGTERM and checks the log kept secrets out.
async fn run_until(
    config: &std::path::Path,
    until: impl std::future::Future<Output = ()>,
    log_line: Option<&str>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_siphook"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (tx, mut log) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let reader = tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = tx.send(l);
        }
    });
    until.await;
    let mut err = String::new();
    if let Some(wanted) = log_line {
        let found = tokio::time::timeout(DEADLINE, async {
            while let Some(l) = log.recv().await {
                err.push_str(&l);
                err.push('\n');
                if l.contains(wanted) {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "log never showed {wanted:?}:\n{err}");
    }
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("clean exit on SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let _ = reader.await;
    while let Ok(l) = log.try_recv() {
        err.push_str(&l);
        err.push('\n');
    }
    assert!(!err.contains("whsec_"), "a secret reached the log:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_listed_and_replayed() {
    let accept = Arc::new(AtomicBool::new(false));
    let a = accept.clone();
    let mut rx = Receiver::start(Arc::new(move |_| {
        Reply::status(if a.load(Ordering::SeqCst) { 200 } else { 422 })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (config, target) =
        common::binary_config(dir.path(), &rx.url(), "events = [\"call.initiated\"]");
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let call = CallSpec::new("cli-dead-1");
    // The log line proves the 422 was recorded before siphook is stopped.
    let first_id = run_until(
        &config,
        async {
            // Retransmit the INVITE until siphook is up and has tried (and failed) once.
            for _ in 0..200 {
                sock.send_to(call.invite(1).as_bytes(), &target)
                    .await
                    .unwrap();
                if let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(100), rx.requests.recv()).await
                {
                    return;
                }
            }
            panic!("no delivery attempt");
        },
        Some("dead letter: rejected"),
    );
    first_id.await;

    let list = siphook()
        .args(["deadletters", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["endpoint"], "crm");
    assert_eq!(lines[0]["state"]["last_status"], 422);
    assert_eq!(lines[0]["state"]["attempts"], 1);
    let offset = lines[0]["offset"].as_u64().unwrap().to_string();

    let nothing = siphook()
        .args(["deadletters", "replay", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!nothing.status.success(), "replay needs --id or --all");
    // One unknown id among known ones: nothing is done, and the unknown one named.
    let partly = siphook()
        .args(["deadletters", "replay", "--id", &offset, "--id", "999999"])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(partly.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&partly.stderr),
        "siphook: no such dead letter: 999999; nothing was replayed (`siphook deadletters list` shows the ids)\n"
    );
    let still = siphook()
        .args(["deadletters", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(still.stdout, list.stdout, "the known id was not replayed");
    // Unknown endpoint names are said to be unknown.
    for args in [
        &["deadletters", "replay", "--endpoint", "nope", "--all"][..],
        &["endpoints", "resume", "nope"][..],
    ] {
        let out = siphook()
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "siphook: no such endpoint: nope (configured: crm)\n",
            "{args:?}"
        );
    }
    let replay = siphook()
        .args(["deadletters", "replay", "--id", &offset, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&replay.stdout),
        format!(
            "replayed 1 dead letter(s): {offset} (crm); they are delivered on the next start\n"
        )
    );

    accept.store(true, Ordering::SeqCst);
    run_until(
        &config,
        async {
            let req = rx.next().await;
            assert_eq!(req.json()["call"]["sip_call_id"], "cli-dead-1");
            assert_eq!(
                req.header("webhook-id"),
                lines[0]["event_id"].as_str().unwrap()
            );
        },
        None,
    )
    .await;
    let after = siphook()
        .args(["deadletters", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&after.stdout), "");
}
