//! Settings that are valid but risky: the file loads, and the operator is told why
//! it should not stay that way (`check-config` prints these, `run` logs them).

use std::net::SocketAddr;
use std::path::Path;

use super::{Config, glob_match};
use crate::vocab::EVENT_TYPES;

/// The signing secret of config/siphook.toml's endpoint examples: it is public, so
/// an endpoint still signing with it can be sent forged webhooks.
const EXAMPLE_SECRET: &str = "whsec_ZXhhbXBsZS1vbmx5LXNlY3JldC1yZXBsYWNlLW1lISE=";

impl Config {
    /// What an operator should change, for this configuration read from `path`
    /// (the file's permissions matter when it holds secrets). Empty when nothing.
    pub fn warnings(&self, path: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for key in &self.outbox.obsolete {
            out.push(format!(
                "{key} is no longer used: the outbox's segment log keeps its disk bounded \
                 without compaction; remove it"
            ));
        }
        // A glob that matches no type is a typo (`call.complete`): valid, but the
        // endpoint would silently never receive what the operator meant.
        for (i, e) in self.endpoints.iter().enumerate() {
            for (j, glob) in e.events.iter().enumerate() {
                if !EVENT_TYPES.iter().any(|t| glob_match(glob, t)) {
                    out.push(format!(
                        "endpoints[{i}].events[{j}] \"{glob}\" matches no event type, so \
                         endpoint {} receives nothing for it (the types: {}; globs like \
                         \"call.*\" work)",
                        e.name,
                        EVENT_TYPES.join(", ")
                    ));
                }
            }
        }
        let example = crate::vocab::Secret::parse(EXAMPLE_SECRET).ok();
        for (i, e) in self.endpoints.iter().enumerate() {
            if example.as_ref().is_some_and(|x| e.secrets.contains(x)) {
                out.push(format!(
                    "endpoints[{i}] ({}) signs with the example secret from the shipped \
                     config, which anyone can read and forge webhooks with: make your own \
                     (the comment above the example says how)",
                    e.name
                ));
            }
        }
        // async-nats upgrades to TLS only when the server asks: an operator who set
        // no TLS of their own should know that events may cross the network in clear.
        for (i, e) in self.endpoints.iter().enumerate() {
            if let super::Target::Kafka(k) = &e.target
                && let Some(broker) = k
                    .brokers
                    .iter()
                    .find(|b| !loopback_server(&format!("kafka://{b}")))
            {
                out.push(format!(
                    "endpoints[{i}] ({}) produces to Kafka at {broker} in plaintext (this \
                     release has no Kafka TLS or SASL): events cross the network in clear; \
                     keep the brokers on a trusted network",
                    e.name
                ));
            }
            let super::Target::Nats(t) = &e.target else {
                continue;
            };
            let own_tls = e.ca_file.is_some() || e.client_cert_file.is_some() || e.native_roots;
            let remote = t.servers.iter().find(|s| !loopback_server(s));
            if let (false, Some(server)) = (own_tls, remote) {
                out.push(format!(
                    "endpoints[{i}] ({}) publishes to {server} without TLS settings of its own: \
                     events{} go in clear unless that server requires TLS; set ca_file (or \
                     tls_roots = \"native\") to insist on it",
                    e.name,
                    if t.auth.is_some() {
                        " and credentials"
                    } else {
                        ""
                    }
                ));
            }
        }
        if let Some(a) = self.admin.listen.filter(|a| !a.ip().is_loopback()) {
            out.push(format!(
                "admin.listen {a} is not loopback: /metrics and the bearer-token API /v1 \
                 are plain HTTP; keep it on loopback or put a TLS proxy in front"
            ));
        }
        if self.hep.auth_key.is_none() {
            let public = |key: &str, addrs: &[SocketAddr]| {
                addrs
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| !a.ip().is_loopback())
                    .map(|(i, a)| format!("{key}[{i}] {a}"))
                    .collect::<Vec<_>>()
            };
            for at in public("hep.udp", &self.hep.udp)
                .into_iter()
                .chain(public("hep.tcp", &self.hep.tcp))
            {
                out.push(format!(
                    "{at} is not loopback and [hep] has no auth key: anyone who \
                     reaches it can inject calls"
                ));
            }
        }
        if readable_by_others(path) {
            let inline: Vec<String> = self
                .endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| e.inline_secrets)
                .map(|(i, e)| format!("endpoints[{i}] ({})", e.name))
                .chain(self.hep.auth_key_inline.then(|| "hep.auth_key".to_owned()))
                .collect();
            if !inline.is_empty() {
                out.push(format!(
                    "{} hold secrets written in {}, which other users can read: move \
                     them to files (secret_files, *_file, auth_key_file; systemd \
                     LoadCredential=) or chmod 600 the file (static headers can \
                     only be written there)",
                    inline.join(", "),
                    path.display()
                ));
            }
        }
        out
    }
}

/// Whether `nats://host:port` (or `kafka://`) names this machine.
fn loopback_server(server: &str) -> bool {
    let host = server
        .trim_start_matches("nats://")
        .trim_start_matches("kafka://")
        .rsplit_once(':')
        .map_or(server, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn file(text: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("siphook.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn the_shipped_config_has_nothing_to_warn_about() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/siphook.toml");
        assert_eq!(
            Config::load(&path).unwrap().warnings(&path),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_events_glob_that_matches_no_type_is_named() {
        let text = format!(
            "[[endpoints]]\nname = \"crm\"\nurl = \"https://crm.example/hook\"\n\
             secrets = [\"{SECRET}\"]\nevents = [\"call.completed\", \"call.complete\", \"call.*\"]\n"
        );
        let (_d, path) = file(&text, 0o600);
        let w = Config::load(&path).unwrap().warnings(&path);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].starts_with(
                "endpoints[0].events[1] \"call.complete\" matches no event type, so endpoint crm"
            ),
            "{w:#?}"
        );
        assert!(w[0].contains("call.initiated, call.ringing"), "{w:#?}");
    }

    #[test]
    fn nats_without_tls_to_another_host_is_named() {
        let text = format!(
            "[[endpoints]]\nname = \"bus\"\nurl = \"nats://127.0.0.1:4222,10.0.0.7:4222\"\n\
             secrets = [\"{SECRET}\"]\n"
        );
        let (_d, path) = file(&text, 0o600);
        let w = Config::load(&path).unwrap().warnings(&path);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            w[0],
            "endpoints[0] (bus) publishes to nats://10.0.0.7:4222 without TLS settings of its \
             own: events go in clear unless that server requires TLS; set ca_file (or \
             tls_roots = \"native\") to insist on it"
        );
        let kafka = format!(
            "[[endpoints]]\nname = \"bus\"\nurl = \"kafka://localhost:9092,10.0.0.8:9092\"\n\
             secrets = [\"{SECRET}\"]\n"
        );
        let (_k, path) = file(&kafka, 0o600);
        let w = Config::load(&path).unwrap().warnings(&path);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("endpoints[0] (bus) produces to Kafka at 10.0.0.8:9092 in plaintext"),
            "{w:?}"
        );
        let local = text.replace(",10.0.0.7:4222", ",[::1]:4222");
        let (_d, path) = file(&local, 0o600);
        assert_eq!(
            Config::load(&path).unwrap().warnings(&path),
            Vec::<String>::new()
        );
    }

    #[test]
    fn public_admin_and_keyless_public_hep_are_named() {
        let text = "[sip]\nudp = []\ntcp = []\n[hep]\nudp = [\"127.0.0.1:9060\", \"0.0.0.0:9061\"]\n\
                    tcp = [\"[::]:9062\"]\n[admin]\nlisten = \"0.0.0.0:9960\"\n";
        let (_d, path) = file(text, 0o600);
        let w = Config::load(&path).unwrap().warnings(&path);
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(w[0].starts_with("admin.listen 0.0.0.0:9960 is not loopback"));
        assert!(w[1].starts_with("hep.udp[1] 0.0.0.0:9061 is not loopback"));
        assert!(w[2].starts_with("hep.tcp[0] [::]:9062 is not loopback"));
    }

    #[test]
    fn inline_secrets_in_a_file_others_can_read() {
        let text = format!(
            "[sip]\nudp = []\ntcp = []\n[hep]\nauth_key = \"k-123\"\n[[endpoints]]\nname = \"crm\"\n\
             url = \"https://crm.example/hook\"\nsecrets = [\"{SECRET}\"]\n"
        );
        let (_d, open) = file(&text, 0o644);
        let w = Config::load(&open).unwrap().warnings(&open);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].starts_with("endpoints[0] (crm), hep.auth_key hold secrets written in"));
        assert!(!w[0].contains(SECRET) && !w[0].contains("k-123"));
        let (_d, closed) = file(&text, 0o600);
        assert!(Config::load(&closed).unwrap().warnings(&closed).is_empty());
    }
}
