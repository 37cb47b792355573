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
//!   Its domains each have a module: `authority` (issuance, serial leases,
//!   the hierarchy), `revocation` (revocation and OCSP), `crls`, `tokens`
//!   (join tokens and enrolment), `auth` (caller identity and roles),
//!   `changes` (policy and CA changes under the two-person rule) and
//!   `records` (reading certificates, policy versions and the audit log).
//! - [`grpc`]: the public tonic services of `proto/quorumca/v1/ca.proto`,
//!   one file per service, each a pure adapter over the domain; errors
//!   reach callers through one status table.
//! - [`http`]: CRLs at the URLs in certificates, OCSP (GET and POST), CA
//!   certificates, a health probe.
//! - [`server`]: the `[api]` section of node.toml, the unseal secret, and
//!   the background work (CRL rebuilds, pruning, hierarchy creation).
//! - `auth`: the caller's identity from its client certificate, roles
//!   from policy, audited denials; `tls`: the node's certificate and the
//!   cluster's roots, for both listeners and for dialling peers.
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
#![warn(missing_docs)]

mod auth;
mod authority;
mod batch;
mod changes;
mod crls;
mod error;
pub mod grpc;
mod hierarchy;
pub mod http;
mod issuance;
mod leases;
mod limits;
mod records;
mod revocation;
pub mod server;
pub mod tls;
mod tokens;

/// The generated API, from its one home.
pub(crate) use quorumca_proto as pb;

pub use auth::{Access, Caller, Gate};
pub use authority::{Authority, AuthorityConfig, ROOT_ID};
pub use changes::{HierarchyUpdate, PendingChangeView, PolicyChange};
pub use crls::PublishedCrl;
pub use error::{AuthorityError, StatusCode};
pub use hierarchy::{seal_for_ledger, Install, DEFAULT_ROOT_GRACE};
pub use issuance::{IssueArgs, IssueRequest, Issued};
pub use records::{AuditPage, CertificateFilter, CertificatePage, CertificateView};
pub use revocation::{RevokeTarget, Revoked};
pub use server::{
    derive_kek, serve, ApiConfig, ApiServer, Hierarchy, ServeError, UNSEAL_SECRET_ENV,
};
pub use tls::{NodeCredentials, TlsConfig, TlsError};
pub use tokens::{DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL};
