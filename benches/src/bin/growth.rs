//! How cost grows with the size of the CA: CRL build time and size against
//! revoked entries, and ledger apply, snapshot and restart cost and memory
//! against live issuance records. Measured curves, not guesses.
//!
//! cargo run --release -p quorumca-benches --bin growth -- --help
//!
//! The snapshot numbers are those of a node's state machine: `State::encode`
//! plus writing the file with fsync (building a snapshot), and reading the
//! file plus `State::decode` (what a restarting node does before replaying
//! the log tail).

use std::io::Write;
use std::time::Instant;

use clap::Parser;
use quorumca_benches::{fixture, rss_bytes, table};
use quorumca_ca::{CrlEntry, CrlSpec, Validity};
use quorumca_ledger::{apply, Command, IssuanceRecord, Outcome, Proposal, Serial, State};

#[derive(Parser, Debug)]
struct Args {
    /// Sizes to measure (entries / records), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<u64>,
    /// Share of records that are revoked in the ledger runs.
    #[arg(long, default_value_t = 0.1)]
    revoked_share: f64,
    #[arg(long)]
    json: bool,
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn crl_run(n: u64, signer: &quorumca_ca::CaSigner) -> (f64, usize) {
    let entries: Vec<CrlEntry> = (0..n)
        .map(|i| {
            let mut serial = i.to_be_bytes().to_vec();
            serial.extend_from_slice(&(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
            serial[0] = 0x01;
            CrlEntry {
                serial,
                revoked_at: 1_800_000_000,
                reason: 1,
            }
        })
        .collect();
    let t = Instant::now();
    let der = quorumca_ca::sign_crl(
        signer,
        &CrlSpec {
            number: 1,
            this_update: 1_800_000_000,
            next_update: 1_800_086_400,
            distribution_point: Some("http://ca.example/crl/eu/0.crl".into()),
            delta_base: None,
            freshest: None,
            entries,
        },
    )
    .expect("CRL signs");
    (secs(t), der.len())
}

struct LedgerRun {
    apply_per_s: f64,
    rss_mb: f64,
    encode_s: f64,
    write_s: f64,
    bytes: usize,
    load_s: f64,
    hash_s: f64,
}

fn ledger_run(n: u64, revoked_share: f64, dir: &std::path::Path) -> LedgerRun {
    let rss_before = rss_bytes();
    let mut s = State::default();
    let ok = |o: Outcome| assert!(!matches!(o, Outcome::Rejected(_)), "{o:?}");
    ok(apply(&mut s, &fixture::register_issuer()));
    // Every `every`-th record is revoked (0: none).
    let every = if revoked_share > 0.0 {
        (1.0 / revoked_share).round() as u64
    } else {
        0
    };
    let t = Instant::now();
    let mut seq = 0u64;
    while seq < n {
        let block = (n - seq).min(quorumca_ledger::MAX_LEASE_BLOCK);
        ok(apply(&mut s, &fixture::lease(block)));
        let end = seq + block;
        while seq < end {
            let batch: Vec<IssuanceRecord> =
                (seq..end.min(seq + 1024)).map(fixture::record).collect();
            seq += batch.len() as u64;
            let revoke: Vec<Serial> = batch
                .iter()
                .filter(|r| every > 0 && r.sequence % every == 0)
                .map(|r| r.serial.clone())
                .collect();
            ok(apply(
                &mut s,
                &Proposal::new(
                    3,
                    Command::RecordIssuances(
                        batch
                            .into_iter()
                            .map(|record| quorumca_ledger::BatchedRecord {
                                record,
                                idempotency_key: None,
                            })
                            .collect(),
                    ),
                ),
            ));
            for serial in revoke {
                ok(apply(
                    &mut s,
                    &Proposal::new(
                        4,
                        Command::Revoke {
                            issuer: "eu".into(),
                            serial,
                            reason: quorumca_ledger::RevocationReason::KeyCompromise,
                            revoked_at_ms: 4,
                        },
                    ),
                ));
            }
        }
    }
    let apply_per_s = n as f64 / secs(t);
    let rss_mb = rss_bytes().saturating_sub(rss_before) as f64 / 1e6;

    let t = Instant::now();
    let bytes = s.encode();
    let encode_s = secs(t);
    let path = dir.join("state.snap");
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
    }
    let write_s = secs(t);
    let size = bytes.len();
    drop(bytes);
    let t = Instant::now();
    let loaded = State::decode(&std::fs::read(&path).unwrap()).unwrap();
    let load_s = secs(t);
    assert_eq!(loaded.record_count() as u64, n);
    let t = Instant::now();
    let h = loaded.hash();
    let hash_s = secs(t);
    assert_eq!(h, s.hash());
    LedgerRun {
        apply_per_s,
        rss_mb,
        encode_s,
        write_s,
        bytes: size,
        load_s,
        hash_s,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let signer = quorumca_ca::self_signed_root(
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        "Growth CA",
        Validity {
            not_before: 1_700_000_000,
            not_after: 2_000_000_000,
        },
        &[1],
    )?;
    let dir = tempfile::tempdir()?;
    let mut crl_rows = Vec::new();
    let mut ledger_rows = Vec::new();
    let mut json = Vec::new();
    for &n in &args.sizes {
        eprintln!("CRL with {n} entries...");
        let (crl_s, crl_bytes) = crl_run(n, &signer);
        crl_rows.push(vec![
            n.to_string(),
            format!("{crl_s:.3}"),
            format!("{:.1}", crl_bytes as f64 / 1e6),
        ]);
        eprintln!("ledger with {n} records...");
        let l = ledger_run(n, args.revoked_share, dir.path());
        ledger_rows.push(vec![
            n.to_string(),
            format!("{:.0}", l.apply_per_s),
            format!("{:.0}", l.rss_mb),
            format!("{:.1}", l.bytes as f64 / 1e6),
            format!("{:.3}", l.encode_s + l.write_s),
            format!("{:.3}", l.load_s),
            format!("{:.3}", l.hash_s),
        ]);
        json.push(serde_json::json!({
            "size": n, "crl_build_s": crl_s, "crl_bytes": crl_bytes,
            "apply_per_s": l.apply_per_s, "rss_mb": l.rss_mb, "snapshot_bytes": l.bytes,
            "snapshot_build_s": l.encode_s + l.write_s, "restart_load_s": l.load_s, "hash_s": l.hash_s,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "CRL build (sign_crl, ECDSA P-256) against revoked, unexpired entries\n{}\n",
        table(&["ENTRIES", "BUILD S", "MB"], &crl_rows)
    );
    println!(
        "Ledger against live issuance records ({:.0} % of them revoked)\n{}",
        args.revoked_share * 100.0,
        table(
            &[
                "RECORDS",
                "APPLY/S",
                "RSS MB",
                "SNAPSHOT MB",
                "SNAPSHOT BUILD S",
                "RESTART LOAD S",
                "HASH S"
            ],
            &ledger_rows
        )
    );
    Ok(())
}
