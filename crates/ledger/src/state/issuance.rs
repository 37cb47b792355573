//! Serial leases and issuance records: a node leases a block of sequence
//! numbers per issuer, records what it signed inside its blocks, and every
//! node prunes records (and their revocations) once they have expired.

use std::collections::btree_map::Entry;

use super::idempotency::{command_digest, idempotent};
use super::keys::{CertKey, SerialKey};
use super::{invalid, State, ENROLLMENT_GRACE_MS};
use crate::command::{
    BatchedRecord, Command, IssuanceRecord, Outcome, Rejection, SerialLease, MAX_RECORD_BATCH,
};

/// Largest serial lease block; bounds how many sequence numbers one proposal
/// can burn.
pub const MAX_LEASE_BLOCK: u64 = 1 << 24;

pub(super) fn grant_serial_lease(
    state: &mut State,
    node_id: u64,
    issuer: &str,
    block: u64,
    expires_at_ms: u64,
) -> Outcome {
    if block == 0 || block > MAX_LEASE_BLOCK {
        return invalid(format!(
            "lease block must be between 1 and {MAX_LEASE_BLOCK}, got {block}"
        ));
    }
    if !state.issuers.contains_key(issuer) {
        return Outcome::Rejected(Rejection::UnknownIssuer {
            id: issuer.to_string(),
        });
    }
    let next = state.next_sequence.entry(issuer.to_string()).or_insert(0);
    let Some(end) = next.checked_add(block) else {
        return invalid(format!("sequence space of issuer {issuer} is exhausted"));
    };
    let lease = SerialLease {
        issuer: issuer.to_string(),
        node_id,
        start: *next,
        end,
        expires_at_ms,
    };
    *next = end;
    state
        .leases
        .entry((issuer.to_string(), node_id))
        .or_default()
        .push(lease.clone());
    Outcome::LeaseGranted(lease)
}

pub(super) fn record_issuance(state: &mut State, record: &IssuanceRecord) -> Outcome {
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
    // A serial revoked while unrecorded (a bootstrap identity's) is taken
    // too: two certificates of one issuer never share a serial (RFC 5280
    // section 4.1.2.2), and the new one would be born on the CRL.
    let taken = !state.revocations.is_empty()
        && state
            .revocations
            .contains_key(&(record.issuer.clone(), record.serial.clone()));
    let (false, Entry::Vacant(slot)) = (taken, state.records.entry(key.clone())) else {
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

/// Records of one batch, each with its own idempotency key: each answered
/// exactly as a lone `RecordIssuance` proposed with that key would be (the
/// same digest, so a retry may come either way).
pub(super) fn record_issuances(
    state: &mut State,
    records: &[BatchedRecord],
    at_ms: u64,
) -> Outcome {
    if records.is_empty() || records.len() > MAX_RECORD_BATCH {
        return invalid(format!(
            "a batch holds 1 to {MAX_RECORD_BATCH} records, got {}",
            records.len()
        ));
    }
    Outcome::Batch(
        records
            .iter()
            .map(|item| {
                idempotent(
                    state,
                    item.idempotency_key.as_deref(),
                    || command_digest(&Command::RecordIssuance(item.record.clone())),
                    at_ms,
                    |state| record_issuance(state, &item.record),
                )
            })
            .collect(),
    )
}

/// Drops what expired before `before_ms`, through the expiry index so
/// nothing is scanned: records, their revocations (and the CRL shards that
/// listed them), the token-bound roles of keys with no certificate left,
/// and leases nothing can refer to any more.
pub(super) fn prune_expired(state: &mut State, before_ms: u64) -> Outcome {
    let (mut records, mut revocations) = (0, 0);
    while let Some((not_after, key)) = state.expiry_index.first().cloned() {
        if not_after >= before_ms {
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
    // A token-bound role goes with the last certificate of its key. One
    // enrolled so recently that its certificate may not be recorded yet (it
    // is issued right after the token is redeemed) stays until the grace
    // period is over.
    let key_index = &state.key_index;
    state.enrollments.retain(|_, e| {
        key_index.contains_key(&e.spki_hash)
            || e.enrolled_at_ms.saturating_add(ENROLLMENT_GRACE_MS) >= before_ms
    });
    // Leases whose whole range is expired and no longer referenced by a
    // live record can go too; a lease is kept while it is current.
    for leases in state.leases.values_mut() {
        if leases.len() > 1 {
            let last = leases.pop().expect("len > 1");
            leases.retain(|l| l.expires_at_ms >= before_ms);
            leases.push(last);
        }
    }
    Outcome::Pruned {
        records,
        revocations,
    }
}
