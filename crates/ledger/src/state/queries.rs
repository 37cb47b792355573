//! What the rest of the system reads from the state: lookups, listings in
//! index order and paging cursors. Nothing here changes the state.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::keys::{CertKey, SerialKey};
use super::{CrlShard, NodeLabels, Revocation, State};
use crate::command::{
    AuditEntry, Enrollment, IssuanceRecord, IssuerRecord, JoinToken, Outcome, PendingChange,
    PolicyVersion, Serial, SerialLease,
};

impl State {
    /// Every node's region and zone, by node id.
    pub fn node_labels(&self) -> &BTreeMap<u64, NodeLabels> {
        &self.nodes
    }

    /// The index key of a certificate that may be recorded; None when none
    /// can be (an issuer no record ever named, a serial over 20 octets).
    pub(super) fn key_of(&self, issuer: &str, serial: &Serial) -> Option<CertKey> {
        Some(CertKey {
            issuer: self.issuer_names.get(issuer)?.clone(),
            serial: SerialKey::new(&serial.0)?,
        })
    }

    /// The record of one live certificate.
    pub fn record(&self, issuer: &str, serial: &Serial) -> Option<&IssuanceRecord> {
        self.records.get(&self.key_of(issuer, serial)?)
    }

    /// Every live certificate's record, in (issuer, serial) order.
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

    /// How many live certificates are recorded.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// The revocation of one certificate, while it has not expired.
    pub fn revocation(&self, issuer: &str, serial: &Serial) -> Option<&Revocation> {
        self.revocations.get(&(issuer.to_string(), serial.clone()))
    }

    /// Every revocation of a certificate that has not expired, in (issuer, serial) order.
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

    /// The last CRL number handed out for `issuer` (0 before the first).
    pub fn crl_number(&self, issuer: &str) -> u64 {
        self.crl_numbers.get(issuer).copied().unwrap_or(0)
    }

    /// The serial leases `node_id` holds for `issuer`, oldest first; the last is current.
    pub fn leases_of(&self, issuer: &str, node_id: u64) -> &[SerialLease] {
        self.leases
            .get(&(issuer.to_string(), node_id))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// One registered issuer.
    pub fn issuer(&self, id: &str) -> Option<&IssuerRecord> {
        self.issuers.get(id)
    }

    /// Every registered issuer, retired ones too, by id.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerRecord> {
        self.issuers.values()
    }

    /// The current policy version; None before the first apply.
    pub fn policy(&self) -> Option<&PolicyVersion> {
        self.policy_history.last()
    }

    /// Every policy version, oldest first.
    pub fn policy_history(&self) -> &[PolicyVersion] {
        &self.policy_history
    }

    /// The head of the audit hash chain: it commits to every proposal applied.
    pub fn audit_head(&self) -> [u8; 32] {
        self.audit_head
    }

    /// How many proposals the audit chain covers.
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

    /// Bytes of the audit entries held, as [`MAX_AUDIT_BYTES`](super::MAX_AUDIT_BYTES) counts them.
    pub fn audit_bytes(&self) -> u64 {
        self.audit_bytes
    }

    /// Changes waiting for a second admin, by id.
    pub fn pending_changes(&self) -> impl Iterator<Item = &PendingChange> {
        self.pending.values()
    }

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
}
