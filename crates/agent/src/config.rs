//! The agent's configuration: where the cluster is, and the certificate
//! intents it keeps fresh. Everything is checked when the file is read, so
//! a typo fails the start with the field to fix instead of failing a
//! renewal hours later.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::keys::KeyAlgorithm;
use crate::AgentError;

/// `agent.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Where versions, pending keys and `status.json` live. One agent per
    /// state directory.
    pub state_dir: PathBuf,
    /// `host:port` for Prometheus metrics (`GET /metrics`); none by default.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// `[cluster]`: how to reach the cluster.
    pub cluster: ClusterConfig,
    /// `[[intent]]`: the certificates to keep fresh.
    #[serde(rename = "intent", default)]
    pub intents: Vec<Intent>,
}

/// `[cluster]` of the agent's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Public API addresses (`host:port` or `region=host:port`), for
    /// renewals and the trust bundle.
    pub endpoints: Vec<String>,
    /// Enrolment addresses, for a first certificate with a join token.
    #[serde(default)]
    pub enroll_endpoints: Vec<String>,
    /// Roots (PEM) that authenticate the nodes. The synced trust bundle is
    /// trusted too, so a root rotation does not cut the agent off.
    pub ca_file: PathBuf,
    /// Endpoints of this region are tried first.
    #[serde(default)]
    pub region: Option<String>,
    /// Longest wait between two attempts while the cluster cannot be
    /// reached (backoff doubles from one second up to this).
    #[serde(default = "default_retry_max", with = "humantime_serde_compat")]
    pub retry_max: Duration,
    /// Deadline of one renewal call, failover between nodes included.
    #[serde(default = "default_call_timeout", with = "humantime_serde_compat")]
    pub call_timeout: Duration,
}

fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}

fn default_call_timeout() -> Duration {
    Duration::from_secs(15)
}

/// One certificate the agent keeps fresh.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Unique; names the intent's directory under `state_dir`.
    pub name: String,
    /// DNS names to ask for.
    #[serde(default)]
    pub dns: Vec<String>,
    /// IP addresses to ask for.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// URIs to ask for.
    #[serde(default)]
    pub uris: Vec<String>,
    /// Added to the URI SANs.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Namespace and profile for a first certificate through
    /// `bootstrap_credentials` (a join token carries its own).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The profile for a first certificate through `bootstrap_credentials`.
    #[serde(default)]
    pub profile: Option<String>,
    /// The key type generated for each certificate.
    #[serde(default)]
    pub key_algorithm: KeyAlgorithm,
    /// Requested lifetime; the profile's default when absent.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub lifetime: Option<Duration>,
    /// Renew after this fraction of the lifetime...
    #[serde(default = "default_renew_at")]
    pub renew_at: f64,
    /// ...minus up to this fraction, drawn at random per certificate, so a
    /// fleet issued together does not renew together.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Keep the key across renewals (a new key each time by default).
    #[serde(default)]
    pub reuse_key: bool,
    /// Where the private key is written (mode `key_mode`).
    pub key_file: PathBuf,
    /// Where the leaf certificate is written.
    pub cert_file: PathBuf,
    /// Where the leaf and its intermediate are written together, if wanted.
    #[serde(default)]
    pub chain_file: Option<PathBuf>,
    /// The cluster's roots (PEM), rewritten when the trust bundle changes.
    #[serde(default)]
    pub bundle_file: Option<PathBuf>,
    /// Octal, e.g. "0600".
    #[serde(default = "default_key_mode")]
    pub key_mode: String,
    /// Octal mode of the certificate, chain and bundle files.
    #[serde(default = "default_cert_mode")]
    pub cert_mode: String,
    /// `user:group` (names or numbers) that owns the written files.
    #[serde(default)]
    pub owner: Option<String>,
    /// A file holding a join token (`qca_jt_...`) for the first
    /// certificate.
    #[serde(default)]
    pub join_token_file: Option<PathBuf>,
    /// A credential bundle (ca.pem, cert.pem, key.pem) allowed to issue in
    /// `namespace`, for the first certificate instead of a join token.
    #[serde(default)]
    pub bootstrap_credentials: Option<PathBuf>,
    /// What tells the workload new files are in place; nothing by default.
    #[serde(default)]
    pub reload: Option<Reload>,
}

fn default_renew_at() -> f64 {
    2.0 / 3.0
}
fn default_jitter() -> f64 {
    0.1
}
fn default_key_mode() -> String {
    "0600".into()
}
fn default_cert_mode() -> String {
    "0644".into()
}

/// What tells the workload that new files are in place.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, untagged)]
pub enum Reload {
    /// Run a command (argv, no shell); it must exit 0 within 30 s.
    Command {
        /// The argv.
        command: Vec<String>,
    },
    /// Send a signal (e.g. "HUP") to the pid in a pid file.
    Signal {
        /// The signal's name, e.g. "HUP".
        signal: String,
        /// A file holding the process id.
        pid_file: PathBuf,
    },
}

impl AgentConfig {
    /// Reads and validates the configuration file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AgentError::Config(format!("reading {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// Parses and validates a configuration.
    pub fn from_toml(text: &str) -> Result<Self, AgentError> {
        let cfg: Self =
            toml::from_str(text).map_err(|e| AgentError::Config(format!("agent config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), AgentError> {
        let bad = |m: String| Err(AgentError::Config(m));
        if self.cluster.endpoints.is_empty() {
            return bad("[cluster] endpoints is empty: name the nodes' API addresses".into());
        }
        for e in self
            .cluster
            .endpoints
            .iter()
            .chain(&self.cluster.enroll_endpoints)
        {
            quorumca_client::Endpoint::parse(e).map_err(|e| AgentError::Config(e.to_string()))?;
        }
        if self.intents.is_empty() {
            return bad("no [[intent]]: declare at least one certificate to keep".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for i in &self.intents {
            let at = format!("intent {:?}", i.name);
            let plain = !i.name.is_empty()
                && i.name.len() <= 64
                && i.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                && !i.name.starts_with('.');
            if !plain {
                return bad(format!(
                    "{at}: a name is 1-64 characters of a-z, A-Z, 0-9, '-', '_' and '.' (it names a directory)"
                ));
            }
            if !names.insert(i.name.clone()) {
                return bad(format!("{at} is declared twice"));
            }
            if i.dns.is_empty() && i.ips.is_empty() && i.uris.is_empty() && i.spiffe_id.is_none() {
                return bad(format!(
                    "{at}: give it a name (dns, ips, uris or spiffe_id)"
                ));
            }
            if let Some(s) = &i.spiffe_id {
                if !s.starts_with("spiffe://") {
                    return bad(format!("{at}: spiffe_id {s:?} must start with spiffe://"));
                }
            }
            if !(i.renew_at > 0.0 && i.renew_at < 1.0) {
                return bad(format!(
                    "{at}: renew_at {} must be between 0 and 1 (a fraction of the lifetime)",
                    i.renew_at
                ));
            }
            if !(0.0..i.renew_at).contains(&i.jitter) {
                return bad(format!(
                    "{at}: jitter {} must be at least 0 and below renew_at",
                    i.jitter
                ));
            }
            parse_mode(&i.key_mode).map_err(|m| AgentError::Config(format!("{at}: {m}")))?;
            parse_mode(&i.cert_mode).map_err(|m| AgentError::Config(format!("{at}: {m}")))?;
            if let Some(o) = &i.owner {
                crate::store::resolve_owner(o)
                    .map_err(|m| AgentError::Config(format!("{at}: {m}")))?;
            }
            if i.join_token_file.is_some() && i.bootstrap_credentials.is_some() {
                return bad(format!(
                    "{at}: give join_token_file or bootstrap_credentials, not both"
                ));
            }
            if i.join_token_file.is_some() && self.cluster.enroll_endpoints.is_empty() {
                return bad(format!(
                    "{at}: a join token needs [cluster] enroll_endpoints"
                ));
            }
            if i.bootstrap_credentials.is_some() && i.namespace.is_none() {
                return bad(format!(
                    "{at}: bootstrap_credentials issue in a namespace: set namespace"
                ));
            }
            if let Some(Reload::Signal { signal, .. }) = &i.reload {
                crate::reload::parse_signal(signal)
                    .map_err(|m| AgentError::Config(format!("{at}: {m}")))?;
            }
            if let Some(Reload::Command { command }) = &i.reload {
                if command.is_empty() {
                    return bad(format!("{at}: reload command is empty"));
                }
            }
        }
        Ok(())
    }
}

impl Intent {
    /// Every URI SAN, the SPIFFE ID included.
    pub fn all_uris(&self) -> Vec<String> {
        let mut u = self.uris.clone();
        if let Some(s) = &self.spiffe_id {
            if !u.contains(s) {
                u.push(s.clone());
            }
        }
        u
    }
}

/// "0640" -> 0o640.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("file mode {s:?} is not octal like \"0600\""))
}

/// Durations as humantime strings ("90s", "1h 30m") in TOML.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
state_dir = "/tmp/x"
[cluster]
endpoints = ["127.0.0.1:7100", "region-b=127.0.0.1:7101"]
enroll_endpoints = ["127.0.0.1:7300"]
ca_file = "/tmp/ca.pem"
retry_max = "5s"

[[intent]]
name = "web"
dns = ["web.default.svc.dev.internal"]
spiffe_id = "spiffe://dev.internal/ns/default/web"
lifetime = "1h"
key_file = "/tmp/key.pem"
cert_file = "/tmp/cert.pem"
join_token_file = "/tmp/token"
reload = { signal = "HUP", pid_file = "/run/web.pid" }
"#;

    #[test]
    fn reads_a_good_config_with_defaults() {
        let c = AgentConfig::from_toml(GOOD).unwrap();
        assert_eq!(c.cluster.retry_max, Duration::from_secs(5));
        let i = &c.intents[0];
        assert_eq!(i.lifetime, Some(Duration::from_secs(3600)));
        assert!((i.renew_at - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(i.key_algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(
            i.all_uris(),
            vec!["spiffe://dev.internal/ns/default/web".to_string()]
        );
        assert!(matches!(i.reload, Some(Reload::Signal { .. })));
    }

    #[test]
    fn refuses_what_would_fail_later_and_says_which_field() {
        for (from, to, says) in [
            ("name = \"web\"", "name = \"../web\"", "a name is"),
            ("lifetime = \"1h\"", "lifetime = \"soon\"", "lifetime"),
            ("retry_max = \"5s\"", "retry_mx = \"5s\"", "unknown field"),
            (
                "spiffe_id = \"spiffe://dev.internal/ns/default/web\"",
                "spiffe_id = \"https://x\"",
                "must start with spiffe://",
            ),
            ("name = \"web\"", "name = \"web\"\nrenew_at = 1.5", "renew_at"),
            ("name = \"web\"", "name = \"web\"\nkey_mode = \"rw\"", "not octal"),
            ("\"HUP\"", "\"NOPE\"", "signal"),
            (
                "enroll_endpoints = [\"127.0.0.1:7300\"]",
                "",
                "needs [cluster] enroll_endpoints",
            ),
            (
                "dns = [\"web.default.svc.dev.internal\"]\nspiffe_id = \"spiffe://dev.internal/ns/default/web\"",
                "",
                "give it a name",
            ),
        ] {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            let e = AgentConfig::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(says), "{to}: {e}");
        }
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
    }
}
