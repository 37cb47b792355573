//! The client library against real `quorumca server` processes: the node
//! the client talks to is killed with SIGKILL in the middle of a run of
//! Issue calls. Every call must still complete (failover, retries with the
//! same idempotency key), and the ledger must hold exactly one record per
//! call: no retry issued twice. Over mTLS, with the PKI `quorumca dev`
//! makes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{free_ports, Procs, BIN};
use quorumca_client::{Client, ClientConfig, Endpoint};
use quorumca_proto::cluster_client::ClusterClient;
use quorumca_proto::policy_service_client::PolicyServiceClient;
use quorumca_proto::StatusRequest;
use quorumca_proto::{ApplyPolicyRequest, IssueRequest};
use quorumca_testkit::authority::{test_csr, TEST_POLICY};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The admin credential bundle of this test's cluster.
static ADMIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

struct Ports {
    raft: u16,
    api: u16,
    http: u16,
}

fn write_configs(dir: &Path, ports: &[Ports]) -> Vec<std::path::PathBuf> {
    let secret = dir.join("unseal.secret");
    std::fs::write(&secret, "failover test secret, 32+ bytes long\n").unwrap();
    // The same PKI `quorumca dev` makes: everything below speaks mTLS.
    quorumca_cli::dev::prepare_pki(dir, ports.len() as u64, &secret).unwrap();
    let mut paths = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let id = i + 1;
        let mut s = format!(
            "node_id = {id}\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\nregion = \"r{id}\"\nzone = \"z{id}\"\n\
             [raft]\nheartbeat_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n\
             [api]\nlisten = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{}\"\npublic_url = \"http://ca.test\"\n\
             unseal_secret_file = \"{}\"\nhierarchy = \"internal-root\"\nkdf_iterations = {kdf}\n\
             admins = [\"{admin}\"]\nroot_cert_file = \"{d}/pki/root.pem\"\nroot_sealed_key_file = \"{d}/pki/root.sealed\"\n\
             [tls]\nca_file = \"{d}/pki/root.pem\"\ncert_file = \"{d}/node{id}/tls/cert.pem\"\nkey_file = \"{d}/node{id}/tls/key.pem\"\n",
            p.raft,
            dir.join(format!("node{id}")).display(),
            p.api,
            p.http,
            secret.display(),
            kdf = quorumca_cli::dev::DEV_KDF_ITERATIONS,
            admin = quorumca_cli::dev::DEV_ADMIN,
            d = dir.display(),
        );
        for (j, q) in ports.iter().enumerate() {
            s.push_str(&format!(
                "[[peers]]\nnode_id = {}\naddr = \"127.0.0.1:{}\"\nregion = \"r{}\"\nzone = \"z{}\"\n",
                j + 1,
                q.raft,
                j + 1,
                j + 1
            ));
        }
        let path = dir.join(format!("node{id}.toml"));
        std::fs::write(&path, s).unwrap();
        paths.push(path);
    }
    paths
}

fn spawn(cfg: &Path) -> Child {
    Command::new(BIN)
        .args(["--log", "warn", "server", "--config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start quorumca server")
}

async fn channel(port: u16) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    crate::support::channel(port, Some(ADMIN.get().expect("PKI written"))).await
}

/// Polls grpc.health.v1 for CertificateService until it reports `want`
/// (or 20 s pass); returns the last status seen.
async fn wait_health(api_port: u16, want: ServingStatus) -> ServingStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = ServingStatus::Unknown;
    while Instant::now() < deadline {
        if let Ok(ch) = channel(api_port).await {
            let mut c = HealthClient::new(ch);
            if let Ok(r) = c
                .check(HealthCheckRequest {
                    service: "quorumca.v1.CertificateService".into(),
                })
                .await
            {
                last = r.into_inner().status();
                if last == want {
                    return last;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// Service names listed by gRPC server reflection.
async fn reflected_services(api_port: u16) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut c = ServerReflectionClient::new(channel(api_port).await.unwrap());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().expect("one answer");
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn live_certificates(api_port: u16) -> Option<u64> {
    let mut c = ClusterClient::new(channel(api_port).await.ok()?);
    Some(
        c.status(StatusRequest {})
            .await
            .ok()?
            .into_inner()
            .live_certificates,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_calls_survive_killing_the_node_the_client_talks_to() {
    let _turn = crate::support::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let p = free_ports(9);
    let ports: Vec<Ports> = (0..3)
        .map(|i| Ports {
            raft: p[i],
            api: p[3 + i],
            http: p[6 + i],
        })
        .collect();
    let cfgs = write_configs(dir.path(), &ports);
    ADMIN.set(dir.path().join("admin")).unwrap();
    let mut procs = Procs(cfgs.iter().map(|c| spawn(c)).collect());

    let mut cfg = ClientConfig::new(
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| Endpoint::parse(&format!("r{}=127.0.0.1:{}", i + 1, p.api)).unwrap())
            .collect(),
    );
    cfg.backoff_base = Duration::from_millis(20);
    cfg.credentials =
        Some(quorumca_client::Credentials::from_dir(&dir.path().join("admin")).unwrap());
    cfg.attempt_timeout = Duration::from_secs(5);
    let client = Arc::new(Client::new(cfg).unwrap());

    // Wait for the hierarchy (root + 3 regions), then apply the policy.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(b) = client.trust_bundle().await {
            if b.issuers.len() == 4 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "hierarchy not created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut policy = PolicyServiceClient::new(channel(ports[0].api).await.unwrap());
    policy
        .apply_policy(ApplyPolicyRequest {
            text: TEST_POLICY.into(),
            expected_version: 0,
            dry_run: false,
            note: "test".into(),
        })
        .await
        .unwrap();

    // Standard health checking and reflection, so tools and other languages
    // need none of our code.
    for p in &ports {
        let status = wait_health(p.api, ServingStatus::Serving).await;
        assert_eq!(status, ServingStatus::Serving);
    }
    let services = reflected_services(ports[0].api).await;
    for name in [
        "quorumca.v1.CertificateService",
        "quorumca.v1.AuthorityService",
        "quorumca.v1.PolicyService",
        "quorumca.v1.Cluster",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == name),
            "{name} not in {services:?}"
        );
    }

    let csrs: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..8)
            .map(|i| test_csr(&format!("f{i}.payments.svc.cluster.local")))
            .collect(),
    );
    let done = Arc::new(AtomicUsize::new(0));
    let (workers, per_worker) = (6usize, 50usize);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, csrs, done) = (client.clone(), csrs.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..per_worker {
                let r = client
                    .issue(IssueRequest {
                        csr: csrs[(w + i) % csrs.len()].clone(),
                        namespace: "payments".into(),
                        profile: "web".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("call {w}/{i} failed: {e}"));
                out.push((r.issuer, r.serial));
                done.fetch_add(1, Ordering::Relaxed);
            }
            out
        }));
    }

    // Mid-run, SIGKILL the node the client is talking to.
    while done.load(Ordering::Relaxed) < workers * per_worker / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let victim_addr = client.current_endpoint().addr.clone();
    let victim = ports
        .iter()
        .position(|p| victim_addr.ends_with(&format!(":{}", p.api)))
        .unwrap();
    let killed_at = done.load(Ordering::Relaxed);
    let _ = procs.0[victim].kill();
    let _ = procs.0[victim].wait();

    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = workers * per_worker;
    assert_eq!(all.len(), total);
    assert!(killed_at < total, "the kill happened mid-run");
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(unique.len(), total, "two calls got the same certificate");
    let stats = client.stats();
    assert!(stats.failovers >= 1, "{stats:?}");
    assert_ne!(client.current_endpoint().addr, victim_addr);

    // Exactly one record per call on both survivors: retries never issued
    // a second certificate.
    for (i, p) in ports.iter().enumerate() {
        if i == victim {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let live = live_certificates(p.api).await;
            if live == Some(total as u64) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} holds {live:?} records for {total} calls",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // With a second node gone the last one cannot commit: its health says
    // so, and a load balancer would stop sending it work.
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let _ = procs.0[others[0]].kill();
    let _ = procs.0[others[0]].wait();
    let status = wait_health(ports[others[1]].api, ServingStatus::NotServing).await;
    assert_eq!(status, ServingStatus::NotServing);

    eprintln!(
        "{total} calls, node {} killed after {killed_at}; {} attempts, {} failovers",
        victim + 1,
        stats.attempts,
        stats.failovers
    );
}
