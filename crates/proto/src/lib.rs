//! # quorumca-proto: the wire API, generated once
//!
//! This crate owns the code generated from `proto/quorumca/v1` (the
//! public services of `ca.proto`, the cluster administration of
//! `cluster.proto`, the node-to-node messages of `raft.proto`): messages,
//! tonic clients and server traits, and the descriptor set that gRPC
//! reflection serves.
//!
//! ## What it must never do
//!
//! Depend on anything of the server (consensus, storage, the CA): a
//! caller that only talks to a cluster (`quorumca-client`, the agent,
//! programs of other teams) builds this and tonic, nothing more.
//! Conversions into server types live beside those types (for example
//! `quorumca-consensus`'s `wire` module).
//!
//! ## Where the neighbours live
//!
//! `quorumca-client` (calls, failover), `quorumca-api` (implements the
//! public services), `quorumca-consensus` (implements Raft and Cluster).
#![forbid(unsafe_code)]
// The generated items carry the .proto comments verbatim, and those speak
// TOML (`[[grants]]`), not rustdoc links.
#![allow(clippy::all, missing_docs, rustdoc::broken_intra_doc_links)]

tonic::include_proto!("quorumca.v1");

/// Encoded descriptors of every file of `proto/quorumca/v1`, for gRPC
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("quorumca_descriptor");
