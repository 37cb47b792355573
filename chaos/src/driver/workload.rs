//! The drill workload: concurrent clients issuing, renewing, revoking and
//! reading certificates through the client library, plus an operator
//! changing policy, each call logged as one history [`Op`].
//!
//! Two kinds of client. Roaming clients know every node and fail over, as
//! production clients do: their availability is what a fleet sees.
//! Pinned clients talk to one node only: their success rate is that node's
//! side of a partition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quorumca_chaos::{Action, CertKey, Op, OpResult};
use quorumca_client::{Client, ClientConfig, ClientError, Credentials, Endpoint};
use quorumca_proto as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tonic::Code;

use super::cluster::api_addr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    Roaming,
    Pinned(u64),
}

/// A certificate the workload holds: what renewals and OCSP checks need.
#[derive(Clone)]
pub struct Held {
    pub chain_pem: String,
    pub key_pem: String,
    pub leaf_der: Vec<u8>,
    pub issuer_der: Vec<u8>,
}

#[derive(Default)]
pub struct Shared {
    pub ops: Vec<Op>,
    pub kinds: BTreeMap<u64, Kind>,
    pub held: BTreeMap<CertKey, Held>,
    /// Certificates a revocation of was acknowledged: not renewed.
    pub revoked: std::collections::BTreeSet<CertKey>,
    pub policy_ok: u64,
    pub policy_failed: u64,
}

pub struct Workload {
    pub shared: Arc<Mutex<Shared>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub started: Instant,
}

const NAMESPACE: &str = "default";
const PROFILE: &str = "service";

fn config(endpoints: &[u64], creds: Credentials) -> ClientConfig {
    let mut cfg = ClientConfig::new(
        endpoints
            .iter()
            .map(|&id| Endpoint {
                addr: api_addr(id),
                region: None,
            })
            .collect(),
    )
    .credentials(creds);
    // Faults are measured in seconds: a call gives up well within a phase.
    cfg.connect_timeout = Duration::from_millis(500);
    cfg.attempt_timeout = Duration::from_secs(2);
    cfg.call_timeout = Duration::from_secs(6);
    cfg.breaker_cooldown = Duration::from_secs(1);
    cfg
}

/// Definite refusals change nothing; everything else may have happened.
fn classify(e: &ClientError) -> OpResult {
    match e {
        ClientError::Status { code, message } => match code {
            Code::NotFound => OpResult::NotFound,
            Code::FailedPrecondition if message.contains("already revoked") => {
                OpResult::AlreadyRevoked
            }
            Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::AlreadyExists => OpResult::Failed(format!("{code:?}: {message}")),
            _ => OpResult::Unknown,
        },
        ClientError::Exhausted { .. } => OpResult::Unknown,
        ClientError::Endpoint(m) => OpResult::Failed(m.clone()),
        // Refused at the TLS handshake: no request reached the node.
        e @ ClientError::Unreachable { .. } => OpResult::Failed(e.to_string()),
    }
}

fn new_csr(name: &str) -> anyhow::Result<(Vec<u8>, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let p = rcgen::CertificateParams::new(vec![name.to_string()])?;
    Ok((
        p.serialize_request(&key)?.der().to_vec(),
        key.serialize_pem(),
    ))
}

fn held_from(r: &pb::IssueResponse, key_pem: String) -> Option<(CertKey, Held)> {
    use der::Encode;
    let chain = x509_cert::Certificate::load_pem_chain(r.chain_pem.as_bytes()).ok()?;
    Some((
        CertKey::new(&r.issuer, &r.serial),
        Held {
            chain_pem: r.chain_pem.clone(),
            key_pem,
            leaf_der: chain.first()?.to_der().ok()?,
            issuer_der: chain.get(1)?.to_der().ok()?,
        },
    ))
}

struct Ctx {
    shared: Arc<Mutex<Shared>>,
    started: Instant,
    admin: Credentials,
}

impl Ctx {
    fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn log(&self, client: u64, action: Action, invoked_ns: u64, result: OpResult) {
        let completed_ns = (result != OpResult::Unknown).then(|| self.now());
        self.shared.lock().expect("workload").ops.push(Op {
            client,
            action,
            invoked_ns,
            completed_ns,
            result,
        });
    }

    /// A random held certificate; with `live`, one not known revoked.
    fn pick_cert(&self, rng: &mut StdRng, live: bool) -> Option<(CertKey, Held)> {
        let s = self.shared.lock().expect("workload");
        let candidates: Vec<(&CertKey, &Held)> = s
            .held
            .iter()
            .filter(|(k, _)| !live || !s.revoked.contains(*k))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (k, h) = candidates[rng.gen_range(0..candidates.len())];
        Some((k.clone(), h.clone()))
    }
}

async fn issue(ctx: &Ctx, c: &Client, id: u64, n: u64) {
    let Ok((csr, key_pem)) = new_csr(&format!("w{id}-{n}.default.svc.dev.internal")) else {
        return;
    };
    let t = ctx.now();
    let r = c
        .issue(pb::IssueRequest {
            csr,
            namespace: NAMESPACE.into(),
            profile: PROFILE.into(),
            lifetime_seconds: 3600,
            ..Default::default()
        })
        .await;
    record_issued(ctx, id, t, r, key_pem);
}

fn record_issued(
    ctx: &Ctx,
    id: u64,
    t: u64,
    r: Result<pb::IssueResponse, ClientError>,
    key_pem: String,
) {
    match r {
        Ok(r) => {
            let key = CertKey::new(&r.issuer, &r.serial);
            if let Some((k, h)) = held_from(&r, key_pem) {
                ctx.shared.lock().expect("workload").held.insert(k, h);
            }
            ctx.log(id, Action::Issue, t, OpResult::Issued(key));
        }
        Err(e) => ctx.log(id, Action::Issue, t, classify(&e)),
    }
}

/// Renews a held certificate, authenticating with it (mTLS), as an agent
/// does: a new key, the same names.
async fn renew(ctx: &Ctx, endpoints: &[u64], start_at: &str, id: u64, rng: &mut StdRng) {
    let Some((_, held)) = ctx.pick_cert(rng, true) else {
        return;
    };
    let creds = Credentials {
        ca_pem: ctx.admin.ca_pem.clone(),
        cert_pem: held.chain_pem.as_bytes().to_vec(),
        key_pem: held.key_pem.as_bytes().to_vec(),
    };
    let Ok(client) = Client::new(config(endpoints, creds).start_at(start_at)) else {
        return;
    };
    let names = quorumca_ca::certificate_names(&held.leaf_der).ok();
    let Some(name) = names.and_then(|n| n.dns.first().cloned()) else {
        return;
    };
    let Ok((csr, key_pem)) = new_csr(&name) else {
        return;
    };
    let t = ctx.now();
    let r = client
        .renew(pb::RenewRequest {
            csr,
            lifetime_seconds: 3600,
            ..Default::default()
        })
        .await;
    // A renewal is an issuance of a new certificate.
    record_issued(ctx, id, t, r, key_pem);
}

async fn revoke(ctx: &Ctx, c: &Client, id: u64, rng: &mut StdRng) {
    let Some((key, _)) = ctx.pick_cert(rng, false) else {
        return;
    };
    let t = ctx.now();
    let r = c
        .revoke(pb::RevokeRequest {
            issuer: key.issuer.clone(),
            serial: key.serial.clone(),
            ..Default::default()
        })
        .await;
    let result = match r {
        Ok(_) => OpResult::Revoked,
        Err(e) => classify(&e),
    };
    if matches!(result, OpResult::Revoked | OpResult::AlreadyRevoked) {
        ctx.shared
            .lock()
            .expect("workload")
            .revoked
            .insert(key.clone());
    }
    ctx.log(id, Action::Revoke(key), t, result);
}

async fn status(ctx: &Ctx, c: &Client, id: u64, rng: &mut StdRng) {
    let Some((key, _)) = ctx.pick_cert(rng, false) else {
        return;
    };
    let t = ctx.now();
    let r = c
        .get_certificate(pb::GetCertificateRequest {
            issuer: key.issuer.clone(),
            serial: key.serial.clone(),
        })
        .await;
    let result = match r {
        Ok(info) if info.revoked => OpResult::IsRevoked,
        Ok(_) => OpResult::Good,
        Err(e) => classify(&e),
    };
    ctx.log(id, Action::Status(key), t, result);
}

async fn client_loop(
    ctx: Arc<Ctx>,
    id: u64,
    endpoints: Vec<u64>,
    seed: u64,
    pause: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(client) = Client::new(config(&endpoints, ctx.admin.clone())) else {
        return;
    };
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let roll: f64 = rng.gen();
        match roll {
            r if r < 0.50 => issue(&ctx, &client, id, n).await,
            r if r < 0.65 => revoke(&ctx, &client, id, &mut rng).await,
            r if r < 0.90 => status(&ctx, &client, id, &mut rng).await,
            _ => {
                // The renewal's own client (it authenticates with the
                // certificate being renewed) starts where this client last
                // succeeded, as an agent that remembers a healthy node does;
                // starting from the first endpoint every time cost each
                // renewal an attempt timeout whenever that node was cut off.
                let current = client.current_endpoint().addr.clone();
                renew(&ctx, &endpoints, &current, id, &mut rng).await
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

/// An operator alternating the policy between two versions (a DNS pattern
/// the workload does not use comes and goes), with optimistic concurrency.
async fn policy_loop(ctx: Arc<Ctx>, endpoints: Vec<u64>, mut stop: watch::Receiver<bool>) {
    let extra =
        "\n[namespaces.chaos]\nprofiles = [\"service\"]\ndns = [\"*.chaos.dev.internal\"]\n";
    let Ok(client) = Client::new(config(&endpoints, ctx.admin.clone())) else {
        return;
    };
    let mut flip = false;
    while !*stop.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => break,
        }
        let ok = match client.policy(0).await {
            Ok(current) => {
                flip = !flip;
                let text = format!(
                    "{}{}",
                    quorumca_cli::dev::DEV_POLICY,
                    if flip { extra } else { "" }
                );
                client
                    .apply_policy(pb::ApplyPolicyRequest {
                        text,
                        expected_version: current.version,
                        dry_run: false,
                        note: "chaos drill".into(),
                    })
                    .await
                    .is_ok()
            }
            Err(_) => false,
        };
        let mut s = ctx.shared.lock().expect("workload");
        if ok {
            s.policy_ok += 1;
        } else {
            s.policy_failed += 1;
        }
    }
}

impl Workload {
    /// Starts `roaming` failover clients and one pinned client per node.
    pub fn start(
        nodes: &[u64],
        roaming: u64,
        admin: Credentials,
        seed: u64,
        pause: Duration,
    ) -> Self {
        let started = Instant::now();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let ctx = Arc::new(Ctx {
            shared: shared.clone(),
            started,
            admin,
        });
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut clients: Vec<(Kind, Vec<u64>)> = (0..roaming)
            .map(|_| (Kind::Roaming, nodes.to_vec()))
            .collect();
        clients.extend(nodes.iter().map(|&n| (Kind::Pinned(n), vec![n])));
        for (i, (kind, eps)) in clients.into_iter().enumerate() {
            let id = i as u64 + 1;
            shared.lock().expect("workload").kinds.insert(id, kind);
            tasks.push(tokio::spawn(client_loop(
                ctx.clone(),
                id,
                eps,
                seed.wrapping_mul(1000).wrapping_add(id),
                pause,
                rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(policy_loop(ctx.clone(), nodes.to_vec(), rx)));
        Self {
            shared,
            stop,
            tasks,
            started,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Stops issuing new calls and waits for the ones in flight (each is
    /// bounded by the client's call timeout).
    pub async fn stop(self) -> Shared {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
        Arc::try_unwrap(self.shared)
            .ok()
            .expect("every task has ended")
            .into_inner()
            .expect("workload")
    }
}
