//! Simulation of the whole CA: five real consensus nodes over three
//! regions, ledger and
//! `Authority` (CSR checks, policy, serial leases, signing, revocation, CRL
//! and OCSP) on turmoil's simulated network and clock, with in-memory
//! disks that lose unflushed writes on a crash. Each node runs clients
//! that issue, revoke and read status through it; a seed draws partitions
//! (of a node or a whole region) and crash-restarts. After healing, the drills' own checker judges the
//! history and every node's view: no duplicate serial, every acknowledged
//! issuance and revocation on every node and in its CRL and OCSP, one
//! ledger state and audit chain, and a linearizable history.
//!
//! `QUORUMCA_SIM_SEEDS=N` runs N seeds (default 40, CI's short run; 1,000
//! on demand, see chaos/README.md), `QUORUMCA_SIM_SEED=S`
//! one, printing its faults and report. A failure prints its seed. The
//! faults, the operation schedule and every outcome replay exactly (the
//! test runs its first seed twice and compares them); certificate bytes do
//! not, because ring draws ECDSA nonces and serial bits from the OS, which
//! changes no timing in the simulation.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use quorumca_api::{Authority, AuthorityConfig, AuthorityError, IssueRequest};
use quorumca_chaos::{check, Action, CertKey, History, NodeView, Op, OpResult, Report};
use quorumca_testkit::authority::{test_csr, test_kek, TEST_POLICY, TEST_SECRET};
use quorumca_testkit::sim as support;

use quorumca_consensus::{Node, NodeConfig, RaftSettings};
use quorumca_ledger::{Rejection, RevocationReason, Serial};
use quorumca_storage::MemDisk;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PORT: u16 = 7000;
/// Five nodes over three regions (2 + 2 + 1), as the drills run them:
/// each region has its own intermediate, and its nodes sign with it.
const NODES: u64 = 5;
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

fn region_of(id: u64) -> &'static str {
    REGIONS[((id - 1) / 2) as usize]
}

/// A certificate a client holds: what revocations, reads and OCSP need.
#[derive(Clone)]
struct Held {
    key: CertKey,
    leaf: Vec<u8>,
    issuer: Vec<u8>,
}

thread_local! {
    static RUNNING: RefCell<BTreeMap<u64, Arc<Authority>>> = const { RefCell::new(BTreeMap::new()) };
    static OPS: RefCell<Vec<Op>> = const { RefCell::new(Vec::new()) };
    static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
    /// The hierarchy and policy are in place: clients may start.
    static READY: RefCell<bool> = const { RefCell::new(false) };
    static INITIALIZED: RefCell<bool> = const { RefCell::new(false) };
    static STOP: RefCell<bool> = const { RefCell::new(false) };
    /// Set once the cluster is quiet: every node builds its CRLs.
    static REFRESH: RefCell<bool> = const { RefCell::new(false) };
    static REFRESHED: RefCell<BTreeSet<u64>> = const { RefCell::new(BTreeSet::new()) };
}

fn node_config(id: u64, disk: MemDisk) -> NodeConfig {
    NodeConfig {
        node_id: id,
        listen: (turmoil::lookup(format!("n{id}")), PORT).into(),
        advertise: Some(format!("n{id}:{PORT}")),
        data_dir: format!("/sim/n{id}").into(),
        region: region_of(id).into(),
        zone: format!("z{id}"),
        raft: RaftSettings::default(),
        propose_timeout: Duration::from_secs(3),
        tls: None,
        memory: Some(disk),
        connections: Default::default(),
    }
}

fn authority_config(id: u64) -> AuthorityConfig {
    AuthorityConfig {
        crl_shards: 2,
        // Small blocks: leases run out and are renewed during faults.
        lease_block: 16,
        ..AuthorityConfig::new(region_of(id), "http://ca.sim")
    }
}

/// Simulated nanoseconds since the simulation started.
fn now_ns() -> u64 {
    turmoil::elapsed().as_nanos() as u64
}

/// Definite refusals changed nothing; anything else may have happened.
fn unknown_or_failed(e: &AuthorityError) -> OpResult {
    match e {
        AuthorityError::Consensus(_) | AuthorityError::Internal(_) => OpResult::Unknown,
        other => OpResult::Failed(other.to_string()),
    }
}

fn invoke(client: u64, action: Action) -> usize {
    OPS.with(|o| {
        let mut o = o.borrow_mut();
        o.push(Op {
            client,
            action,
            invoked_ns: now_ns(),
            completed_ns: None,
            result: OpResult::Unknown,
        });
        o.len() - 1
    })
}

fn complete(i: usize, result: OpResult) {
    let at = (result != OpResult::Unknown).then(now_ns);
    OPS.with(|o| {
        let op = &mut o.borrow_mut()[i];
        op.completed_ns = at;
        op.result = result;
    });
}

fn pick(rng: &mut StdRng) -> Option<Held> {
    HELD.with(|h| {
        let h = h.borrow();
        (!h.is_empty()).then(|| h[rng.gen_range(0..h.len())].clone())
    })
}

/// One client's next operation, through its node's Authority.
async fn client_op(a: &Authority, client: u64, n: u64, rng: &mut StdRng) {
    let roll: f64 = rng.gen();
    if roll < 0.5 {
        let i = invoke(client, Action::Issue);
        let r = a
            .issue(IssueRequest {
                csr: test_csr(&format!("c{client}-{n}.payments.svc.cluster.local")),
                namespace: "payments".into(),
                profile: "web".into(),
                lifetime: None,
                actor: format!("sim/{client}"),
                idempotency_key: None,
            })
            .await;
        match r {
            Ok(issued) => {
                let key = CertKey::new(&issued.issuer, hex::encode(&issued.serial));
                let issuer = a
                    .node()
                    .read_local(|s| s.issuer(&issued.issuer).map(|i| i.cert_der.clone()))
                    .expect("the issuer of a certificate just issued");
                HELD.with(|h| {
                    h.borrow_mut().push(Held {
                        key: key.clone(),
                        leaf: issued.cert_der.clone(),
                        issuer,
                    })
                });
                complete(i, OpResult::Issued(key));
            }
            Err(e) => complete(i, unknown_or_failed(&e)),
        }
    } else if let Some(held) = pick(rng) {
        let serial = hex::decode(&held.key.serial).expect("hex");
        if roll < 0.8 {
            let i = invoke(client, Action::Revoke(held.key.clone()));
            let r = a
                .revoke(&held.key.issuer, &serial, RevocationReason::KeyCompromise)
                .await;
            complete(
                i,
                match r {
                    Ok(_) => OpResult::Revoked,
                    Err(AuthorityError::Rejected(Rejection::AlreadyRevoked { .. })) => {
                        OpResult::AlreadyRevoked
                    }
                    Err(AuthorityError::Rejected(Rejection::UnknownCertificate { .. })) => {
                        OpResult::NotFound
                    }
                    Err(e) => unknown_or_failed(&e),
                },
            );
        } else {
            let i = invoke(client, Action::Status(held.key.clone()));
            let serial = Serial(serial);
            let issuer = held.key.issuer.clone();
            let r = a
                .node()
                .read_linearizable(move |s| {
                    (
                        s.record(&issuer, &serial).is_some(),
                        s.revocation(&issuer, &serial).is_some(),
                    )
                })
                .await;
            complete(
                i,
                match r {
                    Ok((_, true)) => OpResult::IsRevoked,
                    Ok((true, false)) => OpResult::Good,
                    Ok((false, false)) => OpResult::NotFound,
                    // A read that failed changed nothing.
                    Err(e) => OpResult::Failed(e.to_string()),
                },
            );
        }
    }
}

/// One host's life: start (or restart) the node and its Authority, set up
/// the hierarchy and policy once, run two clients until the workload
/// stops, then build CRLs when asked.
async fn host(id: u64, disk: MemDisk, seed: u64) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let node = Node::start_with_transport(node_config(id, disk), support::transport(listener))
        .await
        .map_err(|e| e.to_string())?;
    let a = Arc::new(Authority::new(
        Arc::new(node),
        Some(test_kek(TEST_SECRET)),
        authority_config(id),
    ));
    RUNNING.with(|r| r.borrow_mut().insert(id, a.clone()));
    if id == 1 && !INITIALIZED.with(|i| std::mem::replace(&mut *i.borrow_mut(), true)) {
        let members = (1..=NODES)
            .map(|i| {
                let mut info = a.node().info().clone();
                info.addr = format!("n{i}:{PORT}");
                (i, info)
            })
            .collect();
        a.node()
            .initialize(members)
            .await
            .map_err(|e| e.to_string())?;
        a.bootstrap_hierarchy(&REGIONS.map(String::from))
            .await
            .map_err(|e| e.to_string())?;
        a.apply_policy(TEST_POLICY, "sim", Some(0))
            .await
            .map_err(|e| e.to_string())?;
        READY.with(|r| *r.borrow_mut() = true);
    }
    while !READY.with(|r| *r.borrow()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in 0..2u64 {
        let (a, client) = (a.clone(), id * 10 + c);
        let mut rng = StdRng::seed_from_u64(seed ^ client);
        tokio::task::spawn_local(async move {
            let mut n = 0;
            while !STOP.with(|s| *s.borrow()) {
                n += 1;
                client_op(&a, client, n, &mut rng).await;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(20..120))).await;
            }
        });
    }
    loop {
        if REFRESH.with(|r| *r.borrow())
            && !REFRESHED.with(|r| r.borrow().contains(&id))
            && a.refresh_crls().await.is_ok()
        {
            REFRESHED.with(|r| r.borrow_mut().insert(id));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug)]
enum Fault {
    Isolate(u64),
    /// Cut one region's nodes off from the rest (at most two of five).
    IsolateRegion(&'static str),
    Crash(u64),
    Heal,
}

/// One node's view, read in-process: the same fields the drills collect
/// over the network.
fn view(id: u64, a: &Authority, revoked: &[Held]) -> Result<NodeView, String> {
    let applied_index = a.node().status().applied_index;
    let (ledger_hash, audit_head, audit_entries, records, revoked_in_ledger, issuers) =
        a.node().read_local(|s| {
            let mut entries = BTreeMap::new();
            let mut after = 0;
            loop {
                let page = s.audit_entries(after, quorumca_ledger::MAX_AUDIT_ENTRIES, |_| true);
                let Some(last) = page.last().map(|e| e.seq) else {
                    break;
                };
                for e in page {
                    entries.insert(e.seq, e.chain);
                }
                after = last;
            }
            (
                hex::encode(s.hash()),
                hex::encode(s.audit_head()),
                entries,
                s.records()
                    .map(|r| CertKey::new(&r.issuer, hex::encode(&r.serial.0)))
                    .collect::<BTreeSet<_>>(),
                s.revocations()
                    .map(|(i, serial, _)| CertKey::new(i, hex::encode(&serial.0)))
                    .collect::<BTreeSet<_>>(),
                s.issuers()
                    .filter(|i| i.sealed_key.is_some())
                    .map(|i| (i.id.clone(), i.crl_shards.max(1)))
                    .collect::<Vec<_>>(),
            )
        });
    let mut crl_revoked = BTreeSet::new();
    for (issuer, shards) in issuers {
        for shard in 0..shards {
            let crl = a
                .crl(&issuer, shard, false)
                .map_err(|e| format!("node {id}: CRL {issuer}/{shard}: {e}"))?;
            let list = <x509_cert::crl::CertificateList as der::Decode>::from_der(&crl.der)
                .map_err(|e| format!("node {id}: CRL {issuer}/{shard} does not parse: {e}"))?;
            for rc in list.tbs_cert_list.revoked_certificates.unwrap_or_default() {
                crl_revoked.insert(CertKey::new(
                    &issuer,
                    hex::encode(rc.serial_number.as_bytes()),
                ));
            }
        }
    }
    let mut ocsp_revoked = BTreeSet::new();
    for h in revoked {
        let req = quorumca_ca::ocsp_request_for(&h.leaf, &h.issuer).map_err(|e| e.to_string())?;
        let answer = a.ocsp(&h.key.issuer, &req);
        match quorumca_ca::ocsp_answered_status(&answer) {
            Ok(quorumca_ca::OcspStatus::Revoked { .. }) => {
                ocsp_revoked.insert(h.key.clone());
            }
            Ok(_) => {}
            Err(e) => return Err(format!("node {id}: OCSP about {}: {e}", h.key)),
        }
    }
    Ok(NodeView {
        node: id,
        applied_index,
        ledger_hash,
        audit_head,
        audit_entries,
        records,
        revoked: revoked_in_ledger,
        crl_revoked,
        ocsp_revoked,
    })
}

/// What one seed did: its faults (simulated ms, fault), the history and
/// the checker's report.
struct Outcome {
    faults: Vec<(u128, Fault)>,
    history: History,
    report: Report,
}

fn run(seed: u64) -> Result<Outcome, String> {
    RUNNING.with(|r| r.borrow_mut().clear());
    OPS.with(|o| o.borrow_mut().clear());
    HELD.with(|h| h.borrow_mut().clear());
    for flag in [&READY, &INITIALIZED, &STOP, &REFRESH] {
        flag.with(|f| *f.borrow_mut() = false);
    }
    REFRESHED.with(|r| r.borrow_mut().clear());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sim = support::simulation(seed);
    let disks: Vec<MemDisk> = (1..=NODES).map(|_| MemDisk::new()).collect();
    for id in 1..=NODES {
        let disk = disks[id as usize - 1].clone();
        sim.host(format!("n{id}"), move || {
            let seed = support::start_seed(id);
            quorumca_storage::runtime::with_seed(seed, host(id, disk.clone(), seed))
        });
    }
    // Near within a region, far across regions, different on every link.
    support::set_link_latencies(&sim, NODES, |a, b| {
        if region_of(a) == region_of(b) {
            rng.gen_range(1..=3)
        } else {
            rng.gen_range(5..=40)
        }
    });
    sim.client("driver", async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    });
    let run_for = support::run_for;
    let name = |id: u64| format!("n{id}");
    run_for(&mut sim, Duration::from_secs(5))?;
    if !READY.with(|r| *r.borrow()) {
        return Err("the hierarchy and policy were not set up within 5 s".into());
    }
    let mut faults = Vec::new();
    let mut down: Option<u64> = None;
    for _ in 0..6 {
        let id = rng.gen_range(1..=NODES);
        let fault = match rng.gen_range(0..4) {
            0 => Fault::Isolate(id),
            1 => Fault::IsolateRegion(REGIONS[rng.gen_range(0..REGIONS.len())]),
            2 => Fault::Crash(id),
            _ => Fault::Heal,
        };
        if let Some(d) = down.take() {
            sim.bounce(name(d));
        }
        support::release_all(&mut sim, NODES);
        match &fault {
            Fault::Isolate(id) => {
                let others: Vec<u64> = (1..=NODES).filter(|o| o != id).collect();
                support::isolate(&mut sim, &[*id], &others);
            }
            Fault::IsolateRegion(r) => {
                let (inside, outside): (Vec<u64>, Vec<u64>) =
                    (1..=NODES).partition(|i| region_of(*i) == *r);
                support::isolate(&mut sim, &inside, &outside);
            }
            Fault::Crash(id) => {
                sim.crash(name(*id));
                disks[*id as usize - 1].crash();
                down = Some(*id);
            }
            Fault::Heal => {}
        }
        faults.push((sim.elapsed().as_millis(), fault));
        run_for(&mut sim, Duration::from_millis(rng.gen_range(1_000..3_000)))?;
    }
    if let Some(d) = down.take() {
        sim.bounce(name(d));
    }
    support::release_all(&mut sim, NODES);
    run_for(&mut sim, Duration::from_secs(5))?;
    STOP.with(|s| *s.borrow_mut() = true);
    run_for(&mut sim, Duration::from_secs(5))?;
    REFRESH.with(|r| *r.borrow_mut() = true);
    let deadline = sim.elapsed() + Duration::from_secs(30);
    while REFRESHED.with(|r| r.borrow().len()) < NODES as usize {
        if sim.elapsed() > deadline {
            return Err("CRLs were not built on every node within 30 s".into());
        }
        sim.step().map_err(|e| e.to_string())?;
    }
    // The CRL numbers just committed reach every node.
    run_for(&mut sim, Duration::from_secs(3))?;

    let history = History {
        ops: OPS.with(|o| o.borrow().clone()),
    };
    let revoked: Vec<Held> = {
        let keys = history.acknowledged_revocations();
        HELD.with(|h| {
            h.borrow()
                .iter()
                .filter(|h| keys.contains(&h.key))
                .cloned()
                .collect()
        })
    };
    let authorities: Vec<(u64, Arc<Authority>)> =
        RUNNING.with(|r| r.borrow().iter().map(|(k, v)| (*k, v.clone())).collect());
    let views = authorities
        .iter()
        .map(|(id, a)| view(*id, a, &revoked))
        .collect::<Result<Vec<_>, _>>()?;
    let report = check(&history, &views);
    if !report.ok() {
        return Err(format!(
            "{} violation(s): {:?}; faults {faults:?}",
            report.violations.len(),
            report.violations
        ));
    }
    if report.acknowledged_issuances == 0 || report.acknowledged_revocations == 0 {
        return Err(format!("the workload did too little: {report:?}"));
    }
    Ok(Outcome {
        faults,
        history,
        report,
    })
}

/// The parts of a run that must replay exactly: faults, and every
/// operation's client, times and outcome, with serials replaced by the
/// order in which they were first issued (their bytes come from the OS).
fn replayable(o: &Outcome) -> String {
    let mut serials: BTreeMap<CertKey, usize> = BTreeMap::new();
    let mut anon = |k: &CertKey| {
        let n = serials.len();
        *serials.entry(k.clone()).or_insert(n)
    };
    let mut out = format!("{:?}\n", o.faults);
    for op in &o.history.ops {
        let action = match &op.action {
            Action::Issue => "issue".to_string(),
            Action::Revoke(k) => format!("revoke #{}", anon(k)),
            Action::Status(k) => format!("status #{}", anon(k)),
        };
        let result = match &op.result {
            OpResult::Issued(k) => format!("issued #{}", anon(k)),
            other => format!("{other:?}"),
        };
        out += &format!(
            "{} {action} {} {:?} {result}\n",
            op.client, op.invoked_ns, op.completed_ns
        );
    }
    out
}

#[test]
fn the_ca_keeps_its_invariants_under_seeded_partitions_and_crashes() {
    let _turn = crate::one_at_a_time();
    support::use_simulated_clock();
    let seeds: Vec<u64> = match std::env::var("QUORUMCA_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("QUORUMCA_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("QUORUMCA_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(40u64);
            (1..=n).collect()
        }
    };
    let fail = |seed: u64, e: String| -> ! {
        panic!(
            "seed {seed} broke an invariant: {e}\nrerun: QUORUMCA_SIM_SEED={seed} cargo test -p quorumca-chaos --test chaos -- sim::"
        )
    };
    let started = std::time::Instant::now();
    let first = run(seeds[0]).unwrap_or_else(|e| fail(seeds[0], e));
    let again = run(seeds[0]).unwrap_or_else(|e| fail(seeds[0], e));
    let (a, b) = (replayable(&first), replayable(&again));
    if a != b {
        let dir = std::env::temp_dir();
        let (pa, pb) = (
            dir.join("quorumca-sim-run1.txt"),
            dir.join("quorumca-sim-run2.txt"),
        );
        std::fs::write(&pa, &a).expect("write run 1");
        std::fs::write(&pb, &b).expect("write run 2");
        panic!(
            "seed {} did not replay exactly (is --cfg tokio_unstable set? see .cargo/config.toml); diff {} {}",
            seeds[0],
            pa.display(),
            pb.display()
        );
    }
    let (mut ops, mut issued, mut revoked, mut linear) = (0, 0, 0, 0);
    for &seed in &seeds {
        let o = if seed == seeds[0] {
            Outcome {
                faults: Vec::new(),
                history: first.history.clone(),
                report: first.report.clone(),
            }
        } else {
            run(seed).unwrap_or_else(|e| fail(seed, e))
        };
        if seeds.len() == 1 {
            println!("seed {seed}: faults {:?}; {:?}", first.faults, o.report);
        }
        ops += o.report.operations;
        issued += o.report.acknowledged_issuances;
        revoked += o.report.acknowledged_revocations;
        linear += o.report.certificates_checked_linearizable;
    }
    println!(
        "{} seeds: {ops} operations, {issued} acknowledged issuances and {revoked} revocations on every node, in every CRL and OCSP; {linear} certificates' histories linearizable; {:?}",
        seeds.len(),
        started.elapsed()
    );
}
