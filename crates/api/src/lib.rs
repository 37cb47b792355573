//! # quorumca-api: what a node offers its callers
//!
//! This crate owns the node-side services built on consensus and the CA:
//!
//! - [`Authority`]: the issuance path of design.md on one node. CSR checks
//!   and policy decisions come from `quorumca-ca`, serials from this node's
//!   Raft-granted lease, signing happens here on the receiving node (so
//!   signing CPU is spread over every node), and a certificate is returned
//!   only after its record is committed. Also revocation, CRLs per shard and
//!   OCSP answers from the local ledger, and bootstrapping the hierarchy.
//! - Later: the tonic services, mTLS authentication and role checks, and the
//!   HTTP side (CRL, OCSP, health, metrics).
//!
//! ## What it must never do
//!
//! Decide policy itself or write state other than through Raft proposals.
//!
//! ## Where the neighbours live
//!
//! `quorumca-ca` (decisions and signing), `quorumca-consensus` (agreement),
//! `quorumca-ledger` (what is recorded).
#![forbid(unsafe_code)]

mod authority;
mod crls;
mod error;
pub mod testing;

pub use authority::{Authority, AuthorityConfig, IssueRequest, Issued, ROOT_ID};
pub use crls::PublishedCrl;
pub use error::{AuthorityError, StatusCode};
