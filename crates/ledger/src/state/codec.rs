//! The snapshot codec: the canonical encoding every node hashes and
//! snapshots. Only the primary data is written; the indexes are derived on
//! load, which keeps snapshots small and restarts fast, and a state that
//! decodes has indexes that agree with its records by construction.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ring::digest::SHA256;
use serde::{Deserialize, Serialize};

use super::audit::audit_entry_bytes;
use super::hierarchy;
use super::idempotency::Remembered;
use super::keys::{CertKey, IssuerNames, RevKey, SerialKey};
use super::{CrlShard, NodeLabels, Revocation, State};
use crate::command::{
    AuditEntry, Enrollment, IssuanceRecord, IssuerRecord, JoinToken, PendingChange, PolicyVersion,
    SerialLease,
};

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

    /// Loads a snapshot, rebuilding the derived indexes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let state: State = postcard::from_bytes(bytes).map_err(|e| DecodeError(e.to_string()))?;
        #[cfg(debug_assertions)]
        super::invariants::check(&state);
        Ok(state)
    }
}

/// A snapshot or log entry that does not decode as ledger state.
#[derive(Debug, thiserror::Error)]
#[error("ledger state does not decode: {0}")]
pub struct DecodeError(String);
