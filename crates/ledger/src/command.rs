//! What can be proposed through Raft, and what applying it answers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A certificate serial number as the big-endian bytes of a positive integer,
/// exactly as it appears in the certificate (no leading zero padding beyond
/// what DER needs). Kept as bytes so the ledger never depends on a bignum type.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Serial(pub Vec<u8>);

/// The first octet of every leaf serial. Fixed and below 0x80, so the
/// serial is a positive DER integer that never needs a leading zero and is
/// never shortened: every leaf serial is exactly [`LEAF_SERIAL_LEN`] octets
/// and carries all 64 random bits, whatever its lease sequence (Boulder
/// prefixes its serials the same way).
pub const LEAF_SERIAL_PREFIX: u8 = 0x51;

/// Octets of a leaf serial: the prefix, the 8-octet lease sequence, 8
/// random octets (RFC 5280 allows up to 20).
pub const LEAF_SERIAL_LEN: usize = 17;

impl Serial {
    /// The serial of a leaf: prefix || sequence (big-endian) || random.
    /// Unique by construction (a sequence is leased to one node once per
    /// issuer) and unpredictable by its 64 bits from the CSPRNG, which the
    /// caller draws: the ledger itself draws no randomness.
    pub fn for_leaf(sequence: u64, random: [u8; 8]) -> Self {
        let mut s = Vec::with_capacity(LEAF_SERIAL_LEN);
        s.push(LEAF_SERIAL_PREFIX);
        s.extend_from_slice(&sequence.to_be_bytes());
        s.extend_from_slice(&random);
        Serial(s)
    }

    /// Parses a serial as printed by us ([`Serial`]'s `Display`) or by
    /// `openssl x509 -serial`: hex, optionally with colons or a `0x`
    /// prefix, odd length allowed. Returns the minimal DER INTEGER content
    /// our certificates carry (leading zero octets dropped, one put back
    /// before a high first bit).
    pub fn parse_hex(text: &str) -> Result<Self, BadSerial> {
        let t = text.trim();
        let t = t.strip_prefix("0x").unwrap_or(t).replace(':', "");
        let bad = || BadSerial(text.into());
        // RFC 5280 caps serials at 20 octets: 40 hex digits, plus a zero
        // octet a tool may print before a high first bit.
        if t.is_empty() || t.len() > 42 {
            return Err(bad());
        }
        let t = if t.len() % 2 == 1 { format!("0{t}") } else { t };
        let mut b = hex::decode(&t).map_err(|_| bad())?;
        while b.len() > 1 && b[0] == 0 && b[1] & 0x80 == 0 {
            b.remove(0);
        }
        if b[0] & 0x80 != 0 {
            b.insert(0, 0);
        }
        Ok(Serial(b))
    }
}

/// A serial that is not hex of at most 20 octets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("serial {0:?} is not hex (expected e.g. 0a1b2c..., as printed by `openssl x509 -serial`)")]
pub struct BadSerial(pub String);

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", hex::encode(&self.0))
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

/// RFC 5280 section 5.3.1 reason codes (value 7 is unused by the RFC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RevocationReason {
    /// No reason given (code 0); RFC 5280 prefers omitting the extension, which the CRL builder
    /// does.
    Unspecified,
    /// The subject's private key is, or may be, known to someone else (code 1).
    KeyCompromise,
    /// The issuing CA's key is, or may be, compromised (code 2).
    CaCompromise,
    /// The subject's name or other information changed (code 3).
    AffiliationChanged,
    /// The certificate was replaced by a newer one (code 4).
    Superseded,
    /// The certificate is no longer needed for its purpose (code 5).
    CessationOfOperation,
    /// A temporary suspension (code 6).
    CertificateHold,
    /// Lifts a hold; meaningful only in delta CRLs (code 8).
    RemoveFromCrl,
    /// A privilege the certificate asserted was withdrawn (code 9).
    PrivilegeWithdrawn,
    /// An attribute authority's key is compromised (code 10).
    AaCompromise,
}

impl RevocationReason {
    /// The CRLReason code that goes on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::CertificateHold => 6,
            Self::RemoveFromCrl => 8,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }
}

/// The compact record of one issued certificate. The full DER is not kept
/// here: short-lived fleets mint millions of certificates and the replicated
/// state must track what is live, not carry every byte ever signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceRecord {
    /// The issuer that signed it (an [`IssuerRecord::id`]).
    pub issuer: String,
    /// The certificate's serial number, as encoded in it.
    pub serial: Serial,
    /// The lease sequence number the serial was built from. The ledger
    /// checks it lies in a lease granted to `node_id`, which is what makes
    /// serials unique by construction rather than by luck.
    pub sequence: u64,
    /// The node that signed it, from whose lease `sequence` came.
    pub node_id: u64,
    /// notBefore, Unix milliseconds.
    pub not_before_ms: u64,
    /// notAfter, Unix milliseconds: when the record (and any revocation of it) leaves the state.
    pub not_after_ms: u64,
    /// Which names the certificate carries (`quorumca_ca::names`: a
    /// canonical, versioned encoding, or the pre-version-1 form in older
    /// records), so a renewal can insist on exactly these names. It covers
    /// no subject: leaves carry their names only in the SAN extension.
    pub names_digest: [u8; 32],
    /// SHA-256 of the SubjectPublicKeyInfo: what revocation by key and token-bound roles look up.
    pub spki_hash: [u8; 32],
    /// The policy profile it was issued under.
    pub profile: String,
    /// The policy namespace it was issued in.
    pub namespace: String,
    /// The authenticated identity that asked for it.
    pub actor: String,
    /// The whole certificate, where the profile says `store = "full"`, or
    /// (see `der_for_replay_only`) while a retry may still ask for it.
    pub full_der: Option<Vec<u8>>,
    /// The DER is kept only so a retry with the issuance's idempotency key
    /// gets the same certificate; the ledger drops it when the key expires,
    /// so compact profiles stay compact.
    pub der_for_replay_only: bool,
}

/// One record of a `RecordIssuances` batch, with the idempotency key of the
/// request it answers (each key covers its own record, exactly as if the
/// record had been proposed alone with that key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchedRecord {
    /// The record, as a lone `RecordIssuance` would carry it.
    pub record: IssuanceRecord,
    /// The scoped idempotency key of the request it answers, if it had one.
    pub idempotency_key: Option<String>,
}

/// A certificate authority known to the cluster: the root, or a regional
/// intermediate. Private keys appear only sealed (encrypted under the
/// cluster's key-encryption key); the ledger cannot read them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerRecord {
    /// The issuer's name in the cluster (e.g. `root`, `dev-a`), unique.
    pub id: String,
    /// The region whose leaves this issuer signs; None for a root.
    pub region: Option<String>,
    /// Its certificate, DER.
    pub cert_der: Vec<u8>,
    /// The sealed private key; None when the key is kept offline (a root
    /// created with `quorumca ca init-root`).
    pub sealed_key: Option<Vec<u8>>,
    /// The issuer that signed this one; None for a root.
    pub parent: Option<String>,
    /// Its certificate's notAfter, Unix milliseconds.
    pub not_after_ms: u64,
    /// How many CRL shards this issuer's leaves are spread over (a leaf's
    /// shard is its lease sequence modulo this). Fixed at registration:
    /// the shard is written into each certificate's CRL URL, so it must
    /// never change under issued certificates.
    pub crl_shards: u64,
}

/// Most records in one `RecordIssuances`.
pub const MAX_RECORD_BATCH: usize = 1024;

/// Most proposals in one `Batch`.
pub const MAX_PROPOSAL_BATCH: usize = 1024;

/// The most CRL shards one issuer may have.
pub const MAX_CRL_SHARDS: u64 = 4096;

/// One applied version of the policy text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Numbered from 1; every apply or rollback adds one.
    pub version: u64,
    /// Canonical policy TOML, validated by the CA crate before proposing.
    pub text: String,
    /// When it was applied, Unix milliseconds.
    pub applied_at_ms: u64,
    /// The identity that applied it, with the note it gave (and, after a two-person approval, the
    /// approver).
    pub actor: String,
    /// Set when this version restores an earlier one.
    pub rollback_of: Option<u64>,
}

/// The state-changing operations. Time never comes from a clock inside the
/// ledger: it arrives in [`Proposal::at_ms`] or in the command itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Records the placement labels of a node, so policy and clients can
    /// reason about regions and zones from replicated state.
    SetNodeLabels {
        /// The node the labels describe.
        node_id: u64,
        /// Its region, as in node.toml.
        region: String,
        /// Its zone within the region.
        zone: String,
    },
    /// Grants `node_id` the next `block` sequence numbers of `issuer`, usable
    /// until `expires_at_ms`.
    GrantSerialLease {
        /// The node the block is granted to; only it may issue from it.
        node_id: u64,
        /// The issuer whose sequence space the block comes from.
        issuer: String,
        /// How many sequence numbers the block holds.
        block: u64,
        /// When the block stops being usable, Unix milliseconds (by the proposer's clock).
        expires_at_ms: u64,
    },
    /// Records an issued certificate.
    RecordIssuance(IssuanceRecord),
    /// Records several issued certificates in one log entry: a busy node
    /// batches what it signed meanwhile, so the per-entry cost of the log
    /// is paid once per batch. Each record is checked and answered exactly
    /// as a lone `RecordIssuance` would be; one refused record does not
    /// affect the others.
    RecordIssuances(Vec<BatchedRecord>),
    /// Several proposals in one log entry: the leader's group commit. Each
    /// is applied exactly as if it had its own entry (its own time, actor,
    /// idempotency key, audit-chain link and outcome), in order; the log's
    /// per-entry costs on every node are paid once for all of them. Never
    /// nested.
    Batch(Vec<Proposal>),
    /// Revokes one certificate.
    Revoke {
        /// The issuer that signed the certificate.
        issuer: String,
        /// Its serial, as encoded in the certificate.
        serial: Serial,
        /// The RFC 5280 reason, as it appears in CRLs and OCSP.
        reason: RevocationReason,
        /// When it counts as revoked, Unix milliseconds.
        revoked_at_ms: u64,
    },
    /// Revokes every live certificate whose public key has this SPKI hash,
    /// across all issuers: the response to a compromised private key.
    RevokeByKey {
        /// SHA-256 of the compromised SubjectPublicKeyInfo.
        spki_hash: [u8; 32],
        /// The reason every revocation it makes carries (usually key compromise).
        reason: RevocationReason,
        /// When they count as revoked, Unix milliseconds.
        revoked_at_ms: u64,
    },
    /// Takes the next CRL number of an issuer (RFC 5280 requires them to be
    /// monotonically increasing, across every node that signs CRLs).
    NextCrlNumber {
        /// The issuer whose CRL the number is for.
        issuer: String,
    },
    /// Drops records and revocations of certificates that expired before
    /// `before_ms`; an expired certificate needs neither a CRL entry nor a
    /// duplicate check, because its serial can never be reused (leases only
    /// move forward).
    PruneExpired {
        /// Unix milliseconds: records whose notAfter lies before it go.
        before_ms: u64,
    },
    /// An opaque no-op, used by benchmarks and liveness probes to measure the
    /// replication path without state-machine cost.
    Noop {
        /// Bytes carried only to give the entry a size.
        payload: Vec<u8>,
    },
    /// Adds a root or intermediate to the hierarchy.
    RegisterIssuer(IssuerRecord),
    /// Makes `text` the current policy. With `expected_version`, applies
    /// only if the current version is that one (no lost updates between
    /// two operators).
    ApplyPolicy {
        /// The policy's canonical TOML.
        text: String,
        /// Who applies it (a SPIFFE ID or a break-glass admin).
        actor: String,
        /// Applied only if the current version is this one.
        expected_version: Option<u64>,
    },
    /// Makes an earlier version current again, as a new version.
    RollbackPolicy {
        /// The version whose text becomes current again.
        to_version: u64,
        /// Who rolls back.
        actor: String,
    },
    /// Records that a caller was refused: denials are audit records, so a
    /// probing or misconfigured client shows up in `quorumca audit query`.
    RecordDenial {
        /// The identity that was refused.
        identity: String,
        /// The action it asked for, as policy names it.
        action: String,
        /// Why it was refused, as the caller was told.
        reason: String,
    },
    /// Files a change that policy says needs a second admin. Nothing takes
    /// effect until [`Command::ApproveChange`] by someone else.
    ProposeChange {
        /// What takes effect on approval.
        change: Change,
        /// Who proposes it; they cannot approve it too.
        actor: String,
    },
    /// A second admin approves a pending change, which then applies exactly
    /// as if it had been proposed directly at this point in the log.
    ApproveChange {
        /// The pending change, as `ProposeChange` numbered it.
        id: u64,
        /// The approving admin; must differ from the proposer.
        actor: String,
    },
    /// Files a join token (only its hash: the ledger never holds the
    /// secret).
    CreateToken(JoinToken),
    /// Uses a join token up, once. A token with a role binds it to
    /// `identity` *and* to the key `spki_hash` (the CSR's), so only the
    /// certificate made for that key holds it. Refused while another
    /// enrolment holds `identity`: such an identity is reserved.
    RedeemToken {
        /// SHA-256 of the token's secret, the only form the ledger knows it by.
        token_hash: [u8; 32],
        /// The identity the enrolment asks for (its CSR's SPIFFE ID).
        identity: String,
        /// SHA-256 of the CSR's SubjectPublicKeyInfo.
        spki_hash: [u8; 32],
    },
    /// Rotation, retirement and forced renewal in the CA hierarchy.
    Hierarchy(HierarchyChange),
    /// Moves a token-bound role to the key of its holder's renewed
    /// certificate. Applies only while the role is bound to `from_spki`
    /// (a retry after it moved is answered the same way), and only to a
    /// key with a live certificate.
    RebindRole {
        /// The identity holding the role.
        identity: String,
        /// The key the role is bound to now.
        from_spki: [u8; 32],
        /// The renewed certificate's key it moves to.
        to_spki: [u8; 32],
    },
    /// An admin withdraws a token-bound role (and so frees its identity).
    RemoveRoleBinding {
        /// The identity whose role goes.
        identity: String,
    },
    /// Revokes a certificate the ledger has no record of: a bootstrap
    /// identity (a node's or the first admin's) that the root signed
    /// before the cluster ran. The API checked that `issuer` signed it; it
    /// lands in the issuer's CRL (shard 0) and every node refuses it as a
    /// client from then on, until `not_after_ms` when it leaves the CRL.
    RevokeUnrecorded {
        /// The issuer that signed the certificate (checked by the API).
        issuer: String,
        /// Its serial.
        serial: Serial,
        /// Its notAfter, Unix milliseconds: the CRL lists it until then.
        not_after_ms: u64,
        /// The RFC 5280 reason.
        reason: RevocationReason,
        /// When it counts as revoked, Unix milliseconds.
        revoked_at_ms: u64,
    },
}

/// A certificate for one issuer's key signed by another issuer's key: what
/// lets relying parties that trust either root of a rollover build a path
/// through the other's intermediates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossCert {
    /// The issuer whose key (and name) the certificate carries.
    pub subject: String,
    /// The issuer that signed it.
    pub signer: String,
    /// The cross certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its notAfter, Unix milliseconds.
    pub not_after_ms: u64,
}

/// Changes to the hierarchy after it is bootstrapped. An issuer that stops
/// signing is never deleted at once: it stays in the trust bundle and its
/// CRLs and OCSP stay served until its last leaf expires, and only then is
/// it retired and its sealed key dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HierarchyChange {
    /// `intermediates` become the signers of their regions. With `root`, a
    /// new root also becomes the one new intermediates chain to, `cross`
    /// holds the certificates that cross-sign it with the current root
    /// both ways, and the current root may be withdrawn from the bundle
    /// `root_grace_ms` from now at the earliest.
    Rotate {
        /// A new root, or None to keep the current one.
        root: Option<IssuerRecord>,
        /// Cross certificates between the current root and the new one.
        cross: Vec<CrossCert>,
        /// The new intermediates, one per region being rotated.
        intermediates: Vec<IssuerRecord>,
        /// How long the old root stays in the trust bundle at least, milliseconds.
        root_grace_ms: u64,
    },
    /// Retires an issuer that no longer signs: an intermediate once its
    /// last leaf has expired, a replaced root once its grace window is over
    /// and every intermediate under it is retired. Its sealed key is
    /// dropped from the ledger and it leaves the trust bundle.
    Retire {
        /// The issuer to retire.
        id: String,
    },
    /// Asks every holder of a certificate of `issuer`, or of `namespace`,
    /// issued before now to renew at once (key compromise response).
    ForceRenew {
        /// Every leaf of this issuer, if set.
        issuer: Option<String>,
        /// Every leaf in this namespace, if set.
        namespace: Option<String>,
    },
}

impl HierarchyChange {
    /// The change in words, for audit entries and pending-change listings.
    pub fn describe(&self) -> String {
        match self {
            HierarchyChange::Rotate {
                root,
                intermediates,
                ..
            } => format!(
                "rotate: {}intermediate(s) {}",
                root.as_ref()
                    .map(|r| format!("root {} with ", r.id))
                    .unwrap_or_default(),
                intermediates
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            HierarchyChange::Retire { id } => format!("retire issuer {id} and destroy its key"),
            HierarchyChange::ForceRenew { issuer, namespace } => format!(
                "force renewal of certificates of {}",
                match (issuer, namespace) {
                    (Some(i), Some(n)) => format!("issuer {i} in namespace {n}"),
                    (Some(i), None) => format!("issuer {i}"),
                    (None, Some(n)) => format!("namespace {n}"),
                    (None, None) => "nothing".into(),
                }
            ),
        }
    }
}

/// A short-lived, single-use secret that lets a new workload get its first
/// certificate in one namespace, and optionally a role there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// SHA-256 of the secret.
    pub token_hash: [u8; 32],
    /// The namespace the first certificate is issued in.
    pub namespace: String,
    /// The profile the first certificate is issued under.
    pub profile: String,
    /// A role the enrolled identity holds in `namespace` (only "issuer"
    /// today), or None for a plain workload that only renews.
    pub role: Option<String>,
    /// Unusable from this time on (Unix milliseconds).
    pub expires_at_ms: u64,
    /// The admin who created it.
    pub actor: String,
}

/// A role a join token granted: bound to one identity and to the key of
/// the certificate it was granted to, never to the identity string alone
/// (anyone who can get a certificate naming the identity would hold it).
/// It moves to the new key on Renew, and goes when that certificate is
/// revoked or expires, or when an admin removes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The SPIFFE ID that holds the role (reserved while it does).
    pub identity: String,
    /// The role (only "issuer" today).
    pub role: String,
    /// The namespace the role applies in.
    pub namespace: String,
    /// When the token was redeemed, Unix milliseconds.
    pub enrolled_at_ms: u64,
    /// SHA-256 of the SubjectPublicKeyInfo of the certificate that holds
    /// the role.
    pub spki_hash: [u8; 32],
}

/// A change that can wait for approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Makes `text` the current policy, as [`Command::ApplyPolicy`].
    ApplyPolicy {
        /// The policy's canonical TOML.
        text: String,
        /// Applied only if the current version is still this one at approval.
        expected_version: Option<u64>,
    },
    /// Restores an earlier version, as [`Command::RollbackPolicy`].
    RollbackPolicy {
        /// The version whose text becomes current again.
        to_version: u64,
    },
    /// Adds issuers to the hierarchy, in order (an intermediate signed by
    /// an offline root, and that root if the cluster has none yet). An
    /// existing root of the same id is not an error.
    RegisterIssuers(Vec<IssuerRecord>),
    /// A rotation of the hierarchy.
    Hierarchy(HierarchyChange),
}

impl Change {
    /// The change in words, for audit entries and pending-change listings.
    pub fn describe(&self) -> String {
        match self {
            Change::ApplyPolicy { text, .. } => format!("apply a policy of {} bytes", text.len()),
            Change::RollbackPolicy { to_version } => {
                format!("roll the policy back to version {to_version}")
            }
            Change::RegisterIssuers(recs) => format!(
                "register issuer(s) {}",
                recs.iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Change::Hierarchy(h) => h.describe(),
        }
    }
}

/// A change waiting for a second admin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// What `quorumca approve ID` names.
    pub id: u64,
    /// What applies once approved.
    pub change: Change,
    /// The admin who proposed it, who may not approve it.
    pub actor: String,
    /// When it was proposed, Unix milliseconds.
    pub proposed_at_ms: u64,
}

/// One entry of the audit log: who did (or was refused) what, when. The
/// ledger keeps the most recent entries; every applied proposal, audited
/// or not, also extends the audit hash chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the audit hash chain (the proposal's number).
    pub seq: u64,
    /// The proposal's time, Unix milliseconds.
    pub at_ms: u64,
    /// The identity that did it (or was refused).
    pub actor: String,
    /// What was done, e.g. `revoke`, `apply-policy`, `denied`.
    pub action: String,
    /// The particulars in words, and the outcome.
    pub detail: String,
    /// True for refusals (authorisation denials and rejected commands).
    pub denied: bool,
    /// The chain head after this proposal: SHA-256(previous head ||
    /// proposal), hex.
    pub chain: String,
}

/// One entry of the replicated log: a command plus the proposer's wall
/// time and optional idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Wall-clock time at the proposer, in Unix milliseconds. Used only for
    /// expiring idempotency keys and leases, never compared across nodes for
    /// ordering.
    pub at_ms: u64,
    /// A retried proposal with the same key returns the first outcome
    /// instead of applying twice.
    pub idempotency_key: Option<String>,
    /// The authenticated identity that asked for this, for the audit log;
    /// empty for the cluster's own housekeeping.
    pub actor: String,
    /// What to apply.
    pub command: Command,
}

impl Proposal {
    /// A proposal of `command` at `at_ms` (Unix milliseconds), by no one and without an idempotency
    /// key.
    pub fn new(at_ms: u64, command: Command) -> Self {
        Self {
            at_ms,
            idempotency_key: None,
            actor: String::new(),
            command,
        }
    }

    /// The same proposal, made by `actor` (the audit log names it).
    pub fn by(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// The same proposal under an idempotency key: applied once however often it is retried.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match &self.command {
            Command::SetNodeLabels { .. } => "set-node-labels",
            Command::GrantSerialLease { .. } => "grant-serial-lease",
            Command::RecordIssuance(_) => "record-issuance",
            Command::RecordIssuances(_) => "record-issuances",
            Command::Batch(_) => "batch",
            Command::Revoke { .. } => "revoke",
            Command::RevokeByKey { .. } => "revoke-by-key",
            Command::NextCrlNumber { .. } => "next-crl-number",
            Command::PruneExpired { .. } => "prune-expired",
            Command::Noop { .. } => "noop",
            Command::RegisterIssuer(_) => "register-issuer",
            Command::ApplyPolicy { .. } => "apply-policy",
            Command::RollbackPolicy { .. } => "rollback-policy",
            Command::RecordDenial { .. } => "record-denial",
            Command::ProposeChange { .. } => "propose-change",
            Command::ApproveChange { .. } => "approve-change",
            Command::CreateToken(_) => "create-token",
            Command::RedeemToken { .. } => "redeem-token",
            Command::Hierarchy(_) => "hierarchy",
            Command::RebindRole { .. } => "rebind-role",
            Command::RemoveRoleBinding { .. } => "remove-role-binding",
            Command::RevokeUnrecorded { .. } => "revoke-unrecorded",
        };
        write!(f, "{name}@{}", self.at_ms)?;
        if let Some(k) = &self.idempotency_key {
            write!(f, " key={k}")?;
        }
        Ok(())
    }
}

/// A block of sequence numbers granted to one node for one issuer:
/// `start..end`, usable until `expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialLease {
    /// The issuer whose sequence space it is part of.
    pub issuer: String,
    /// The node that may sign with it.
    pub node_id: u64,
    /// First sequence number of the block.
    pub start: u64,
    /// One past the last sequence number of the block.
    pub end: u64,
    /// Signing with it stops at this time (Unix milliseconds); records of what was signed before
    /// still commit.
    pub expires_at_ms: u64,
}

impl SerialLease {
    /// Whether `sequence` lies in this block (expiry aside).
    pub fn contains(&self, sequence: u64) -> bool {
        (self.start..self.end).contains(&sequence)
    }
}

/// What applying a proposal answered. Rejections are outcomes, not errors:
/// they are replicated and deterministic like any other result, and every
/// node must reach the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The node's labels are stored.
    LabelsSet,
    /// The block granted; the node issues from `start` up to `end`.
    LeaseGranted(SerialLease),
    /// The certificate is recorded under this (issuer, serial).
    IssuanceRecorded {
        /// The issuer it is recorded under.
        issuer: String,
        /// Its serial.
        serial: Serial,
    },
    /// One outcome per record of a `RecordIssuances`, or per proposal of a
    /// `Batch`, in order.
    Batch(Vec<Outcome>),
    /// The certificate is revoked.
    Revoked {
        /// Its issuer.
        issuer: String,
        /// Its serial.
        serial: Serial,
        /// When it counts as revoked, Unix milliseconds.
        revoked_at_ms: u64,
    },
    /// Certificates newly revoked by a RevokeByKey (already revoked ones
    /// are left as they were).
    RevokedByKey {
        /// The (issuer, serial) of each.
        revoked: Vec<(String, Serial)>,
    },
    /// The issuer's next CRL number, taken.
    CrlNumber {
        /// The issuer it belongs to.
        issuer: String,
        /// The number, to put in the CRL about to be signed.
        number: u64,
    },
    /// Expired certificates were dropped.
    Pruned {
        /// How many issuance records went.
        records: u64,
        /// How many revocations went.
        revocations: u64,
    },
    /// The no-op is in the log.
    Noop,
    /// The issuer is in the hierarchy.
    IssuerRegistered {
        /// Its id.
        id: String,
    },
    /// The policy is current.
    PolicyApplied {
        /// Its version (a rollback gets a new one).
        version: u64,
    },
    /// The denial is in the audit chain.
    Audited,
    /// The change waits for a second admin's approval.
    ChangePending {
        /// The number an approval names.
        id: u64,
    },
    /// The token's hash is filed; the secret stays with the caller.
    TokenCreated,
    /// The token was valid and is now used up; enrol under these terms.
    TokenRedeemed(JoinToken),
    /// A hierarchy change took effect; the trust bundle is now at
    /// `bundle_version`.
    HierarchyChanged {
        /// The bundle version clients compare to know they must refresh.
        bundle_version: u64,
    },
    /// Nothing changed, for this reason.
    Rejected(Rejection),
    /// The role is bound to the renewed certificate's key now.
    RoleRebound,
    /// The role binding is gone.
    RoleBindingRemoved(Enrollment),
}

/// Why a proposal changed nothing. Each says what the proposer must fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// The serial is already recorded under this issuer.
    #[error("serial {serial} of issuer {issuer} is already recorded; serials are never reused")]
    DuplicateSerial {
        /// The issuer.
        issuer: String,
        /// The serial already taken.
        serial: Serial,
    },
    /// The record's serial lies outside every lease this node holds.
    #[error("sequence {sequence} of issuer {issuer} is not in any lease granted to node {node_id}; take a new serial lease")]
    SequenceNotLeased {
        /// The issuer.
        issuer: String,
        /// The node that signed it.
        node_id: u64,
        /// The sequence number the serial encodes.
        sequence: u64,
    },
    #[error(
        "certificate {serial} of issuer {issuer} is not in the ledger (unknown or already expired); to revoke a bootstrap identity (made by `quorumca dev` or `ca issue-identity`), name it by its certificate: `quorumca revoke --cert cert.pem`"
    )]
    /// No live record for this certificate.
    UnknownCertificate {
        /// The issuer named.
        issuer: String,
        /// The serial named.
        serial: Serial,
    },
    /// The certificate is revoked already; the first revocation stands.
    #[error("certificate {serial} of issuer {issuer} was already revoked at {revoked_at_ms} ms")]
    AlreadyRevoked {
        /// Its issuer.
        issuer: String,
        /// Its serial.
        serial: Serial,
        /// When the first revocation took effect, Unix milliseconds.
        revoked_at_ms: u64,
    },
    /// An idempotency key came back with a different request.
    #[error("idempotency key {key:?} was already used for a different request; use a fresh key per request")]
    IdempotencyKeyConflict {
        /// The key.
        key: String,
    },
    /// No issuer has this id.
    #[error("issuer {id:?} is not registered; register the CA hierarchy first")]
    UnknownIssuer {
        /// The id named.
        id: String,
    },
    /// An issuer of this id exists already.
    #[error("issuer {id:?} is already registered")]
    IssuerExists {
        /// The id.
        id: String,
    },
    /// The issuer still has live leaves, or is current.
    #[error("issuer {id:?} cannot be retired yet: {reason}")]
    NotRetirable {
        /// The issuer.
        id: String,
        /// What still holds it.
        reason: String,
    },
    /// The issuer is retired and signs nothing more.
    #[error("issuer {id:?} is retired (its key is destroyed); sign with the region's current intermediate")]
    IssuerRetired {
        /// The issuer.
        id: String,
    },
    /// The policy moved on since the caller read it.
    #[error("the policy changed meanwhile: it is now at version {current}, not {expected}; review the new version and apply again")]
    PolicyConflict {
        /// The version the caller expected.
        expected: u64,
        /// The version current now.
        current: u64,
    },
    /// No such policy version.
    #[error("policy version {version} does not exist")]
    UnknownPolicyVersion {
        /// The version named.
        version: u64,
    },
    /// No pending change of this number.
    #[error("no pending change {id}; list them with `quorumca approve --list`")]
    UnknownChange {
        /// The number named.
        id: u64,
    },
    #[error(
        "change {id} was proposed by {actor}, who cannot also approve it; a second admin must"
    )]
    /// The proposer tried to approve their own change.
    SelfApproval {
        /// The change.
        id: u64,
        /// The proposer.
        actor: String,
    },
    /// The token is unknown, used up or expired.
    #[error("the join token is unknown, already used, or expired; ask an admin for a new one (`quorumca token create`)")]
    TokenNotUsable,
    /// The identity holds a token-bound role for another key.
    #[error("identity {identity:?} holds a role granted by a join token and is reserved for the certificate that holds it; enrol with another identity (admins list and remove such roles with `quorumca token grants` and `quorumca token remove-grant`)")]
    IdentityReserved {
        /// The identity.
        identity: String,
    },
    /// The identity holds no token-bound role.
    #[error("identity {identity:?} holds no role granted by a join token (`quorumca token grants` lists them)")]
    NoRoleBinding {
        /// The identity.
        identity: String,
    },
    /// The command cannot apply as given (a bug in the proposer, or a forged proposal).
    #[error("invalid command: {reason}")]
    Invalid {
        /// What is wrong with it.
        reason: String,
    },
}
