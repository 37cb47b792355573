//! Ledger contents for the ledger benchmarks (`growth`, `micro`): one
//! issuer, node 1's leases, and issuance records numbered by sequence, so
//! both measure the same records.

use quorumca_ledger::{Command, IssuanceRecord, IssuerRecord, Proposal, Serial};

/// Registers issuer "eu" (16 CRL shards, never expiring).
pub fn register_issuer() -> Proposal {
    Proposal::new(
        1,
        Command::RegisterIssuer(IssuerRecord {
            id: "eu".into(),
            region: Some("eu".into()),
            cert_der: vec![0x30, 0],
            sealed_key: None,
            parent: None,
            not_after_ms: u64::MAX,
            crl_shards: 16,
        }),
    )
}

/// Grants node 1 the next `block` sequences of "eu".
pub fn lease(block: u64) -> Proposal {
    Proposal::new(
        2,
        Command::GrantSerialLease {
            node_id: 1,
            issuer: "eu".into(),
            block,
            expires_at_ms: u64::MAX,
        },
    )
}

/// The issuance record of sequence `i`: a distinct 16-byte serial and key
/// hash, realistic string fields.
pub fn record(i: u64) -> IssuanceRecord {
    let mut serial = i.to_be_bytes().to_vec();
    serial.extend_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    serial[0] = 0x01;
    let mut spki = [0u8; 32];
    spki[..8].copy_from_slice(&i.to_be_bytes());
    IssuanceRecord {
        issuer: "eu".into(),
        serial: Serial(serial),
        sequence: i,
        node_id: 1,
        not_before_ms: 1_800_000_000_000,
        not_after_ms: 1_800_086_400_000 + i,
        names_digest: [7; 32],
        spki_hash: spki,
        profile: "service".into(),
        namespace: "payments".into(),
        actor: "spiffe://example.org/ns/payments/sa/api".into(),
        full_der: None,
        der_for_replay_only: false,
    }
}
