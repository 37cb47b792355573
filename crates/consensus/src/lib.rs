//! # quorumca-consensus: the Raft layer
//!
//! This crate owns agreement between nodes:
//!
//! - the openraft wiring: [`Node`] opens `quorumca-storage`, starts openraft
//!   with QuorumCA's type config, and serves gRPC on one listener;
//! - the Raft transport (AppendEntries, Vote, PreVote, InstallSnapshot) over
//!   tonic, in `network` (client) and `service` (server), on connections
//!   from [`transport`] (TCP, or whatever a simulation supplies);
//! - membership: initialise a cluster, add a learner, promote, remove;
//! - proposal forwarding: a write reaching a follower is forwarded to the
//!   leader ([`Node::propose`]); the caller sees no difference;
//! - reads: [`Node::read_linearizable`] (read index through the leader) and
//!   [`Node::read_local`] where staleness is fine;
//! - the `quorumca.v1.Cluster` gRPC service (status, ping, membership).
//!
//! ## What it must never do
//!
//! Decide policy or sign: proposals arrive already decided. Node-to-node
//! wire encodings stay in `wire`; the rest of the crate works with openraft
//! and ledger types.
//!
//! ## Where the neighbours live
//!
//! `quorumca-ledger` (what is agreed), `quorumca-storage` (where it is kept),
//! the `quorumca` binary in `crates/cli` (configuration and process life).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batching;
mod config;
mod error;
mod forward;
mod group;
mod network;
mod node;
mod service;
mod tls;
pub mod transport;
mod wire;

/// The generated API, from its one home.
pub(crate) use quorumca_proto as pb;

pub use batching::spawn_batching;
pub use config::{ConfigError, ServerConfig};
pub use error::ConsensusError;
pub use node::{
    now_ms, set_clock, Committed, Member, Node, NodeConfig, Raft, RaftSettings, Status,
};
pub use quorumca_storage::{Archive, ArchivedRecord, NodeInfo, TypeConfig};
pub use service::ClusterService;
pub use tls::{ClusterGate, ClusterOp, NodeTls, PeerCheck};
pub use wire::WIRE_VERSION;
