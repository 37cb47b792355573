//! Shared helpers for the integration tests; clusters come from
//! `quorumca_testkit::cluster`.
#![allow(dead_code)]

use quorumca_ledger::{Command, Outcome, Proposal};

pub use quorumca_testkit::cluster::{fast_settings, TestCluster};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUORUMCA_TEST_LOG")
                .unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A proposal that changes state (so hashes differ if it is lost), with an
/// idempotency key so retries through failover are safe.
pub fn crl_bump(key: &str) -> Proposal {
    Proposal::new(
        quorumca_consensus::now_ms(),
        Command::NextCrlNumber {
            issuer: "test".into(),
        },
    )
    .with_idempotency_key(key)
}

pub fn crl_number(o: &Outcome) -> u64 {
    match o {
        Outcome::CrlNumber { number, .. } => *number,
        other => panic!("expected a CRL number, got {other:?}"),
    }
}
