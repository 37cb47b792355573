//! A durable QuorumCA cluster inside this process, set up as users meet
//! it: the PKI `quorumca dev` makes, mTLS on every port, the admin bundle,
//! and `quorumca_testkit::authority::TEST_POLICY` applied (namespace `payments`,
//! profile `web`, names under `payments.svc.cluster.local`). `compare`
//! measures it; the `load` tool's test drives it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use quorumca_api::ApiServer;
use quorumca_consensus::{Node, RaftSettings};
use quorumca_proto::policy_service_client::PolicyServiceClient;
use tonic::transport::Channel;

/// A free loopback port (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A cluster of nodes with their API servers, all in this process, for benchmarks.
pub struct InProcessCluster {
    /// Each node with its API server.
    pub running: Vec<(Arc<Node>, ApiServer)>,
    /// One mTLS channel per node, with the admin bundle.
    pub channels: Vec<Channel>,
    /// The admin credential bundle (ca.pem, cert.pem, key.pem).
    pub admin_dir: PathBuf,
}

impl InProcessCluster {
    /// Starts `nodes` nodes with their data under `dir` and waits until the
    /// hierarchy exists on every node and the policy is applied.
    pub async fn start(dir: &Path, nodes: u64) -> anyhow::Result<Self> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let secret = dir.join("unseal.secret");
        std::fs::write(&secret, "compare bench unseal secret, 32+ bytes\n")?;
        quorumca_cli::dev::prepare_pki(&dir, nodes, &secret)?;
        let regions = ["dev-a", "dev-b", "dev-c"];
        let region = |id: u64| regions[((id - 1) % 3) as usize].to_string();
        let ports: Vec<u16> = (0..nodes)
            .map(|_| free_port())
            .collect::<anyhow::Result<_>>()?;
        // The public URL (CRL and OCSP URLs in certificates) is node 1's HTTP
        // port, so relying parties, and the `load` tool, can reach it.
        let http_ports: Vec<u16> = (0..nodes)
            .map(|_| free_port())
            .collect::<anyhow::Result<_>>()?;
        let mut members = std::collections::BTreeMap::new();
        for id in 1..=nodes {
            members.insert(
                id,
                quorumca_consensus::NodeInfo {
                    addr: format!("127.0.0.1:{}", ports[id as usize - 1]),
                    region: region(id),
                    zone: format!("{}-1", region(id)),
                },
            );
        }
        let mut running = Vec::new();
        for id in 1..=nodes {
            let creds = quorumca_api::TlsConfig {
                ca_file: dir.join("pki/root.pem"),
                cert_file: dir.join(format!("node{id}/tls/cert.pem")),
                key_file: dir.join(format!("node{id}/tls/key.pem")),
            }
            .load(id)?;
            let node = Arc::new(
                quorumca_consensus::Node::start(quorumca_consensus::NodeConfig {
                    node_id: id,
                    listen: format!("127.0.0.1:{}", ports[id as usize - 1]).parse()?,
                    advertise: None,
                    data_dir: dir.join(format!("node{id}/data")),
                    region: region(id),
                    zone: format!("{}-1", region(id)),
                    raft: RaftSettings::default(),
                    propose_timeout: Duration::from_secs(5),
                    tls: Some(creds.node_tls()),
                    memory: None,
                    connections: Default::default(),
                })
                .await?,
            );
            if id == 1 {
                node.initialize(members.clone()).await?;
            }
            let api: quorumca_api::ApiConfig = toml::from_str(&format!(
                "listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:{}\"\npublic_url = \"http://127.0.0.1:{}\"\n\
                 unseal_secret_file = \"{}\"\nhierarchy = \"internal-root\"\nkdf_iterations = {}\n\
                 admins = [\"{}\"]\nroot_cert_file = \"{}\"\nroot_sealed_key_file = \"{}\"\n",
                http_ports[id as usize - 1],
                http_ports[0],
                secret.display(),
                quorumca_cli::dev::DEV_KDF_ITERATIONS,
                quorumca_cli::dev::DEV_ADMIN,
                dir.join("pki/root.pem").display(),
                dir.join("pki/root.sealed").display(),
            ))?;
            let regions_to_create = (id == 1).then(|| {
                let mut r: Vec<String> = (1..=nodes).map(region).collect();
                r.sort();
                r.dedup();
                r
            });
            let server = quorumca_api::serve(
                node.clone(),
                &api,
                &region(id),
                regions_to_create,
                Some(&creds),
                &Default::default(),
            )
            .await?;
            running.push((node, server));
        }
        let admin = quorumca_client::Credentials::from_dir(&dir.join("admin"))?;
        let mut channels = Vec::new();
        for (_, server) in &running {
            channels.push(
                admin
                    .endpoint(&server.grpc_addr.to_string())?
                    .tcp_nodelay(true)
                    .connect()
                    .await?,
            );
        }
        // The hierarchy is made by node 1 once it leads; then a policy.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut policy = PolicyServiceClient::new(channels[0].clone());
        loop {
            let r = policy
                .apply_policy(quorumca_proto::ApplyPolicyRequest {
                    text: quorumca_testkit::authority::TEST_POLICY.into(),
                    expected_version: 0,
                    dry_run: false,
                    note: "benches".into(),
                })
                .await;
            let ready = running
                .iter()
                .all(|(n, _)| n.read_local(|s| s.issuers().count() as u64 > nodes.min(3)));
            if r.is_ok() && ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("QuorumCA ({nodes} nodes) not ready: {r:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Self {
            running,
            channels,
            admin_dir: dir.join("admin"),
        })
    }

    /// `host:port` of every node's API.
    pub fn api_endpoints(&self) -> Vec<String> {
        self.running
            .iter()
            .map(|(_, s)| s.grpc_addr.to_string())
            .collect()
    }

    /// Stops every API server and node.
    pub async fn shutdown(self) {
        for (node, server) in self.running {
            server.shutdown().await;
            node.shutdown().await;
        }
    }
}
