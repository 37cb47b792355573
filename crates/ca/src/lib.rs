//! # quorumca-ca: pure PKI
//!
//! This crate owns the certificate authority's decisions and artefacts:
//! checking certificate signing requests (decode, proof-of-possession
//! signature, key type and size), and, as it grows, profiles and policy
//! decisions, pre-issuance lints, and building and signing certificates,
//! CRLs and OCSP responses.
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

mod crl;
mod csr;
mod ocsp;
mod sign;

pub use crl::{sign_crl, CrlEntry, CrlSpec, MAX_CRL_VALIDITY_SECS};
pub use csr::{parse_csr, CsrError, KeyAlgorithm, RequestedNames, VerifiedCsr, MAX_CSR_BYTES};
pub use ocsp::{
    respond as ocsp_respond, OcspError, OcspStatus, MAX_OCSP_CERTS, MAX_OCSP_REQUEST_BYTES,
};
pub use sign::{
    pem_encode, self_signed_root, sign_intermediate, sign_leaf, CaSigner, LeafSpec, SignError,
    Usage, Validity,
};

#[cfg(test)]
mod tests;
