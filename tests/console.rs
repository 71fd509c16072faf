//! The web console (`/ui/`) in a real browser: Debian's Chromium, headless,
//! driven over WebDriver (chromedriver) by plain HTTP from this test. A SIPp
//! call shows up live on the page with its hostile display name shown as text;
//! a dead letter replayed from the page reaches the receiver.
//!
//! CI installs chromium, chromium-driver and sipp and sets `CI`; elsewhere the
//! test says loudly that it was skipped. `SIPHOOK_CONSOLE_SCREENSHOT=FILE`
//! saves a screenshot of the page (docs/console.png is one).

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::admin::{TOKEN, start};
use common::receiver::{Receiver, Reply};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn tools_available() -> bool {
    let found = |p: &str| {
        std::process::Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let missing: Vec<&str> = ["chromedriver", "chromium", "sipp"]
        .into_iter()
        .filter(|p| !found(p))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let required = ["CI", "SIPHOOK_REQUIRE_TOOLS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    assert!(
        !required,
        "{missing:?} not installed, and CI or SIPHOOK_REQUIRE_TOOLS requires them (apt-get install chromium chromium-driver sip-tester)"
    );
    eprintln!(
        "SKIPPED: {missing:?} not installed (apt-get install chromium chromium-driver sip-tester)"
    );
    false
}

/// A WebDriver session on a chromedriver this test started.
struct Browser {
    base: String,
    session: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = common::free_port(false);
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let client = Client::builder(TokioExecutor::new()).build_http();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            base,
            session: String::new(),
            client,
            _driver: driver,
            _profile: profile,
        };
        // Ready once it answers /status (bounded).
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(v) = b.call("GET", "/status", None).await
                && v["value"]["ready"] == true
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "chromedriver never became ready");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,1100",
                    format!("--user-data-dir={}", b._profile.path().display()),
                ],
            },
        }}});
        let s = b.call("POST", "/session", Some(caps)).await.unwrap();
        b.session = s["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {s}"))
            .to_owned();
        b
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = tokio::time::timeout(common::DEADLINE, self.client.request(req))
            .await
            .map_err(|_| "webdriver timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }

    async fn session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let v = self.call(method, &path, body).await.unwrap();
        assert!(v["value"]["error"].is_null(), "{method} {path}: {v}");
        v["value"].clone()
    }

    async fn script(&self, js: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    /// Polls `js` (an expression) until it is truthy (bounded); returns its value.
    async fn until(&self, js: &str) -> Value {
        for _ in 0..400 {
            let v = self.script(&format!("return {js};")).await;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let html = self.script("return document.body.innerText;").await;
        panic!("the page never showed {js}:\n{html}");
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .session(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.session("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.session(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }
}

async fn play_sipp(target: SocketAddr) -> tokio::process::Child {
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/console_call.xml");
    tokio::process::Command::new("sipp")
        .args(["-sf", scenario, "-t", "u1", "-i", "127.0.0.1", "-p"])
        .arg(common::free_port(true).to_string())
        .args(["-m", "1", "-timeout", "30", "-timeout_error", "-nostdin"])
        .arg(target.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_live_call_safely_and_replays_a_dead_letter() {
    if !tools_available() {
        return;
    }
    // The receiver refuses (422: given up at once) until told otherwise.
    let accept = Arc::new(AtomicBool::new(false));
    let a = accept.clone();
    let mut rx = Receiver::start(Arc::new(move |_| {
        Reply::status(if a.load(Ordering::SeqCst) { 200 } else { 422 })
    }))
    .await;
    let endpoint = format!(
        "[[endpoints]]\nname = \"crm\"\nurl = \"{}\"\nallow_http = true\nsecrets = [\"{SECRET}\"]\ntimeout = \"2s\"\nretry_schedule = [\"0s\"]\n",
        rx.url()
    );
    let s = start(&endpoint, true).await;
    let browser = Browser::start().await;
    let ui = format!("http://{}/ui/", s.admin());
    browser
        .session("POST", "/url", Some(json!({"url": ui})))
        .await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#login button").await;
    browser
        .until(r##"document.querySelector("#status").textContent === "live""##)
        .await;

    let mut sipp = play_sipp(s.bound.udp[0]).await;
    let state = browser
        .until(r##"(document.querySelector("#calls tbody tr td:nth-child(5)") || {}).textContent === "answered""##)
        .await;
    assert_eq!(state, true);
    // The display name is shown as the text it is, and nothing it holds ran.
    let caller = browser
        .script(r##"return document.querySelector("#calls tbody tr td.caller").textContent;"##)
        .await;
    assert_eq!(caller, "<img src=x onerror=window.pwned=1>");
    let injected = browser
        .script(r##"return [document.querySelectorAll("img").length, typeof window.pwned];"##)
        .await;
    assert_eq!(injected, json!([0, "undefined"]));
    if let Ok(path) = std::env::var("SIPHOOK_CONSOLE_SCREENSHOT") {
        let png = browser.session("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    let status = tokio::time::timeout(common::DEADLINE, sipp.wait())
        .await
        .expect("sipp finishes")
        .unwrap();
    assert!(status.success(), "sipp failed: {status}");
    // The call is over: its row goes, and all four events were refused.
    browser
        .until(r##"document.querySelectorAll("#calls tbody tr").length === 0"##)
        .await;
    let mut refused = Vec::new();
    for _ in 0..4 {
        refused.push(rx.next().await);
    }
    let rows = browser
        .until(r##"document.querySelectorAll("#deadletters tbody tr").length === 4 && document.querySelectorAll("#deadletters tbody tr").length"##)
        .await;
    assert_eq!(rows, 4);
    let first = browser
        .script(r##"const b = document.querySelector("#deadletters button.replay"); return [b.dataset.id, b.closest("tr").children[2].textContent];"##)
        .await;
    assert_eq!(first[1], "call.initiated", "{first}");

    accept.store(true, Ordering::SeqCst);
    browser.click("#deadletters button.replay").await;
    let replayed = rx.next().await;
    assert_eq!(
        replayed.header("webhook-id"),
        refused[0].header("webhook-id")
    );
    assert_eq!(replayed.json()["type"], "call.initiated");
    browser
        .until(r##"document.querySelectorAll("#deadletters tbody tr").length === 3"##)
        .await;
    let said = browser
        .script(r##"return document.querySelector("#message").textContent;"##)
        .await;
    assert_eq!(
        said,
        format!("Replayed dead letter {}", first[0].as_str().unwrap())
    );
    let _ = browser
        .call("DELETE", &format!("/session/{}", browser.session), None)
        .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_token_under_a_strict_policy() {
    let s = start("", true).await;
    let page = common::admin::request(s.admin(), "GET", "/ui/", None, None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    let policy = page.header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    // Nothing it loads comes from anywhere but this listener, and no script is inline.
    let html = page.text();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(html.contains(r#"<script src="app.js" defer></script>"#));
    let js = common::admin::request(s.admin(), "GET", "/ui/app.js", None, None).await;
    assert_eq!(js.status, 200);
    assert_eq!(js.header("content-type"), "text/javascript; charset=utf-8");
    assert!(!js.text().contains("innerHTML"), "text is set as text only");
    let bare = common::admin::request(s.admin(), "GET", "/ui", None, None).await;
    assert_eq!((bare.status, bare.header("location")), (308, "/ui/"));
    let none = common::admin::request(s.admin(), "GET", "/ui/nope.js", None, None).await;
    assert_eq!(none.status, 404);
    s.stop().await;
}
