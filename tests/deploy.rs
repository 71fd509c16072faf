//! The deployment files are held to the tools that will consume them: promtool checks
//! and unit-tests the alert rules, systemd-analyze verifies the unit and scores its
//! hardening, and every metric the rules and the dashboard query must be one siphook
//! really exports. CI (`CI` set) or `SIPHOOK_REQUIRE_TOOLS=1` makes a missing tool a
//! failure; elsewhere the tests that need one say loudly that they were skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// No external tool gets longer than this.
const TOOL_DEADLINE: Duration = Duration::from_secs(120);
/// The most `systemd-analyze security` exposure the unit may have (measured: 1.1 with
/// systemd 252; some headroom for other systemd versions weighing settings anew).
const MAX_EXPOSURE: f64 = 2.0;

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn tools_required() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || set("SIPHOOK_REQUIRE_TOOLS")
}

/// Says that a test was skipped where it is seen: straight to stderr, past the test
/// harness's capture of `eprintln!`.
fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// What a finished tool run left behind.
struct Run {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `program args` with a deadline; None if the program is not installed (which
/// fails the test when tools are required, and prints a skip line otherwise).
fn run(program: &str, args: &[&str]) -> Option<Run> {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let spawned = Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                !tools_required(),
                "{program} is not installed, and CI or SIPHOOK_REQUIRE_TOOLS requires it \
                 (apt-get install prometheus systemd)"
            );
            skipped(&format!(
                "{program} not installed (apt-get install prometheus systemd); \
                 set SIPHOOK_REQUIRE_TOOLS=1 to make this a failure"
            ));
            return None;
        }
        Err(e) => panic!("starting {program}: {e}"),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TOOL_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {TOOL_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let slurp = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut s = String::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };
    Some(Run {
        success: status.success(),
        code: status.code(),
        stdout: slurp(out),
        stderr: slurp(err),
    })
}

// ---- Metric names ------------------------------------------------------------------

/// Every `siphook_*` metric name in `text`: recording-rule names (which contain a
/// colon) are not metrics, and histogram series are reduced to their family.
fn siphook_metric_names(text: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("siphook_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len = tail.find(|c| !is_name(c)).unwrap_or(tail.len());
        let token = &tail[..len];
        rest = &tail[len.max(1)..];
        if before.is_some_and(is_name) || token.contains(':') {
            continue;
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| token.strip_suffix(s))
            .unwrap_or(token);
        names.insert(family.to_owned());
    }
    names
}

/// Every string `expr` (and templating `query`) in the dashboard.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains("siphook") => {
                        out.push(s.clone())
                    }
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/siphook.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/siphook.json is not valid JSON: {e}"))
}

#[test]
fn dashboard_is_valid_and_every_panel_queries_something() {
    let d = dashboard();
    assert_eq!(d["uid"], "siphook");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for want in ["datasource", "instance", "endpoint"] {
        assert!(vars.contains(&want), "no ${want} variable: {vars:?}");
    }
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut queried = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?} has an empty query"
            );
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {title:?} does not use the datasource variable"
            );
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {title:?}");
        queried += 1;
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "SIP messages/s by method",
        "SIP-to-webhook latency",
        "Endpoint states",
        "Dead letters",
        "Resident memory",
    ] {
        assert!(titles.contains(&want), "no panel {want:?}: {titles:?}");
    }
    assert!(queried >= 20, "only {queried} panels query anything");
}

#[test]
fn every_metric_the_rules_and_dashboard_use_is_exported() {
    let source = read("src/metrics/mod.rs");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard(), &mut exprs);
    let mut used = siphook_metric_names(&exprs.join("\n"));
    let from_dashboard = used.len();
    used.extend(siphook_metric_names(&read(
        "deploy/prometheus/siphook-rules.yml",
    )));
    assert!(from_dashboard >= 15, "dashboard uses only {used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !source.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics queried by deploy/ that src/metrics/mod.rs does not define: {missing:?}"
    );
}

#[test]
fn metric_name_scanner_finds_families_and_skips_recording_rules() {
    let names = siphook_metric_names(
        "histogram_quantile(0.9, rate(siphook_event_delivery_latency_seconds_bucket[5m])) \
         / siphook:sip_messages:rate5m + siphook_endpoint:x:rate5m + \
         siphook_outbox_pending{endpoint=\"a\"} # not_siphook_thing",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "siphook_event_delivery_latency_seconds",
            "siphook_outbox_pending"
        ]
    );
}

// ---- Prometheus ----------------------------------------------------------------------

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(check) = run(
        "promtool",
        &["check", "rules", "deploy/prometheus/siphook-rules.yml"],
    ) else {
        return;
    };
    assert!(
        check.success,
        "promtool check rules failed:\n{}{}",
        check.stdout, check.stderr
    );
    let test = run(
        "promtool",
        &["test", "rules", "deploy/prometheus/siphook-rules.test.yml"],
    )
    .unwrap();
    assert!(
        test.success,
        "promtool test rules failed:\n{}{}",
        test.stdout, test.stderr
    );
    // The alerts the operations brief asks for are all there, and every alert the
    // rules define has a runbook section in docs/operations.md.
    let rules = read("deploy/prometheus/siphook-rules.yml");
    let defined: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    for alert in [
        "SiphookDown",
        "SiphookEndpointUnhealthy",
        "SiphookEndpointDeliveryFailing",
        "SiphookOutboxBacklogGrowing",
        "SiphookOutboxOldestPendingTooOld",
        "SiphookOutboxNotAccepting",
        "SiphookDeadLettersRising",
        "SiphookSipParseErrorSpike",
        "SiphookNoSipTraffic",
        "SiphookConfigReloadFailed",
    ] {
        assert!(defined.contains(&alert), "no alert {alert}: {defined:?}");
    }
    let doc = read("docs/operations.md");
    for alert in &defined {
        assert!(
            doc.contains(&format!("\n### {alert}\n")),
            "docs/operations.md has no runbook section for {alert}"
        );
    }
}

/// The dashboard's queries go through promtool as recording rules, with Grafana's
/// variables replaced, so a PromQL typo fails here rather than on someone's screen.
#[test]
fn dashboard_queries_are_valid_promql() {
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard(), &mut exprs);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$endpoint", ".*");
        // label_values() is Grafana's, not PromQL: check the selector inside it.
        let expr = match expr.strip_prefix("label_values(") {
            Some(inner) => inner
                .rsplit_once(',')
                .map(|(selector, _)| selector.to_owned())
                .unwrap_or(inner.trim_end_matches(')').to_owned()),
            None => expr,
        };
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let Some(check) = run("promtool", &["check", "rules", file.to_str().unwrap()]) else {
        return;
    };
    assert!(
        check.success,
        "a dashboard query is not valid PromQL:\n{}{}\n{rules}",
        check.stdout, check.stderr
    );
}

// ---- systemd ------------------------------------------------------------------------

/// The unit with its binary pointed at the one cargo built, in a directory of its own:
/// `systemd-analyze verify` insists that ExecStart's program exists.
fn unit_copy() -> (tempfile::TempDir, PathBuf) {
    let unit = read("systemd/siphook.service");
    assert!(unit.contains("/usr/bin/siphook "));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("siphook.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/bin/siphook ",
            &format!("{} ", env!("CARGO_BIN_EXE_siphook")),
        ),
    )
    .unwrap();
    (dir, copy)
}

/// `Key=value` settings of the unit, in order (comments and sections left out).
fn unit_settings() -> Vec<(String, String)> {
    read("systemd/siphook.service")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn unit_has_the_settings_siphook_relies_on() {
    let settings = unit_settings();
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (key, want) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("WatchdogSec", "30s"),
        // The shipped config's relative outbox path lands in the state directory.
        ("WorkingDirectory", "/var/lib/siphook"),
        ("StateDirectory", "siphook"),
        ("ConfigurationDirectory", "siphook"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallArchitectures", "native"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LimitNOFILE", "65536"),
    ] {
        assert_eq!(get(key), [want], "{key}=");
    }
    assert!(get("SystemCallFilter").contains(&"@system-service"));
    let exec = get("ExecStart");
    assert_eq!(exec.len(), 1);
    assert!(
        exec[0]
            .starts_with("/usr/bin/siphook run --config ${CONFIGURATION_DIRECTORY}/siphook.toml")
            && exec[0].contains("--log-format json"),
        "ExecStart={}",
        exec[0]
    );
    // SIGKILL must not cut the 10 s default shutdown grace short.
    let stop = get("TimeoutStopSec");
    let stop: u64 = stop[0].trim_end_matches('s').parse().unwrap();
    assert!(
        stop > 10,
        "TimeoutStopSec={stop}s is not above shutdown_grace"
    );
    // ProcSubset=pid would hide /proc/stat, which process metrics need for boot time.
    assert!(get("ProcSubset").is_empty());
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let (_dir, copy) = unit_copy();
    let Some(verify) = run("systemd-analyze", &["verify", copy.to_str().unwrap()]) else {
        return;
    };
    let about_unit: Vec<&str> = verify
        .stderr
        .lines()
        .chain(verify.stdout.lines())
        .filter(|l| l.contains("siphook"))
        .collect();
    assert!(
        verify.success && about_unit.is_empty(),
        "systemd-analyze verify (exit {:?}) complained about the unit:\n{}{}",
        verify.code,
        verify.stdout,
        verify.stderr
    );
}

#[test]
fn unit_hardening_exposure_stays_low() {
    let (_dir, copy) = unit_copy();
    let Some(security) = run(
        "systemd-analyze",
        &["security", "--offline=true", copy.to_str().unwrap()],
    ) else {
        return;
    };
    let all = format!("{}{}", security.stdout, security.stderr);
    let Some(score) = all
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for siphook.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
    else {
        // systemd before 250 has no --offline.
        assert!(
            !tools_required(),
            "systemd-analyze security --offline gave no score:\n{all}"
        );
        skipped(&format!(
            "this systemd-analyze cannot score a unit offline:\n{all}"
        ));
        return;
    };
    eprintln!("systemd-analyze security exposure: {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}: a hardening line was lost?\n{all}"
    );
}

// ---- Packaging ------------------------------------------------------------------------

/// Every file `cargo deb` is told to package exists (the binary aside, which cargo
/// builds), so renaming a doc cannot break the .deb unnoticed.
#[test]
fn deb_assets_exist() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    assert_eq!(
        deb["conf-files"].as_array().unwrap()[0].as_str(),
        Some("/etc/siphook/siphook.toml")
    );
    let mut dests = Vec::new();
    for asset in deb["assets"].as_array().unwrap() {
        let asset = asset.as_array().unwrap();
        let source = asset[0].as_str().unwrap();
        dests.push(asset[1].as_str().unwrap());
        if source.starts_with("target/release/") {
            continue;
        }
        let literal = source.split('*').next().unwrap();
        assert!(
            path(literal).exists(),
            "asset {source} ({literal}) does not exist"
        );
    }
    assert!(dests.contains(&"etc/siphook/siphook.toml"));
    assert!(dests.contains(&"usr/bin/"));
    let units = &deb["systemd-units"];
    let dir = units["unit-scripts"].as_str().unwrap();
    assert!(path(dir).join("siphook.service").exists());
    assert_eq!(units["start"].as_bool(), Some(false));
}
