//! Revocations, the CRL shards that list them, and CRL numbers. A revoked
//! key also loses the token-bound roles bound to it.

use super::keys::{CertKey, RevKey, SerialKey};
use super::{invalid, Revocation, State};
use crate::command::{Outcome, Rejection, RevocationReason, Serial};

pub(super) fn revoke(
    state: &mut State,
    issuer: &str,
    serial: &Serial,
    reason: RevocationReason,
    revoked_at_ms: u64,
) -> Outcome {
    let record = state
        .key_of(issuer, serial)
        .and_then(|k| state.records.get(&k));
    let Some(record) = record else {
        return Outcome::Rejected(Rejection::UnknownCertificate {
            issuer: issuer.to_string(),
            serial: serial.clone(),
        });
    };
    let key = (issuer.to_string(), serial.clone());
    if let Some(refusal) = already_revoked(state, &key) {
        return refusal;
    }
    let (not_after_ms, sequence, spki) = (record.not_after_ms, record.sequence, record.spki_hash);
    insert_revocation(state, key, sequence, not_after_ms, reason, revoked_at_ms);
    drop_roles_of_key(state, &spki);
    Outcome::Revoked {
        issuer: issuer.to_string(),
        serial: serial.clone(),
        revoked_at_ms,
    }
}

/// Every live certificate of one public key (a compromised key is revoked
/// wherever it was certified), through the key index.
pub(super) fn revoke_by_key(
    state: &mut State,
    spki_hash: &[u8; 32],
    reason: RevocationReason,
    revoked_at_ms: u64,
) -> Outcome {
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
            reason,
            revoked_at_ms,
        );
        revoked.push(key);
    }
    drop_roles_of_key(state, spki_hash);
    Outcome::RevokedByKey { revoked }
}

/// A certificate the ledger never recorded (a bootstrap identity's): listed
/// like any revocation, and pruned by its own expiry.
pub(super) fn revoke_unrecorded(
    state: &mut State,
    issuer: &str,
    serial: &Serial,
    not_after_ms: u64,
    reason: RevocationReason,
    revoked_at_ms: u64,
) -> Outcome {
    if !state.issuers.contains_key(issuer) {
        return Outcome::Rejected(Rejection::UnknownIssuer {
            id: issuer.to_string(),
        });
    }
    let Some(serial_key) = SerialKey::new(&serial.0).filter(|_| !serial.0.is_empty()) else {
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
    let key = (issuer.to_string(), serial.clone());
    if let Some(refusal) = already_revoked(state, &key) {
        return refusal;
    }
    insert_revocation(state, key, 0, not_after_ms, reason, revoked_at_ms);
    // Pruned like any revocation once the certificate expires (the expiry
    // index is rebuilt the same way on load).
    let cert_key = CertKey {
        issuer: state.issuer_names.intern(issuer),
        serial: serial_key,
    };
    state.expiry_index.insert((not_after_ms, cert_key));
    Outcome::Revoked {
        issuer: issuer.to_string(),
        serial: serial.clone(),
        revoked_at_ms,
    }
}

pub(super) fn next_crl_number(state: &mut State, issuer: &str) -> Outcome {
    let n = state.crl_numbers.entry(issuer.to_string()).or_insert(0);
    *n += 1;
    Outcome::CrlNumber {
        issuer: issuer.to_string(),
        number: *n,
    }
}

/// The refusal of a second revocation of one certificate (it would move
/// its revocation time), if it is revoked already.
fn already_revoked(state: &State, key: &RevKey) -> Option<Outcome> {
    let r = state.revocations.get(key)?;
    Some(Outcome::Rejected(Rejection::AlreadyRevoked {
        issuer: key.0.clone(),
        serial: key.1.clone(),
        revoked_at_ms: r.revoked_at_ms,
    }))
}

/// A revoked key holds no role any more: drops the token-bound roles bound
/// to it.
fn drop_roles_of_key(state: &mut State, spki_hash: &[u8; 32]) {
    state.enrollments.retain(|_, e| e.spki_hash != *spki_hash);
}

/// Records a revocation and lists it in its CRL shard (by sequence number,
/// so a certificate's shard is fixed when it is signed).
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
