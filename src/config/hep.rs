//! `[hep]`: HEPv3 listeners, for capture agents that encapsulate what they saw
//! (Kamailio siptrace, OpenSIPS proto_hep, FreeSWITCH, Asterisk res_hep, heplify).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::Checker;
use super::checker::{DurationText, read_secret_file};
use crate::vocab::Redacted;

/// `[hep]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HepConfig {
    /// UDP listen addresses (one HEP packet per datagram).
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses (a stream of HEP packets framed by their length).
    pub tcp: Vec<SocketAddr>,
    /// When set, packets whose auth-key chunk does not match are dropped, counted.
    pub auth_key: Option<Redacted>,
    /// The key is written in the file itself (`auth_key`, not `auth_key_file`).
    pub auth_key_inline: bool,
    /// With a key, a TCP connection that sends no packet carrying it within this
    /// is closed, counted as an authentication failure.
    pub auth_timeout: Duration,
    /// Capture agents that always get a HEP TCP slot and are not limited per
    /// source.
    pub agents: Vec<IpAddr>,
}

impl Default for HepConfig {
    fn default() -> Self {
        HepConfig {
            udp: Vec::new(),
            tcp: Vec::new(),
            auth_key: None,
            auth_key_inline: false,
            auth_timeout: Duration::from_secs(10),
            agents: Vec::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawHep {
    udp: Option<Vec<String>>,
    tcp: Option<Vec<String>>,
    auth_key: Option<String>,
    auth_key_file: Option<String>,
    auth_timeout: Option<DurationText>,
    agents: Option<Vec<String>>,
}

impl RawHep {
    pub(super) fn validate(self, c: &mut Checker<'_>, sip: &super::SipConfig) -> HepConfig {
        let udp = c.addrs("hep.udp", self.udp, Vec::new());
        let tcp = c.addrs("hep.tcp", self.tcp, Vec::new());
        for (i, a) in udp.iter().enumerate() {
            if sip.udp.contains(a) {
                c.problem(
                    format!("hep.udp[{i}]"),
                    format!("{a} is also a [sip] UDP address"),
                );
            }
        }
        for (i, a) in tcp.iter().enumerate() {
            if sip.tcp.contains(a) {
                c.problem(
                    format!("hep.tcp[{i}]"),
                    format!("{a} is also a [sip] TCP address"),
                );
            }
        }
        let auth_key_inline = self.auth_key.as_ref().is_some_and(|k| !k.is_empty());
        let auth_key = match (self.auth_key, self.auth_key_file) {
            (Some(k), None) if k.is_empty() => None,
            (Some(k), None) => Some(Redacted(k)),
            (None, Some(f)) if f.trim().is_empty() => None,
            (None, Some(f)) => read_secret_file(c, &f, "hep.auth_key_file").map(Redacted),
            (None, None) => None,
            (Some(_), Some(_)) => {
                c.problem("hep", "auth_key and auth_key_file are exclusive".into());
                None
            }
        };
        let d = HepConfig::default();
        HepConfig {
            udp,
            tcp,
            auth_key,
            auth_key_inline,
            auth_timeout: c.duration(
                "hep.auth_timeout",
                self.auth_timeout,
                d.auth_timeout,
                Duration::from_millis(10),
            ),
            agents: c.ips("hep.agents", self.agents),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    #[test]
    fn hep_addresses_must_not_collide_with_sip_and_the_key_is_redacted() {
        let err = Config::parse(
            "[sip]\nudp = [\"127.0.0.1:5060\"]\n[hep]\nudp = [\"127.0.0.1:5060\", \"x\"]\nauth_key = \"k\"\nauth_key_file = \"/nonexistent\"\n",
        );
        let Err(ConfigError::Invalid(p)) = err else {
            panic!("{err:?}")
        };
        let p: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(
            p,
            [
                "hep.udp[1]: invalid socket address \"x\"",
                "hep.udp[0]: 127.0.0.1:5060 is also a [sip] UDP address",
                "hep: auth_key and auth_key_file are exclusive",
            ]
        );
        let c =
            Config::parse("[hep]\nudp = [\"127.0.0.1:9060\"]\nauth_key = \"s3cret\"\n").unwrap();
        assert_eq!(c.hep.udp, ["127.0.0.1:9060".parse().unwrap()]);
        assert!(!format!("{:?}", c.hep).contains("s3cret"));
    }
}
