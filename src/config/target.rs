//! An endpoint's URL scheme picks its transport: `https://` and `http://` are
//! webhooks, `nats://` publishes to NATS JetStream, `kafka://` produces to a
//! Kafka topic. This file reads what the broker transports add to an
//! `[[endpoints]]` entry (servers, subject or topic, auth), so `delivery.rs`
//! keeps the settings every transport shares.

use serde::Deserialize;

use super::Checker;
use super::checker::read_secret_file;
use crate::vocab::Redacted;

/// Where an endpoint's events go, and over what.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A webhook: a signed HTTP POST to this URL.
    Http(hyper::Uri),
    /// A JetStream publish, acknowledged by the stream that stores it.
    Nats(NatsTarget),
    /// A Kafka record, acknowledged by every in-sync replica (`acks=all`).
    Kafka(KafkaTarget),
}

impl Target {
    /// The transport's name, for logs and the admin API.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Http(_) => "http",
            Target::Nats(_) => "nats",
            Target::Kafka(_) => "kafka",
        }
    }
}

/// `url = "nats://host:port[,host:port…]"` with its subject and credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsTarget {
    /// `nats://host:port`, one per server of the cluster, in the order given.
    pub servers: Vec<String>,
    /// The subject, with `{type}` standing for the event type.
    pub subject: String,
    /// How siphook proves who it is; `None` for a server without auth.
    pub auth: Option<NatsAuth>,
}

impl NatsTarget {
    /// The subject an event of this type is published on.
    pub fn subject_for(&self, event_type: &str) -> String {
        self.subject.replace("{type}", event_type)
    }
}

/// `url = "kafka://host:port[,host:port…]"` with its topic.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaTarget {
    /// `host:port` of each bootstrap broker, in the order given.
    pub brokers: Vec<String>,
    /// The topic every event goes to, keyed by its call's id.
    pub topic: String,
}

/// The topic siphook produces to when the endpoint names none.
pub const DEFAULT_TOPIC: &str = "siphook-calls";

/// NATS credentials, each read from a file so none sits in `siphook.toml`.
#[derive(Debug, Clone, PartialEq)]
pub enum NatsAuth {
    /// `auth = { token_file = … }`.
    Token(Redacted),
    /// `auth = { user = …, password_file = … }`.
    UserPassword {
        /// User name (not secret).
        user: String,
        /// Password.
        password: Redacted,
    },
    /// `auth = { nkey_seed_file = … }`: an nkey seed (`SU…`).
    NkeySeed(Redacted),
    /// `auth = { creds_file = … }`: a decentralised-auth `.creds` file (JWT and
    /// seed), kept as its text.
    Creds(Redacted),
}

/// The `auth` table as written: webhook keys and NATS keys side by side.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawAuth {
    pub(super) bearer_token: Option<String>,
    pub(super) bearer_token_file: Option<String>,
    pub(super) basic_user: Option<String>,
    pub(super) basic_password: Option<String>,
    pub(super) basic_password_file: Option<String>,
    pub(super) token_file: Option<String>,
    pub(super) user: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) nkey_seed_file: Option<String>,
    pub(super) creds_file: Option<String>,
}

/// The `auth` table's NATS keys (webhook keys are read by `delivery.rs`).
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(super) struct RawNatsAuth {
    pub(super) token_file: Option<String>,
    pub(super) user: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) nkey_seed_file: Option<String>,
    pub(super) creds_file: Option<String>,
}

impl RawNatsAuth {
    pub(super) fn is_empty(&self) -> bool {
        self.token_file.is_none()
            && self.user.is_none()
            && self.password_file.is_none()
            && self.nkey_seed_file.is_none()
            && self.creds_file.is_none()
    }
}

/// The subject siphook publishes on when the endpoint names none.
pub const DEFAULT_SUBJECT: &str = "siphook.{type}";

/// Reads a `nats://` URL and its subject and auth; `None` (with problems noted)
/// when any of them is unusable.
pub(super) fn nats_target(
    c: &mut Checker<'_>,
    at: &dyn Fn(&str) -> String,
    url: &str,
    subject: Option<String>,
    auth: RawNatsAuth,
) -> Option<NatsTarget> {
    let servers = servers(url, "nats", 4222)
        .map(|s| s.into_iter().map(|hp| format!("nats://{hp}")).collect());
    if servers.is_err() {
        c.problem(
            at("url"),
            format!(
                "invalid NATS URL \"{}\": use nats://host:port[,host:port…] (credentials go in auth, not the URL)",
                redact_url(url)
            ),
        );
    }
    let subject = subject.unwrap_or_else(|| DEFAULT_SUBJECT.to_owned());
    let subject_ok = valid_subject(&subject.replace("{type}", "call.answered"));
    if !subject_ok {
        c.problem(
            at("subject"),
            format!(
                "\"{subject}\" is not a NATS subject to publish on: dot-separated tokens, no spaces, no wildcards (* >); {{type}} stands for the event type"
            ),
        );
    }
    let auth = nats_auth(c, at, auth);
    let servers = servers.ok()?;
    (subject_ok && auth.is_ok()).then_some(NatsTarget {
        servers,
        subject,
        auth: auth.ok()?,
    })
}

/// Reads a `kafka://` URL and its topic; `None` (with problems noted) when
/// unusable. Kafka's TLS and SASL are not supported yet: their settings are
/// refused rather than ignored, so nothing goes out in clear by surprise.
pub(super) fn kafka_target(
    c: &mut Checker<'_>,
    at: &dyn Fn(&str) -> String,
    url: &str,
    topic: Option<String>,
) -> Option<KafkaTarget> {
    let brokers = servers(url, "kafka", 9092);
    if brokers.is_err() {
        c.problem(
            at("url"),
            format!(
                "invalid Kafka URL \"{}\": use kafka://host:port[,host:port…]",
                redact_url(url)
            ),
        );
    }
    let topic = topic.unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
    // Kafka's own rule for a topic name.
    let topic_ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !topic_ok {
        c.problem(
            at("topic"),
            format!("\"{topic}\" is not a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)"),
        );
    }
    let brokers = brokers.ok()?;
    topic_ok.then_some(KafkaTarget { brokers, topic })
}

/// `scheme://a:1,b:2` (the scheme once, or on every server) into one `host:port`
/// per server; the port defaults to `default_port`.
fn servers(url: &str, scheme: &str, default_port: u16) -> Result<Vec<String>, ()> {
    let prefix = format!("{scheme}://");
    let rest = url.strip_prefix(prefix.as_str()).ok_or(())?;
    let mut out = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        let part = part.strip_prefix(prefix.as_str()).unwrap_or(part);
        let part = part.strip_suffix('/').unwrap_or(part);
        if part.is_empty() || part.contains(['@', '/', '?', '#', ' ']) {
            return Err(());
        }
        let (host, port) = match part.rsplit_once(':') {
            // A bracketed IPv6 address without a port has a colon inside.
            Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().map_err(|_| ())?),
            _ => (part, default_port),
        };
        if host.is_empty() || port == 0 {
            return Err(());
        }
        out.push(format!("{host}:{port}"));
    }
    Ok(out)
}

/// A subject one may publish on: non-empty dot-separated tokens, no whitespace
/// and no wildcard (a publish to `*` or `>` is refused by the server).
fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|t| !t.is_empty() && t != "*" && t != ">" && !t.chars().any(|c| c.is_whitespace()))
        && !s.contains(['{', '}'])
}

fn nats_auth(
    c: &mut Checker<'_>,
    at: &dyn Fn(&str) -> String,
    a: RawNatsAuth,
) -> Result<Option<NatsAuth>, ()> {
    let read = |c: &mut Checker<'_>, path: &str, key: &str| {
        read_secret_file(c, path, &at(&format!("auth.{key}"))).map(Redacted)
    };
    let given = [
        a.token_file.is_some(),
        a.user.is_some() || a.password_file.is_some(),
        a.nkey_seed_file.is_some(),
        a.creds_file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        c.problem(
            at("auth"),
            "use one of token_file, user with password_file, nkey_seed_file or creds_file".into(),
        );
        return Err(());
    }
    let auth = match a {
        RawNatsAuth {
            token_file: Some(f),
            ..
        } => read(c, &f, "token_file").map(NatsAuth::Token),
        RawNatsAuth {
            user: Some(user),
            password_file: Some(f),
            ..
        } => read(c, &f, "password_file").map(|password| NatsAuth::UserPassword { user, password }),
        RawNatsAuth {
            user: Some(_),
            password_file: None,
            ..
        }
        | RawNatsAuth {
            user: None,
            password_file: Some(_),
            ..
        } => {
            c.problem(at("auth"), "user and password_file go together".into());
            return Err(());
        }
        RawNatsAuth {
            nkey_seed_file: Some(f),
            ..
        } => {
            let seed = read(c, &f, "nkey_seed_file");
            if let Some(s) = &seed
                && !s.0.starts_with("SU")
            {
                c.problem(
                    at("auth.nkey_seed_file"),
                    format!("\"{f}\" does not hold a user nkey seed (one starting with SU)"),
                );
                return Err(());
            }
            seed.map(NatsAuth::NkeySeed)
        }
        RawNatsAuth {
            creds_file: Some(f),
            ..
        } => {
            let creds = read(c, &f, "creds_file");
            if let Some(s) = &creds
                && !(s.0.contains("BEGIN NATS USER JWT") && s.0.contains("BEGIN USER NKEY SEED"))
            {
                c.problem(
                    at("auth.creds_file"),
                    format!("\"{f}\" is not a NATS .creds file (a user JWT and its nkey seed)"),
                );
                return Err(());
            }
            creds.map(NatsAuth::Creds)
        }
        _ => return Ok(None),
    };
    auth.map(Some).ok_or(())
}

/// Why a key given to an endpoint of the other transport does not apply there.
pub(super) fn foreign_keys(kind: &str) -> &'static str {
    match kind {
        "nats" => {
            "bearer_token and basic_* are for webhooks (http/https); a NATS endpoint takes auth = { token_file | user + password_file | nkey_seed_file | creds_file }"
        }
        "kafka" => {
            "is not supported for Kafka endpoints yet (plaintext only: no TLS or SASL settings)"
        }
        _ => "is for NATS endpoints (nats://) only",
    }
}

/// A URL as a problem may quote it: only its scheme and host. Userinfo, path and
/// query may all carry credentials (`https://user:pw@h/`, a token in a Slack-style
/// path, `?token=…`), so each is cut to `…`. Works on text that does not parse as
/// a URL, which is when it is quoted: a badly escaped password may hold `/`, `?`
/// or `#`, so the host is taken after the last `@`.
pub(super) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let (user, after) = match rest.rfind('@') {
        Some(i) => ("…@", &rest[i + 1..]),
        None => ("", rest),
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let tail = if end < after.len() { "/…" } else { "" };
    format!("{scheme}{user}{}{tail}", &after[..end])
}

/// The `auth` table split by transport: the webhook keys (`None` when none is
/// given) and the NATS keys.
pub(super) fn split_auth(a: Option<RawAuth>) -> (Option<RawAuth>, RawNatsAuth) {
    let Some(mut a) = a else {
        return (None, RawNatsAuth::default());
    };
    let nats = RawNatsAuth {
        token_file: a.token_file.take(),
        user: a.user.take(),
        password_file: a.password_file.take(),
        nkey_seed_file: a.nkey_seed_file.take(),
        creds_file: a.creds_file.take(),
    };
    let webhook = a.bearer_token.is_some()
        || a.bearer_token_file.is_some()
        || a.basic_user.is_some()
        || a.basic_password.is_some()
        || a.basic_password_file.is_some();
    (webhook.then_some(a), nats)
}

/// A webhook URL: absolute, https (or http when allowed), no credentials in it.
pub(super) fn http_url(
    c: &mut Checker<'_>,
    at: &dyn Fn(&str) -> String,
    url: &str,
    allow_http: bool,
) -> Option<hyper::Uri> {
    match url.parse::<hyper::Uri>() {
        Err(e) => {
            let shown = redact_url(url);
            c.problem(at("url"), format!("invalid URL \"{shown}\": {e}"));
            None
        }
        Ok(u) if u.authority().is_some_and(|a| a.as_str().contains('@')) => {
            c.problem(
                at("url"),
                "credentials in the URL are not allowed; use auth".into(),
            );
            None
        }
        Ok(u) => match (u.scheme_str(), u.host()) {
            (Some("https"), Some(_)) => Some(u),
            (Some("http"), Some(_)) if allow_http => Some(u),
            (Some("http"), Some(host)) => {
                c.problem(
                    at("url"),
                    format!("plain http URL (http://{host}/…) refused: use https, or set allow_http = true"),
                );
                None
            }
            _ => {
                c.problem(
                    at("url"),
                    "URL must be absolute: https://host/… (or nats://host:port)".into(),
                );
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_take_one_scheme_or_many_and_default_the_port() {
        assert_eq!(
            servers(
                "nats://127.0.0.1:4222,10.0.0.2,nats://h3:4333/",
                "nats",
                4222
            ),
            Ok(vec![
                "127.0.0.1:4222".to_owned(),
                "10.0.0.2:4222".to_owned(),
                "h3:4333".to_owned(),
            ])
        );
        assert_eq!(
            servers("kafka://k1,k2:9093", "kafka", 9092),
            Ok(vec!["k1:9092".to_owned(), "k2:9093".to_owned()])
        );
        for bad in [
            "nats://",
            "nats://u:p@h:4222",
            "nats://h:notaport",
            "nats://h:0",
            "nats://h:4222/path",
            "tls://h:4222",
            "nats://a,,b",
        ] {
            assert_eq!(servers(bad, "nats", 4222), Err(()), "{bad}");
        }
    }

    #[test]
    fn broker_endpoints_refuse_what_their_transport_cannot_honour() {
        use crate::config::{Config, ConfigError};
        let text = r#"
            [[endpoints]]
            name = "bus"
            url = "kafka://127.0.0.1:9092"
            topic = "bad topic"
            auth = { token_file = "/nonexistent" }
            ca_file = "/nonexistent"
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            [[endpoints]]
            name = "crm"
            url = "https://crm.example/hook"
            topic = "calls"
            subject = "calls"
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            [[endpoints]]
            name = "stream"
            url = "nats://127.0.0.1:4222"
            subject = "calls.>"
            auth = { bearer_token = "t" }
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
        "#;
        let Err(ConfigError::Invalid(p)) = Config::parse(text) else {
            panic!("must fail")
        };
        let keys: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        let starts = |k: &str| keys.iter().any(|p| p.starts_with(k));
        for k in [
            "endpoints[0].auth: is not supported for Kafka endpoints yet",
            "endpoints[0].ca_file: is not supported for Kafka endpoints yet",
            "endpoints[0].topic: \"bad topic\" is not a Kafka topic name",
            "endpoints[1].subject: is for NATS endpoints",
            "endpoints[1].topic: is for Kafka endpoints",
            "endpoints[2].auth: bearer_token and basic_* are for webhooks",
            "endpoints[2].subject: \"calls.>\" is not a NATS subject",
        ] {
            assert!(starts(k), "no {k:?} in {keys:#?}");
        }
        let ok = Config::parse(
            "[[endpoints]]\nname = \"bus\"\nurl = \"kafka://k1,k2:9093\"\n\
             secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n",
        )
        .unwrap();
        assert_eq!(
            ok.endpoints[0].target,
            Target::Kafka(KafkaTarget {
                brokers: vec!["k1:9092".into(), "k2:9093".into()],
                topic: DEFAULT_TOPIC.into(),
            })
        );
        assert_eq!(
            ok.endpoints[0].circuit_probe_interval,
            std::time::Duration::from_secs(1)
        );
    }

    #[test]
    fn subjects_to_publish_on() {
        assert!(valid_subject("siphook.call.answered"));
        assert!(valid_subject("calls"));
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a", "a.", "x.{typo}"] {
            assert!(!valid_subject(bad), "{bad}");
        }
        let t = NatsTarget {
            servers: vec![],
            subject: DEFAULT_SUBJECT.into(),
            auth: None,
        };
        assert_eq!(t.subject_for("call.answered"), "siphook.call.answered");
    }
}
