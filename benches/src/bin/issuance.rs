//! Certificates issued per second and p50/p99 latency through a 3-node
//! durable cluster (ECDSA P-256 CSRs), beside the raw crypto limit on the
//! same machine: CSR verification + leaf signing per second on one core.
//!
//! cargo run --release -p quorumca-benches --bin issuance -- --help

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use quorumca_api::IssueRequest;
use quorumca_benches::{crypto_limit, run_closed_loop, table, Budget};
use quorumca_consensus::RaftSettings;
use quorumca_testkit::authority::{authorities, test_csr};
use quorumca_testkit::cluster::TestCluster;

#[derive(Parser, Debug)]
struct Args {
    /// Concurrent clients per level, spread round-robin over the nodes.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Seconds per level.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Send an idempotency key with every request, as the CLI and
    /// quorumca-client do (each keyed record also keeps its DER for 24 h so
    /// a retry gets the same certificate).
    #[arg(long)]
    keyed: bool,
    /// Seconds for the single-core crypto measurement.
    #[arg(long, default_value_t = 5)]
    crypto_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!(
        "measuring the crypto limit on one core ({} s)...",
        args.crypto_seconds
    );
    let limit = crypto_limit(args.crypto_seconds);

    let mut c = TestCluster::start(3, RaftSettings::default()).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let auths = authorities(&mut c).await?;
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..16)
            .map(|i| test_csr(&format!("svc{i}.payments.svc.cluster.local")))
            .collect(),
    );
    let mut rows = Vec::new();
    for &conc in &args.concurrency {
        let (auths, csrs, keyed) = (auths.clone(), csrs.clone(), args.keyed);
        let op = Arc::new(move |w: usize, n: u64| {
            let a = auths[w % auths.len()].clone();
            let csr = csrs[n as usize % csrs.len()].clone();
            async move {
                a.issue(IssueRequest {
                    csr,
                    namespace: "payments".into(),
                    profile: "web".into(),
                    lifetime: None,
                    actor: "bench".into(),
                    idempotency_key: keyed.then(|| format!("bench-{conc}-{w}-{n}")),
                })
                .await
                .is_ok()
            }
        });
        let r = run_closed_loop(
            conc,
            Budget {
                duration: Duration::from_secs(args.duration),
                max_ops: u64::MAX,
            },
            op,
        )
        .await;
        eprintln!(
            "  {conc:>3} clients: {:>7.0}/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            r.per_second, r.p50_ms, r.p99_ms, r.errors
        );
        rows.push(vec![
            conc.to_string(),
            format!("{:.0}", r.per_second),
            format!("{:.2}", r.p50_ms),
            format!("{:.2}", r.p99_ms),
            r.errors.to_string(),
            format!("{:.2}", r.per_second / limit),
        ]);
    }
    println!(
        "crypto limit (CSR verify + ECDSA P-256 leaf sign, one core): {limit:.0}/s\n\
         3 nodes, durable, issuance spread over all nodes, {} s per level, {}\n{}",
        args.duration,
        if args.keyed {
            "every request with an idempotency key"
        } else {
            "no idempotency keys"
        },
        table(
            &[
                "CLIENTS",
                "CERTS/S",
                "P50 MS",
                "P99 MS",
                "ERRORS",
                "X ONE-CORE LIMIT"
            ],
            &rows
        )
    );
    Ok(())
}
