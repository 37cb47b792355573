//! One drill: a fresh cluster, a workload, a fault in the middle third,
//! healing, then the checker over the history and every node's view, and
//! a report per phase.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use quorumca_chaos::{check, Action, History, Op, OpResult, Report};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::cluster::{five_nodes_three_regions, ProcCluster, Special};
use super::collect;
use super::nemesis::{self, Injected, Nemesis};
use super::workload::{Kind, Workload};

pub struct DrillSpec {
    pub name: String,
    pub nemeses: Vec<Nemesis>,
    pub duration: Duration,
    pub seed: u64,
    pub roaming_clients: u64,
    pub quorumca: PathBuf,
    pub out: PathBuf,
}

/// Counts and latencies of the operations invoked in one phase, by one
/// group of clients.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseStats {
    pub attempted: u64,
    pub acknowledged: u64,
    /// Definite refusals (e.g. renewing a revoked certificate): answers
    /// of a working cluster that changed nothing.
    pub refused: u64,
    /// No definite answer within the client's call timeout.
    pub unknown: u64,
    /// Answered (acknowledged or refused) / attempted; None when nothing
    /// was attempted.
    pub availability: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn stats<'a>(ops: impl Iterator<Item = &'a Op>) -> PhaseStats {
    let mut s = PhaseStats::default();
    let mut lat: Vec<u64> = Vec::new();
    for op in ops {
        s.attempted += 1;
        match &op.result {
            OpResult::Unknown => s.unknown += 1,
            OpResult::Failed(_) => s.refused += 1,
            _ => s.acknowledged += 1,
        }
        if let Some(done) = op.completed_ns {
            lat.push(done.saturating_sub(op.invoked_ns));
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        (!lat.is_empty()).then(|| {
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i] as f64 / 1e6
        })
    };
    s.availability =
        (s.attempted > 0).then(|| (s.attempted - s.unknown) as f64 / s.attempted as f64);
    s.p50_ms = pct(0.50);
    s.p99_ms = pct(0.99);
    s
}

#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    pub phase: &'static str,
    pub seconds: f64,
    /// Every client.
    pub all: PhaseStats,
    /// Clients that know every node and fail over.
    pub roaming: PhaseStats,
    /// Clients pinned to a node the fault left on the majority side.
    pub majority_side: PhaseStats,
    /// Clients pinned to a node the fault took away or cut off.
    pub minority_side: PhaseStats,
}

#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub drill: String,
    pub seed: u64,
    pub faults: Vec<Injected>,
    pub phases: Vec<PhaseReport>,
    /// From the fault's injection until the first write a roaming client
    /// invoked after it was acknowledged: the cluster serving again.
    pub failover_seconds: Option<f64>,
    /// Operations invoked between the fault and that moment that got no
    /// answer (in flight when the fault struck, or waiting out the
    /// election).
    pub unanswered_in_failover: usize,
    /// The fault after failover: what availability is judged on. The whole
    /// fault, failover included, is `phases[1]`.
    pub after_failover: PhaseReport,
    /// From healing until every pinned client had succeeded again.
    pub recovery_seconds: Option<f64>,
    pub policy_changes_ok: u64,
    pub policy_changes_failed: u64,
    pub check: Report,
    /// The drill's own verdicts beside the checker's: availability where
    /// the fault leaves a quorum.
    pub failures: Vec<String>,
    pub passed: bool,
    pub elapsed_seconds: f64,
}

/// Every pinned client's first success at or after `from_ns`; the latest
/// of those, relative to `from_ns`.
fn recovery(ops: &[Op], kinds: &BTreeMap<u64, Kind>, from_ns: u64) -> Option<f64> {
    let mut worst = 0u64;
    for (client, kind) in kinds {
        if !matches!(kind, Kind::Pinned(_)) {
            continue;
        }
        let first = ops
            .iter()
            .filter(|o| o.client == *client && o.invoked_ns >= from_ns && o.acknowledged())
            .filter_map(|o| o.completed_ns)
            .min()?;
        worst = worst.max(first - from_ns);
    }
    Some(worst as f64 / 1e9)
}

pub async fn run(spec: &DrillSpec) -> anyhow::Result<DrillReport> {
    let started = Instant::now();
    let dir = spec.out.join(&spec.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let specs = five_nodes_three_regions();
    let mut special = Special::default();
    // The clock drill skews a node of the single-node region.
    if spec.nemeses.contains(&Nemesis::ClockSkew) {
        special.skewable.push(specs.last().expect("nodes").id);
    }
    // Whichever node leads when the disk fills: every one gets a small disk.
    if spec.nemeses.contains(&Nemesis::FullDisk) {
        special.small_disk = specs.iter().map(|s| s.id).collect();
    }
    let mut cluster = ProcCluster::start(&dir, specs, &spec.quorumca, spec.seed, &special)
        .await
        .context("starting the cluster")?;
    let ids = cluster.ids();
    let creds = quorumca_client::Credentials::from_dir(&cluster.admin)?;
    let workload = Workload::start(
        &ids,
        spec.roaming_clients,
        creds,
        spec.seed,
        Duration::from_millis(40),
    );
    let third = spec.duration / 3;
    eprintln!("  [{}] before the fault: {} s", spec.name, third.as_secs());
    tokio::time::sleep(third).await;
    let fault_at = workload.now_ns();
    let mut faults = Vec::new();
    for &n in &spec.nemeses {
        let i = nemesis::inject(n, &mut cluster, &mut rng).await?;
        eprintln!("  [{}] fault: {}", spec.name, i.description);
        faults.push(i);
    }
    let injected_at = workload.now_ns();
    tokio::time::sleep(third).await;
    let heal_at = workload.now_ns();
    for i in faults.iter().rev() {
        nemesis::heal(i, &mut cluster)?;
    }
    eprintln!(
        "  [{}] healed; after the fault: {} s",
        spec.name,
        third.as_secs()
    );
    tokio::time::sleep(spec.duration - 2 * third).await;
    let end_ns = workload.now_ns();
    let shared = workload.stop().await;
    cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .context("after healing")?;

    let history = History {
        ops: shared.ops.clone(),
    };
    std::fs::write(dir.join("history.jsonl"), history.to_json_lines())?;
    // OCSP is asked about every revocation the checker holds nodes to.
    let revoked_acked = history
        .acknowledged_revocations()
        .into_iter()
        .map(|k| match shared.held.get(&k) {
            Some(h) => Ok((k, h.clone())),
            None => anyhow::bail!("{k} was revoked but the workload never held it"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut views = Vec::new();
    for &id in &ids {
        views.push(collect::view(&cluster, id, &revoked_acked).await?);
    }
    std::fs::write(dir.join("views.json"), serde_json::to_vec_pretty(&views)?)?;
    let verdict = check(&history, &views);

    let minority: Vec<u64> = faults.iter().flat_map(|f| f.minority.clone()).collect();
    let side_of = |client: u64| shared.kinds.get(&client).copied();
    let phase = |name: &'static str, from: u64, to: u64| {
        let in_phase = |o: &&Op| o.invoked_ns >= from && o.invoked_ns < to;
        let ops = || history.ops.iter().filter(in_phase);
        PhaseReport {
            phase: name,
            seconds: (to - from) as f64 / 1e9,
            all: stats(ops()),
            roaming: stats(ops().filter(|o| side_of(o.client) == Some(Kind::Roaming))),
            majority_side: stats(ops().filter(
                |o| matches!(side_of(o.client), Some(Kind::Pinned(n)) if !minority.contains(&n)),
            )),
            minority_side: stats(ops().filter(
                |o| matches!(side_of(o.client), Some(Kind::Pinned(n)) if minority.contains(&n)),
            )),
        }
    };
    let phases = vec![
        phase("before", 0, fault_at),
        phase("during", fault_at, heal_at),
        phase("after", heal_at, end_ns),
    ];
    // "Availability after failover": judged from the moment the cluster
    // serves writes again, so the operations the fault itself cut off (in
    // flight as the leader died, or waiting out the election) are counted
    // apart rather than as the cluster's availability during the fault.
    let failover_at = history
        .ops
        .iter()
        .filter(|o| o.invoked_ns >= injected_at && o.invoked_ns < heal_at)
        .filter(|o| side_of(o.client) == Some(Kind::Roaming))
        .filter(|o| {
            matches!(
                (&o.action, &o.result),
                (Action::Issue, OpResult::Issued(_)) | (Action::Revoke(_), OpResult::Revoked)
            )
        })
        .filter_map(|o| o.completed_ns)
        .min();
    let unanswered_in_failover = history
        .ops
        .iter()
        .filter(|o| {
            o.invoked_ns >= fault_at
                && o.invoked_ns < failover_at.unwrap_or(heal_at)
                && o.result == OpResult::Unknown
        })
        .count();
    let after_failover = match failover_at {
        Some(t) => phase("during, after failover", t.min(heal_at), heal_at),
        None => phase("during", fault_at, heal_at),
    };
    let mut failures = Vec::new();
    let keeps_quorum = spec.nemeses.iter().all(|n| n.keeps_quorum());
    if keeps_quorum && failover_at.is_none() {
        failures.push("no write was acknowledged during the fault: no failover".into());
    }
    let during = &after_failover;
    let sides_known = spec.nemeses.iter().all(|n| n.sides_known());
    if keeps_quorum {
        let mut expected = vec![("roaming clients", &during.roaming)];
        if sides_known {
            expected.push(("majority-side clients", &during.majority_side));
        }
        for (who, s) in expected {
            if let Some(a) = s.availability {
                if a < 0.99 {
                    failures.push(format!(
                        "{who} during the fault, after failover: availability {:.2} % (< 99 %)",
                        a * 100.0
                    ));
                }
            }
        }
    }
    let recovery_seconds = recovery(&history.ops, &shared.kinds, heal_at);
    if recovery_seconds.is_none() {
        failures.push("a pinned client never succeeded after healing".into());
    }
    if verdict.acknowledged_issuances == 0 {
        failures.push("no issuance was acknowledged: the drill tested nothing".into());
    }
    let passed = verdict.ok() && failures.is_empty();
    let report = DrillReport {
        drill: spec.name.clone(),
        seed: spec.seed,
        faults,
        phases,
        failover_seconds: failover_at.map(|t| t.saturating_sub(injected_at) as f64 / 1e9),
        unanswered_in_failover,
        after_failover,
        recovery_seconds,
        policy_changes_ok: shared.policy_ok,
        policy_changes_failed: shared.policy_failed,
        check: verdict,
        failures,
        passed,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    drop(cluster);
    Ok(report)
}
