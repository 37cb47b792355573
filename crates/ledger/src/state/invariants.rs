//! What must hold between the state's parts after every apply, checked in
//! debug builds (as TigerBeetle asserts its invariants): the indexes agree
//! with the records, the CRL shards with the revocations, the idempotency
//! expiry queue with its map, the audit log with its byte count, leases
//! never overlap. A violation is a bug in the ledger, never bad input, so
//! it panics, naming what disagrees.
//!
//! Every test, property test and simulation runs in a debug build, so each
//! applied proposal is checked there. The full check walks the whole state;
//! to keep that affordable on large states it runs after every proposal
//! while the state holds at most [`FULL_CHECK_SIZE`] entries, and beyond
//! that once every `size / FULL_CHECK_SIZE` proposals (by the audit
//! chain's length), so the cost per proposal stays bounded. Release builds
//! do not compile this module.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::audit::{audit_entry_bytes, MAX_AUDIT_BYTES, MAX_AUDIT_ENTRIES};
use super::keys::{CertKey, SerialKey};
use super::State;
use crate::command::SerialLease;

/// Entries (records, revocations, audit entries, idempotency keys) up to
/// which every proposal is followed by a full check.
pub(super) const FULL_CHECK_SIZE: usize = 256;

/// Checks after a proposal that moved the audit chain from
/// `audit_len_before` to where it is now (see the module doc for when).
pub(super) fn check_after(state: &State, audit_len_before: u64) {
    let size = state.records.len()
        + state.revocations.len()
        + state.audit_log.len()
        + state.idempotency.len();
    let stride = (size / FULL_CHECK_SIZE).max(1) as u64;
    if audit_len_before / stride != state.audit_len / stride {
        check(state);
    }
}

/// Every invariant, over the whole state.
pub(super) fn check(s: &State) {
    records_and_their_indexes(s);
    revocations_and_crl_shards(s);
    expiry_index(s);
    idempotency(s);
    audit_log(s);
    leases(s);
    governance(s);
}

fn records_and_their_indexes(s: &State) {
    for (key, rec) in &s.records {
        let what = || format!("record {} of issuer {}", rec.serial, rec.issuer);
        assert!(
            *key.issuer == *rec.issuer && key.serial.to_serial() == rec.serial,
            "{} is filed under the key of {} of {}",
            what(),
            key.serial.to_serial(),
            key.issuer
        );
        assert!(
            s.issuer_names.get(&rec.issuer).is_some(),
            "{}: its issuer name is not interned",
            what()
        );
        assert!(
            s.expiry_index.contains(&(rec.not_after_ms, key.clone())),
            "{} is missing from the expiry index, so it would never be pruned",
            what()
        );
        assert!(
            s.key_index
                .get(&rec.spki_hash)
                .is_some_and(|set| set.contains(key)),
            "{} is missing from the key index, so revoke-by-key would miss it",
            what()
        );
        let last = s.hierarchy.last_leaf_expiry(&rec.issuer);
        assert!(
            rec.not_after_ms <= last,
            "{} expires at {} ms, after its issuer's last leaf expiry {last} ms, \
             so the issuer could retire under it",
            what(),
            rec.not_after_ms
        );
    }
    let mut keyed = 0;
    for (spki, set) in &s.key_index {
        assert!(
            !set.is_empty(),
            "the key index keeps an empty set for key sha256 {}",
            hex::encode(spki)
        );
        keyed += set.len();
    }
    // Each record is in its own key's set (above), so equal totals mean
    // the sets hold nothing else.
    assert_eq!(
        keyed,
        s.records.len(),
        "the key index lists {keyed} certificates, the records are {}",
        s.records.len()
    );
}

fn revocations_and_crl_shards(s: &State) {
    for ((issuer, serial), rev) in &s.revocations {
        let listed = s
            .crl_shards
            .get(&(issuer.clone(), rev.shard))
            .is_some_and(|c| c.serials.contains(serial));
        assert!(
            listed,
            "revocation of {serial} of issuer {issuer} is not listed in its CRL shard {}",
            rev.shard
        );
        assert!(
            s.issuers.contains_key(issuer),
            "revocation of {serial} names issuer {issuer}, which is not registered"
        );
        if let Some(rec) = cert_key(issuer, serial).and_then(|k| s.records.get(&k)) {
            assert_eq!(
                rec.not_after_ms, rev.not_after_ms,
                "revocation of {serial} of issuer {issuer} leaves the CRL at another time \
                 than its certificate expires"
            );
        }
    }
    // Each revocation is listed in its own shard (above), so equal totals
    // mean the shards list nothing else.
    let listed: usize = s.crl_shards.values().map(|c| c.serials.len()).sum();
    assert_eq!(
        listed,
        s.revocations.len(),
        "CRL shards list {listed} serials, the revocations are {}",
        s.revocations.len()
    );
}

/// The expiry index holds exactly one entry for each record and each
/// revocation without a record (a bootstrap identity's), at its notAfter.
fn expiry_index(s: &State) {
    let mut unrecorded = 0;
    for ((issuer, serial), rev) in &s.revocations {
        let Some(key) = cert_key(issuer, serial) else {
            continue;
        };
        if !s.records.contains_key(&key) {
            unrecorded += 1;
            assert!(
                s.expiry_index.contains(&(rev.not_after_ms, key)),
                "unrecorded revocation of {serial} of issuer {issuer} is missing from the \
                 expiry index, so it would never leave the CRL"
            );
        }
    }
    assert_eq!(
        s.expiry_index.len(),
        s.records.len() + unrecorded,
        "the expiry index holds {} entries for {} records and {unrecorded} unrecorded \
         revocations",
        s.expiry_index.len(),
        s.records.len()
    );
}

fn idempotency(s: &State) {
    for (key, r) in &s.idempotency {
        assert!(
            s.idempotency_expiry.contains(&(r.at_ms, key.clone())),
            "idempotency key {key:?} has no expiry entry, so it would be remembered forever"
        );
    }
    assert_eq!(
        s.idempotency_expiry.len(),
        s.idempotency.len(),
        "the idempotency expiry queue holds {} entries for {} keys",
        s.idempotency_expiry.len(),
        s.idempotency.len()
    );
}

fn audit_log(s: &State) {
    let bytes: u64 = s.audit_log.iter().map(audit_entry_bytes).sum();
    assert_eq!(
        bytes, s.audit_bytes,
        "audit entries hold {bytes} bytes, the count says {}",
        s.audit_bytes
    );
    assert!(
        s.audit_log.len() <= MAX_AUDIT_ENTRIES,
        "the audit log holds {} entries, over its cap",
        s.audit_log.len()
    );
    // One entry alone may exceed the byte cap: it is kept, as the newest.
    assert!(
        s.audit_bytes <= MAX_AUDIT_BYTES || s.audit_log.len() == 1,
        "the audit log holds {} bytes in {} entries, over its cap",
        s.audit_bytes,
        s.audit_log.len()
    );
    let mut prev = None;
    for e in &s.audit_log {
        assert!(
            prev.is_none_or(|p| p < e.seq) && e.seq <= s.audit_len,
            "audit entry {} is out of order (after {prev:?}, chain length {})",
            e.seq,
            s.audit_len
        );
        prev = Some(e.seq);
    }
}

/// Leases name their own (issuer, node), lie below the issuer's cursor, and
/// never overlap, across nodes too: the property serial uniqueness rests on.
fn leases(s: &State) {
    let mut by_issuer: BTreeMap<&str, Vec<&SerialLease>> = BTreeMap::new();
    for ((issuer, node), ls) in &s.leases {
        let next = s.next_sequence.get(issuer).copied().unwrap_or(0);
        assert!(
            s.issuers.contains_key(issuer),
            "node {node} holds leases of issuer {issuer}, which is not registered"
        );
        for l in ls {
            assert!(
                l.issuer == *issuer && l.node_id == *node && l.start < l.end && l.end <= next,
                "lease {}..{} of issuer {} node {} is filed under ({issuer}, {node}) \
                 with the cursor at {next}",
                l.start,
                l.end,
                l.issuer,
                l.node_id
            );
            by_issuer.entry(issuer).or_default().push(l);
        }
    }
    for (issuer, mut ls) in by_issuer {
        ls.sort_by_key(|l| l.start);
        for w in ls.windows(2) {
            assert!(
                w[0].end <= w[1].start,
                "leases {}..{} (node {}) and {}..{} (node {}) of issuer {issuer} overlap",
                w[0].start,
                w[0].end,
                w[0].node_id,
                w[1].start,
                w[1].end,
                w[1].node_id
            );
        }
    }
}

/// The maps keyed by a field of their values are keyed by that field.
fn governance(s: &State) {
    for (id, rec) in &s.issuers {
        assert_eq!(*id, rec.id, "issuer {} is filed under {id}", rec.id);
        if let Some(parent) = &rec.parent {
            assert!(
                s.issuers.contains_key(parent),
                "issuer {id} names parent {parent}, which is not registered"
            );
        }
    }
    for (id, change) in &s.pending {
        assert!(
            *id == change.id && *id <= s.next_change_id,
            "pending change {} is filed under {id} with the next id at {}",
            change.id,
            s.next_change_id
        );
    }
    for w in s.policy_history.windows(2) {
        assert!(
            w[0].version < w[1].version,
            "policy version {} follows version {}",
            w[1].version,
            w[0].version
        );
    }
    for (identity, e) in &s.enrollments {
        assert_eq!(
            *identity, e.identity,
            "the role of {} is filed under {identity}",
            e.identity
        );
    }
    for (hash, t) in &s.tokens {
        assert_eq!(
            *hash,
            t.token_hash,
            "a join token is filed under another hash ({})",
            hex::encode(hash)
        );
    }
}

fn cert_key(issuer: &str, serial: &crate::command::Serial) -> Option<CertKey> {
    Some(CertKey {
        issuer: Arc::from(issuer),
        serial: SerialKey::new(&serial.0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{lease, record, revoke, with_issuers};
    use crate::{apply, Outcome};

    /// A state with two records of one key, one of them revoked.
    fn populated() -> State {
        let mut s = with_issuers();
        assert!(matches!(
            apply(&mut s, &lease(1, "eu", 10)),
            Outcome::LeaseGranted(_)
        ));
        for (seq, serial) in [(0, [1u8, 1]), (1, [1, 2])] {
            let out = apply(&mut s, &record(1, "eu", seq, &serial, 9_000));
            assert!(matches!(out, Outcome::IssuanceRecorded { .. }), "{out:?}");
        }
        assert!(matches!(
            apply(&mut s, &revoke("eu", &[1, 1])),
            Outcome::Revoked { .. }
        ));
        s
    }

    #[test]
    fn a_consistent_state_passes() {
        check(&populated());
    }

    #[test]
    #[should_panic(expected = "missing from the key index")]
    fn a_record_missing_from_the_key_index_is_caught() {
        let mut s = populated();
        let set = s.key_index.values_mut().next().expect("one key");
        let first = set.first().cloned().expect("two records");
        set.remove(&first);
        check(&s);
    }

    #[test]
    #[should_panic(expected = "missing from the expiry index")]
    fn a_record_missing_from_the_expiry_index_is_caught() {
        let mut s = populated();
        s.expiry_index.pop_last();
        check(&s);
    }

    #[test]
    #[should_panic(expected = "not listed in its CRL shard")]
    fn a_revocation_missing_from_its_shard_is_caught() {
        let mut s = populated();
        for shard in s.crl_shards.values_mut() {
            shard.serials.clear();
        }
        check(&s);
    }

    #[test]
    #[should_panic(expected = "the count says")]
    fn a_wrong_audit_byte_count_is_caught() {
        let mut s = populated();
        s.audit_bytes += 1;
        check(&s);
    }

    #[test]
    #[should_panic(expected = "overlap")]
    fn overlapping_leases_are_caught() {
        let mut s = populated();
        let mut twin = s.leases_of("eu", 1)[0].clone();
        twin.node_id = 2;
        s.leases.insert(("eu".into(), 2), vec![twin]);
        check(&s);
    }

    #[test]
    #[should_panic(expected = "missing from the key index")]
    fn apply_runs_the_check_in_debug_builds() {
        let mut s = populated();
        s.key_index.clear();
        apply(&mut s, &lease(1, "eu", 1));
    }
}
