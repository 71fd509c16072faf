//! `siphook tail`: follows a running siphook's event stream (`/v1/events/stream`)
//! and prints one readable line per event, or the raw JSON with `--json`. A
//! dropped stream is resumed where it stopped (`Last-Event-ID`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use siphook::config::Config;

/// Reconnects in a row before giving up: a siphook that stays away this long
/// (about a minute) is stopped, not restarting.
const RECONNECTS: u32 = 30;
const RECONNECT_AFTER: Duration = Duration::from_secs(2);
/// siphook sends a keep-alive every 15 s: a stream silent for this long is a
/// connection that died without a close.
const SILENT: Duration = Duration::from_secs(45);
/// Largest SSE block taken (an event is a few KiB): a URL that points at some
/// other service must not fill memory.
const MAX_BLOCK: usize = 1 << 20;

/// `siphook tail`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// The running siphook's configuration: its admin address and token.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Admin base URL, e.g. http://127.0.0.1:9960 (default: the config's
    /// `[admin] listen`, else http://127.0.0.1:9960).
    #[arg(long)]
    admin: Option<String>,
    /// File holding the admin token (default: the config's `[admin] token_file`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Event types to show, comma-separated globs (`call.*`, `call.completed`).
    #[arg(long)]
    types: Option<String>,
    /// Print each event's JSON as it was stored, one per line.
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::exit(Err(e).context("starting the async runtime")),
    };
    super::exit(runtime.block_on(follow(args)))
}

fn settings(args: &Args) -> anyhow::Result<(String, String)> {
    let config = match &args.config {
        Some(path) => Some(Config::load(path)?),
        None => None,
    };
    let admin = match (&args.admin, config.as_ref().map(|c| c.admin.listen)) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(Some(addr))) => format!("http://{addr}"),
        (None, Some(None)) => bail!("the config turns the admin listener off ([admin] listen)"),
        (None, None) => "http://127.0.0.1:9960".to_owned(),
    };
    let token = match (&args.token_file, config.and_then(|c| c.admin.token)) {
        (Some(file), _) => std::fs::read_to_string(file)
            .with_context(|| format!("reading the admin token from {}", file.display()))?
            .trim()
            .to_owned(),
        (None, Some(t)) => t.0,
        (None, None) => {
            bail!("no admin token: give --token-file, or --config with [admin] token_file")
        }
    };
    if token.is_empty() {
        bail!("the admin token file is empty");
    }
    Ok((admin, token))
}

async fn follow(args: Args) -> anyhow::Result<()> {
    let (admin, token) = settings(&args)?;
    let mut url = format!("{admin}/v1/events/stream");
    if let Some(t) = &args.types {
        url.push_str("?types=");
        url.push_str(&percent(t));
    }
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut last_id: Option<String> = None;
    let mut failures = 0;
    loop {
        match stream_once(&client, &url, &token, &mut last_id, args.json).await {
            Ok(Ended::Refused(why)) => bail!("{why}"),
            // Only a stream that carried something counts as a success: a
            // server that answers and closes at once is retried a bounded number
            // of times like one that refuses.
            Ok(Ended::Dropped { streamed: true }) => failures = 0,
            Ok(Ended::Dropped { streamed: false }) if failures < RECONNECTS => failures += 1,
            Ok(Ended::Dropped { streamed: false }) => {
                bail!("{} keeps closing the stream", shown(&url))
            }
            Err(e) if failures < RECONNECTS => {
                if failures == 0 {
                    eprintln!("siphook tail: {e:#}; retrying");
                }
                failures += 1;
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

enum Ended {
    /// The stream ended (siphook stopping, or this client cut off as slow):
    /// worth resuming. `streamed`: it carried at least one frame first.
    Dropped { streamed: bool },
    /// The admin API said no (wrong token, a bad filter): not worth retrying.
    Refused(String),
}

async fn stream_once(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
    token: &str,
    last_id: &mut Option<String>,
    json: bool,
) -> anyhow::Result<Ended> {
    let mut req = hyper::Request::get(url).header("authorization", format!("Bearer {token}"));
    if let Some(id) = last_id.as_deref() {
        req = req.header("last-event-id", id);
    }
    let req = req.body(Empty::new()).context("building the request")?;
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("connecting to {}", shown(url)))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let detail = serde_json::from_slice::<Value>(&text)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let why = format!("{} answered {status}: {detail}", shown(url));
        if status.is_server_error() {
            bail!(why);
        }
        return Ok(Ended::Refused(why));
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut streamed = false;
    loop {
        let frame = match tokio::time::timeout(SILENT, body.frame()).await {
            Ok(Some(frame)) => frame.context("reading the stream")?,
            Ok(None) => break,
            Err(_) => {
                eprintln!("siphook tail: the stream went silent; reconnecting");
                break;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        streamed = true;
        // Searched from where the last search stopped (less a byte of "\n\n").
        let mut from = buf.len().saturating_sub(1);
        buf.extend_from_slice(&data);
        while let Some(at) = buf[from..].windows(2).position(|w| w == b"\n\n") {
            let end = from + at;
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            from = 0;
            show(&String::from_utf8_lossy(&block), last_id, json);
        }
        if buf.len() > MAX_BLOCK {
            bail!(
                "{} sends blocks of over 1 MiB: not a siphook event stream",
                shown(url)
            );
        }
    }
    Ok(Ended::Dropped { streamed })
}

/// Prints one SSE block: an event's line (or JSON), or what a comment says
/// about the stream (missed events, a disconnect).
fn show(block: &str, last_id: &mut Option<String>, json: bool) {
    let (mut id, mut data) = (None, Vec::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push(v);
        } else if let Some(c) = line.strip_prefix(": ")
            && c != "keep-alive"
            && c != "connected"
        {
            eprintln!(
                "siphook tail: {}",
                safe(c.trim_start_matches("disconnected: "))
            );
        }
    }
    if id.is_some() {
        *last_id = id;
    }
    if data.is_empty() {
        return;
    }
    let data = data.join("\n");
    if json {
        println!("{data}");
    } else if let Ok(v) = serde_json::from_str::<Value>(&data) {
        println!("{}", line(&v));
    }
}

/// A URL as an error may show it: without userinfo (`user:password@`).
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}…@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// `time type ani → dnis [disposition] call id`, every caller-chosen field
/// made safe for a terminal.
fn line(v: &Value) -> String {
    let s = |v: &Value| v.as_str().map(safe).unwrap_or_else(|| "-".to_owned());
    let call = &v["call"];
    let mut out = format!(
        "{} {:<16} {} → {}",
        s(&v["timestamp"]),
        s(&v["type"]),
        s(&call["ani"]),
        s(&call["dnis"]),
    );
    if let Some(d) = v["data"]["disposition"].as_str() {
        out.push_str(&format!(" {}", safe(d)));
    }
    out.push_str(&format!(" {}", s(&call["id"])));
    out
}

/// Control characters (a terminal's escape sequences) and bidirectional
/// overrides shown as `?`: a caller chooses the numbers an event carries.
fn safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi || c == '\u{2028}' || c == '\u{2029}' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'*' | b'-' | b'_' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
