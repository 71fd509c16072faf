//! Security properties through the public surface: per-endpoint PII redaction
//! (what each receiver gets, signed over what it gets), redirects never followed,
//! and secrets kept out of logs, metrics, the admin API and config errors of the
//! real binary.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::admin;
use common::receiver::{Received, Receiver, Reply};
use common::{CallSpec, DEADLINE, Harness, assert_valid};
use serde_json::{Value, json};
use siphook::config::Config;
use siphook::deliver::{Delivery, EndpointCommand};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The redaction key the hashing endpoint reads from its file.
const REDACT_KEY: &str = "redact-key-for-tests-5f1c9a2e7b";

const ANI: &str = "+15557654321";
const DNIS: &str = "+15551234567";
const TRANSFER_TO: &str = "+15552220199";

/// What a receiver holding the redaction key computes to recognise a value.
fn hashed(value: &str) -> String {
    common::hmac_sha256(REDACT_KEY.as_bytes(), value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks the Standard Webhooks signature over the raw body as received.
fn verify(req: &Received) {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut signed = format!(
        "{}.{}.",
        req.header("webhook-id"),
        req.header("webhook-timestamp")
    )
    .into_bytes();
    signed.extend_from_slice(&req.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(common::hmac_sha256(&key, &signed))
    );
    assert_eq!(req.header("webhook-signature"), expected);
}

async fn start(text: &str, dir: &Path) -> (Harness, Delivery) {
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n[outbox]\npath = \"{}\"\n{text}",
        dir.join("outbox").display()
    );
    let config = Config::parse(&text).unwrap();
    let mut h = Harness::with_config(config.clone()).await;
    let events = std::mem::replace(&mut h.gw.events, mpsc::channel(1).1);
    let outbox = siphook::deliver::open_outbox(&config).unwrap();
    let delivery = Delivery::start(&config, outbox, events, None, h.gw.metrics.clone()).unwrap();
    (h, delivery)
}

fn endpoint(name: &str, rx: &Receiver, extra: &str) -> String {
    format!(
        "[[endpoints]]\nname = \"{name}\"\nurl = \"{}\"\nallow_http = true\nsecrets = [\"{SECRET}\"]\ntimeout = \"2s\"\nretry_schedule = [\"0s\", \"20ms\", \"20ms\"]\n{extra}\n",
        rx.url()
    )
}

/// `n` requests, each signature-checked and schema-checked when it is a call event.
async fn take(rx: &mut Receiver, n: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let req = rx.next().await;
        verify(&req);
        let v = req.json();
        if v["type"] != "webhook.test" {
            assert_valid(&v);
        }
        out.push((req.header("webhook-id").to_owned(), v));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_gets_its_own_redaction_signed_over_what_it_receives() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("redact.key");
    std::fs::write(&key_file, format!("{REDACT_KEY}\n")).unwrap();
    let (mut plain, mut hashing, mut dropping) = (
        Receiver::ok().await,
        Receiver::ok().await,
        Receiver::ok().await,
    );
    let endpoints = [
        endpoint("plain", &plain, ""),
        endpoint(
            "hashing",
            &hashing,
            &format!(
                "redact = [\"ani\", \"dnis\", \"display_name\"]\nredact_mode = \"hash\"\nredact_key_file = \"{}\"",
                key_file.display()
            ),
        ),
        endpoint("dropping", &dropping, "redact = [\"ani\", \"display_name\"]"),
    ]
    .concat();
    let (h, delivery) = start(&endpoints, dir.path()).await;

    // A call that fills every place a number or a name can appear: both display
    // names, the Request-URI, a blind transfer's target and its Referred-By.
    let mut call = CallSpec::new("redact-1");
    call.to = format!("\"Contact Centre\" <sip:{DNIS}@10.0.0.2>");
    let mut flow = vec![
        call.invite(1),
        call.resp(180, 1, "INVITE", Some("cc")),
        call.resp(200, 1, "INVITE", Some("cc")),
        call.ack(1, "cc"),
    ];
    let refer_to = format!("Refer-To: <sip:{TRANSFER_TO}@10.0.0.3>");
    let referred_by = format!("Referred-By: <sip:{ANI}@10.0.0.1>");
    flow.push(call.request(
        "REFER",
        2,
        "REFER",
        Some("cc"),
        "r1",
        &[&refer_to, &referred_by, "Refer-Sub: false"],
        "",
    ));
    flow.push(call.response(
        202,
        "Accepted",
        2,
        "REFER",
        Some("cc"),
        &["Refer-Sub: false"],
        "",
    ));
    flow.push(call.bye(3, "cc"));
    flow.push(call.resp(200, 3, "BYE", Some("cc")));
    h.send_all(&flow).await;

    let plain = take(&mut plain, 5).await;
    let hashed_got = take(&mut hashing, 5).await;
    let dropped_got = take(&mut dropping, 5).await;
    let types: Vec<&str> = plain
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "call.initiated",
            "call.ringing",
            "call.answered",
            "call.transferred",
            "call.completed"
        ]
    );

    for (i, (id, event)) in plain.iter().enumerate() {
        // The stored event, as the unredacted endpoint gets it, is complete.
        let c = &event["call"];
        assert_eq!(c["ani"], ANI);
        assert_eq!(c["dnis"], DNIS);
        assert_eq!(c["from"]["display_name"], "Alice");
        assert_eq!(c["to"]["display_name"], "Contact Centre");

        // The hashing endpoint: every number and name replaced by the keyed hash,
        // nothing else touched; the webhook-id is the event's own.
        let mut want = event.clone();
        let w = &mut want["call"];
        w["ani"] = json!(hashed(ANI));
        w["dnis"] = json!(hashed(DNIS));
        w["from"]["user"] = json!(hashed(ANI));
        w["from"]["uri"] = json!(format!("sip:{}@10.0.0.1", hashed(ANI)));
        w["from"]["display_name"] = json!(hashed("Alice"));
        w["to"]["user"] = json!(hashed(DNIS));
        w["to"]["uri"] = json!(format!("sip:{}@10.0.0.2", hashed(DNIS)));
        w["to"]["display_name"] = json!(hashed("Contact Centre"));
        match event["type"].as_str().unwrap() {
            "call.initiated" => {
                want["data"]["request_uri"] = json!(format!("sip:{}@10.0.0.2", hashed(DNIS)));
            }
            "call.transferred" => {
                assert_eq!(
                    event["data"]["target"],
                    format!("sip:{TRANSFER_TO}@10.0.0.3")
                );
                assert_eq!(event["data"]["referred_by"], format!("sip:{ANI}@10.0.0.1"));
                want["data"]["target"] = json!(format!("sip:{}@10.0.0.3", hashed(TRANSFER_TO)));
                want["data"]["referred_by"] = json!(format!("sip:{}@10.0.0.1", hashed(ANI)));
            }
            _ => {}
        }
        assert_eq!(hashed_got[i].0, *id);
        assert_eq!(hashed_got[i].1, want, "event {i}");

        // The dropping endpoint: the caller's number and both names are gone, the
        // callee's number (not listed) stays.
        let mut want = event.clone();
        let w = &mut want["call"];
        w["ani"] = Value::Null;
        w["from"]["user"] = Value::Null;
        w["from"]["uri"] = json!("sip:redacted@10.0.0.1");
        w["from"]["display_name"] = Value::Null;
        w["to"]["display_name"] = Value::Null;
        if event["type"] == "call.transferred" {
            want["data"]["referred_by"] = json!("sip:redacted@10.0.0.1");
        }
        assert_eq!(dropped_got[i].0, *id);
        assert_eq!(dropped_got[i].1, want, "event {i}");
        assert_eq!(dropped_got[i].1["call"]["dnis"], DNIS);
        assert_ne!(hashed_got[i].1, dropped_got[i].1);
    }

    // webhook.test takes the same path (nothing in it to redact) and is signed.
    let commands = delivery.endpoints().borrow().clone();
    let (tx, reply) = oneshot::channel();
    commands["hashing"]
        .send(EndpointCommand::Test(tx))
        .await
        .unwrap();
    let result = tokio::time::timeout(DEADLINE, reply)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.outcome, "delivered");
    let test = take(&mut hashing, 1).await;
    assert_eq!(test[0].1["type"], "webhook.test");
    assert_eq!(test[0].1["data"], json!({"endpoint": "hashing"}));
    assert_eq!(test[0].0, result.event_id);

    drop(h.gw.shutdown().await);
    delivery.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let mut elsewhere = Receiver::ok().await;
    let mut redirecting = Receiver::start(Arc::new(|_| Reply::status(500))).await;
    let mut moved = Reply::status(307);
    moved.headers.push(("location", elsewhere.url()));
    redirecting.script([moved]);
    let text = endpoint("moved", &redirecting, "events = [\"call.initiated\"]");
    let (h, delivery) = start(&text, dir.path()).await;
    h.send(&CallSpec::new("redirect-1").invite(1)).await;

    let first = redirecting.next().await;
    assert_eq!(first.json()["type"], "call.initiated");
    // A 3xx is final: a dead letter after one attempt, the second never made.
    let started = Instant::now();
    let dead = loop {
        let dead = delivery.outbox.dead_letters(Some("moved")).unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(started.elapsed() < DEADLINE, "no dead letter");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, first.header("webhook-id"));
    assert_eq!(dead[0].state.attempts, 1);
    assert_eq!(dead[0].state.last_status, Some(307));
    h.wait_metric(
        "siphook_deliveries_total",
        &[
            ("endpoint", "moved"),
            ("outcome", "rejected"),
            ("code", "307"),
        ],
        1.0,
    )
    .await;
    // The attempt is over, so a followed redirect would already have arrived.
    assert!(
        elsewhere.requests.try_recv().is_err(),
        "the redirect was followed"
    );
    assert!(
        redirecting.requests.try_recv().is_err(),
        "the 3xx was retried"
    );
    drop(h.gw.shutdown().await);
    delivery.shutdown().await.unwrap();
}

#[test]
fn check_config_names_an_unknown_redact_field_and_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[[endpoints]]\nname = \"crm\"\nurl = \"https://crm.example/hook\"\nsecrets = [\"{SECRET}\"]\nredact = [\"ani\", \"caller_name\"]\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "endpoints[0].redact[1]: unknown field \"caller_name\" (valid: ani, dnis, display_name)\n"
    );
}

// ---- secrets never leak from the real binary ----

/// Every secret the leak test configures, with what it is.
struct Secrets {
    signing_b64: String,
    list: Vec<(&'static str, String)>,
}

impl Secrets {
    fn new() -> Secrets {
        let signing_b64 =
            base64::engine::general_purpose::STANDARD.encode(b"leak-test-signing-key-32-bytes!!");
        let list = vec![
            ("the signing secret", signing_b64.clone()),
            ("the signing key", "leak-test-signing-key".to_owned()),
            (
                "the endpoint bearer token",
                "bearer-Zr8Qm4Tx1Vb6Nc3L".into(),
            ),
            (
                "a static header's API key",
                "apikey-Pq7Ws2Ed9Rf4Tg1Y".into(),
            ),
            (
                "a token in the endpoint URL",
                "urltoken-Aa1Bb2Cc3Dd4".into(),
            ),
            ("the admin token", "admin-Kj5Hg8Fd2Sa6Lq9Wx3".into()),
            ("a wrong admin token", "wrongadmin-Ee5Rr6Tt7Yy8".into()),
            ("the HEP auth key", "hepkey-Mn4Bv7Cx1Zl8Kj2Hg".into()),
            ("a wrong HEP auth key", "wronghep-Uu1Ii2Oo3Pp4".into()),
            ("the redaction key", "redactkey-Yt6Re3Wq9Po1Iu5".into()),
            ("a broken signing secret", "brokensecret-Gg7Hh8Jj9".into()),
            ("a short redaction key", "shortkey-Q1".into()),
        ];
        Secrets { signing_b64, list }
    }

    fn get(&self, what: &str) -> &str {
        &self.list.iter().find(|(w, _)| *w == what).unwrap().1
    }
}

/// Writes the config: every secret from a file, except the static header (headers
/// come only inline). Returns the config path, the SIP, HEP and admin addresses.
fn leak_config(
    dir: &Path,
    s: &Secrets,
    url: &str,
    signing_file: &str,
) -> (std::path::PathBuf, String, String, SocketAddr) {
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{text}\n")).unwrap();
        p.display().to_string()
    };
    write("signing.secret", &format!("whsec_{}", s.signing_b64));
    let sip = format!("127.0.0.1:{}", common::free_port(true));
    let hep = format!("127.0.0.1:{}", common::free_port(true));
    let admin_at: SocketAddr = format!("127.0.0.1:{}", common::free_port(false))
        .parse()
        .unwrap();
    let text = format!(
        "[sip]\nudp = [\"{sip}\"]\ntcp = []\n\
         [hep]\nudp = [\"{hep}\"]\nauth_key_file = \"{hep_key}\"\n\
         [outbox]\npath = \"{outbox}\"\n\
         [admin]\nlisten = \"{admin_at}\"\ntoken_file = \"{admin_token}\"\n\
         [[endpoints]]\nname = \"crm\"\nurl = \"{url}?token={url_token}\"\nallow_http = true\n\
         secret_files = [\"{signing}\"]\n\
         auth = {{ bearer_token_file = \"{bearer}\" }}\n\
         headers = {{ \"X-Api-Key\" = \"{api_key}\" }}\n\
         redact = [\"ani\", \"dnis\", \"display_name\"]\nredact_mode = \"hash\"\nredact_key_file = \"{redact}\"\n\
         retry_schedule = [\"0s\", \"50ms\", \"50ms\", \"50ms\"]\ntimeout = \"2s\"\n\
         [[endpoints]]\nname = \"down\"\nurl = \"http://127.0.0.1:{closed}/hook?token={url_token}\"\n\
         allow_http = true\nsecret_files = [\"{signing}\"]\nevents = [\"call.initiated\"]\n\
         retry_schedule = [\"0s\", \"50ms\"]\n",
        closed = common::free_port(false),
        hep_key = write("hep.key", s.get("the HEP auth key")),
        outbox = dir.join("outbox").display(),
        admin_token = write("admin.token", s.get("the admin token")),
        url_token = s.get("a token in the endpoint URL"),
        signing = dir.join(signing_file).display(),
        bearer = write("bearer.token", s.get("the endpoint bearer token")),
        api_key = s.get("a static header's API key"),
        redact = write("redact.key", s.get("the redaction key")),
    );
    let config = dir.join("siphook.toml");
    std::fs::write(&config, text).unwrap();
    (config, sip, hep, admin_at)
}

/// Lines of a child's output, collected as they come.
type Lines = Arc<Mutex<Vec<String>>>;

/// The real binary with its stdout and stderr lines collected.
struct Running {
    child: Child,
    out: Lines,
    err: Lines,
}

impl Running {
    fn spawn(config: &Path, format: &str) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_siphook"))
            .args(["run", "--print-events", "--log-format", format, "--config"])
            .arg(config)
            // Every crate at debug, where a leak would show: a full filter (a
            // bare "debug" is siphook's own, with the libraries at info).
            .env("RUST_LOG", "debug,siphook=debug")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (out, err) = (Lines::default(), Lines::default());
        let collect = |pipe: Box<dyn tokio::io::AsyncRead + Send + Unpin>, into: Lines| {
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    into.lock().unwrap().push(l);
                }
            });
        };
        collect(Box::new(child.stdout.take().unwrap()), out.clone());
        collect(Box::new(child.stderr.take().unwrap()), err.clone());
        Running { child, out, err }
    }

    /// Waits (bounded) until some log line after the first `skip` holds `needle`;
    /// returns how many lines were read then.
    async fn wait_log(&self, needle: &str, skip: usize) -> usize {
        let started = Instant::now();
        loop {
            {
                let err = self.err.lock().unwrap();
                if err.iter().skip(skip).any(|l| l.contains(needle)) {
                    return err.len();
                }
                assert!(
                    started.elapsed() < DEADLINE,
                    "log never showed {needle:?}:\n{}",
                    err.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

async fn no_secret_leaks(format: &str) {
    let s = Secrets::new();
    let dir = tempfile::tempdir().unwrap();
    // The first two attempts fail, so delivery errors are logged and kept.
    let mut rx = Receiver::ok().await;
    rx.script([Reply::status(500), Reply::status(503)]);
    let (config, sip, hep, admin_at) = leak_config(dir.path(), &s, &rx.url(), "signing.secret");
    let admin_token = s.get("the admin token").to_owned();
    let mut seen = Vec::<String>::new();

    let run = Running::spawn(&config, format);
    let mut read = run.wait_log("siphook running", 0).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let call = CallSpec::new("leak-1");
    // Retransmit the INVITE (bounded) until its event is printed: then it is tracked.
    for i in 0.. {
        assert!(i < 200, "no event printed");
        sock.send_to(call.invite(1).as_bytes(), &sip).await.unwrap();
        if !run.out.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in &call.answered_flow()[1..] {
        sock.send_to(m.as_bytes(), &sip).await.unwrap();
    }
    // HEP with a wrong key, then the right one.
    let hep_packet = |id: &str, key: &str| {
        siphook::sip::hep::HepBuilder::new()
            .sip(
                17,
                "192.0.2.10:5062".parse().unwrap(),
                "198.51.100.20:5060".parse().unwrap(),
                siphook::vocab::Timestamp::now(),
                CallSpec::new(id).invite(1).as_bytes(),
            )
            .chunk(0, 14, key.as_bytes())
            .build()
    };
    let wrong = hep_packet("leak-hep-wrong", s.get("a wrong HEP auth key"));
    sock.send_to(&wrong, &hep).await.unwrap();
    let right = hep_packet("leak-hep-ok", s.get("the HEP auth key"));
    sock.send_to(&right, &hep).await.unwrap();
    admin::wait_metric(
        admin_at,
        "siphook_hep_packets_dropped_total",
        &[("reason", "auth_failed")],
        1.0,
    )
    .await;

    // Four call events and the HEP call's initiated: the first two requests get the
    // scripted failures, then each of the five events is delivered exactly once.
    let mut ids = std::collections::HashSet::new();
    for n in 0..7 {
        let req = rx.next().await;
        assert_eq!(
            req.header("authorization"),
            format!("Bearer {}", s.get("the endpoint bearer token"))
        );
        assert_eq!(req.header("x-api-key"), s.get("a static header's API key"));
        if n >= 2 {
            ids.insert(req.header("webhook-id").to_owned());
        }
    }
    assert_eq!(ids.len(), 5);

    // The admin API: with a wrong token, with the right one, and the metrics.
    let denied = admin::request(
        admin_at,
        "GET",
        "/v1/endpoints",
        Some(s.get("a wrong admin token")),
        None,
    )
    .await;
    assert_eq!(denied.status, 401);
    seen.push(denied.text());
    // The endpoint nobody listens on: its connect errors were logged and kept.
    let started = Instant::now();
    let endpoints = loop {
        let r = admin::get(admin_at, "/v1/endpoints", &admin_token).await;
        if r.json()["items"][1]["dead_letters"] == 2 {
            break r;
        }
        assert!(started.elapsed() < DEADLINE, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(endpoints.json()["items"][1]["name"], "down");
    assert!(endpoints.json()["items"][1]["last_error"]["error"].is_string());
    assert_eq!(
        endpoints.json()["items"][0]["last_error"]["status"],
        503,
        "{}",
        endpoints.text()
    );
    seen.push(endpoints.text());
    for path in [
        "/v1/calls",
        "/v1/deadletters",
        "/metrics",
        "/readyz",
        "/healthz",
    ] {
        let r = admin::get(admin_at, path, &admin_token).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        seen.push(r.text());
    }
    let test = admin::post(admin_at, "/v1/endpoints/crm/test", &admin_token, json!({})).await;
    assert_eq!(test.json()["outcome"], "delivered", "{}", test.text());
    seen.push(test.text());
    let next = rx.next().await.json();
    assert_eq!(next["type"], "webhook.test", "{next}");

    // A reload that applies, then one whose signing secret file is broken.
    run.signal("HUP");
    read = run.wait_log("configuration reloaded", read).await;
    std::fs::write(
        dir.path().join("signing.secret"),
        format!("whsec_{}!\n", s.get("a broken signing secret")),
    )
    .unwrap();
    run.signal("HUP");
    run.wait_log("configuration reload rejected", read).await;

    // check-config on a broken copy: a bad secret and a short redaction key.
    std::fs::write(
        dir.path().join("redact.key"),
        format!("{}\n", s.get("a short redaction key")),
    )
    .unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    let check_text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check_text.contains("endpoints[0].redact_key_file"),
        "{check_text}"
    );
    assert!(
        check_text.contains("endpoints[0].secret_files[0]"),
        "{check_text}"
    );
    seen.push(check_text);

    run.signal("TERM");
    let mut run = run;
    let status = tokio::time::timeout(DEADLINE, run.child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    let err = run.err.lock().unwrap().join("\n");
    let out = run.out.lock().unwrap().join("\n");
    if format == "json" {
        for l in err.lines() {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v["level"].is_string(), "{l}");
        }
    }
    for (what, text) in [
        ("the log", &err),
        ("the printed events", &out),
        ("the admin API, metrics or check-config", &seen.join("\n")),
    ] {
        for (secret, needle) in &s.list {
            assert!(
                !text.contains(needle.as_str()),
                "{secret} ({needle}) reached {what}:\n{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_text_logs_metrics_or_the_admin_api() {
    no_secret_leaks("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_json_logs_metrics_or_the_admin_api() {
    no_secret_leaks("json").await;
}
