//! The concrete openraft type configuration.
//!
//! It lives here, in the lowest crate that needs concrete Raft types, so the
//! storage traits can be implemented for it; `quorumca-consensus` re-exports
//! it and owns everything else about Raft.

use std::fmt;
use std::io::Cursor;

use quorumca_ledger::{Outcome, Proposal};
use serde::{Deserialize, Serialize};

/// What every member carries in the membership config: where to reach it
/// and where it runs. Region and zone are part of the replicated membership,
/// so placement-aware decisions (quorum spread, client routing) can be made
/// from committed state on any node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the node's gRPC listener (Raft transport and API).
    pub addr: String,
    /// Its region.
    pub region: String,
    /// Its zone within the region.
    pub zone: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}/{}", self.addr, self.region, self.zone)
    }
}

openraft::declare_raft_types!(
    /// QuorumCA's Raft types: ledger proposals in, ledger outcomes out.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = u64,
        Node = NodeInfo,
        AsyncRuntime = crate::runtime::Runtime,
);

/// Snapshots travel and rest as one encoded buffer. Ledger state is compact
/// (records of live certificates only), so a single buffer is simpler than
/// chunked streaming and fast enough for the sizes we target.
pub type SnapshotData = Cursor<Vec<u8>>;

/// A log position (term, leader and index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote, as persisted.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A membership and the log position it was applied at.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot and its data.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
