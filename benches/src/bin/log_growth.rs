//! Memory and disk as the Raft log grows, is snapshotted and purged.
//!
//! openraft dropped its own sled store over memory and disk growth; this
//! shows whether ours stays bounded. A 3-node durable cluster takes a
//! steady stream of proposals; after every step it prints the leader's log
//! entries, sled bytes on disk, the snapshot point, and this process's RSS
//! (all three nodes run in this process).
//!
//! cargo run --release -p quorumca-benches --bin log_growth -- --help

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use quorumca_benches::{rss_bytes, run_level, table, Budget};
use quorumca_consensus::{now_ms, RaftSettings};
use quorumca_ledger::{Command, Proposal};
use quorumca_testkit::cluster::TestCluster;

#[derive(Parser, Debug)]
struct Args {
    /// Proposals per step.
    #[arg(long, default_value_t = 50_000)]
    step: u64,
    /// Number of steps.
    #[arg(long, default_value_t = 8)]
    steps: u64,
    /// Entries between snapshots.
    #[arg(long, default_value_t = 20_000)]
    snapshot_every: u64,
    /// Payload bytes per proposal.
    #[arg(long, default_value_t = 256)]
    payload: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = RaftSettings {
        snapshot_every: args.snapshot_every,
        ..RaftSettings::default()
    };
    let mut c = TestCluster::start(3, settings).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let node = Arc::new(c.nodes[(leader - 1) as usize].take().expect("leader up"));
    let payload = vec![7u8; args.payload];
    let make: Arc<dyn Fn(u64) -> Proposal + Send + Sync> = Arc::new(move |_| {
        Proposal::new(
            now_ms(),
            Command::Noop {
                payload: payload.clone(),
            },
        )
    });
    let mut rows = Vec::new();
    let mut total = 0u64;
    for step in 1..=args.steps {
        let budget = Budget {
            duration: Duration::from_secs(300),
            max_ops: args.step,
        };
        let r = run_level(node.clone(), 64, budget, make.clone(), None).await;
        total += r.ok;
        // Let a snapshot that the last entries triggered finish.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let st = node.status();
        rows.push(vec![
            step.to_string(),
            total.to_string(),
            format!("{:.0}", r.per_second),
            node.log_len().to_string(),
            format!("{:.1}", node.log_size_on_disk() as f64 / 1e6),
            st.snapshot_index.to_string(),
            st.last_log_index.to_string(),
            format!("{:.1}", rss_bytes() as f64 / 1e6),
        ]);
        eprintln!("step {step}/{}: {total} proposals", args.steps);
    }
    println!(
        "3 nodes in one process, {}-byte proposals, snapshot every {} entries\n{}",
        args.payload,
        args.snapshot_every,
        table(
            &[
                "STEP",
                "PROPOSALS",
                "PER S",
                "LOG ENTRIES",
                "LOG MB ON DISK",
                "SNAPSHOT AT",
                "LAST INDEX",
                "RSS MB (3 NODES)"
            ],
            &rows
        )
    );
    Ok(())
}
