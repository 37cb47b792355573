//! The replicated state and the one function that changes it.

mod hierarchy;
pub use hierarchy::{ForceRenewMarker, IssuerPhase, MAX_FORCE_RENEW_MARKERS};

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::command::{
    AuditEntry, BatchedRecord, Change, Command, Enrollment, IssuanceRecord, IssuerRecord,
    JoinToken, Outcome, PendingChange, PolicyVersion, Proposal, Rejection, RevocationReason,
    Serial, SerialLease, MAX_CRL_SHARDS, MAX_PROPOSAL_BATCH, MAX_RECORD_BATCH,
};

/// How long an idempotency key is remembered after first use. Long enough
/// for any client retry loop; short enough that the map tracks recent
/// traffic, not history.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// Audit entries the ledger keeps (the newest); older ones leave the hot
/// state for each node's archive ([`apply_evicting`]) and stay covered by
/// the hash chain head.
pub const MAX_AUDIT_ENTRIES: usize = 100_000;

/// Bytes of audit entries the ledger keeps, beside the count: a flood of
/// large entries must not fill memory and snapshots before the count cap
/// is reached. Measured by [`audit_entry_bytes`].
pub const MAX_AUDIT_BYTES: u64 = 64 * 1024 * 1024;

/// What one audit entry counts against [`MAX_AUDIT_BYTES`].
pub fn audit_entry_bytes(e: &AuditEntry) -> u64 {
    (e.actor.len() + e.action.len() + e.detail.len() + e.chain.len() + 24) as u64
}

/// Largest serial lease block; bounds how many sequence numbers one proposal
/// can burn.
pub const MAX_LEASE_BLOCK: u64 = 1 << 24;

/// How long a token-bound role survives without a live certificate for its
/// key: the certificate is issued right after the token is redeemed, and a
/// prune in between must not take the role away from it.
pub const ENROLLMENT_GRACE_MS: u64 = 10 * 60 * 1000;

/// Node placement labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLabels {
    pub region: String,
    pub zone: String,
}

/// A recorded revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub reason: RevocationReason,
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
    pub version: u64,
    pub serials: BTreeSet<Serial>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    digest: [u8; 32],
    outcome: Outcome,
    at_ms: u64,
}

/// Revocations are few and keyed as commands name a certificate.
type RevKey = (String, Serial);

/// A certificate's key in the indexes every issuance inserts into on every
/// node (records, expiry, public key). `(String, Serial)` cost two heap
/// allocations per entry and two pointer chases per comparison, and the
/// comparisons of a descent missed the cache (`memcmp` was a third of a
/// 3-node cluster's ledger apply). Here the issuer is one shared
/// allocation per issuer, which stays in cache, and the serial is inline.
/// It orders exactly as `(String, Serial)` does, so listings, pruning and
/// snapshots keep their order.
#[derive(Clone, Debug)]
struct CertKey {
    issuer: Arc<str>,
    serial: SerialKey,
}

impl Ord for CertKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let issuer = if Arc::ptr_eq(&self.issuer, &other.issuer) {
            Ordering::Equal
        } else {
            self.issuer.cmp(&other.issuer)
        };
        issuer.then_with(|| self.serial.cmp(&other.serial))
    }
}

impl PartialOrd for CertKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for CertKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for CertKey {}

impl CertKey {
    fn rev_key(&self) -> RevKey {
        (self.issuer.to_string(), self.serial.to_serial())
    }
}

/// A serial of at most 20 octets (RFC 5280 4.1.2.2; longer ones are never
/// recorded), inline. Zero-padded octets then the length: the same order
/// as the octet strings themselves (a shorter serial that is a prefix of a
/// longer one pads with zeros, so it sorts first, as a prefix does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SerialKey {
    octets: [u8; 20],
    len: u8,
}

impl SerialKey {
    /// None for a serial longer than 20 octets.
    fn new(serial: &[u8]) -> Option<Self> {
        let mut octets = [0; 20];
        octets.get_mut(..serial.len())?.copy_from_slice(serial);
        Some(Self {
            octets,
            len: serial.len() as u8,
        })
    }

    fn to_serial(self) -> Serial {
        Serial(self.octets[..usize::from(self.len)].to_vec())
    }
}

/// The shared issuer names of [`CertKey`]s. A cache, not agreed state: it
/// is rebuilt from the records on load and may hold names no record uses
/// any more, so two states are equal whatever it holds.
#[derive(Clone, Default)]
struct IssuerNames(BTreeSet<Arc<str>>);

impl IssuerNames {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(shared.clone());
        shared
    }

    fn get(&self, name: &str) -> Option<&Arc<str>> {
        self.0.get(name)
    }
}

impl PartialEq for IssuerNames {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for IssuerNames {}

impl std::fmt::Debug for IssuerNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

/// Everything the cluster agrees on. Only ordered collections: the state is
/// serialised for hashing and snapshots, so iteration order must not depend
/// on a hasher seed. Only the primary data is serialised (see
/// `StateRepr`); the indexes are rebuilt on load, which keeps snapshots
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

/// The serialised form of [`State`]: the primary data, in canonical order.
/// Records are written once (their key is inside them); the expiry, key and
/// CRL-shard indexes and the idempotency expiry queue are derived from them
/// on load, so a snapshot carries each certificate once, not four times.
#[derive(Serialize)]
struct StateRef<'a> {
    nodes: &'a BTreeMap<u64, NodeLabels>,
    next_sequence: &'a BTreeMap<String, u64>,
    leases: &'a BTreeMap<(String, u64), Vec<SerialLease>>,
    #[serde(serialize_with = "values_as_seq")]
    records: &'a BTreeMap<CertKey, IssuanceRecord>,
    revocations: &'a BTreeMap<RevKey, Revocation>,
    /// Versions only; the serials of each shard come from `revocations`.
    crl_versions: BTreeMap<(&'a str, u64), u64>,
    crl_numbers: &'a BTreeMap<String, u64>,
    idempotency: &'a BTreeMap<String, Remembered>,
    issuers: &'a BTreeMap<String, IssuerRecord>,
    policy_history: &'a [PolicyVersion],
    audit_head: [u8; 32],
    audit_len: u64,
    audit_log: &'a VecDeque<AuditEntry>,
    pending: &'a BTreeMap<u64, PendingChange>,
    next_change_id: u64,
    tokens: &'a BTreeMap<[u8; 32], JoinToken>,
    enrollments: &'a BTreeMap<String, Enrollment>,
    hierarchy: &'a hierarchy::Hierarchy,
}

/// The owned mirror of [`StateRef`], for loading.
#[derive(Deserialize)]
struct StateRepr {
    nodes: BTreeMap<u64, NodeLabels>,
    next_sequence: BTreeMap<String, u64>,
    leases: BTreeMap<(String, u64), Vec<SerialLease>>,
    records: Vec<IssuanceRecord>,
    revocations: BTreeMap<RevKey, Revocation>,
    crl_versions: BTreeMap<(String, u64), u64>,
    crl_numbers: BTreeMap<String, u64>,
    idempotency: BTreeMap<String, Remembered>,
    issuers: BTreeMap<String, IssuerRecord>,
    policy_history: Vec<PolicyVersion>,
    audit_head: [u8; 32],
    audit_len: u64,
    audit_log: VecDeque<AuditEntry>,
    pending: BTreeMap<u64, PendingChange>,
    next_change_id: u64,
    tokens: BTreeMap<[u8; 32], JoinToken>,
    enrollments: BTreeMap<String, Enrollment>,
    hierarchy: hierarchy::Hierarchy,
}

fn values_as_seq<S: serde::Serializer>(
    m: &&BTreeMap<CertKey, IssuanceRecord>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.values())
}

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StateRef {
            nodes: &self.nodes,
            next_sequence: &self.next_sequence,
            leases: &self.leases,
            records: &self.records,
            revocations: &self.revocations,
            crl_versions: self
                .crl_shards
                .iter()
                .map(|((i, n), c)| ((i.as_str(), *n), c.version))
                .collect(),
            crl_numbers: &self.crl_numbers,
            idempotency: &self.idempotency,
            issuers: &self.issuers,
            policy_history: &self.policy_history,
            audit_head: self.audit_head,
            audit_len: self.audit_len,
            audit_log: &self.audit_log,
            pending: &self.pending,
            next_change_id: self.next_change_id,
            tokens: &self.tokens,
            enrollments: &self.enrollments,
            hierarchy: &self.hierarchy,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = StateRepr::deserialize(d)?;
        let mut issuer_names = IssuerNames::default();
        let mut expiry_index = BTreeSet::new();
        let mut key_index: BTreeMap<[u8; 32], BTreeSet<CertKey>> = BTreeMap::new();
        let mut keyed = Vec::with_capacity(r.records.len());
        for rec in r.records {
            let serial = SerialKey::new(&rec.serial.0).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "record {} of issuer {} has a serial longer than 20 octets",
                    rec.serial, rec.issuer
                ))
            })?;
            let key = CertKey {
                issuer: issuer_names.intern(&rec.issuer),
                serial,
            };
            expiry_index.insert((rec.not_after_ms, key.clone()));
            key_index
                .entry(rec.spki_hash)
                .or_default()
                .insert(key.clone());
            keyed.push((key, rec));
        }
        // Written in key order, so this is a bulk build, not n inserts.
        let records: BTreeMap<CertKey, IssuanceRecord> = keyed.into_iter().collect();
        let mut crl_shards: BTreeMap<(String, u64), CrlShard> = r
            .crl_versions
            .into_iter()
            .map(|(k, version)| {
                (
                    k,
                    CrlShard {
                        version,
                        serials: BTreeSet::new(),
                    },
                )
            })
            .collect();
        for ((issuer, serial), rev) in &r.revocations {
            crl_shards
                .entry((issuer.clone(), rev.shard))
                .or_default()
                .serials
                .insert(serial.clone());
            // A revocation without a record (a bootstrap identity's) is
            // pruned by its own expiry, as `RevokeUnrecorded` filed it.
            if let Some(serial) = SerialKey::new(&serial.0) {
                let key = CertKey {
                    issuer: issuer_names.intern(issuer),
                    serial,
                };
                if !records.contains_key(&key) {
                    expiry_index.insert((rev.not_after_ms, key));
                }
            }
        }
        let idempotency_expiry = r
            .idempotency
            .iter()
            .map(|(k, v)| (v.at_ms, k.clone()))
            .collect();
        Ok(State {
            nodes: r.nodes,
            next_sequence: r.next_sequence,
            leases: r.leases,
            records,
            expiry_index,
            key_index,
            issuer_names,
            revocations: r.revocations,
            crl_shards,
            crl_numbers: r.crl_numbers,
            idempotency: r.idempotency,
            idempotency_expiry,
            issuers: r.issuers,
            policy_history: r.policy_history,
            audit_head: r.audit_head,
            audit_len: r.audit_len,
            audit_bytes: r.audit_log.iter().map(audit_entry_bytes).sum(),
            audit_log: r.audit_log,
            pending: r.pending,
            next_change_id: r.next_change_id,
            tokens: r.tokens,
            enrollments: r.enrollments,
            hierarchy: r.hierarchy,
        })
    }
}

impl State {
    pub fn node_labels(&self) -> &BTreeMap<u64, NodeLabels> {
        &self.nodes
    }

    /// The index key of a certificate that may be recorded; None when none
    /// can be (an issuer no record ever named, a serial over 20 octets).
    fn key_of(&self, issuer: &str, serial: &Serial) -> Option<CertKey> {
        Some(CertKey {
            issuer: self.issuer_names.get(issuer)?.clone(),
            serial: SerialKey::new(&serial.0)?,
        })
    }

    pub fn record(&self, issuer: &str, serial: &Serial) -> Option<&IssuanceRecord> {
        self.records.get(&self.key_of(issuer, serial)?)
    }

    pub fn records(&self) -> impl Iterator<Item = &IssuanceRecord> {
        self.records.values()
    }

    /// Records in (issuer, serial) order, starting after `after`: the
    /// paging cursor of certificate listings, with no scan from the start.
    pub fn records_after<'a>(
        &'a self,
        after: Option<(&str, &Serial)>,
    ) -> impl Iterator<Item = &'a IssuanceRecord> + 'a {
        use std::ops::Bound::{Excluded, Unbounded};
        // A serial over 20 octets is never recorded; every recorded one
        // below it is at most its first 20 octets, so starting after those
        // is starting after it.
        let start = match after {
            Some((i, s)) => Excluded(CertKey {
                issuer: Arc::from(i),
                serial: SerialKey::new(&s.0[..s.0.len().min(20)]).expect("at most 20 octets"),
            }),
            None => Unbounded,
        };
        self.records.range((start, Unbounded)).map(|(_, r)| r)
    }

    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    pub fn revocation(&self, issuer: &str, serial: &Serial) -> Option<&Revocation> {
        self.revocations.get(&(issuer.to_string(), serial.clone()))
    }

    pub fn revocations(&self) -> impl Iterator<Item = (&str, &Serial, &Revocation)> {
        self.revocations
            .iter()
            .map(|((i, s), r)| (i.as_str(), s, r))
    }

    /// One CRL shard's revocations and version; None while it has never
    /// listed anything.
    pub fn crl_shard(&self, issuer: &str, shard: u64) -> Option<&CrlShard> {
        self.crl_shards.get(&(issuer.to_string(), shard))
    }

    /// Every shard that has ever listed a revocation, with its version.
    pub fn crl_shard_versions(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.crl_shards
            .iter()
            .map(|((i, s), c)| (i.as_str(), *s, c.version))
    }

    /// Records (and their revocations) that a `PruneExpired { before_ms }`
    /// would drop, in expiry order: what a node archives before applying it.
    pub fn expired_before(
        &self,
        before_ms: u64,
    ) -> impl Iterator<Item = (&IssuanceRecord, Option<&Revocation>)> {
        self.expiry_index
            .iter()
            .take_while(move |(not_after, _)| *not_after < before_ms)
            .filter_map(|(_, key)| {
                self.records
                    .get(key)
                    .map(|r| (r, self.revocations.get(&key.rev_key())))
            })
    }

    /// The first outcome recorded under an idempotency key, while the key
    /// is remembered: what a retried request must be answered with.
    pub fn idempotent_outcome(&self, key: &str) -> Option<&Outcome> {
        self.idempotency.get(key).map(|r| &r.outcome)
    }

    pub fn crl_number(&self, issuer: &str) -> u64 {
        self.crl_numbers.get(issuer).copied().unwrap_or(0)
    }

    pub fn leases_of(&self, issuer: &str, node_id: u64) -> &[SerialLease] {
        self.leases
            .get(&(issuer.to_string(), node_id))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn issuer(&self, id: &str) -> Option<&IssuerRecord> {
        self.issuers.get(id)
    }

    pub fn issuers(&self) -> impl Iterator<Item = &IssuerRecord> {
        self.issuers.values()
    }

    pub fn policy(&self) -> Option<&PolicyVersion> {
        self.policy_history.last()
    }

    pub fn policy_history(&self) -> &[PolicyVersion] {
        &self.policy_history
    }

    pub fn audit_head(&self) -> [u8; 32] {
        self.audit_head
    }

    pub fn audit_len(&self) -> u64 {
        self.audit_len
    }

    /// Audit entries after `after_seq`, oldest first, that `keep` accepts;
    /// at most `limit`.
    pub fn audit_entries(
        &self,
        after_seq: u64,
        limit: usize,
        keep: impl Fn(&AuditEntry) -> bool,
    ) -> Vec<AuditEntry> {
        let start = self.audit_log.partition_point(|e| e.seq <= after_seq);
        self.audit_log
            .range(start..)
            .filter(|e| keep(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The oldest audit entry the ledger still holds (older ones are in
    /// the nodes' archives).
    pub fn oldest_audit_seq(&self) -> Option<u64> {
        self.audit_log.front().map(|e| e.seq)
    }

    /// Bytes of the audit entries held, as [`MAX_AUDIT_BYTES`] counts them.
    pub fn audit_bytes(&self) -> u64 {
        self.audit_bytes
    }

    pub fn pending_changes(&self) -> impl Iterator<Item = &PendingChange> {
        self.pending.values()
    }

    /// The role a redeemed join token bound to `identity`, if any.
    /// The token-bound role of `identity`, whichever key holds it (the
    /// caller checks the key: see [`Enrollment::spki_hash`]).
    pub fn enrollment(&self, identity: &str) -> Option<&Enrollment> {
        self.enrollments.get(identity)
    }

    /// Every token-bound role, by identity.
    pub fn enrollments(&self) -> impl Iterator<Item = &Enrollment> {
        self.enrollments.values()
    }

    /// An unused join token, if it exists and is unexpired at `now_ms`.
    pub fn token(&self, token_hash: &[u8; 32], now_ms: u64) -> Option<&JoinToken> {
        self.tokens
            .get(token_hash)
            .filter(|t| t.expires_at_ms > now_ms)
    }

    /// SHA-256 of the canonical encoding. Two nodes at the same applied
    /// index must report the same hash; the chaos checker relies on it.
    pub fn hash(&self) -> [u8; 32] {
        let bytes = self.encode();
        let d = ring::digest::digest(&SHA256, &bytes);
        d.as_ref().try_into().expect("sha256 is 32 bytes")
    }

    /// Canonical binary encoding, used for snapshots and hashing.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("in-memory state always serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        postcard::from_bytes(bytes).map_err(|e| DecodeError(e.to_string()))
    }
}

/// A snapshot or log entry that does not decode as ledger state.
#[derive(Debug, thiserror::Error)]
#[error("ledger state does not decode: {0}")]
pub struct DecodeError(String);

fn digest_of(p: &Proposal) -> [u8; 32] {
    // The key itself is excluded: the digest says "same request", and the
    // request is the command, not its label.
    command_digest(&p.command)
}

fn command_digest(c: &Command) -> [u8; 32] {
    let bytes = postcard::to_stdvec(c).expect("command serialises");
    ring::digest::digest(&SHA256, &bytes)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

/// Applies one proposal. Pure and deterministic: the same state and
/// proposal always give the same new state and outcome on every node.
pub fn apply(state: &mut State, proposal: &Proposal) -> Outcome {
    apply_evicting(state, proposal, &mut Vec::new())
}

/// [`apply`], handing the audit entries it evicts (over
/// [`MAX_AUDIT_ENTRIES`] or [`MAX_AUDIT_BYTES`]) to `evicted`, oldest
/// first, so the node can archive them instead of losing them. Every node
/// evicts the same entries at the same index.
pub fn apply_evicting(
    state: &mut State,
    proposal: &Proposal,
    evicted: &mut Vec<AuditEntry>,
) -> Outcome {
    if let Command::Batch(proposals) = &proposal.command {
        // The batch itself leaves no trace: the chain, the idempotency
        // keys and the outcomes are those of its proposals.
        if proposals.is_empty() || proposals.len() > MAX_PROPOSAL_BATCH {
            return invalid(format!(
                "a batch holds 1 to {MAX_PROPOSAL_BATCH} proposals, got {}",
                proposals.len()
            ));
        }
        if proposals
            .iter()
            .any(|p| matches!(p.command, Command::Batch(_)))
        {
            return invalid("batches do not nest");
        }
        return Outcome::Batch(
            proposals
                .iter()
                .map(|p| apply_evicting(state, p, evicted))
                .collect(),
        );
    }
    extend_audit_chain(state, proposal);
    expire_idempotency_keys(state, proposal.at_ms);

    let digest = proposal
        .idempotency_key
        .as_ref()
        .map(|_| digest_of(proposal));
    if let (Some(key), Some(digest)) = (&proposal.idempotency_key, digest) {
        if let Some(seen) = state.idempotency.get(key) {
            if seen.digest == digest {
                return seen.outcome.clone();
            }
            return Outcome::Rejected(Rejection::IdempotencyKeyConflict { key: key.clone() });
        }
    }

    let outcome = apply_command(state, &proposal.command, proposal.at_ms);

    if let (Some(key), Some(digest)) = (&proposal.idempotency_key, digest) {
        remember(state, key, digest, &outcome, proposal.at_ms);
    }
    record_audit(state, proposal, &outcome, evicted);
    outcome
}

/// Files an audit entry for the commands people answer for; the
/// high-volume machinery (issuance records, leases, CRL numbers, pruning)
/// is covered by the hash chain only. Issuances are their own records.
fn record_audit(state: &mut State, p: &Proposal, outcome: &Outcome, evicted: &mut Vec<AuditEntry>) {
    let (action, detail, actor) = match &p.command {
        Command::Revoke {
            issuer,
            serial,
            reason,
            ..
        } => (
            "revoke",
            format!("issuer {issuer} serial {serial} reason {reason:?}"),
            p.actor.clone(),
        ),
        Command::RevokeByKey {
            spki_hash, reason, ..
        } => (
            "revoke-by-key",
            format!("key sha256 {} reason {reason:?}", hex::encode(spki_hash)),
            p.actor.clone(),
        ),
        Command::RegisterIssuer(rec) => (
            "register-issuer",
            format!("issuer {} parent {:?}", rec.id, rec.parent),
            p.actor.clone(),
        ),
        Command::ApplyPolicy { text, author, .. } => (
            "apply-policy",
            format!("{} bytes", text.len()),
            author.clone(),
        ),
        Command::RollbackPolicy { to_version, author } => (
            "rollback-policy",
            format!("to version {to_version}"),
            author.clone(),
        ),
        Command::RecordDenial {
            identity,
            action,
            reason,
        } => ("denied", format!("{action}: {reason}"), identity.clone()),
        Command::ProposeChange { change, proposer } => {
            ("propose-change", change.describe(), proposer.clone())
        }
        Command::ApproveChange { id, approver } => {
            ("approve-change", format!("change {id}"), approver.clone())
        }
        Command::CreateToken(t) => (
            "create-token",
            format!(
                "namespace {} profile {} role {:?} expires {} ms, token sha256 {}",
                t.namespace,
                t.profile,
                t.role,
                t.expires_at_ms,
                &hex::encode(t.token_hash)[..16]
            ),
            t.created_by.clone(),
        ),
        Command::RedeemToken {
            token_hash,
            identity,
            spki_hash,
        } => (
            "redeem-token",
            format!(
                "token sha256 {}, key sha256 {}",
                &hex::encode(token_hash)[..16],
                &hex::encode(spki_hash)[..16]
            ),
            identity.clone(),
        ),
        Command::RebindRole {
            identity,
            from_spki,
            to_spki,
        } => (
            "rebind-role",
            format!(
                "role of {identity} from key sha256 {} to {}",
                &hex::encode(from_spki)[..16],
                &hex::encode(to_spki)[..16]
            ),
            p.actor.clone(),
        ),
        Command::RemoveRoleBinding { identity } => (
            "remove-role-binding",
            format!("role of {identity}"),
            p.actor.clone(),
        ),
        Command::RevokeUnrecorded {
            issuer,
            serial,
            reason,
            ..
        } => (
            "revoke",
            format!("issuer {issuer} serial {serial} (a bootstrap identity) reason {reason:?}"),
            p.actor.clone(),
        ),
        Command::Hierarchy(change) => (
            match change {
                crate::command::HierarchyChange::Rotate { .. } => "rotate",
                crate::command::HierarchyChange::Retire { .. } => "retire-issuer",
                crate::command::HierarchyChange::ForceRenew { .. } => "force-renew",
            },
            change.describe(),
            p.actor.clone(),
        ),
        Command::SetNodeLabels {
            node_id,
            region,
            zone,
        } => (
            "set-node-labels",
            format!("node {node_id} region {region} zone {zone}"),
            p.actor.clone(),
        ),
        _ => return,
    };
    let (denied, detail) = match outcome {
        Outcome::Rejected(r) => (true, format!("{detail}; rejected: {r}")),
        Outcome::ChangePending { id } => (false, format!("{detail}; pending as change {id}")),
        Outcome::PolicyApplied { version } => {
            (false, format!("{detail}; policy version {version}"))
        }
        _ => (matches!(p.command, Command::RecordDenial { .. }), detail),
    };
    let entry = AuditEntry {
        seq: state.audit_len,
        at_ms: p.at_ms,
        actor,
        action: action.into(),
        detail,
        denied,
        chain: hex::encode(state.audit_head),
    };
    let size = audit_entry_bytes(&entry);
    while !state.audit_log.is_empty()
        && (state.audit_log.len() >= MAX_AUDIT_ENTRIES
            || state.audit_bytes + size > MAX_AUDIT_BYTES)
    {
        let old = state.audit_log.pop_front().expect("not empty");
        state.audit_bytes -= audit_entry_bytes(&old);
        evicted.push(old);
    }
    state.audit_bytes += size;
    state.audit_log.push_back(entry);
}

fn remember(state: &mut State, key: &str, digest: [u8; 32], outcome: &Outcome, at_ms: u64) {
    state.idempotency.insert(
        key.to_string(),
        Remembered {
            digest,
            outcome: outcome.clone(),
            at_ms,
        },
    );
    state.idempotency_expiry.insert((at_ms, key.to_string()));
}

/// One record of a batch, with its own idempotency key: answered exactly as
/// a lone `RecordIssuance` proposed with that key would be (same digest,
/// so a retry may come either way).
fn batched_record(state: &mut State, item: &BatchedRecord, at_ms: u64) -> Outcome {
    let Some(key) = &item.idempotency_key else {
        return record_issuance(state, &item.record);
    };
    let digest = command_digest(&Command::RecordIssuance(item.record.clone()));
    if let Some(seen) = state.idempotency.get(key) {
        if seen.digest == digest {
            return seen.outcome.clone();
        }
        return Outcome::Rejected(Rejection::IdempotencyKeyConflict { key: key.clone() });
    }
    let outcome = record_issuance(state, &item.record);
    remember(state, key, digest, &outcome, at_ms);
    outcome
}

fn extend_audit_chain(state: &mut State, proposal: &Proposal) {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&state.audit_head);
    ctx.update(&postcard::to_stdvec(proposal).expect("proposal serialises"));
    state.audit_head = ctx.finish().as_ref().try_into().expect("32 bytes");
    state.audit_len += 1;
}

fn expire_idempotency_keys(state: &mut State, now_ms: u64) {
    let cutoff = now_ms.saturating_sub(IDEMPOTENCY_WINDOW_MS);
    while let Some((at, key)) = state.idempotency_expiry.first().cloned() {
        if at >= cutoff {
            break;
        }
        state.idempotency_expiry.pop_first();
        // Only drop the entry if it is still the one this expiry slot was for.
        if state.idempotency.get(&key).is_some_and(|r| r.at_ms == at) {
            let gone = state.idempotency.remove(&key).expect("checked");
            // No retry can ask for the certificate any more: a record that
            // kept its DER only for retries becomes compact.
            if let Outcome::IssuanceRecorded { issuer, serial } = gone.outcome {
                let key = state.key_of(&issuer, &serial);
                if let Some(rec) = key.and_then(|k| state.records.get_mut(&k)) {
                    if rec.der_for_replay_only {
                        rec.full_der = None;
                        rec.der_for_replay_only = false;
                    }
                }
            }
        }
    }
}

fn apply_command(state: &mut State, command: &Command, at_ms: u64) -> Outcome {
    match command {
        // Unpacked by `apply`, so only reached when nested.
        Command::Batch(_) => invalid("batches do not nest"),
        Command::SetNodeLabels {
            node_id,
            region,
            zone,
        } => {
            if region.is_empty() || zone.is_empty() {
                return invalid("region and zone labels must not be empty");
            }
            state.nodes.insert(
                *node_id,
                NodeLabels {
                    region: region.clone(),
                    zone: zone.clone(),
                },
            );
            Outcome::LabelsSet
        }
        Command::GrantSerialLease {
            node_id,
            issuer,
            block,
            expires_at_ms,
        } => {
            if *block == 0 || *block > MAX_LEASE_BLOCK {
                return invalid(format!(
                    "lease block must be between 1 and {MAX_LEASE_BLOCK}, got {block}"
                ));
            }
            if !state.issuers.contains_key(issuer) {
                return Outcome::Rejected(Rejection::UnknownIssuer { id: issuer.clone() });
            }
            let next = state.next_sequence.entry(issuer.clone()).or_insert(0);
            let Some(end) = next.checked_add(*block) else {
                return invalid(format!("sequence space of issuer {issuer} is exhausted"));
            };
            let lease = SerialLease {
                issuer: issuer.clone(),
                node_id: *node_id,
                start: *next,
                end,
                expires_at_ms: *expires_at_ms,
            };
            *next = end;
            state
                .leases
                .entry((issuer.clone(), *node_id))
                .or_default()
                .push(lease.clone());
            Outcome::LeaseGranted(lease)
        }
        Command::RecordIssuance(record) => record_issuance(state, record),
        Command::RecordIssuances(records) => {
            if records.is_empty() || records.len() > MAX_RECORD_BATCH {
                return invalid(format!(
                    "a batch holds 1 to {MAX_RECORD_BATCH} records, got {}",
                    records.len()
                ));
            }
            Outcome::Batch(
                records
                    .iter()
                    .map(|item| batched_record(state, item, at_ms))
                    .collect(),
            )
        }
        Command::Revoke {
            issuer,
            serial,
            reason,
            revoked_at_ms,
        } => {
            let key = (issuer.clone(), serial.clone());
            let record = state
                .key_of(issuer, serial)
                .and_then(|k| state.records.get(&k));
            let Some(record) = record else {
                return Outcome::Rejected(Rejection::UnknownCertificate {
                    issuer: issuer.clone(),
                    serial: serial.clone(),
                });
            };
            if let Some(r) = state.revocations.get(&key) {
                return Outcome::Rejected(Rejection::AlreadyRevoked {
                    issuer: issuer.clone(),
                    serial: serial.clone(),
                    revoked_at_ms: r.revoked_at_ms,
                });
            }
            let (not_after_ms, sequence, spki) =
                (record.not_after_ms, record.sequence, record.spki_hash);
            insert_revocation(state, key, sequence, not_after_ms, *reason, *revoked_at_ms);
            drop_roles_of_key(state, &spki);
            Outcome::Revoked {
                issuer: issuer.clone(),
                serial: serial.clone(),
                revoked_at_ms: *revoked_at_ms,
            }
        }
        Command::RevokeByKey {
            spki_hash,
            reason,
            revoked_at_ms,
        } => {
            let keys: Vec<CertKey> = state
                .key_index
                .get(spki_hash)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            if keys.is_empty() {
                return invalid("no live certificate has this public key");
            }
            let mut revoked = Vec::new();
            for key in keys {
                let rec = &state.records[&key];
                let (not_after_ms, sequence) = (rec.not_after_ms, rec.sequence);
                let key = key.rev_key();
                if state.revocations.contains_key(&key) {
                    continue;
                }
                insert_revocation(
                    state,
                    key.clone(),
                    sequence,
                    not_after_ms,
                    *reason,
                    *revoked_at_ms,
                );
                revoked.push(key);
            }
            drop_roles_of_key(state, spki_hash);
            Outcome::RevokedByKey { revoked }
        }
        Command::NextCrlNumber { issuer } => {
            let n = state.crl_numbers.entry(issuer.clone()).or_insert(0);
            *n += 1;
            Outcome::CrlNumber {
                issuer: issuer.clone(),
                number: *n,
            }
        }
        Command::PruneExpired { before_ms } => {
            let (mut records, mut revocations) = (0, 0);
            while let Some((not_after, key)) = state.expiry_index.first().cloned() {
                if not_after >= *before_ms {
                    break;
                }
                state.expiry_index.pop_first();
                if let Some(rec) = state.records.remove(&key) {
                    records += 1;
                    if let Some(set) = state.key_index.get_mut(&rec.spki_hash) {
                        set.remove(&key);
                        if set.is_empty() {
                            state.key_index.remove(&rec.spki_hash);
                        }
                    }
                }
                let key = key.rev_key();
                if let Some(r) = state.revocations.remove(&key) {
                    revocations += 1;
                    let shard_key = (key.0.clone(), r.shard);
                    if let Some(shard) = state.crl_shards.get_mut(&shard_key) {
                        shard.serials.remove(&key.1);
                        shard.version += 1;
                    }
                }
            }
            // A token-bound role goes with the last certificate of its key.
            // One enrolled so recently that its certificate may not be
            // recorded yet (it is issued right after the token is redeemed)
            // stays until the grace period is over.
            let key_index = &state.key_index;
            state.enrollments.retain(|_, e| {
                key_index.contains_key(&e.spki_hash)
                    || e.enrolled_at_ms.saturating_add(ENROLLMENT_GRACE_MS) >= *before_ms
            });
            // Leases whose whole range is expired and no longer referenced by
            // a live record can go too; a lease is kept while it is current.
            for leases in state.leases.values_mut() {
                if leases.len() > 1 {
                    let last = leases.pop().expect("len > 1");
                    leases.retain(|l| l.expires_at_ms >= *before_ms);
                    leases.push(last);
                }
            }
            Outcome::Pruned {
                records,
                revocations,
            }
        }
        Command::Noop { .. } => Outcome::Noop,
        Command::Hierarchy(change) => hierarchy::apply(state, change, at_ms),
        Command::RegisterIssuer(rec) => {
            if rec.id.is_empty() || rec.cert_der.is_empty() {
                return invalid("an issuer needs an id and a certificate");
            }
            if rec.crl_shards == 0 || rec.crl_shards > MAX_CRL_SHARDS {
                return invalid(format!(
                    "an issuer needs 1 to {MAX_CRL_SHARDS} CRL shards, got {}",
                    rec.crl_shards
                ));
            }
            if state.issuers.contains_key(&rec.id) {
                return Outcome::Rejected(Rejection::IssuerExists { id: rec.id.clone() });
            }
            if let Some(parent) = &rec.parent {
                if !state.issuers.contains_key(parent) {
                    return Outcome::Rejected(Rejection::UnknownIssuer { id: parent.clone() });
                }
            }
            state.issuers.insert(rec.id.clone(), rec.clone());
            state.hierarchy.registered(rec);
            Outcome::IssuerRegistered { id: rec.id.clone() }
        }
        Command::ApplyPolicy {
            text,
            author,
            expected_version,
        } => {
            let current = state.policy_history.last().map(|p| p.version).unwrap_or(0);
            if let Some(expected) = expected_version {
                if *expected != current {
                    return Outcome::Rejected(Rejection::PolicyConflict {
                        expected: *expected,
                        current,
                    });
                }
            }
            push_policy(state, text.clone(), author.clone(), None, at_ms)
        }
        Command::RollbackPolicy { to_version, author } => {
            let Some(old) = state
                .policy_history
                .iter()
                .find(|p| p.version == *to_version)
                .cloned()
            else {
                return Outcome::Rejected(Rejection::UnknownPolicyVersion {
                    version: *to_version,
                });
            };
            push_policy(state, old.text, author.clone(), Some(*to_version), at_ms)
        }
        Command::RecordDenial { .. } => Outcome::Audited,
        Command::CreateToken(t) => {
            if t.namespace.is_empty() || t.expires_at_ms <= at_ms {
                return invalid("a join token needs a namespace and an expiry in the future");
            }
            // Expired tokens go whenever a new one is filed: the map stays
            // the size of what is usable.
            state.tokens.retain(|_, old| old.expires_at_ms > at_ms);
            if state.tokens.contains_key(&t.token_hash) {
                return invalid("a token with this hash exists");
            }
            state.tokens.insert(t.token_hash, t.clone());
            Outcome::TokenCreated
        }
        Command::RedeemToken {
            token_hash,
            identity,
            spki_hash,
        } => {
            let usable = state
                .tokens
                .get(token_hash)
                .is_some_and(|t| t.expires_at_ms > at_ms);
            if !usable {
                // An expired token goes now rather than at the next filing.
                state.tokens.remove(token_hash);
                return Outcome::Rejected(Rejection::TokenNotUsable);
            }
            // Checked before the token is used up: a reserved identity is
            // the enrollee's mistake (or an attack), and the token stays.
            if state.enrollments.contains_key(identity) {
                return Outcome::Rejected(Rejection::IdentityReserved {
                    identity: identity.clone(),
                });
            }
            let t = state.tokens.remove(token_hash).expect("checked usable");
            if let Some(role) = &t.role {
                state.enrollments.insert(
                    identity.clone(),
                    Enrollment {
                        identity: identity.clone(),
                        role: role.clone(),
                        namespace: t.namespace.clone(),
                        enrolled_at_ms: at_ms,
                        spki_hash: *spki_hash,
                    },
                );
            }
            Outcome::TokenRedeemed(t)
        }
        Command::RebindRole {
            identity,
            from_spki,
            to_spki,
        } => {
            let has_live_cert = state.key_index.contains_key(to_spki);
            match state.enrollments.get_mut(identity) {
                Some(e) if e.spki_hash == *to_spki => Outcome::RoleRebound,
                Some(e) if e.spki_hash == *from_spki && has_live_cert => {
                    e.spki_hash = *to_spki;
                    Outcome::RoleRebound
                }
                Some(_) => invalid(format!(
                    "the role of {identity} is not bound to the renewed certificate's key, or the new key has no certificate"
                )),
                None => Outcome::Rejected(Rejection::NoRoleBinding {
                    identity: identity.clone(),
                }),
            }
        }
        Command::RevokeUnrecorded {
            issuer,
            serial,
            not_after_ms,
            reason,
            revoked_at_ms,
        } => {
            if !state.issuers.contains_key(issuer) {
                return Outcome::Rejected(Rejection::UnknownIssuer { id: issuer.clone() });
            }
            let Some(serial_key) = SerialKey::new(&serial.0).filter(|_| !serial.0.is_empty())
            else {
                return invalid("serial must be 1 to 20 bytes (RFC 5280 section 4.1.2.2)");
            };
            if state
                .key_of(issuer, serial)
                .is_some_and(|k| state.records.contains_key(&k))
            {
                return invalid(format!(
                    "certificate {serial} of issuer {issuer} is recorded; revoke it as usual"
                ));
            }
            let key = (issuer.clone(), serial.clone());
            if let Some(r) = state.revocations.get(&key) {
                return Outcome::Rejected(Rejection::AlreadyRevoked {
                    issuer: issuer.clone(),
                    serial: serial.clone(),
                    revoked_at_ms: r.revoked_at_ms,
                });
            }
            insert_revocation(state, key, 0, *not_after_ms, *reason, *revoked_at_ms);
            // Pruned like any revocation once the certificate expires (the
            // expiry index is rebuilt the same way on load).
            let cert_key = CertKey {
                issuer: state.issuer_names.intern(issuer),
                serial: serial_key,
            };
            state.expiry_index.insert((*not_after_ms, cert_key));
            Outcome::Revoked {
                issuer: issuer.clone(),
                serial: serial.clone(),
                revoked_at_ms: *revoked_at_ms,
            }
        }
        Command::RemoveRoleBinding { identity } => match state.enrollments.remove(identity) {
            Some(e) => Outcome::RoleBindingRemoved(e),
            None => Outcome::Rejected(Rejection::NoRoleBinding {
                identity: identity.clone(),
            }),
        },
        Command::ProposeChange { change, proposer } => {
            if proposer.is_empty() {
                return invalid("a change needs its proposer's identity");
            }
            state.next_change_id += 1;
            let id = state.next_change_id;
            state.pending.insert(
                id,
                PendingChange {
                    id,
                    change: change.clone(),
                    proposer: proposer.clone(),
                    proposed_at_ms: at_ms,
                },
            );
            Outcome::ChangePending { id }
        }
        Command::ApproveChange { id, approver } => {
            let Some(pending) = state.pending.get(id) else {
                return Outcome::Rejected(Rejection::UnknownChange { id: *id });
            };
            if pending.proposer == *approver {
                return Outcome::Rejected(Rejection::SelfApproval {
                    id: *id,
                    proposer: pending.proposer.clone(),
                });
            }
            let pending = state.pending.remove(id).expect("checked");
            let author = format!("{} (approved by {approver})", pending.proposer);
            let command = match pending.change {
                Change::RegisterIssuers(recs) => {
                    let mut last = String::new();
                    for rec in recs {
                        last = rec.id.clone();
                        let is_root = rec.parent.is_none();
                        match apply_command(state, &Command::RegisterIssuer(rec), at_ms) {
                            Outcome::IssuerRegistered { .. } => {}
                            Outcome::Rejected(Rejection::IssuerExists { .. }) if is_root => {}
                            other => return other,
                        }
                    }
                    return Outcome::IssuerRegistered { id: last };
                }
                Change::ApplyPolicy {
                    text,
                    expected_version,
                } => Command::ApplyPolicy {
                    text,
                    author,
                    expected_version,
                },
                Change::RollbackPolicy { to_version } => {
                    Command::RollbackPolicy { to_version, author }
                }
                Change::Hierarchy(h) => Command::Hierarchy(h),
            };
            // A change that no longer applies (the policy moved on past
            // its expected version) is consumed all the same: the proposer
            // files a fresh one against what is current.
            apply_command(state, &command, at_ms)
        }
    }
}

fn record_issuance(state: &mut State, record: &IssuanceRecord) -> Outcome {
    if record.serial.0.is_empty() || record.serial.0.len() > 20 {
        return invalid("serial must be 1 to 20 bytes (RFC 5280 section 4.1.2.2)");
    }
    if record.not_after_ms <= record.not_before_ms {
        return invalid("notAfter must be later than notBefore");
    }
    let leased = state
        .leases
        .get(&(record.issuer.clone(), record.node_id))
        .is_some_and(|ls| ls.iter().any(|l| l.contains(record.sequence)));
    if !leased {
        return Outcome::Rejected(Rejection::SequenceNotLeased {
            issuer: record.issuer.clone(),
            node_id: record.node_id,
            sequence: record.sequence,
        });
    }
    if state.hierarchy.is_retired(&record.issuer) {
        return Outcome::Rejected(Rejection::IssuerRetired {
            id: record.issuer.clone(),
        });
    }
    let key = CertKey {
        issuer: state.issuer_names.intern(&record.issuer),
        serial: SerialKey::new(&record.serial.0).expect("checked: at most 20 octets"),
    };
    let std::collections::btree_map::Entry::Vacant(slot) = state.records.entry(key.clone()) else {
        return Outcome::Rejected(Rejection::DuplicateSerial {
            issuer: record.issuer.clone(),
            serial: record.serial.clone(),
        });
    };
    slot.insert(record.clone());
    state
        .hierarchy
        .leaf_recorded(&record.issuer, record.not_after_ms);
    state
        .key_index
        .entry(record.spki_hash)
        .or_default()
        .insert(key.clone());
    state.expiry_index.insert((record.not_after_ms, key));
    Outcome::IssuanceRecorded {
        issuer: record.issuer.clone(),
        serial: record.serial.clone(),
    }
}

/// A revoked key holds no role any more: drops the token-bound roles bound
/// to it.
fn drop_roles_of_key(state: &mut State, spki_hash: &[u8; 32]) {
    state.enrollments.retain(|_, e| e.spki_hash != *spki_hash);
}

/// Records a revocation and lists it in its CRL shard.
fn insert_revocation(
    state: &mut State,
    key: RevKey,
    sequence: u64,
    not_after_ms: u64,
    reason: RevocationReason,
    revoked_at_ms: u64,
) {
    let shards = state
        .issuers
        .get(&key.0)
        .map(|i| i.crl_shards.max(1))
        .unwrap_or(1);
    let shard = sequence % shards;
    let entry = state.crl_shards.entry((key.0.clone(), shard)).or_default();
    entry.serials.insert(key.1.clone());
    entry.version += 1;
    state.revocations.insert(
        key,
        Revocation {
            reason,
            revoked_at_ms,
            not_after_ms,
            shard,
        },
    );
}

fn push_policy(
    state: &mut State,
    text: String,
    author: String,
    rollback_of: Option<u64>,
    at_ms: u64,
) -> Outcome {
    let version = state.policy_history.last().map(|p| p.version).unwrap_or(0) + 1;
    state.policy_history.push(PolicyVersion {
        version,
        text,
        applied_at_ms: at_ms,
        author,
        rollback_of,
    });
    Outcome::PolicyApplied { version }
}

fn invalid(reason: impl Into<String>) -> Outcome {
    Outcome::Rejected(Rejection::Invalid {
        reason: reason.into(),
    })
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use proptest::prelude::*;

    fn key(names: &mut IssuerNames, issuer: &str, serial: &[u8]) -> CertKey {
        CertKey {
            issuer: names.intern(issuer),
            serial: SerialKey::new(serial).unwrap(),
        }
    }

    proptest! {
        /// The inline key sorts and compares exactly as the (issuer, serial)
        /// pair it stands for, zero octets and prefixes included, so every
        /// ordered walk (listings, pruning, snapshots) is unchanged.
        #[test]
        fn cert_keys_order_as_issuer_then_serial(
            a in ("[a-c]{0,3}", proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..=20)),
            b in ("[a-c]{0,3}", proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..=20)),
        ) {
            let mut names = IssuerNames::default();
            let (ka, kb) = (key(&mut names, &a.0, &a.1), key(&mut names, &b.0, &b.1));
            // Unshared issuer names compare by content too.
            let kb_own = CertKey { issuer: Arc::from(b.0.as_str()), serial: kb.serial };
            let expected = (a.0.as_str(), a.1.as_slice()).cmp(&(b.0.as_str(), b.1.as_slice()));
            prop_assert_eq!(ka.cmp(&kb), expected);
            prop_assert_eq!(ka.cmp(&kb_own), expected);
            prop_assert_eq!(ka == kb, expected == Ordering::Equal);
            prop_assert_eq!(kb.serial.to_serial(), Serial(b.1.clone()));
        }
    }

    #[test]
    fn serials_over_20_octets_have_no_key() {
        assert!(SerialKey::new(&[1; 21]).is_none());
        assert!(SerialKey::new(&[1; 20]).is_some());
    }
}
