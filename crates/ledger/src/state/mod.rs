//! The replicated state: what it holds, and the modules that read and
//! change it. [`apply`] (in `apply`) is the only way in; each command's
//! rules live with their domain, the indexes' keys in `keys`, the snapshot
//! codec in `codec`, and debug builds check after every apply that the
//! indexes agree with the records (`invariants`).

mod apply;
mod audit;
mod codec;
mod enrollment;
mod governance;
mod hierarchy;
mod idempotency;
#[cfg(debug_assertions)]
mod invariants;
mod issuance;
mod keys;
mod queries;
mod revocation;

pub use apply::{apply, apply_evicting};
pub use audit::{audit_entry_bytes, MAX_AUDIT_BYTES, MAX_AUDIT_ENTRIES};
pub use codec::DecodeError;
pub use enrollment::ENROLLMENT_GRACE_MS;
pub use hierarchy::{ForceRenewMarker, IssuerPhase, MAX_FORCE_RENEW_MARKERS};
pub use idempotency::IDEMPOTENCY_WINDOW_MS;
pub use issuance::MAX_LEASE_BLOCK;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{
    AuditEntry, Enrollment, IssuanceRecord, IssuerRecord, JoinToken, Outcome, PendingChange,
    PolicyVersion, Rejection, RevocationReason, Serial, SerialLease,
};
use idempotency::Remembered;
use keys::{CertKey, IssuerNames, RevKey};

/// Node placement labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLabels {
    /// The region: which intermediate signs the node's leaves.
    pub region: String,
    /// The zone within the region.
    pub zone: String,
}

/// A recorded revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The reason the CRL and OCSP give.
    pub reason: RevocationReason,
    /// The revocation time the CRL and OCSP give, Unix milliseconds.
    pub revoked_at_ms: u64,
    /// Kept so the entry can leave CRLs once the certificate has expired.
    pub not_after_ms: u64,
    /// The CRL shard that lists this revocation.
    pub shard: u64,
}

/// The revocations one CRL shard lists, and a version that changes
/// whenever that list does, so nodes rebuild only the shards that changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlShard {
    /// Changes whenever `serials` does.
    pub version: u64,
    /// The revoked serials this shard lists.
    pub serials: BTreeSet<Serial>,
}

/// Everything the cluster agrees on. Only ordered collections: the state is
/// serialised for hashing and snapshots, so iteration order must not depend
/// on a hasher seed. Only the primary data is serialised (see
/// `codec`); the indexes are rebuilt on load, which keeps snapshots
/// small and restarts fast.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    nodes: BTreeMap<u64, NodeLabels>,
    /// Next unleased sequence number per issuer. Only ever grows, so two
    /// leases of one issuer never overlap.
    next_sequence: BTreeMap<String, u64>,
    /// Leases per (issuer, node). Old leases stay until their range is no
    /// longer referenced: a record may commit after its lease expired if
    /// signing started before.
    leases: BTreeMap<(String, u64), Vec<SerialLease>>,
    records: BTreeMap<CertKey, IssuanceRecord>,
    /// (not_after, issuer, serial), so pruning expired records never scans.
    expiry_index: BTreeSet<(u64, CertKey)>,
    /// SPKI hash -> certificates with that key, for revocation by key
    /// without scanning every record.
    key_index: BTreeMap<[u8; 32], BTreeSet<CertKey>>,
    issuer_names: IssuerNames,
    revocations: BTreeMap<RevKey, Revocation>,
    /// (issuer, shard) -> what that CRL shard lists.
    crl_shards: BTreeMap<(String, u64), CrlShard>,
    crl_numbers: BTreeMap<String, u64>,
    idempotency: BTreeMap<String, Remembered>,
    idempotency_expiry: BTreeSet<(u64, String)>,
    issuers: BTreeMap<String, IssuerRecord>,
    /// Every applied policy version, oldest first; the last is current.
    policy_history: Vec<PolicyVersion>,
    /// Head of the audit hash chain: SHA-256(previous head || proposal).
    audit_head: [u8; 32],
    audit_len: u64,
    /// The newest audited proposals (policy, CA, revocations, approvals,
    /// denials), oldest first.
    audit_log: VecDeque<AuditEntry>,
    /// Sum of [`audit_entry_bytes`] over `audit_log` (derived: rebuilt on
    /// load).
    audit_bytes: u64,
    /// Changes waiting for a second admin, by id.
    pending: BTreeMap<u64, PendingChange>,
    next_change_id: u64,
    /// Unused join tokens by hash (expired ones leave as time passes).
    tokens: BTreeMap<[u8; 32], JoinToken>,
    /// Roles bound to identities by redeemed tokens.
    enrollments: BTreeMap<String, Enrollment>,
    hierarchy: hierarchy::Hierarchy,
}

/// A refusal with no typed [`Rejection`] of its own: the reason, in words.
fn invalid(reason: impl Into<String>) -> Outcome {
    Outcome::Rejected(Rejection::Invalid {
        reason: reason.into(),
    })
}
