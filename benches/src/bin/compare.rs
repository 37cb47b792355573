//! QuorumCA beside what users would pick instead, in one run on this
//! machine, with the same CSRs and the same concurrency:
//!
//! 1. the raw crypto limit (CSR verify + ECDSA P-256 sign, one core);
//! 2. cfssl `serve` (Debian golang-cfssl) signing with an ECDSA P-256 CA;
//! 3. a 3-member etcd (Debian etcd-server): durable puts of small values;
//! 4. QuorumCA, 1 node and 3 nodes, durable, through its public gRPC API
//!    over mTLS: issuance and raw proposals (`Cluster.Ping`).
//!
//! Every system runs on loopback in this machine's two cores with its load
//! generator in this process; the HTTP ones (cfssl, etcd's JSON gateway)
//! are driven by blocking clients on a thread per connection, QuorumCA by
//! async gRPC clients.
//!
//! Missing Debian packages are installed with apt-get (root). Every process
//! it starts is killed when it ends, also on error.
//!
//! cargo run --release -p quorumca-benches --bin compare -- --help

use std::path::Path;
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

/// QuorumCA as its users meet it: `nodes` durable nodes (in this
/// process) serving the public gRPC API over mTLS on loopback, with the PKI
/// `quorumca dev` makes; issuance spread over every node through
/// `CertificateService.Issue`, then raw proposals through `Cluster.Ping`
/// (a 64-byte no-op committed through Raft, the equivalent of a put).
async fn quorumca(
    args: &Args,
    dir: &Path,
    nodes: u64,
    csrs: &Arc<Vec<String>>,
) -> anyhow::Result<(LevelResult, LevelResult)> {
    use quorumca_api::pb::certificate_service_client::CertificateServiceClient;
    use quorumca_consensus::pb::cluster_client::ClusterClient;
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
            c.issue(quorumca_api::pb::IssueRequest {
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
            c.ping(quorumca_consensus::pb::PingRequest {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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

    let on = |s: System| args.systems.contains(&s);
    let limit = if on(System::Crypto) {
        eprintln!("[1/4] crypto limit, one core ({} s)", args.crypto_seconds);
        let limit = crypto_limit(args.crypto_seconds);
        eprintln!("      {limit:.0}/s");
        Some(limit)
    } else {
        None
    };
    let cf = if on(System::Cfssl) {
        eprintln!(
            "[2/4] cfssl serve, {} clients, {} s",
            args.concurrency, args.duration
        );
        let cf = cfssl(&args, dir.path(), &csrs).await?;
        eprintln!("      {:.0}/s p99 {:.2} ms", cf.per_second, cf.p99_ms);
        Some(cf)
    } else {
        None
    };
    let et = if on(System::Etcd) {
        eprintln!(
            "[3/4] etcd, 3 members, {} clients, {} s",
            args.concurrency, args.duration
        );
        let et = etcd(&args, dir.path()).await?;
        eprintln!("      {:.0}/s p99 {:.2} ms", et.per_second, et.p99_ms);
        Some(et)
    } else {
        None
    };
    let (q1_issue, q1_prop, q3_issue, q3_prop) = if on(System::Quorumca) {
        eprintln!(
            "[4/4] QuorumCA, {:?} nodes, {} clients, {} s each",
            args.nodes, args.concurrency, args.duration
        );
        let mut measured = std::collections::BTreeMap::new();
        for &n in &args.nodes {
            if n != 1 && n != 3 {
                bail!("--nodes takes 1 and/or 3");
            }
            let (issue, prop) = quorumca(&args, dir.path(), n, &csrs).await?;
            eprintln!(
                "      {n} node(s): {:.0} certs/s ({:.0} us CPU each), {:.0} proposals/s ({:.0} us)",
                issue.per_second,
                issue.cpu_us_per_op.unwrap_or(0.0),
                prop.per_second,
                prop.cpu_us_per_op.unwrap_or(0.0)
            );
            measured.insert(n, (issue, prop));
        }
        let mut take = |n: u64| match measured.remove(&n) {
            Some((i, p)) => (Some(i), Some(p)),
            None => (None, None),
        };
        let (q1_issue, q1_prop) = take(1);
        let (q3_issue, q3_prop) = take(3);
        (q1_issue, q1_prop, q3_issue, q3_prop)
    } else {
        (None, None, None, None)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "concurrency": args.concurrency,
                "seconds_per_measurement": args.duration,
                "crypto_limit_per_second": limit,
                "cfssl_sign": cf, "etcd_put_3_members": et,
                "quorumca_1_node_issue": q1_issue, "quorumca_1_node_proposals": q1_prop,
                "quorumca_3_nodes_issue": q3_issue, "quorumca_3_nodes_proposals": q3_prop,
            }))?
        );
        return Ok(());
    }
    println!(
        "{} clients, {} s per measurement, durable everywhere, this machine; took {:.0} s\n",
        args.concurrency,
        args.duration,
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
                row("cfssl serve: sign", &cf),
                row("etcd 3 members: put", &et),
                row("QuorumCA 1 node: issue", &q1_issue),
                row("QuorumCA 3 nodes: issue", &q3_issue),
                row("QuorumCA 1 node: proposal", &q1_prop),
                row("QuorumCA 3 nodes: proposal", &q3_prop),
            ]
        )
    );
    println!(
        "\nQuorumCA 3-node issuance / cfssl: {}   proposals / etcd puts: {}   issuance / crypto limit: {}",
        ratio(per_s(&q3_issue), per_s(&cf)),
        ratio(per_s(&q3_prop), per_s(&et)),
        ratio(per_s(&q3_issue), limit)
    );
    Ok(())
}
