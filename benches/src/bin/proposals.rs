//! Raw committed proposals per second and p50/p99 commit latency on a
//! 3-node durable cluster (in-process nodes, real gRPC on loopback, sled
//! with fsync), for several numbers of concurrent proposers.
//!
//! cargo run --release -p quorumca-benches --bin proposals -- --help

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use quorumca_benches::{run_level, table, Budget, LevelResult};
use quorumca_consensus::{now_ms, RaftSettings};
use quorumca_ledger::{Command, Proposal};
use quorumca_testkit::cluster::TestCluster;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Via {
    /// Proposals go straight to the leader.
    Leader,
    /// Proposals go to a follower, which forwards them.
    Follower,
}

/// Measures committed proposals per second through a 3-node cluster.
#[derive(Parser, Debug)]
struct Args {
    /// Concurrent proposers per level.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Seconds per level.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Payload bytes per no-op proposal.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, value_enum, default_value_t = Via::Leader)]
    via: Via,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = RaftSettings::default();
    let mut cluster = TestCluster::start(args.nodes, settings).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let target = match args.via {
        Via::Leader => leader,
        Via::Follower => (1..=args.nodes as u64)
            .find(|i| *i != leader)
            .unwrap_or(leader),
    };
    let node = Arc::new(
        cluster.nodes[(target - 1) as usize]
            .take()
            .expect("node up"),
    );
    let payload = vec![0xabu8; args.payload];
    let make: Arc<dyn Fn(u64) -> Proposal + Send + Sync> = Arc::new(move |_| {
        Proposal::new(
            now_ms(),
            Command::Noop {
                payload: payload.clone(),
            },
        )
    });
    let mut results: Vec<LevelResult> = Vec::new();
    for &c in &args.concurrency {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("{c} proposers for {} s", args.duration));
        bar.enable_steady_tick(Duration::from_millis(200));
        let budget = Budget {
            duration: Duration::from_secs(args.duration),
            max_ops: u64::MAX,
        };
        let r = run_level(node.clone(), c, budget, make.clone(), Some(bar.clone())).await;
        bar.finish_and_clear();
        eprintln!(
            "  {c:>3} proposers: {:>8.0}/s  p50 {:.2} ms  p99 {:.2} ms",
            r.per_second, r.p50_ms, r.p99_ms
        );
        results.push(r);
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|r| {
                    vec![
                        r.concurrency.to_string(),
                        format!("{:.0}", r.per_second),
                        format!("{:.2}", r.p50_ms),
                        format!("{:.2}", r.p99_ms),
                        format!("{:.2}", r.max_ms),
                        r.ok.to_string(),
                        r.errors.to_string(),
                    ]
                })
                .collect();
            println!(
                "{} nodes, durable, {}-byte no-op proposals via {:?}, {} s per level\n{}",
                args.nodes,
                args.payload,
                args.via,
                args.duration,
                table(
                    &[
                        "PROPOSERS",
                        "COMMITS/S",
                        "P50 MS",
                        "P99 MS",
                        "MAX MS",
                        "OK",
                        "ERRORS"
                    ],
                    &rows
                )
            );
        }
    }
    drop(node);
    Ok(())
}
