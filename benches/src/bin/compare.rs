//! QuorumCA beside what users would pick instead, in one run on this
//! machine, with the same CSRs and the same concurrency:
//!
//! 1. the raw crypto limit (CSR verify + ECDSA P-256 sign, one core);
//! 2. cfssl `serve` (Debian golang-cfssl) signing with an ECDSA P-256 CA;
//! 3. a 3-member etcd (Debian etcd-server): durable puts of small values;
//! 4. QuorumCA, 1 node and 3 nodes, durable, through its public gRPC API
//!    over mTLS: issuance and raw proposals (`Cluster.Ping`).
//!
//! Every system runs on loopback in this machine's two cores. cfssl and
//! etcd are driven from this process by blocking HTTP clients on a thread
//! per connection (cfssl, etcd's JSON gateway); each QuorumCA cluster runs
//! with its async gRPC load generator in a fresh process of this binary,
//! as every system here starts fresh in each round.
//!
//! One measurement on two shared cores moves by about 10 % from run to run
//! (the same build gave 3-node issuance 6,257 and 7,970 certs/s in two
//! rounds of one run), so by default every system is measured in three
//! rounds, one after the other; the table shows each system's median round,
//! and each ratio is the median of the ratios taken within a round, where
//! both systems met the same machine.
//!
//! Missing Debian packages are installed with apt-get (root). Every process
//! it starts is killed when it ends, also on error.
//!
//! cargo run --release -p quorumca-benches --bin compare -- --help

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use clap::Parser;
use quorumca_benches::cluster::free_port;
use quorumca_benches::{
    crypto_limit, http_agents, run_closed_loop, table, with_cpu, Budget, LevelResult,
};

/// The same allocator as the `quorumca` binary, so the in-process nodes
/// measure what a deployed node does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    /// Concurrent clients for every system.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds for the crypto limit.
    #[arg(long, default_value_t = 5)]
    crypto_seconds: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Only these systems (comma-separated: crypto, cfssl, etcd, quorumca);
    /// the ratios need all four. For profiling one of them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "crypto,cfssl,etcd,quorumca"
    )]
    systems: Vec<System>,
    /// QuorumCA cluster sizes to measure (the targets are for 3 nodes).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    nodes: Vec<u64>,
    /// Rounds of every system, one after the other. On shared cores one
    /// measurement moves by about 10 % from run to run, so the table shows
    /// each system's median round and every ratio is the median of the
    /// ratios taken within each round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Internal: measure one QuorumCA cluster (`--nodes`) with its data
    /// under this directory and the CSRs in its `csrs.json`, print the
    /// results as JSON and exit. `compare` runs each cluster so, in a
    /// process of its own.
    #[arg(long, hide = true)]
    quorumca_child: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum System {
    Crypto,
    Cfssl,
    Etcd,
    Quorumca,
}

/// Child processes, killed and reaped when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Installs Debian packages whose binaries are missing.
fn ensure_installed(binary: &str, package: &str) -> anyhow::Result<()> {
    let present = |b: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present(binary) {
        return Ok(());
    }
    eprintln!("installing {package} (apt-get)...");
    for args in [
        vec!["update", "-qq"],
        vec!["install", "-y", "-qq", "--no-install-recommends", package],
    ] {
        let out = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .context("running apt-get (needs root and Debian package access)")?;
        if !out.status.success() {
            bail!(
                "apt-get {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    if !present(binary) {
        bail!("{package} is installed but `{binary}` is not on PATH");
    }
    Ok(())
}

/// Polls `url` until it answers (any HTTP status) or `timeout` passes.
fn wait_http(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match ureq::get(url).timeout(Duration::from_secs(1)).call() {
            Ok(_) | Err(ureq::Error::Status(..)) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("{url} never answered: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn budget(args: &Args) -> Budget {
    Budget {
        duration: Duration::from_secs(args.duration),
        max_ops: u64::MAX,
    }
}

/// A closed loop of blocking HTTP POSTs, one agent per worker.
async fn http_loop(
    args: &Args,
    urls: Vec<String>,
    body: Arc<dyn Fn(u64) -> String + Send + Sync>,
    ok: fn(&str) -> bool,
) -> LevelResult {
    let agents = Arc::new(http_agents(args.concurrency));
    let urls = Arc::new(urls);
    let op = Arc::new(move |w: usize, n: u64| {
        let (agents, urls, body) = (agents.clone(), urls.clone(), body.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let url = &urls[w % urls.len()];
                match agents[w]
                    .post(url)
                    .set("Content-Type", "application/json")
                    .send_string(&body(n))
                {
                    Ok(r) => r.into_string().is_ok_and(|t| ok(&t)),
                    Err(_) => false,
                }
            })
            .await
            .unwrap_or(false)
        }
    });
    run_closed_loop(args.concurrency, budget(args), op).await
}

/// cfssl serve with an ECDSA P-256 CA, signing the same CSRs.
async fn cfssl(args: &Args, dir: &Path, csrs: &Arc<Vec<String>>) -> anyhow::Result<LevelResult> {
    ensure_installed("cfssl", "golang-cfssl")?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cfssl bench CA");
    let ca = params.self_signed(&key)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("ca-key.pem"), key.serialize_pem())?;
    let port = free_port()?;
    let _p = Procs(vec![Command::new("cfssl")
        .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
        .arg(format!("-ca={}", dir.join("ca.pem").display()))
        .arg(format!("-ca-key={}", dir.join("ca-key.pem").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting cfssl serve")?]);
    let base = format!("http://127.0.0.1:{port}");
    wait_http(
        &format!("{base}/api/v1/cfssl/scaninfo"),
        Duration::from_secs(10),
    )?;
    let url = format!("{base}/api/v1/cfssl/sign");
    // One request first: a setup problem should say so, not show as 0/s.
    let probe = serde_json::json!({ "certificate_request": csrs[0] }).to_string();
    let r = ureq::post(&url)
        .send_string(&probe)
        .map_err(|e| anyhow::anyhow!("cfssl sign: {e}"))?
        .into_string()?;
    if !cfssl_ok(&r) {
        bail!("cfssl sign failed: {r}");
    }
    let csrs = csrs.clone();
    let body = Arc::new(move |n: u64| {
        serde_json::json!({ "certificate_request": csrs[n as usize % csrs.len()] }).to_string()
    });
    let pids: Vec<u32> = _p.0.iter().map(|c| c.id()).collect();
    Ok(with_cpu(&pids, http_loop(args, vec![url], body, cfssl_ok)).await)
}

fn cfssl_ok(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .is_ok_and(|v| v["success"] == true && v["result"]["certificate"].is_string())
}

/// A 3-member etcd, each with its own data dir (fsync on by default);
/// 64-byte values through the v3 JSON gateway, spread over the members.
async fn etcd(args: &Args, dir: &Path) -> anyhow::Result<LevelResult> {
    ensure_installed("etcd", "etcd-server")?;
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Procs(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        procs.0.push(
            Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg(format!(
                    "--data-dir={}",
                    dir.join(format!("e{i}")).display()
                ))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster={cluster}"))
                .args(["--initial-cluster-state", "new", "--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting etcd")?,
        );
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|(c, _)| format!("http://127.0.0.1:{c}/v3/kv/put"))
        .collect();
    // Ready when a put through every member succeeds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for url in &urls {
        loop {
            let body = serde_json::json!({"key": b64(b"ready"), "value": b64(b"1")}).to_string();
            let accepted = ureq::post(url)
                .send_string(&body)
                .ok()
                .and_then(|r| r.into_string().ok())
                .is_some_and(|t| etcd_ok(&t));
            if accepted {
                break;
            }
            if Instant::now() > deadline {
                bail!("etcd at {url} never accepted a put");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let value = b64(&[7u8; 64]);
    let body = Arc::new(move |n: u64| {
        serde_json::json!({"key": b64(format!("bench/{n}").as_bytes()), "value": value}).to_string()
    });
    let pids: Vec<u32> = procs.0.iter().map(|c| c.id()).collect();
    let r = with_cpu(&pids, http_loop(args, urls, body, etcd_ok)).await;
    drop(procs);
    Ok(r)
}

fn etcd_ok(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["header"].is_object())
}

/// QuorumCA as its users meet it: `nodes` durable nodes (in this process,
/// a child of `compare`: [`quorumca_in_child`]) serving the public gRPC
/// API over mTLS on loopback, with the PKI `quorumca dev` makes; issuance
/// spread over every node through `CertificateService.Issue`, then raw
/// proposals through `Cluster.Ping` (a 64-byte no-op committed through
/// Raft, the equivalent of a put).
async fn quorumca(
    args: &Args,
    dir: &Path,
    nodes: u64,
    csrs: &Arc<Vec<String>>,
) -> anyhow::Result<(LevelResult, LevelResult)> {
    use quorumca_proto::certificate_service_client::CertificateServiceClient;
    use quorumca_proto::cluster_client::ClusterClient;
    let cluster = quorumca_benches::cluster::InProcessCluster::start(
        &dir.join(format!("quorumca-{nodes}")),
        nodes,
    )
    .await?;
    let channels = Arc::new(cluster.channels.clone());
    let (ch, csrs) = (channels.clone(), csrs.clone());
    let op = Arc::new(move |w: usize, n: u64| {
        let mut c = CertificateServiceClient::new(ch[w % ch.len()].clone());
        let csr = csrs[n as usize % csrs.len()].clone().into_bytes();
        async move {
            c.issue(quorumca_proto::IssueRequest {
                csr,
                namespace: "payments".into(),
                profile: "web".into(),
                ..Default::default()
            })
            .await
            .is_ok()
        }
    });
    let issuance = with_cpu(&[], run_closed_loop(args.concurrency, budget(args), op)).await;
    let ch = channels.clone();
    let op = Arc::new(move |w: usize, _n: u64| {
        let mut c = ClusterClient::new(ch[w % ch.len()].clone());
        async move {
            c.ping(quorumca_proto::PingRequest {
                payload: vec![7; 64],
            })
            .await
            .is_ok()
        }
    });
    let proposals = with_cpu(&[], run_closed_loop(args.concurrency, budget(args), op)).await;
    cluster.shutdown().await;
    Ok((issuance, proposals))
}

/// [`quorumca`] in a fresh process of this binary, as a deployed node runs
/// in a process of its own: measured in this one, a cluster inherited the
/// heap the clusters before it had freed, and ran 5-20 % slower for it
/// than measured alone (benches/README.md). Its CPU figures cover that
/// process (nodes and load generator), as they covered this one.
async fn quorumca_in_child(
    args: &Args,
    dir: &Path,
    nodes: u64,
    csrs: &Arc<Vec<String>>,
) -> anyhow::Result<(LevelResult, LevelResult)> {
    let child_dir = dir.join(format!("quorumca-{nodes}-child"));
    std::fs::create_dir_all(&child_dir)?;
    std::fs::write(child_dir.join("csrs.json"), serde_json::to_vec(&**csrs)?)?;
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--quorumca-child")
        .arg(&child_dir)
        .args(["--nodes", &nodes.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(["--duration", &args.duration.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .context("starting the QuorumCA measurement process")?;
    if !out.status.success() {
        bail!(
            "measuring QuorumCA with {nodes} node(s) failed ({})",
            out.status
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the QuorumCA measurement")
}

fn per_s(r: &Option<LevelResult>) -> Option<f64> {
    r.as_ref().map(|r| r.per_second)
}

fn row(name: &str, r: &Option<LevelResult>) -> Vec<String> {
    let Some(r) = r else {
        return vec![
            name.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ];
    };
    vec![
        name.to_string(),
        format!("{:.0}", r.per_second),
        format!("{:.2}", r.p50_ms),
        format!("{:.2}", r.p99_ms),
        r.cpu_us_per_op.map_or("-".into(), |c| format!("{c:.0}")),
        r.errors.to_string(),
    ]
}

/// Everything measured in one round, each system after the other.
#[derive(Clone, Default, serde::Serialize)]
struct Round {
    cfssl_sign: Option<LevelResult>,
    etcd_put_3_members: Option<LevelResult>,
    quorumca_1_node_issue: Option<LevelResult>,
    quorumca_1_node_proposals: Option<LevelResult>,
    quorumca_3_nodes_issue: Option<LevelResult>,
    quorumca_3_nodes_proposals: Option<LevelResult>,
}

impl Round {
    fn issuance_ratio(&self) -> Option<f64> {
        ratio(per_s(&self.quorumca_3_nodes_issue), per_s(&self.cfssl_sign))
    }

    fn proposal_ratio(&self) -> Option<f64> {
        ratio(
            per_s(&self.quorumca_3_nodes_proposals),
            per_s(&self.etcd_put_3_members),
        )
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The median of some values (the lower middle one for an even count).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// The result with the median throughput among the rounds that have one.
fn median_result(
    rounds: &[Round],
    pick: impl Fn(&Round) -> &Option<LevelResult>,
) -> Option<LevelResult> {
    let mut v: Vec<&LevelResult> = rounds.iter().filter_map(|r| pick(r).as_ref()).collect();
    v.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    v.get(v.len().saturating_sub(1) / 2).map(|r| (*r).clone())
}

async fn measure_round(
    args: &Args,
    dir: &Path,
    csrs: &Arc<Vec<String>>,
    label: &str,
) -> anyhow::Result<Round> {
    std::fs::create_dir_all(dir)?;
    let on = |s: System| args.systems.contains(&s);
    let mut round = Round::default();
    if on(System::Cfssl) {
        eprintln!(
            "[2/4]{label} cfssl serve, {} clients, {} s",
            args.concurrency, args.duration
        );
        let cf = cfssl(args, dir, csrs).await?;
        eprintln!("      {:.0}/s p99 {:.2} ms", cf.per_second, cf.p99_ms);
        round.cfssl_sign = Some(cf);
    }
    if on(System::Etcd) {
        eprintln!(
            "[3/4]{label} etcd, 3 members, {} clients, {} s",
            args.concurrency, args.duration
        );
        let et = etcd(args, dir).await?;
        eprintln!("      {:.0}/s p99 {:.2} ms", et.per_second, et.p99_ms);
        round.etcd_put_3_members = Some(et);
    }
    if on(System::Quorumca) {
        eprintln!(
            "[4/4]{label} QuorumCA, {:?} nodes, {} clients, {} s each",
            args.nodes, args.concurrency, args.duration
        );
        for &n in &args.nodes {
            let (issue, prop) = quorumca_in_child(args, dir, n, csrs).await?;
            eprintln!(
                "      {n} node(s): {:.0} certs/s ({:.0} us CPU each), {:.0} proposals/s ({:.0} us)",
                issue.per_second,
                issue.cpu_us_per_op.unwrap_or(0.0),
                prop.per_second,
                prop.cpu_us_per_op.unwrap_or(0.0)
            );
            if n == 1 {
                round.quorumca_1_node_issue = Some(issue);
                round.quorumca_1_node_proposals = Some(prop);
            } else {
                round.quorumca_3_nodes_issue = Some(issue);
                round.quorumca_3_nodes_proposals = Some(prop);
            }
        }
    }
    Ok(round)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.nodes.iter().find(|&&n| n != 1 && n != 3) {
        bail!("--nodes takes 1 and/or 3, not {n}");
    }
    if let Some(dir) = &args.quorumca_child {
        let csrs: Arc<Vec<String>> = Arc::new(serde_json::from_slice(&std::fs::read(
            dir.join("csrs.json"),
        )?)?);
        let (issue, proposals) = quorumca(&args, dir, args.nodes[0], &csrs).await?;
        println!("{}", serde_json::to_string(&(issue, proposals))?);
        return Ok(());
    }
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let csrs: Arc<Vec<String>> = Arc::new(
        (0..16)
            .map(|i| {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let p = rcgen::CertificateParams::new(vec![format!(
                    "svc{i}.payments.svc.cluster.local"
                )])?;
                Ok(p.serialize_request(&key)?.pem()?)
            })
            .collect::<anyhow::Result<_>>()?,
    );

    let limit = if args.systems.contains(&System::Crypto) {
        eprintln!("[1/4] crypto limit, one core ({} s)", args.crypto_seconds);
        let limit = crypto_limit(args.crypto_seconds);
        eprintln!("      {limit:.0}/s");
        Some(limit)
    } else {
        None
    };
    let mut rounds = Vec::new();
    for r in 1..=args.rounds {
        let label = if args.rounds > 1 {
            format!(" round {r}/{}:", args.rounds)
        } else {
            String::new()
        };
        let round_dir = dir.path().join(format!("round{r}"));
        rounds.push(measure_round(&args, &round_dir, &csrs, &label).await?);
    }
    let med = Round {
        cfssl_sign: median_result(&rounds, |r| &r.cfssl_sign),
        etcd_put_3_members: median_result(&rounds, |r| &r.etcd_put_3_members),
        quorumca_1_node_issue: median_result(&rounds, |r| &r.quorumca_1_node_issue),
        quorumca_1_node_proposals: median_result(&rounds, |r| &r.quorumca_1_node_proposals),
        quorumca_3_nodes_issue: median_result(&rounds, |r| &r.quorumca_3_nodes_issue),
        quorumca_3_nodes_proposals: median_result(&rounds, |r| &r.quorumca_3_nodes_proposals),
    };
    // Each ratio is taken inside its round, where both systems met the same
    // machine conditions, and the median of those is reported.
    let issuance_ratios: Vec<f64> = rounds.iter().filter_map(Round::issuance_ratio).collect();
    let proposal_ratios: Vec<f64> = rounds.iter().filter_map(Round::proposal_ratio).collect();
    let crypto_ratio = ratio(per_s(&med.quorumca_3_nodes_issue), limit);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "concurrency": args.concurrency,
                "seconds_per_measurement": args.duration,
                "crypto_limit_per_second": limit,
                "median": med,
                "rounds": rounds,
                "issuance_over_cfssl": { "median": median(issuance_ratios.clone()), "per_round": issuance_ratios },
                "proposals_over_etcd": { "median": median(proposal_ratios.clone()), "per_round": proposal_ratios },
                "issuance_over_crypto_limit": crypto_ratio,
            }))?
        );
        return Ok(());
    }
    println!(
        "{} clients, {} s per measurement, durable everywhere, this machine; {} round(s), median shown; took {:.0} s\n",
        args.concurrency,
        args.duration,
        args.rounds,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{}",
        table(
            &["SYSTEM", "OPS/S", "P50 MS", "P99 MS", "CPU US/OP", "ERRORS"],
            &[
                vec![
                    "crypto limit (one core)".into(),
                    limit.map_or("-".into(), |l| format!("{l:.0}")),
                    "-".into(),
                    "-".into(),
                    limit.map_or("-".into(), |l| format!("{:.0}", 1e6 / l)),
                    "-".into()
                ],
                row("cfssl serve: sign", &med.cfssl_sign),
                row("etcd 3 members: put", &med.etcd_put_3_members),
                row("QuorumCA 1 node: issue", &med.quorumca_1_node_issue),
                row("QuorumCA 3 nodes: issue", &med.quorumca_3_nodes_issue),
                row("QuorumCA 1 node: proposal", &med.quorumca_1_node_proposals),
                row(
                    "QuorumCA 3 nodes: proposal",
                    &med.quorumca_3_nodes_proposals
                ),
            ]
        )
    );
    let show = |v: &[f64]| match median(v.to_vec()) {
        None => "-".to_string(),
        Some(m) if v.len() == 1 => format!("{m:.2}x"),
        Some(m) => format!(
            "{m:.2}x (rounds: {})",
            v.iter()
                .map(|x| format!("{x:.2}x"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    println!(
        "\nQuorumCA 3-node issuance / cfssl: {}",
        show(&issuance_ratios)
    );
    println!(
        "QuorumCA 3-node proposals / etcd puts: {}",
        show(&proposal_ratios)
    );
    println!(
        "QuorumCA 3-node issuance / crypto limit: {}",
        crypto_ratio.map_or("-".into(), |r| format!("{r:.2}x"))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(per_second: f64) -> LevelResult {
        LevelResult {
            concurrency: 64,
            seconds: 10.0,
            ok: (per_second * 10.0) as u64,
            errors: 0,
            per_second,
            p50_ms: 1.0,
            p99_ms: 2.0,
            max_ms: 3.0,
            cpu_us_per_op: None,
        }
    }

    #[test]
    fn median_takes_the_middle_or_the_lower_middle() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![5.0]), Some(5.0));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.0));
    }

    #[test]
    fn ratios_are_taken_within_a_round_and_the_table_shows_the_median_round() {
        let round = |cf: f64, q3: f64| Round {
            cfssl_sign: Some(level(cf)),
            quorumca_3_nodes_issue: Some(level(q3)),
            ..Round::default()
        };
        // A slow round for both systems must not read as a slow QuorumCA.
        let rounds = vec![
            round(6000.0, 9000.0),
            round(4000.0, 6000.0),
            round(7000.0, 7000.0),
        ];
        let ratios: Vec<f64> = rounds.iter().filter_map(Round::issuance_ratio).collect();
        assert_eq!(ratios, vec![1.5, 1.5, 1.0]);
        assert_eq!(median(ratios), Some(1.5));
        let med = median_result(&rounds, |r| &r.quorumca_3_nodes_issue).unwrap();
        assert_eq!(med.per_second, 7000.0);
        assert!(median_result(&rounds, |r| &r.etcd_put_3_members).is_none());
        assert_eq!(Round::default().issuance_ratio(), None);
    }
}
