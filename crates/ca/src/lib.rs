//! # quorumca-ca: pure PKI
//!
//! This crate owns the certificate authority's decisions and artefacts:
//!
//! - `csr`: decode certificate signing requests, verify proof of
//!   possession, classify and police the key;
//! - `sign`: root and intermediate certificates, leaf signing with
//!   pre-issuance lints (before signing, and on the signed bytes);
//! - `crl`: full and delta CRLs per issuer and shard;
//! - `ocsp`: RFC 6960 responses from a status lookup;
//! - `seal`: CA keys at rest (AES-256-GCM under a KEK from the unseal
//!   secret);
//! - `access`: roles granted to caller identities, and which changes
//!   need a second admin;
//! - `policy`: profiles and namespaces from TOML, validated, diffed, and
//!   [`Policy::decide`], which turns a request into a signing decision;
//! - [`names`]: the canonical, versioned digest of a certificate's names
//!   that issuance records keep for renewals;
//! - [`spiffe`]: the SPIFFE ID grammar and the IDs the cluster reserves
//!   for its nodes and break-glass admins.
//!
//! ## What it must never do
//!
//! No I/O, no async, no clock, no randomness of its own: time and serials
//! arrive as arguments, so every decision is testable and repeatable. It
//! never sees protobuf types (the API crate converts at the edge) and never
//! writes the ledger (the node records what this crate decided).
//!
//! ## Where the neighbours live
//!
//! `quorumca-ledger` records issuances and revocations; `quorumca-consensus`
//! commits them; the API crate authenticates callers before anything here
//! runs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access;
mod chain;
mod crl;
mod csr;
pub mod names;
mod ocsp;
mod policy;
mod seal;
mod sign;
pub mod spiffe;

pub use access::{
    authorize, identity_matches, identity_of, is_node_identity, node_identity, presented_cert,
    roles_of, trust_domain, Action, Approvals, Denied, Grant, PresentedCert, Role,
};
pub use chain::{
    certificate_names, certificate_not_after, certificate_serial_and_spki, check_intermediate,
    first_certificate_der, intermediate_csr, sign_identity, signed_leaf, IdentitySpec,
    IntermediateInfo, SignedLeaf,
};
pub use crl::{sign_crl, CrlEntry, CrlSpec, MAX_CRL_VALIDITY_SECS};
pub use csr::{
    parse_csr, public_key_of, CsrError, KeyAlgorithm, RequestedNames, VerifiedCsr, MAX_CSR_BYTES,
};
pub use ocsp::{
    answered_status as ocsp_answered_status, request_for as ocsp_request_for,
    respond as ocsp_respond, OcspError, OcspStatus, MAX_OCSP_CERTS, MAX_OCSP_REQUEST_BYTES,
};
pub use policy::{
    check_name, AlgorithmName, Decision, Limits, Namespace, Policy, PolicyError, Profile, Rate,
    RecordForm, Span, UsageName, DEFAULT_BACKDATE, MAX_BACKDATE, MAX_NAME_LEN,
};
pub use seal::{seal, unseal, Kek, SealError, SealedKey, DEFAULT_KDF_ITERATIONS, MIN_SECRET_BYTES};
pub use sign::{
    cross_sign, pem_encode, self_signed_root, sign_intermediate, sign_intermediate_csr, sign_leaf,
    CaSigner, LeafSpec, SignError, Usage, Validity,
};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
