//! `quorumca dev`: a local cluster of real `quorumca server` processes on
//! loopback, each with its own sled directory and port, bootstrapped through
//! the same code path a production cluster uses.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use quorumca_client::Retry;
use quorumca_proto::cluster_client::ClusterClient;
use quorumca_proto::{PingRequest, StatusRequest};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

/// `quorumca dev`: a local cluster on loopback for trying QuorumCA.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of nodes (1 to 9). Use an odd number: 3 tolerates one failure.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Where the nodes keep their data, configs and logs.
    #[arg(long, default_value = "dev-data")]
    pub data_dir: PathBuf,
    /// Node N listens on 127.0.0.1:(base-port + N - 1) for Raft, +100 for
    /// its public gRPC API, +200 for HTTP (CRLs, OCSP) and +300 for
    /// join-token enrolment.
    #[arg(long, default_value_t = 7101)]
    pub base_port: u16,
    /// Give up if no leader is elected within this many seconds.
    #[arg(long, default_value_t = 30)]
    pub startup_timeout: u64,
}

/// Remembered in `<data-dir>/dev.toml` so a second run restarts the same
/// cluster instead of silently making a different one over old data.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct DevLayout {
    nodes: u64,
    base_port: u16,
}

struct DevNode {
    id: u64,
    addr: String,
    dir: PathBuf,
    child: Child,
}

fn region_of(id: u64) -> (String, String) {
    // Spread nodes over three regions, as a real deployment would.
    let region = ["dev-a", "dev-b", "dev-c"][((id - 1) % 3) as usize];
    (region.to_string(), format!("{region}-{}", (id - 1) / 3 + 1))
}

/// Offsets from a node's Raft port to its public gRPC and HTTP ports.
const API_PORT_OFFSET: u64 = 100;
const HTTP_PORT_OFFSET: u64 = 200;
const ENROLL_PORT_OFFSET: u64 = 300;

fn port(layout_base: u16, id: u64, offset: u64) -> u64 {
    layout_base as u64 + id - 1 + offset
}

/// The dev cluster's policy: namespace `default` may get names under
/// `svc.dev.internal`, `localhost`, loopback IPs and SPIFFE IDs of
/// `spiffe://dev.internal/ns/default/`, through profile `service`.
pub const DEV_POLICY: &str = r#"# The policy `quorumca dev` applies to a new dev cluster.
[profiles.service]
key_algorithms = ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"]
default_lifetime = "24h"
max_lifetime = "168h"
usages = ["server", "client"]

[namespaces.default]
profiles = ["service"]
dns = ["*.svc.dev.internal", "*.default.svc.dev.internal", "localhost"]
ips = ["127.0.0.0/8", "::1/128"]
uris = ["spiffe://dev.internal/ns/default/*"]
"#;

/// The dev cluster's SPIFFE trust domain.
pub const TRUST_DOMAIN: &str = "dev.internal";
/// The identity of the admin credential bundle `quorumca dev` writes; the
/// nodes name it as their break-glass admin.
pub const DEV_ADMIN: &str = "spiffe://dev.internal/admin/dev";

/// On first run: the cluster's root (its key sealed under the unseal
/// secret with [`DEV_KDF_ITERATIONS`], for the bootstrapping node to
/// register), a TLS certificate per node (`<base>/node<N>/tls`, identity
/// `spiffe://dev.internal/node/<N>`, for 127.0.0.1) and the admin
/// credential bundle (`<base>/admin`), all from that root. The nodes
/// speak mTLS from their first start, and the CA the cluster runs is the
/// one their certificates chain to.
pub fn prepare_pki(base: &Path, nodes: u64, secret_path: &Path) -> anyhow::Result<()> {
    prepare_pki_for(base, nodes, secret_path, |_| {
        vec![std::net::Ipv4Addr::LOCALHOST.into()]
    })
}

/// [`prepare_pki`] for nodes that are not all on loopback (the chaos
/// drills give each node its own network namespace): `ips(id)` are the
/// addresses node `id`'s certificate names.
pub fn prepare_pki_for(
    base: &Path,
    nodes: u64,
    secret_path: &Path,
    ips: impl Fn(u64) -> Vec<std::net::IpAddr>,
) -> anyhow::Result<()> {
    let pki = base.join("pki");
    if pki.join("root.pem").exists() {
        return Ok(());
    }
    // A half-written earlier attempt: start over.
    for d in std::iter::once(pki.clone())
        .chain(std::iter::once(base.join("admin")))
        .chain((1..=nodes).map(|id| base.join(format!("node{id}")).join("tls")))
    {
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
    }
    std::fs::create_dir_all(&pki)?;
    let secret = std::fs::read(secret_path)?;
    let kek = quorumca_api::derive_kek(secret.trim_ascii(), DEV_KDF_ITERATIONS)?;
    let rng = ring::rand::SystemRandom::new();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let pkcs8 = zeroize::Zeroizing::new(key.serialize_der());
    let now = quorumca_consensus::now_ms() as i64 / 1000;
    let root = quorumca_ca::self_signed_root(
        key,
        "QuorumCA Dev Root",
        quorumca_ca::Validity {
            not_before: now - 60,
            not_after: now + 10 * 365 * 86_400,
        },
        &crate::ca::random_serial(&rng)?,
    )?;
    let nonce = crate::ca::random(&rng)?;
    let sealed = quorumca_api::seal_for_ledger(&kek, quorumca_api::ROOT_ID, &pkcs8, nonce);
    let year = Duration::from_secs(365 * 86_400);
    for id in 1..=nodes {
        crate::ca::write_identity(
            &base.join(format!("node{id}")).join("tls"),
            &root,
            &quorumca_ca::node_identity(TRUST_DOMAIN, id),
            true,
            vec!["localhost".into()],
            ips(id),
            year,
        )?;
    }
    crate::ca::write_identity(
        &base.join("admin"),
        &root,
        DEV_ADMIN,
        false,
        vec![],
        vec![],
        year,
    )?;
    crate::ca::write_new(&pki.join("root.sealed"), &sealed, 0o600)?;
    // Last: its presence says the PKI is complete.
    crate::ca::write_new(&pki.join("root.pem"), root.cert_pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Dev only: a fast start. Production keeps the default.
pub const DEV_KDF_ITERATIONS: u32 = 10_000;

fn node_toml(id: u64, layout: &DevLayout, data_dir: &Path) -> String {
    let addr = |n: u64| format!("127.0.0.1:{}", port(layout.base_port, n, 0));
    let (region, zone) = region_of(id);
    let mut s = format!(
        "# Written by `quorumca dev`; edits are overwritten on the next run.\n\
         node_id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\nregion = \"{region}\"\nzone = \"{zone}\"\n",
        addr(id),
        data_dir.join(format!("node{id}")).display()
    );
    // Dev keeps the root inside the cluster and has no load balancer: the
    // CRL and OCSP URLs in certificates point at node 1's HTTP port.
    s.push_str(&format!(
        "\n[api]\nlisten = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{}\"\n\
         public_url = \"http://127.0.0.1:{}\"\nunseal_secret_file = \"{}\"\n\
         hierarchy = \"internal-root\"\n# Dev only: fast start. Production keeps the default.\nkdf_iterations = {DEV_KDF_ITERATIONS}\n\
         enroll_listen = \"127.0.0.1:{}\"\n\
         admins = [\"{DEV_ADMIN}\"]\nroot_cert_file = \"{root}\"\nroot_sealed_key_file = \"{sealed}\"\n",
        port(layout.base_port, id, API_PORT_OFFSET),
        port(layout.base_port, id, HTTP_PORT_OFFSET),
        port(layout.base_port, 1, HTTP_PORT_OFFSET),
        data_dir.join("unseal.secret").display(),
        port(layout.base_port, id, ENROLL_PORT_OFFSET),
        root = data_dir.join("pki/root.pem").display(),
        sealed = data_dir.join("pki/root.sealed").display(),
    ));
    let tls = data_dir.join(format!("node{id}")).join("tls");
    s.push_str(&format!(
        "\n[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        data_dir.join("pki/root.pem").display(),
        tls.join("cert.pem").display(),
        tls.join("key.pem").display()
    ));
    for n in 1..=layout.nodes {
        let (r, z) = region_of(n);
        s.push_str(&format!(
            "\n[[peers]]\nnode_id = {n}\naddr = \"{}\"\nregion = \"{r}\"\nzone = \"{z}\"\n",
            addr(n)
        ));
    }
    s
}

/// Runs the dev cluster until Ctrl-C.
pub async fn run(args: DevArgs, log: &str) -> anyhow::Result<()> {
    let base = args.data_dir.clone();
    // The dev data dir holds the unseal secret, every key and the ledger:
    // the owner's alone (also one an older version left at 0755).
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&base)
            .and_then(|()| std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)))
            .with_context(|| format!("creating {}", base.display()))?;
    }
    let base = base.canonicalize()?;
    if args.base_port as u64 + ENROLL_PORT_OFFSET + args.nodes > 65_536 {
        bail!(
            "--base-port {} leaves no room for {} nodes",
            args.base_port,
            args.nodes
        );
    }
    let layout = DevLayout {
        nodes: args.nodes,
        base_port: args.base_port,
    };
    let layout_path = base.join("dev.toml");
    // Node configs are written only after the PKI is complete, so configs
    // without a PKI mean a data dir from before mTLS.
    if base.join("node1/node.toml").exists() && !base.join("pki/root.pem").exists() {
        bail!(
            "{} was made by an older quorumca (no mTLS PKI, older log format); remove it or use a fresh --data-dir",
            base.display()
        );
    }
    if let Ok(text) = std::fs::read_to_string(&layout_path) {
        let old: DevLayout = toml::from_str(&text).with_context(|| {
            format!(
                "{} is corrupt; remove it or use a fresh --data-dir",
                layout_path.display()
            )
        })?;
        if old != layout {
            bail!(
                "{} holds a {}-node cluster on base port {}; run with --nodes {} --base-port {}, or use a fresh --data-dir",
                base.display(),
                old.nodes,
                old.base_port,
                old.nodes,
                old.base_port
            );
        }
    }
    for id in 1..=args.nodes {
        for offset in [0, API_PORT_OFFSET, HTTP_PORT_OFFSET, ENROLL_PORT_OFFSET] {
            let p = port(args.base_port, id, offset);
            if std::net::TcpListener::bind(("127.0.0.1", p as u16)).is_err() {
                bail!("port {p} is in use (is another `quorumca dev` running?); pass --base-port");
            }
        }
    }
    std::fs::write(&layout_path, toml::to_string(&layout)?)?;
    let secret_path = base.join("unseal.secret");
    if !secret_path.exists() {
        write_secret(&secret_path)?;
    }
    prepare_pki(&base, args.nodes, &secret_path).context("creating the dev PKI")?;
    let admin = base.join("admin");

    let exe = std::env::current_exe().context("locating the quorumca binary")?;
    let mut nodes = Vec::new();
    for id in 1..=args.nodes {
        let dir = base.join(format!("node{id}"));
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("node.toml");
        std::fs::write(&cfg, node_toml(id, &layout, &base))?;
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))?;
        let child = Command::new(&exe)
            .arg("server")
            .arg("--config")
            .arg(&cfg)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .env("QUORUMCA_LOG", log)
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting node {id}"))?;
        nodes.push(DevNode {
            id,
            addr: format!("127.0.0.1:{}", args.base_port as u64 + id - 1),
            dir,
            child,
        });
    }
    eprintln!("started {} nodes; waiting for a leader...", nodes.len());

    let endpoints: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", port(args.base_port, n.id, API_PORT_OFFSET)))
        .collect();
    let result = wait_until_ready(
        &mut nodes,
        &endpoints,
        &admin,
        Duration::from_secs(args.startup_timeout),
    )
    .await;
    let (leader, index) = match result {
        Ok(v) => v,
        Err(e) => {
            stop_all(&mut nodes).await;
            return Err(e);
        }
    };

    if let Err(e) = prepare_ca(
        &endpoints,
        &admin,
        args.nodes,
        Duration::from_secs(args.startup_timeout),
    )
    .await
    {
        stop_all(&mut nodes).await;
        return Err(e);
    }
    let env_path = base.join("env");
    std::fs::write(
        &env_path,
        format!(
            "# Source this file: . {}\nexport QUORUMCA_ENDPOINTS={}\nexport QUORUMCA_CREDENTIALS={}\nexport QUORUMCA_ENROLL_ENDPOINTS={}\n",
            env_path.display(),
            endpoints.join(","),
            admin.display(),
            nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", port(args.base_port, n.id, ENROLL_PORT_OFFSET)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    )?;
    crate::out!(
        "QuorumCA dev cluster is up: {} nodes, leader is node {leader}, committed index {index}.",
        nodes.len()
    );
    crate::out!();
    for n in &nodes {
        let (r, z) = region_of(n.id);
        crate::out!(
            "  node {}  api {}  http 127.0.0.1:{}  enroll 127.0.0.1:{}  raft {}  region {r}  zone {z}",
            n.id,
            endpoints[n.id as usize - 1],
            port(args.base_port, n.id, HTTP_PORT_OFFSET),
            port(args.base_port, n.id, ENROLL_PORT_OFFSET),
            n.addr,
        );
    }
    crate::out!();
    crate::out!(
        "Everything speaks mTLS. Admin credential bundle ({DEV_ADMIN}): {}",
        admin.display()
    );
    crate::out!("Issue a certificate from another terminal:");
    crate::out!("  . {}", env_path.display());
    crate::out!("  quorumca issue --dns web.default.svc.dev.internal --out-dir certs");
    crate::out!(
        "  openssl verify -CAfile <(quorumca bundle get -o pem) -untrusted certs/chain.pem certs/cert.pem"
    );
    crate::out!("  quorumca cluster status        # leader, term, indexes, members");
    crate::out!("  quorumca policy show           # what namespace `default` may get");
    crate::out!("(with cargo: cargo run --release -- issue ...)");
    crate::out!();
    crate::out!(
        "Logs: {}/node*/node.log. Press Ctrl-C to stop; run again to restart with the same data.",
        base.display()
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let exited = wait_any_exit(&mut nodes);
    tokio::select! {
        _ = term.recv() => eprintln!("SIGTERM: stopping the cluster"),
        _ = int.recv() => eprintln!("Ctrl-C: stopping the cluster"),
        (id, status) = exited => eprintln!("node {id} exited unexpectedly ({status}); stopping the cluster. See its node.log"),
    }
    stop_all(&mut nodes).await;
    eprintln!("stopped");
    Ok(())
}

/// 32 random bytes, hex: the dev cluster's unseal secret, readable by the
/// owner only.
pub fn write_secret(path: &Path) -> anyhow::Result<()> {
    let b: [u8; 32] = crate::ca::random(&ring::rand::SystemRandom::new())?;
    crate::ca::write_new(path, format!("{}\n", hex::encode(b)).as_bytes(), 0o600)
}

/// Waits until the hierarchy exists (root plus one intermediate per
/// region), then applies [`DEV_POLICY`] if no policy is set yet, through
/// the public API like any operator would.
pub async fn prepare_ca(
    endpoints: &[String],
    admin: &Path,
    nodes: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    use quorumca_proto::authority_service_client::AuthorityServiceClient;
    use quorumca_proto::policy_service_client::PolicyServiceClient;
    use quorumca_proto::{ApplyPolicyRequest, GetPolicyRequest, GetTrustBundleRequest};
    let regions = nodes.min(3) as usize;
    let deadline = Instant::now() + timeout;
    let client = crate::client::client_for(
        endpoints,
        Some(quorumca_client::Credentials::from_dir(admin)?),
    )?;
    loop {
        let bundle = client
            .rpc(
                Retry::Idempotent,
                GetTrustBundleRequest {},
                |ch, r| async move { AuthorityServiceClient::new(ch).get_trust_bundle(r).await },
            )
            .await;
        if bundle.is_ok_and(|b| b.issuers.len() > regions) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the CA hierarchy was not created within {timeout:?}; see node1/node.log");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let current = client
        .rpc(
            Retry::Idempotent,
            GetPolicyRequest { version: 0 },
            |ch, r| async move { PolicyServiceClient::new(ch).get_policy(r).await },
        )
        .await;
    match current {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(tonic::Code::FailedPrecondition) => {
            // Expected version 0: a retry after a lost answer is refused
            // as a conflict, never applied twice.
            let apply = ApplyPolicyRequest {
                text: DEV_POLICY.into(),
                expected_version: 0,
                dry_run: false,
                note: "quorumca dev".into(),
            };
            client
                .rpc(Retry::UnlessSent, apply, |ch, r| async move {
                    PolicyServiceClient::new(ch).apply_policy(r).await
                })
                .await
                .map_err(crate::client::client_error)
                .context("applying the dev policy")?;
            Ok(())
        }
        Err(e) => Err(crate::client::client_error(e)),
    }
}

async fn wait_any_exit(nodes: &mut [DevNode]) -> (u64, String) {
    loop {
        for n in nodes.iter_mut() {
            if let Ok(Some(st)) = n.child.try_wait() {
                return (n.id, st.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every node's API answers (over mTLS, as the dev admin) and
/// agrees on a leader, then commits a no-op.
async fn wait_until_ready(
    nodes: &mut [DevNode],
    endpoints: &[String],
    admin: &Path,
    timeout: Duration,
) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        for n in nodes.iter_mut() {
            if let Ok(Some(st)) = n.child.try_wait() {
                let log = std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                bail!(
                    "node {} exited during startup ({st}). Last log lines:\n{}",
                    n.id,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        let mut leaders = Vec::new();
        for e in endpoints {
            let client = crate::client::node_client(e, Some(admin))?;
            if let Ok(s) = client
                .rpc(Retry::Idempotent, StatusRequest {}, |ch, r| async move {
                    ClusterClient::new(ch).status(r).await
                })
                .await
            {
                leaders.push(s.leader_id);
            }
        }
        if leaders.len() == nodes.len()
            && leaders[0].is_some()
            && leaders.iter().all(|l| *l == leaders[0])
        {
            let ping = PingRequest {
                payload: b"dev ready".to_vec(),
            };
            let client = crate::client::client_for(
                endpoints,
                Some(quorumca_client::Credentials::from_dir(admin)?),
            )?;
            if let Ok(p) = client
                .rpc(Retry::Idempotent, ping, |ch, r| async move {
                    ClusterClient::new(ch).ping(r).await
                })
                .await
            {
                return Ok((p.leader_id, p.log_index));
            }
        }
        if Instant::now() > deadline {
            bail!("no leader elected within {timeout:?}; see the node.log files");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stop_all(nodes: &mut [DevNode]) {
    for n in nodes.iter() {
        if let Some(pid) = n.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for n in nodes.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(15), n.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("node {} did not stop within 15 s; killing it", n.id);
                let _ = n.child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_node_config_is_valid_and_lists_every_peer() {
        let layout = DevLayout {
            nodes: 5,
            base_port: 9000,
        };
        let text = node_toml(4, &layout, Path::new("/tmp/d"));
        let cfg = quorumca_consensus::ServerConfig::parse(Path::new("node.toml"), &text).unwrap();
        assert_eq!(cfg.node_id, 4);
        assert_eq!(cfg.listen, "127.0.0.1:9003");
        assert_eq!(cfg.peers.len(), 5);
        assert_eq!(cfg.region, "dev-a");
        assert_eq!(cfg.zone, "dev-a-2");
    }
}
