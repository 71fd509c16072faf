//! `[[endpoints]]`: where events go, signed how, retried how, redacted how.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Checker;
use super::checker::{DurationText, read_secret_file};
use super::redact::{Redaction, validate_redact};
use super::target::{self, RawAuth, Target, http_url, split_auth};
use crate::vocab::{Redacted, Secret};

/// How siphook authenticates to an endpoint, besides the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(Redacted),
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// User name (not secret).
        user: String,
        /// Password.
        password: Redacted,
    },
}

/// Body encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`.
    Json,
    /// `application/x-www-form-urlencoded` with flattened keys (`call.from.user=…`).
    Form,
}

/// Body shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The event as documented in `docs/events.md`.
    Siphook,
    /// CloudEvents 1.0 structured mode wrapping the event as `data`.
    CloudEvents,
}

/// One `[[endpoints]]` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Unique name: metrics label, dead-letter key, admin API path segment.
    pub name: String,
    /// Where events go: a webhook URL (https, or http with `allow_http`) or a
    /// NATS JetStream subject.
    pub target: Target,
    /// Event type globs this endpoint receives.
    pub events: Vec<String>,
    /// DNIS globs; empty means any.
    pub match_dnis: Vec<String>,
    /// ANI globs; empty means any.
    pub match_ani: Vec<String>,
    /// Signing secrets; several during rotation.
    pub secrets: Vec<Secret>,
    /// Extra authentication of a webhook (a NATS endpoint's is in its target).
    pub auth: Option<Auth>,
    /// Extra static headers (values may be API keys: never printed).
    pub headers: Vec<(String, Redacted)>,
    /// Body encoding.
    pub encoding: Encoding,
    /// Body shape.
    pub format: Format,
    /// Deadline of one attempt: connect, send, and read the whole response.
    pub timeout: Duration,
    /// Attempts in flight at once (different calls).
    pub max_in_flight: usize,
    /// Delay before each attempt; its length is the number of attempts.
    pub retry_schedule: Vec<Duration>,
    /// While the circuit is open (10 consecutive failures), one probe per interval.
    pub circuit_probe_interval: Duration,
    /// Trust the operating system's certificate store instead of the bundled
    /// webpki roots (`ca_file` is added either way).
    pub native_roots: bool,
    /// Extra trust anchor (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain for mTLS (PEM).
    pub client_cert_file: Option<PathBuf>,
    /// Client private key for mTLS (PEM).
    pub client_key_file: Option<PathBuf>,
    /// A secret or credential is written in the file itself (`secrets`,
    /// `auth.bearer_token`, `auth.basic_password`, or static `headers`, which may
    /// carry API keys): a warning if others can read it.
    pub inline_secrets: bool,
    /// PII this endpoint must not see in clear (`redact`, `redact_mode`,
    /// `redact_key_file`); `None` sends events as stored.
    pub redact: Option<Redaction>,
}

impl EndpointConfig {
    /// Whether this endpoint subscribes to an event with this type, DNIS and ANI.
    pub fn wants(&self, event_type: &str, dnis: Option<&str>, ani: Option<&str>) -> bool {
        let any = |globs: &[String], v: Option<&str>| {
            globs.is_empty() || v.is_some_and(|v| globs.iter().any(|g| glob_match(g, v)))
        };
        self.events.iter().any(|g| glob_match(g, event_type))
            && any(&self.match_dnis, dnis)
            && any(&self.match_ani, ani)
    }
}

/// `*` matches any run of characters, `?` any one; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawEndpoint {
    name: Option<String>,
    url: Option<String>,
    subject: Option<String>,
    topic: Option<String>,
    events: Option<Vec<String>>,
    #[serde(rename = "match")]
    match_: RawMatch,
    secrets: Vec<String>,
    secret_files: Vec<String>,
    auth: Option<RawAuth>,
    headers: std::collections::BTreeMap<String, String>,
    encoding: Option<String>,
    format: Option<String>,
    timeout: Option<DurationText>,
    max_in_flight: Option<i64>,
    retry_schedule: Option<Vec<DurationText>>,
    circuit_probe_interval: Option<DurationText>,
    allow_http: bool,
    tls_roots: Option<String>,
    ca_file: Option<String>,
    client_cert_file: Option<String>,
    client_key_file: Option<String>,
    redact: Vec<String>,
    redact_mode: Option<String>,
    redact_key_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMatch {
    dnis: Vec<String>,
    ani: Vec<String>,
}

/// The Svix / Standard Webhooks schedule: 8 attempts over about 28 hours.
pub fn default_retry_schedule() -> Vec<Duration> {
    [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// Headers siphook sets itself; an endpoint may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "authorization",
    "user-agent",
];

pub(super) fn validate_endpoints(
    raw: Vec<RawEndpoint>,
    c: &mut Checker<'_>,
) -> Vec<EndpointConfig> {
    let mut out: Vec<EndpointConfig> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = |k: &str| format!("endpoints[{i}].{k}");
        let name = match r.name {
            Some(n)
                if !n.is_empty()
                    && n.len() <= 64
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                n
            }
            Some(n) => {
                c.problem(
                    at("name"),
                    format!("invalid name \"{n}\" (1-64 of A-Z a-z 0-9 - _ .)"),
                );
                continue;
            }
            None => {
                c.problem(at("name"), "missing".into());
                continue;
            }
        };
        if out.iter().any(|e| e.name == name) {
            c.problem(at("name"), format!("duplicate endpoint name \"{name}\""));
        }
        let (auth_raw, nats_auth) = split_auth(r.auth);
        let target = match r.url.as_deref() {
            None => {
                c.problem(at("url"), "missing".into());
                None
            }
            Some(u) if u.starts_with("nats://") => {
                if auth_raw.is_some() {
                    c.problem(at("auth"), target::foreign_keys("nats").into());
                }
                if r.topic.is_some() {
                    c.problem(
                        at("topic"),
                        "is for Kafka endpoints (kafka://); a NATS endpoint publishes on subject"
                            .into(),
                    );
                }
                target::nats_target(c, &at, u, r.subject, nats_auth).map(Target::Nats)
            }
            Some(u) if u.starts_with("kafka://") => {
                if r.subject.is_some() {
                    c.problem(
                        at("subject"),
                        "is for NATS endpoints (nats://); a Kafka endpoint produces to topic"
                            .into(),
                    );
                }
                for (given, key) in [
                    (auth_raw.is_some() || !nats_auth.is_empty(), "auth"),
                    (r.tls_roots.is_some(), "tls_roots"),
                    (r.ca_file.is_some(), "ca_file"),
                    (r.client_cert_file.is_some(), "client_cert_file"),
                    (r.client_key_file.is_some(), "client_key_file"),
                ] {
                    if given {
                        c.problem(at(key), target::foreign_keys("kafka").into());
                    }
                }
                target::kafka_target(c, &at, u, r.topic.clone()).map(Target::Kafka)
            }
            Some(u) => {
                if !nats_auth.is_empty() {
                    c.problem(
                        at("auth"),
                        "token_file, user, password_file, nkey_seed_file and creds_file are for NATS endpoints (nats://); a webhook takes auth = { bearer_token_file | basic_user + basic_password_file }".into(),
                    );
                }
                if r.subject.is_some() {
                    c.problem(at("subject"), target::foreign_keys("http").into());
                }
                if r.topic.is_some() {
                    c.problem(at("topic"), "is for Kafka endpoints (kafka://) only".into());
                }
                http_url(c, &at, u, r.allow_http).map(Target::Http)
            }
        };
        let events = r.events.unwrap_or_else(|| vec!["call.*".into()]);
        if events.is_empty() {
            c.problem(at("events"), "subscribes to nothing".into());
        }
        let mut secrets = Vec::new();
        for (j, s) in r.secrets.iter().enumerate() {
            match Secret::parse(s) {
                Ok(s) => secrets.push(s),
                Err(e) => c.problem(format!("endpoints[{i}].secrets[{j}]"), e.to_string()),
            }
        }
        for (j, path) in r.secret_files.iter().enumerate() {
            let key = format!("endpoints[{i}].secret_files[{j}]");
            if let Some(text) = read_secret_file(c, path, &key) {
                match Secret::parse(&text) {
                    Ok(s) => secrets.push(s),
                    Err(e) => c.problem(key, format!("\"{path}\": {e}")),
                }
            }
        }
        // A secret that was given but is bad is reported above; "required" is only
        // for an endpoint that names none at all.
        if r.secrets.is_empty() && r.secret_files.is_empty() {
            c.problem(
                at("secrets"),
                "at least one secret (secrets or secret_files) is required to sign events".into(),
            );
        }
        let mut inline_secrets = !r.secrets.is_empty() || !r.headers.is_empty();
        let auth = auth_raw.and_then(|a| {
            inline_secrets |= a.bearer_token.is_some() || a.basic_password.is_some();
            let token = match (a.bearer_token, a.bearer_token_file) {
                (Some(t), None) => Some(t),
                (None, Some(f)) => read_secret_file(c, &f, &at("auth.bearer_token_file")),
                (Some(_), Some(_)) => {
                    c.problem(
                        at("auth"),
                        "bearer_token and bearer_token_file are exclusive".into(),
                    );
                    None
                }
                (None, None) => None,
            };
            let password = match (a.basic_password, a.basic_password_file) {
                (Some(p), None) => Some(p),
                (None, Some(f)) => read_secret_file(c, &f, &at("auth.basic_password_file")),
                _ => None,
            };
            match (token, a.basic_user, password) {
                (Some(t), None, None) => Some(Auth::Bearer(Redacted(t))),
                (None, Some(user), Some(p)) => Some(Auth::Basic {
                    user,
                    password: Redacted(p),
                }),
                (None, None, None) => None,
                _ => {
                    c.problem(
                        at("auth"),
                        "use either a bearer token or basic_user with a password".into(),
                    );
                    None
                }
            }
        });
        let mut headers = Vec::new();
        for (k, v) in r.headers {
            let bad_name = k.parse::<hyper::header::HeaderName>().is_err();
            // `Nats-*` headers steer JetStream (`Nats-Expected-Last-Sequence` would
            // make every publish fail): siphook's own, on every transport.
            let lower = k.to_ascii_lowercase();
            if bad_name || RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("nats-")
            {
                c.problem(
                    format!("endpoints[{i}].headers.{k}"),
                    "invalid or reserved header name".into(),
                );
            } else if v.parse::<hyper::header::HeaderValue>().is_err() {
                c.problem(
                    format!("endpoints[{i}].headers.{k}"),
                    "invalid header value".into(),
                );
            } else {
                headers.push((k, Redacted(v)));
            }
        }
        let encoding = match r.encoding.as_deref() {
            None | Some("json") => Encoding::Json,
            Some("form") => Encoding::Form,
            Some(o) => {
                c.problem(
                    at("encoding"),
                    format!("\"{o}\" is not one of \"json\", \"form\""),
                );
                Encoding::Json
            }
        };
        let format = match r.format.as_deref() {
            None | Some("siphook") => Format::Siphook,
            Some("cloudevents") => Format::CloudEvents,
            Some(o) => {
                c.problem(
                    at("format"),
                    format!("\"{o}\" is not one of \"siphook\", \"cloudevents\""),
                );
                Format::Siphook
            }
        };
        let retry_schedule = match r.retry_schedule {
            None => default_retry_schedule(),
            Some(list) if list.is_empty() => {
                c.problem(at("retry_schedule"), "needs at least one attempt".into());
                default_retry_schedule()
            }
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(j, d)| {
                    c.duration(
                        &format!("endpoints[{i}].retry_schedule[{j}]"),
                        Some(d),
                        Duration::ZERO,
                        Duration::ZERO,
                    )
                })
                .collect(),
        };
        let file = |c: &mut Checker<'_>, v: Option<String>, key: &str| -> Option<PathBuf> {
            let p = v.filter(|p| !p.is_empty())?;
            if std::fs::metadata(&p).is_err() {
                c.problem(at(key), format!("cannot read \"{p}\""));
            }
            Some(PathBuf::from(p))
        };
        let native_roots = match r.tls_roots.as_deref() {
            None | Some("webpki") => false,
            Some("native") => true,
            Some(o) => {
                c.problem(
                    at("tls_roots"),
                    format!("\"{o}\" is not one of \"webpki\", \"native\""),
                );
                false
            }
        };
        let ca_file = file(c, r.ca_file, "ca_file");
        let client_cert_file = file(c, r.client_cert_file, "client_cert_file");
        let client_key_file = file(c, r.client_key_file, "client_key_file");
        if client_cert_file.is_some() != client_key_file.is_some() {
            c.problem(
                at("client_cert_file"),
                "client_cert_file and client_key_file go together".into(),
            );
        }
        let timeout = c.duration(
            &at("timeout"),
            r.timeout,
            Duration::from_secs(10),
            Duration::from_millis(10),
        );
        let max_in_flight = c.count(&at("max_in_flight"), r.max_in_flight, 64, (1, 4096));
        // A broker that is down costs nothing to probe (the client knows it is
        // not connected) and its events should flow the moment it is back.
        let probe_default = match target {
            Some(Target::Nats(_) | Target::Kafka(_)) => Duration::from_secs(1),
            _ => Duration::from_secs(30),
        };
        let circuit_probe_interval = c.duration(
            &at("circuit_probe_interval"),
            r.circuit_probe_interval,
            probe_default,
            Duration::from_millis(10),
        );
        let redact = validate_redact(c, i, r.redact, r.redact_mode, r.redact_key_file);
        let Some(target) = target else { continue };
        out.push(EndpointConfig {
            name,
            target,
            events,
            match_dnis: r.match_.dnis,
            match_ani: r.match_.ani,
            secrets,
            auth,
            headers,
            encoding,
            format,
            timeout,
            max_in_flight,
            retry_schedule,
            circuit_probe_interval,
            native_roots,
            ca_file,
            client_cert_file,
            client_key_file,
            redact,
            inline_secrets,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::target::redact_url;
    use crate::config::{Config, ConfigError};

    #[test]
    fn globs() {
        assert!(glob_match("call.*", "call.completed"));
        assert!(glob_match("+1555*", "+15551234567"));
        assert!(!glob_match("+1555*", "+14441234567"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("call.completed", "call.answered"));
    }

    #[test]
    fn endpoint_problems_are_all_reported_and_secrets_never_echoed() {
        let text = r#"
            [[endpoints]]
            name = "crm"
            url = "http://127.0.0.1:8080/hook"
            secrets = ["whsec_notbase64!!", "whsec_c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw=="]
            headers = { "Authorization" = "x" }
            encoding = "xml"
            retry_schedule = ["0s", "soon"]
            [[endpoints]]
            url = "https://h/"
        "#;
        let Err(ConfigError::Invalid(p)) = Config::parse(text) else {
            panic!("must fail")
        };
        let got: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                "endpoints[0].url: plain http URL (http://127.0.0.1/…) refused: use https, or set allow_http = true",
                "endpoints[0].secrets[0]: secret is not valid base64 after \"whsec_\"",
                "endpoints[0].headers.Authorization: invalid or reserved header name",
                "endpoints[0].encoding: \"xml\" is not one of \"json\", \"form\"",
                "endpoints[0].retry_schedule[1]: invalid duration \"soon\" (use e.g. \"250ms\", \"32s\", \"3m\", \"4h\")",
                "endpoints[1].name: missing",
            ]
        );
        assert!(!got.concat().contains("c2VjcmV0"), "a secret was echoed");
    }

    #[test]
    fn an_invalid_url_is_quoted_without_credentials_and_says_why() {
        let text = r#"
            [[endpoints]]
            name = "crm"
            url = "https://bob:hunter2@crm example/hook?token=s3cret#top"
            secrets = ["whsec_notbase64!!"]
        "#;
        let Err(ConfigError::Invalid(p)) = Config::parse(text) else {
            panic!("must fail")
        };
        let got: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].starts_with("endpoints[0].url: invalid URL \"https://…@crm example/…\": "),
            "{got:#?}"
        );
        let reason = got[0].split("/…\": ").nth(1).unwrap_or_default();
        assert!(!reason.is_empty(), "no reason given: {got:#?}");
        assert!(!got.concat().contains("hunter2") && !got.concat().contains("s3cret"));
        // The bad secret is reported once, not also as a missing one.
        assert_eq!(
            got[1],
            "endpoints[0].secrets[0]: secret is not valid base64 after \"whsec_\""
        );
        assert_eq!(redact_url("crm.example/x?a=1"), "crm.example/…");
        assert_eq!(redact_url("https://h:8443"), "https://h:8443");
        // A password with a slash, a hash or a path token never shows.
        for (url, shown) in [
            (
                "https://bob:hun/ter2@crm.example/hook",
                "https://…@crm.example/…",
            ),
            ("https://bob:pa#ss@h/", "https://…@h/…"),
            (
                "https://hooks.example/services/T000/B000/XXXX",
                "https://hooks.example/…",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn a_valid_endpoint() {
        let text = r#"
            [outbox]
            path = "/tmp/x"
            [[endpoints]]
            name = "crm"
            url = "http://127.0.0.1:8080/hook"
            allow_http = true
            events = ["call.completed"]
            match = { dnis = ["+1555*"] }
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            auth = { bearer_token = "t0k3n" }
            retry_schedule = ["0s", "1s"]
        "#;
        let c = Config::parse(text).unwrap();
        let e = &c.endpoints[0];
        assert_eq!(
            e.retry_schedule,
            vec![Duration::ZERO, Duration::from_secs(1)]
        );
        assert!(e.wants("call.completed", Some("+15551234567"), None));
        assert!(!e.wants("call.completed", Some("+4930123"), None));
        assert!(!e.wants("call.answered", Some("+15551234567"), None));
        assert_eq!(format!("{:?}", e.auth), "Some(Bearer(<redacted>))");
        assert_eq!(c.outbox.path, PathBuf::from("/tmp/x"));
    }
}
