//! `quorumca-chaos`: runs chaos drills against a real cluster of
//! `quorumca` processes in network namespaces and judges them.
//!
//! `chaos/run` is the usual entry point; see chaos/README.md.

mod driver;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use driver::drill::{DrillReport, DrillSpec, PhaseStats};
use driver::nemesis::{Nemesis, ALL};

#[derive(Parser)]
#[command(
    name = "quorumca-chaos",
    about = "Chaos drills: a 5-node QuorumCA cluster (3 regions, 2+2+1) in network namespaces, a workload, faults, and the invariant checker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run drills (default: the full suite; --short for the CI suite).
    Run(RunArgs),
    /// List the nemeses a drill can name (join several with `+`).
    List,
    /// Re-check a finished drill's history and node views.
    Check {
        /// A drill's output directory (history.jsonl, views.json).
        dir: PathBuf,
    },
    /// (Internal) the fault proxy a node's inbound Raft traffic goes
    /// through; fault settings arrive as JSON lines on stdin.
    #[command(hide = true)]
    Proxy {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        parent_pid: Option<u32>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Drills to run, each a nemesis or several joined with `+`
    /// (e.g. kill-leader+link-faults). Default: every nemesis alone, then
    /// two combinations.
    drills: Vec<String>,
    /// The CI suite: seven drills of 24 s each.
    #[arg(long)]
    short: bool,
    /// Seconds per drill (a third before the fault, a third during, a
    /// third after healing). Default 24 with --short, else 60.
    #[arg(long)]
    duration: Option<u64>,
    /// Seeds the nemeses' choices and the workload; a run replays its
    /// choices with the same seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Clients that know every node and fail over (one more client is
    /// pinned to each node).
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// The quorumca binary; default: the one beside this binary.
    #[arg(long)]
    quorumca: Option<PathBuf>,
    /// Where each drill leaves its logs, history, views and report.
    #[arg(long, default_value = "chaos-out")]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

const SHORT_SUITE: [&str; 7] = [
    "kill-leader",
    "isolate-region",
    "split-majority",
    "bridge",
    "pause-leader",
    "link-faults",
    "full-disk",
];

fn pct(s: &PhaseStats) -> String {
    s.availability
        .map_or("-".into(), |a| format!("{:.1}%", a * 100.0))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn summary(reports: &[DrillReport]) -> String {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let [before, after] = [&r.phases[0], &r.phases[2]];
            let during = &r.after_failover;
            vec![
                r.drill.clone(),
                r.faults
                    .iter()
                    .map(|f| f.description.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
                format!("{}/{}", r.check.acknowledged, r.check.operations),
                pct(&before.all),
                r.failover_seconds.map_or("-".into(), |f| {
                    format!("{f:.1} ({})", r.unanswered_in_failover)
                }),
                pct(&during.roaming),
                pct(&during.majority_side),
                pct(&during.minority_side),
                pct(&after.all),
                format!(
                    "{}/{}",
                    ms(during.roaming.p50_ms),
                    ms(during.roaming.p99_ms)
                ),
                r.recovery_seconds
                    .map_or("never".into(), |s| format!("{s:.1}")),
                if r.passed {
                    "ok".into()
                } else {
                    format!("FAILED ({})", r.check.violations.len() + r.failures.len())
                },
            ]
        })
        .collect();
    quorumca_cli::output::table(
        &[
            "DRILL",
            "FAULT",
            "ACKED/OPS",
            "BEFORE",
            "FAILOVER S (LOST)",
            "DURING ROAMING",
            "DURING MAJORITY",
            "DURING MINORITY",
            "AFTER",
            "DURING P50/P99 MS",
            "RECOVERY S",
            "RESULT",
        ],
        &rows,
    )
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    driver::netns::preflight()?;
    let quorumca = match args.quorumca {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("locating the quorumca binary")?
            .join("quorumca"),
    };
    if !quorumca.exists() {
        bail!(
            "{} does not exist: build it (cargo build --release -p quorumca-cli) or pass --quorumca",
            quorumca.display()
        );
    }
    let mut drills: Vec<String> = args.drills.clone();
    if drills.is_empty() {
        drills = if args.short {
            SHORT_SUITE.iter().map(|s| s.to_string()).collect()
        } else {
            ALL.iter()
                .map(|n| n.name().to_string())
                .chain([
                    "kill-leader+link-faults".into(),
                    "isolate-region+clock-skew".into(),
                ])
                .collect()
        };
    }
    let parsed: Vec<(String, Vec<Nemesis>)> = drills
        .iter()
        .map(|d| Ok((d.clone(), Nemesis::parse(d)?)))
        .collect::<anyhow::Result<_>>()?;
    let duration = Duration::from_secs(args.duration.unwrap_or(if args.short { 24 } else { 60 }));
    if duration < Duration::from_secs(6) {
        bail!("--duration must be at least 6 seconds (three phases)");
    }
    std::fs::create_dir_all(&args.out)?;
    let out = args.out.canonicalize()?;
    let mut reports = Vec::new();
    for (i, (name, nemeses)) in parsed.into_iter().enumerate() {
        eprintln!(
            "[{}/{}] {name} ({} s, seed {})",
            i + 1,
            drills.len(),
            duration.as_secs(),
            args.seed
        );
        let spec = DrillSpec {
            name: name.clone(),
            nemeses,
            duration,
            seed: args.seed.wrapping_add(i as u64),
            roaming_clients: args.clients,
            quorumca: quorumca.clone(),
            out: out.clone(),
        };
        let report = driver::drill::run(&spec)
            .await
            .with_context(|| format!("drill {name} (logs in {})", out.join(&name).display()))?;
        for v in &report.check.violations {
            eprintln!("  [{name}] VIOLATION: {v}");
        }
        for f in &report.failures {
            eprintln!("  [{name}] FAILED: {f}");
        }
        eprintln!(
            "  [{name}] {} in {:.0} s",
            if report.passed { "passed" } else { "FAILED" },
            report.elapsed_seconds
        );
        reports.push(report);
    }
    std::fs::write(out.join("suite.json"), serde_json::to_vec_pretty(&reports)?)?;
    let table = summary(&reports);
    std::fs::write(out.join("summary.txt"), &table)?;
    match args.output {
        Output::Table => {
            println!("{table}");
            println!(
                "\nAvailability is answered (acknowledged or definitely refused) / attempted operations, by invocation time; roaming clients fail over across every node, majority/minority clients are pinned to one node on that side. FAILOVER is from the fault to the first acknowledged write invoked after it, with the operations left unanswered meanwhile (in flight when the fault struck, or waiting out the election); the DURING columns count what was invoked after failover (report.json has the whole fault too). Details: {}",
                out.display()
            );
        }
        Output::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
    }
    Ok(reports.iter().all(|r| r.passed))
}

async fn proxy(
    listen: std::net::SocketAddr,
    to: std::net::SocketAddr,
    seed: u64,
    parent_pid: Option<u32>,
) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let p = quorumca_chaos::proxy::FaultProxy::start(listen, to, seed).await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(l) if l.trim().is_empty() => {}
                Some(l) => {
                    let f: quorumca_chaos::proxy::Faults = serde_json::from_str(&l)
                        .with_context(|| format!("fault settings {l:?}"))?;
                    eprintln!("faults now {f:?}");
                    p.set(f);
                }
                // The driver went away: so do we.
                None => return Ok(()),
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if parent_pid.is_some_and(|pid| std::os::unix::process::parent_id() != pid) {
                    return Ok(());
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => {
            let ok = run(args).await;
            driver::netns::cleanup_stale();
            if !ok? {
                std::process::exit(1);
            }
        }
        Cmd::List => {
            for n in ALL {
                println!("{}", n.name());
            }
        }
        Cmd::Check { dir } => {
            let history = quorumca_chaos::History::from_json_lines(&std::fs::read_to_string(
                dir.join("history.jsonl"),
            )?)
            .map_err(anyhow::Error::msg)?;
            let views: Vec<quorumca_chaos::NodeView> =
                serde_json::from_slice(&std::fs::read(dir.join("views.json"))?)?;
            let report = quorumca_chaos::check(&history, &views);
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.ok() {
                std::process::exit(1);
            }
        }
        Cmd::Proxy {
            listen,
            to,
            seed,
            parent_pid,
        } => proxy(listen, to, seed, parent_pid).await?,
    }
    Ok(())
}
