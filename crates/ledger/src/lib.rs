//! # quorumca-ledger: the replicated state machine
//!
//! This crate owns what the cluster agrees on: the [`Command`]s that can be
//! proposed through Raft, the [`State`] they build, and [`apply`], the one
//! function that turns a state and a [`Proposal`] into the next state and an
//! [`Outcome`].
//!
//! ## What it must never do
//!
//! The ledger is pure and deterministic. It performs no I/O, reads no clock
//! and draws no random numbers: wall time arrives inside the proposal
//! ([`Proposal::at_ms`]) and serial randomness inside the issuance record.
//! Only ordered collections are used, so the canonical encoding (and
//! [`State::hash`]) is identical on every node at the same applied index.
//! That is what makes replay, property tests and cross-node checks possible.
//!
//! ## Where the neighbours live
//!
//! - `quorumca-storage` persists the Raft log and snapshots of this state.
//! - `quorumca-consensus` orders proposals with openraft and calls [`apply`].
//! - Policy decisions and signing live in the CA crate, never in `apply`:
//!   the ledger records what was decided, it does not decide.
//!
//! ## Entries
//!
//! - Serial leases: a node asks for a block of sequence numbers per issuer;
//!   blocks never overlap because the per-issuer cursor only moves forward.
//! - Issuance records keyed by (issuer, serial), with duplicate rejection
//!   and a check that the record's sequence lies in a lease of its node.
//! - Revocations, CRL numbers, node labels.
//! - Idempotency keys: a retried proposal with the same key returns the
//!   first outcome; the same key with a different command is rejected.
//! - The CA hierarchy (roots and regional intermediates, keys only sealed)
//!   and its life: rotation, cross-signed root rollover, retirement once
//!   the last leaf expires, forced-renewal markers.
//! - The policy text, versioned with history and rollback.
//! - An audit hash chain over every applied proposal.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod command;
mod state;

pub use command::{
    AuditEntry, BadSerial, BatchedRecord, Change, Command, CrossCert, Enrollment, HierarchyChange,
    IssuanceRecord, IssuerRecord, JoinToken, Outcome, PendingChange, PolicyVersion, Proposal,
    Rejection, RevocationReason, Serial, SerialLease, LEAF_SERIAL_LEN, LEAF_SERIAL_PREFIX,
    MAX_CRL_SHARDS, MAX_PROPOSAL_BATCH, MAX_RECORD_BATCH,
};
pub use state::{
    apply, apply_evicting, audit_entry_bytes, CrlShard, DecodeError, ForceRenewMarker, IssuerPhase,
    NodeLabels, Revocation, State, ENROLLMENT_GRACE_MS, IDEMPOTENCY_WINDOW_MS, MAX_AUDIT_BYTES,
    MAX_AUDIT_ENTRIES, MAX_FORCE_RENEW_MARKERS, MAX_LEASE_BLOCK,
};

#[cfg(test)]
mod tests;
