//! Criterion micro-benchmarks of the pieces one issuance is made of: CSR
//! verification and leaf signing per key algorithm, CRL building, and the
//! ledger's apply for the commands the hot path commits. They say where a
//! change in `compare` or `load` came from; the end-to-end numbers live
//! there.
//!
//! cargo bench -p quorumca-benches --bench micro [-- FILTER]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use quorumca_benches::fixture;
use quorumca_ca::{CaSigner, CrlEntry, CrlSpec, LeafSpec, Usage, Validity};
use quorumca_ledger::{apply, BatchedRecord, Command, Outcome, Proposal, RevocationReason, State};

const ALGORITHMS: [(&str, &rcgen::SignatureAlgorithm); 3] = [
    ("ecdsa-p256", &rcgen::PKCS_ECDSA_P256_SHA256),
    ("ecdsa-p384", &rcgen::PKCS_ECDSA_P384_SHA384),
    ("ed25519", &rcgen::PKCS_ED25519),
];

const FOREVER: Validity = Validity {
    not_before: 0,
    not_after: 4_000_000_000,
};

fn key(alg: &'static rcgen::SignatureAlgorithm) -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(alg).expect("key generation")
}

fn csr(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    rcgen::CertificateParams::new(vec!["bench.payments.svc.cluster.local".to_string()])
        .expect("params")
        .serialize_request(&key(alg))
        .expect("CSR")
        .der()
        .to_vec()
}

/// A root and an intermediate whose key uses `alg`.
fn intermediate(alg: &'static rcgen::SignatureAlgorithm) -> CaSigner {
    let root = quorumca_ca::self_signed_root(
        key(&rcgen::PKCS_ECDSA_P384_SHA384),
        "Bench Root",
        FOREVER,
        &[1],
    )
    .expect("root");
    quorumca_ca::sign_intermediate(&root, key(alg), "Bench Intermediate", FOREVER, &[2])
        .expect("intermediate")
}

fn leaf_spec(n: u64) -> LeafSpec {
    let mut serial = vec![0x40];
    serial.extend_from_slice(&n.to_be_bytes());
    serial.extend_from_slice(&[0x11; 7]);
    LeafSpec {
        serial,
        validity: Validity {
            not_before: 1_800_000_000,
            not_after: 1_800_086_400,
        },
        dns: vec!["bench.payments.svc.cluster.local".into()],
        ips: vec![],
        uris: vec![],
        usages: vec![Usage::ServerAuth],
        crl_url: Some("http://ca.test/crl/eu/0.crl".into()),
        ocsp_url: Some("http://ca.test/ocsp/eu".into()),
    }
}

fn csr_verification(c: &mut Criterion) {
    let mut g = c.benchmark_group("csr_verify");
    for (name, alg) in ALGORITHMS {
        let der = csr(alg);
        g.bench_function(name, |b| {
            b.iter(|| quorumca_ca::parse_csr(black_box(&der)).expect("valid CSR"))
        });
    }
    g.finish();
}

fn leaf_signing(c: &mut Criterion) {
    let mut g = c.benchmark_group("sign_leaf");
    let subject = quorumca_ca::parse_csr(&csr(&rcgen::PKCS_ECDSA_P256_SHA256)).expect("CSR");
    for (name, alg) in ALGORITHMS {
        let signer = intermediate(alg);
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                quorumca_ca::sign_leaf(&signer, &subject, &leaf_spec(n)).expect("signs")
            })
        });
    }
    g.finish();
}

fn crl_building(c: &mut Criterion) {
    let mut g = c.benchmark_group("sign_crl");
    g.sample_size(10);
    let signer = intermediate(&rcgen::PKCS_ECDSA_P256_SHA256);
    for n in [1_000u64, 10_000, 100_000] {
        let entries: Vec<CrlEntry> = (0..n)
            .map(|i| {
                let mut serial = vec![0x01];
                serial.extend_from_slice(&i.to_be_bytes());
                serial.extend_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                CrlEntry {
                    serial,
                    revoked_at: 1_800_000_000,
                    reason: 1,
                }
            })
            .collect();
        let spec = CrlSpec {
            number: 1,
            this_update: 1_800_000_000,
            next_update: 1_800_086_400,
            distribution_point: Some("http://ca.test/crl/eu/0.crl".into()),
            delta_base: None,
            freshest: None,
            entries,
        };
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("{n}_entries"), |b| {
            b.iter(|| quorumca_ca::sign_crl(&signer, black_box(&spec)).expect("signs"))
        });
    }
    g.finish();
}

/// A ledger holding `n` live records of issuer "eu", with its lease
/// covering sequences up to `n + room`.
fn ledger(n: u64, room: u64) -> State {
    let mut s = State::default();
    let must = |o: Outcome| assert!(!matches!(o, Outcome::Rejected(_)), "{o:?}");
    must(apply(&mut s, &fixture::register_issuer()));
    let mut granted = 0;
    while granted < n + room {
        let block = (n + room - granted).min(quorumca_ledger::MAX_LEASE_BLOCK);
        must(apply(&mut s, &fixture::lease(block)));
        granted += block;
    }
    for start in (0..n).step_by(1024) {
        let batch = (start..(start + 1024).min(n))
            .map(|i| BatchedRecord {
                record: fixture::record(i),
                idempotency_key: None,
            })
            .collect();
        must(apply(
            &mut s,
            &Proposal::new(3, Command::RecordIssuances(batch)),
        ));
    }
    s
}

fn ledger_apply(c: &mut Criterion) {
    use std::time::{Duration, Instant};
    const LIVE: u64 = 200_000;
    const ROOM: u64 = 2_000_000;
    let mut g = c.benchmark_group("ledger_apply");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    // Every timed apply is of a new record or a live, unrevoked one: each
    // sample starts from a fresh clone of this state (not timed) and walks
    // forward from there.
    let base = ledger(LIVE, ROOM);
    g.bench_function("record_issuance_into_200k", |b| {
        b.iter_custom(|iters| {
            let mut s = base.clone();
            let proposals: Vec<Proposal> = (0..iters.min(ROOM))
                .map(|i| Proposal::new(4, Command::RecordIssuance(fixture::record(LIVE + i))))
                .collect();
            let t = Instant::now();
            for p in &proposals {
                black_box(apply(&mut s, p));
            }
            t.elapsed()
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("record_issuances_64_keyed_into_200k", |b| {
        b.iter_custom(|iters| {
            let mut s = base.clone();
            let proposals: Vec<Proposal> = (0..iters.min(ROOM / 64))
                .map(|n| {
                    let records = (0..64)
                        .map(|i| BatchedRecord {
                            record: fixture::record(LIVE + n * 64 + i),
                            idempotency_key: Some(format!("key-{n}-{i}")),
                        })
                        .collect();
                    Proposal::new(4, Command::RecordIssuances(records))
                })
                .collect();
            let t = Instant::now();
            for p in &proposals {
                black_box(apply(&mut s, p));
            }
            t.elapsed()
        })
    });
    g.bench_function("batch_of_64_revocations_in_200k", |b| {
        b.iter_custom(|iters| {
            let mut s = base.clone();
            let proposals: Vec<Proposal> = (0..iters.min(LIVE / 64))
                .map(|n| {
                    let revokes = (0..64)
                        .map(|i| {
                            Proposal::new(
                                5,
                                Command::Revoke {
                                    issuer: "eu".into(),
                                    serial: fixture::record(n * 64 + i).serial,
                                    reason: RevocationReason::KeyCompromise,
                                    revoked_at_ms: 1_800_000_100_000,
                                },
                            )
                        })
                        .collect();
                    Proposal::new(5, Command::Batch(revokes))
                })
                .collect();
            let t = Instant::now();
            for p in &proposals {
                black_box(apply(&mut s, p));
            }
            t.elapsed()
        })
    });
    g.finish();
}

criterion_group!(
    micro,
    csr_verification,
    leaf_signing,
    crl_building,
    ledger_apply
);
criterion_main!(micro);
