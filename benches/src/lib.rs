//! # quorumca-benches: measurements, not assertions
//!
//! Load generators that run against real clusters and report throughput and
//! latency percentiles (HdrHistogram). Targets live here, never in timed
//! unit tests. Binaries:
//!
//! - `proposals`: raw committed proposals per second and p50/p99 commit
//!   latency for a 3-node durable cluster at several concurrencies.
//! - `log_growth`: Raft log entries, sled bytes on disk and process memory
//!   while the log is purged behind snapshots.
//! - `issuance`: certificates per second and p50/p99 through a 3-node
//!   cluster, beside the one-core crypto limit.
//! - `growth`: CRL build time and size against revoked entries; ledger
//!   apply, snapshot, restart and memory against live records.
//! - `compare`: one run beside cfssl and etcd on this machine, QuorumCA
//!   through its public gRPC API over mTLS.
//! - `load`: Issue, Revoke, GetCrl or OCSP against a running cluster.
//!
//! And `benches/micro.rs`: criterion micro-benchmarks of CSR verification,
//! signing, CRL building and ledger apply.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod fixture;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use quorumca_consensus::Node;
use quorumca_ledger::Proposal;
use serde::Serialize;

/// Result of one load level.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct LevelResult {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Wall time measured.
    pub seconds: f64,
    /// Successful operations.
    pub ok: u64,
    /// Failed operations.
    pub errors: u64,
    /// Successful operations per second.
    pub per_second: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Worst latency.
    pub max_ms: f64,
    /// CPU time (user + system) the system under test and its load
    /// generator spent per successful operation, in microseconds. On a
    /// machine where everything shares two cores this is steadier than
    /// throughput, and it says where a gain came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_op: Option<f64>,
}

/// When a load level stops. Both bounds always apply, so no run is endless.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Stop after this long.
    pub duration: Duration,
    /// Stop after this many operations.
    pub max_ops: u64,
}

/// Runs `concurrency` closed-loop proposers against `node` until the budget
/// is spent. Each worker waits for its proposal to be committed before
/// sending the next, so throughput comes from concurrency, as with real
/// clients.
pub async fn run_level(
    node: Arc<Node>,
    concurrency: usize,
    budget: Budget,
    make: Arc<dyn Fn(u64) -> Proposal + Send + Sync>,
    progress: Option<indicatif::ProgressBar>,
) -> LevelResult {
    let op = Arc::new(move |_w: usize, n: u64| {
        let (node, make, progress) = (node.clone(), make.clone(), progress.clone());
        async move {
            let ok = node.propose(make(n)).await.is_ok();
            if let (true, Some(p)) = (ok, &progress) {
                p.inc(1);
            }
            ok
        }
    });
    run_closed_loop(concurrency, budget, op).await
}

/// Runs `concurrency` closed-loop workers until the budget is spent; each
/// calls `op(worker, n)` and waits for it. `op` answers whether the
/// operation succeeded. Generic over the operation so every benchmark
/// measures the same way.
pub async fn run_closed_loop<F, Fut>(concurrency: usize, budget: Budget, op: Arc<F>) -> LevelResult
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + budget.duration;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (counter, errors, op) = (counter.clone(), errors.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut h =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= budget.max_ops {
                    break;
                }
                let t = Instant::now();
                if op(w, n).await {
                    let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            h
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for t in tasks {
        total.add(t.await.expect("worker")).expect("same bounds");
    }
    let seconds = started.elapsed().as_secs_f64();
    LevelResult {
        concurrency,
        seconds,
        ok: total.len(),
        errors: errors.load(Ordering::Relaxed),
        per_second: total.len() as f64 / seconds,
        p50_ms: total.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: total.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: total.max() as f64 / 1000.0,
        cpu_us_per_op: None,
    }
}

/// The raw crypto limit: CSR verify + ECDSA P-256 leaf sign per second on
/// this thread (one core), as many as fit in `secs`.
pub fn crypto_limit(secs: u64) -> f64 {
    use quorumca_ca::{LeafSpec, Usage, Validity};
    let root = quorumca_ca::self_signed_root(
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        "Bench Root",
        Validity {
            not_before: 0,
            not_after: 4_000_000_000,
        },
        &[1],
    )
    .unwrap();
    let int = quorumca_ca::sign_intermediate(
        &root,
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        "Bench Int",
        Validity {
            not_before: 0,
            not_after: 4_000_000_000,
        },
        &[2],
    )
    .unwrap();
    let csr = quorumca_testkit::authority::test_csr("bench.payments.svc.cluster.local");
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let v = quorumca_ca::parse_csr(&csr).unwrap();
        // A positive 16-byte serial with no leading zero octet.
        let mut serial = vec![0x40];
        serial.extend_from_slice(&n.to_be_bytes());
        serial.extend_from_slice(&[0x11; 7]);
        let spec = LeafSpec {
            serial,
            validity: Validity {
                not_before: 1_800_000_000,
                not_after: 1_800_086_400,
            },
            dns: v.names.dns.clone(),
            ips: vec![],
            uris: vec![],
            usages: vec![Usage::ServerAuth],
            crl_url: Some("http://ca.test/crl/eu/0.crl".into()),
            ocsp_url: Some("http://ca.test/ocsp/eu".into()),
        };
        quorumca_ca::sign_leaf(&int, &v, &spec).unwrap();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// CPU seconds (user + system) used so far by this process and the
/// processes `pids`, from /proc (whose ticks are USER_HZ, 100 on Linux).
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks = |path: String| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| {
                // Fields after the parenthesised command name; utime and
                // stime are fields 14 and 15 of the whole line.
                let rest = &s[s.rfind(')')? + 2..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    };
    let mut total = ticks("/proc/self/stat".into());
    for pid in pids {
        total += ticks(format!("/proc/{pid}/stat"));
    }
    total as f64 / 100.0
}

/// Runs one load level and fills in its CPU cost per operation, counting
/// this process (the load generator, and in-process servers) and `pids`.
pub async fn with_cpu<F>(pids: &[u32], level: F) -> LevelResult
where
    F: std::future::Future<Output = LevelResult>,
{
    let before = cpu_seconds(pids);
    let mut r = level.await;
    let used = cpu_seconds(pids) - before;
    if r.ok > 0 {
        r.cpu_us_per_op = Some(used * 1e6 / r.ok as f64);
    }
    r
}

/// One blocking HTTP agent per closed-loop worker (10 s timeout), so
/// workers never share a connection.
pub fn http_agents(n: usize) -> Vec<ureq::Agent> {
    (0..n)
        .map(|_| {
            ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build()
        })
        .collect()
}

/// Resident set size of this process in bytes, from /proc.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// A plain-text table, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let fmt = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:>width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![fmt(headers.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| fmt(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}
