//! `node.toml`: the configuration of `quorumca server`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::node::{NodeConfig, RaftSettings};
use crate::NodeInfo;

/// A member of the initial cluster, as listed in `[[peers]]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub node_id: u64,
    pub addr: String,
    pub region: String,
    pub zone: String,
}

/// The file format of `quorumca server --config node.toml`.
///
/// ```toml
/// node_id = 1
/// listen = "127.0.0.1:7101"
/// data_dir = "/var/lib/quorumca/node1"
/// region = "eu-west"
/// zone = "eu-west-1a"
///
/// # The initial voters. Every node of a new cluster lists the same peers;
/// # the one with the lowest id bootstraps the cluster.
/// [[peers]]
/// node_id = 1
/// addr = "127.0.0.1:7101"
/// region = "eu-west"
/// zone = "eu-west-1a"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's id; unique in the cluster, never reused.
    pub node_id: u64,
    /// Where the Raft listener binds (`host:port`).
    pub listen: String,
    /// What peers and clients dial; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Where the log, the state and snapshots live.
    pub data_dir: PathBuf,
    /// The region this node is in (CA signing and placement).
    pub region: String,
    /// The zone within the region.
    pub zone: String,
    /// How long a write may wait for a leader and quorum before UNAVAILABLE.
    #[serde(default = "default_propose_timeout_ms")]
    pub propose_timeout_ms: u64,
    /// The initial voters (the same list on every node of a new cluster).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// `[raft]`: timing and compaction.
    #[serde(default)]
    pub raft: RaftSettings,
    /// The `[api]` section (public gRPC, HTTP, unseal secret), left
    /// unparsed here: it belongs to quorumca-api, which validates it.
    #[serde(default)]
    pub api: Option<toml::Table>,
    /// The `[tls]` section (this node's certificate and the cluster's
    /// roots), also parsed by quorumca-api, which owns certificates.
    #[serde(default)]
    pub tls: Option<toml::Table>,
    /// Run without `[tls]`: no encryption, no authentication, every API
    /// caller is an admin. Only for throwaway clusters on one host; a node
    /// without `[tls]` refuses to start unless this says so.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// `[connections]`: connection caps and timeouts of every listener.
    #[serde(default)]
    pub connections: quorumca_net::ConnectionLimits,
}

fn default_propose_timeout_ms() -> u64 {
    5_000
}

/// A configuration file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of this shape.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line.
        message: String,
    },
    /// A field has a value this node cannot use.
    #[error("config file {path}: `{field}` {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ServerConfig {
    /// Reads and validates node.toml.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates. Nothing is created or opened: a bad config
    /// changes nothing on disk.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let cfg: ServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        if self.node_id == 0 {
            return Err(bad("node_id", "must be 1 or more".into()));
        }
        self.connections
            .validate()
            .map_err(|e| bad("connections", e.to_string()))?;
        self.listen.parse::<SocketAddr>().map_err(|e| {
            bad(
                "listen",
                format!("must be ip:port, got {:?} ({e})", self.listen),
            )
        })?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("data_dir", "must not be empty".into()));
        }
        if self.region.trim().is_empty() {
            return Err(bad("region", "must not be empty".into()));
        }
        if self.zone.trim().is_empty() {
            return Err(bad("zone", "must not be empty".into()));
        }
        if self.propose_timeout_ms == 0 {
            return Err(bad("propose_timeout_ms", "must be more than 0".into()));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms * 2 {
            return Err(bad(
                "raft.election_timeout_min_ms",
                format!(
                    "must be more than twice raft.heartbeat_ms ({}), got {}",
                    r.heartbeat_ms, r.election_timeout_min_ms
                ),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(bad(
                "raft.election_timeout_max_ms",
                "must be more than raft.election_timeout_min_ms".into(),
            ));
        }
        if r.snapshot_every == 0 {
            return Err(bad("raft.snapshot_every", "must be more than 0".into()));
        }
        let mut ids = BTreeSet::new();
        for p in &self.peers {
            if p.node_id == 0 {
                return Err(bad("peers.node_id", "must be 1 or more".into()));
            }
            if !ids.insert(p.node_id) {
                return Err(bad(
                    "peers",
                    format!("node_id {} is listed twice", p.node_id),
                ));
            }
            if p.addr.trim().is_empty() || p.region.trim().is_empty() || p.zone.trim().is_empty() {
                return Err(bad(
                    "peers",
                    format!("peer {} needs addr, region and zone", p.node_id),
                ));
            }
        }
        if !self.peers.is_empty() && !ids.contains(&self.node_id) {
            return Err(bad(
                "peers",
                format!(
                    "this node (node_id {}) is not among the peers {:?}; a node must be a member of the cluster it bootstraps",
                    self.node_id, ids
                ),
            ));
        }
        Ok(())
    }

    /// The part of the file the Raft node itself needs.
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig {
            node_id: self.node_id,
            listen: self.listen.parse().expect("validated"),
            advertise: self.advertise.clone(),
            data_dir: self.data_dir.clone(),
            region: self.region.clone(),
            zone: self.zone.clone(),
            raft: self.raft.clone(),
            propose_timeout: Duration::from_millis(self.propose_timeout_ms),
            tls: None,
            memory: None,
            connections: self.connections.clone(),
        }
    }

    /// The initial voters, if this config bootstraps a cluster.
    pub fn initial_members(&self) -> std::collections::BTreeMap<u64, NodeInfo> {
        self.peers
            .iter()
            .map(|p| {
                (
                    p.node_id,
                    NodeInfo {
                        addr: p.addr.clone(),
                        region: p.region.clone(),
                        zone: p.zone.clone(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 2
listen = "127.0.0.1:7102"
data_dir = "/tmp/x"
region = "eu"
zone = "eu-1"
[[peers]]
node_id = 1
addr = "127.0.0.1:7101"
region = "eu"
zone = "eu-1"
[[peers]]
node_id = 2
addr = "127.0.0.1:7102"
region = "eu"
zone = "eu-2"
"#;

    fn parse(t: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse(Path::new("node.toml"), t)
    }

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.initial_members().len(), 2);
        assert_eq!(c.node_config().propose_timeout, Duration::from_secs(5));
    }

    #[test]
    fn missing_field_is_named() {
        let e = parse(&GOOD.replace("region = \"eu\"\nzone = \"eu-1\"\n[[peers]]", "[[peers]]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `region`"), "{e}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let e = parse(&format!("colour = \"blue\"\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        let cases = [
            (
                GOOD.replace("node_id = 2\nlisten", "node_id = 0\nlisten"),
                "node_id",
            ),
            (
                GOOD.replace("127.0.0.1:7102\"\ndata_dir", "localhost\"\ndata_dir"),
                "listen",
            ),
            (
                GOOD.replace("node_id = 2\nlisten", "node_id = 9\nlisten"),
                "not among the peers",
            ),
            (
                GOOD.replace("node_id = 1\naddr", "node_id = 2\naddr"),
                "listed twice",
            ),
            (
                format!("{GOOD}\n[raft]\nheartbeat_ms = 500\n"),
                "election_timeout_min_ms",
            ),
            (
                GOOD.replace("node_id = 2\nlisten", "node_id = \"two\"\nlisten"),
                "invalid type",
            ),
        ];
        for (text, needle) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "expected {needle:?} in {e}");
        }
    }
}
