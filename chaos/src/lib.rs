//! # quorumca-chaos: what a chaos drill proves, and how
//!
//! The library owns the judgement of a drill, not the breaking: the history
//! format every workload client logs (one [`Op`] per call, with its
//! invocation and completion times and a result that is ok, a definite
//! error, or unknown) and the [`check`] that runs after healing over that
//! history and over what every node reports ([`NodeView`]). The
//! `quorumca-chaos` binary (`src/main.rs`, `src/driver/`) does the
//! breaking: it starts clusters in network namespaces, runs the workload,
//! injects the faults and feeds this checker.
//!
//! The rules, each a [`Violation`] kind with a test that feeds it exactly
//! that violation:
//!
//! 1. no two acknowledged issuances share an (issuer, serial);
//! 2. every acknowledged issuance and revocation is on every node;
//! 3. every acknowledged revocation is in every node's CRLs and OCSP;
//! 4. nodes at the same applied index have the same ledger hash and audit
//!    head, and their audit entries agree where they overlap;
//! 5. per certificate, the acknowledged operations are linearizable
//!    against the sequential model "not issued -> issued -> revoked"
//!    (a Wing-Gong-Lowe search per key; an operation whose outcome is
//!    unknown may have taken effect at any point after its invocation, or
//!    never).
//!
//! It also owns the link-level fault injection the drills route peer
//! traffic through: [`proxy::FaultProxy`] (latency, jitter, loss,
//! blackholes, resets in userspace, since this kernel has no `netem`).
//!
//! Status reads in a history must be linearizable reads (the API's
//! GetCertificate reads through the leader's read index); a stale local read
//! would rightly fail rule 5.

#![warn(missing_docs)]

mod check;
mod history;
mod linearizable;
pub mod proxy;

pub use check::{check, NodeView, Report, Violation};
pub use history::{Action, CertKey, History, Op, OpResult};
pub use linearizable::{linearizable, Linearization};
