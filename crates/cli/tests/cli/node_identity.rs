//! Clients check that they reached a node (security hardening 2).
//!
//! A workload certificate from the cluster itself, for IP 127.0.0.1 (the
//! dev policy allows 127.0.0.0/8), chains to the root and matches the host:
//! before, that was all any client checked, so `quorumca enroll` handed
//! such a server its join token and `policy apply` reported success. Here
//! an impostor presents one on the Enrollment, Policy and Raft paths, and
//! the CLI, the Rust client, the agent and a peer node each refuse it in
//! the handshake, with an error naming the identity it presented. The
//! impostor never completes a handshake, so nothing (no token, no policy,
//! no vote) reaches it. A second impostor presents a real node certificate
//! (node 1's) where a peer dialled node 6: refused too, naming both.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{env_value, free_ports, quorumca, start_dev, Procs, BIN};

const IMPOSTOR: &str = "spiffe://dev.internal/ns/default/impostor";

/// A TLS server presenting `chain_pem`/`key_pem` on a free loopback port;
/// counts the handshakes that completed.
struct Impostor {
    port: u16,
    completed: Arc<AtomicUsize>,
}

async fn impostor(chain_pem: &[u8], key_pem: &[u8]) -> Impostor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let completed = Arc::new(AtomicUsize::new(0));
    let count = completed.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    count.fetch_add(1, Ordering::SeqCst);
                    let mut sink = Vec::new();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut sink),
                    )
                    .await;
                }
            });
        }
    });
    Impostor { port, completed }
}

fn must_fail_naming(out: &std::process::Output, what: &str, names: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{what} succeeded against the impostor"
    );
    for n in names {
        assert!(
            err.contains(n),
            "{what}: the error does not name {n}: {err}"
        );
    }
    err
}

async fn wait_for_text(path: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never mentioned {needle}: {text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_certificate_cannot_pose_as_a_node() {
    let _turn = crate::support::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("dev");
    let (_dev, _base, env) = start_dev(&data).await;
    let admin = PathBuf::from(env_value(&env, "QUORUMCA_CREDENTIALS"));
    let roots = admin.join("ca.pem");

    // The impostor's certificate: an ordinary workload leaf of this
    // cluster, for 127.0.0.1.
    let leaf = d.join("impostor");
    let out = quorumca(
        &env,
        &[
            "issue",
            "--namespace",
            "default",
            "--ip",
            "127.0.0.1",
            "--uri",
            IMPOSTOR,
            "--out-dir",
            leaf.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chain = std::fs::read(leaf.join("chain.pem")).unwrap();
    let key = std::fs::read(leaf.join("key.pem")).unwrap();
    let imp = impostor(&chain, &key).await;
    let at = format!("127.0.0.1:{}", imp.port);

    // The CLI, enrolling: the token is never sent.
    let token = {
        let out = quorumca(
            &env,
            &["token", "create", "--namespace", "default", "-o", "json"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let enroll = Command::new(BIN)
        .args(["enroll", "--token", &token, "--endpoints", &at, "--ca-file"])
        .arg(&roots)
        .args([
            "--uri",
            "spiffe://dev.internal/ns/default/newcomer",
            "--out-dir",
        ])
        .arg(d.join("enrolled"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    must_fail_naming(&enroll, "quorumca enroll", &[IMPOSTOR, "root"]);

    // The CLI, applying policy with the admin's credentials.
    let policy = d.join("policy.toml");
    std::fs::write(&policy, quorumca_cli::dev::DEV_POLICY).unwrap();
    let apply = Command::new(BIN)
        .args(["policy", "apply", "-f"])
        .arg(&policy)
        .env("QUORUMCA_ENDPOINTS", &at)
        .env("QUORUMCA_CREDENTIALS", &admin)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    must_fail_naming(&apply, "quorumca policy apply", &[IMPOSTOR]);

    // The Rust client.
    let mut cfg =
        quorumca_client::ClientConfig::new(vec![quorumca_client::Endpoint::parse(&at).unwrap()]);
    cfg.credentials = Some(quorumca_client::Credentials::from_dir(&admin).unwrap());
    cfg.call_timeout = Duration::from_secs(2);
    let client = quorumca_client::Client::new(cfg).unwrap();
    let e = client
        .trust_bundle()
        .await
        .expect_err("the impostor is no node");
    assert!(e.to_string().contains(IMPOSTOR), "Rust client: {e}");

    // The agent, bootstrapping with a join token on the impostor.
    std::fs::write(d.join("token"), &token).unwrap();
    let agent_cfg = d.join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            r#"state_dir = "{state}"
[cluster]
endpoints = ["{at}"]
enroll_endpoints = ["{at}"]
ca_file = "{ca}"
retry_max = "1s"
call_timeout = "2s"

[[intent]]
name = "web"
dns = ["web.default.svc.dev.internal"]
spiffe_id = "spiffe://dev.internal/ns/default/web"
lifetime = "1h"
key_file = "{out}/key.pem"
cert_file = "{out}/cert.pem"
chain_file = "{out}/chain.pem"
bundle_file = "{out}/roots.pem"
join_token_file = "{token}"
"#,
            state = d.join("agent-state").display(),
            ca = roots.display(),
            out = d.join("agent-out").display(),
            token = d.join("token").display(),
        ),
    )
    .unwrap();
    let agent_log = d.join("agent.log");
    let agent = Command::new(BIN)
        .args(["--log", "info", "agent", "--config"])
        .arg(&agent_cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = Procs(vec![agent]);
    wait_for_text(&agent_log, IMPOSTOR, Duration::from_secs(30)).await;
    agent.kill_all();
    assert!(!d.join("agent-out/cert.pem").exists());

    // A peer node: node 3's identity in a cluster of its own whose node 5
    // is the impostor and whose node 6 answers with node 1's real
    // certificate. Neither gets a vote request.
    let node1 = data.join("node1/tls");
    let wrong_node = impostor(
        &std::fs::read(node1.join("cert.pem")).unwrap(),
        &std::fs::read(node1.join("key.pem")).unwrap(),
    )
    .await;
    let p = free_ports(1)[0];
    let tls = data.join("node3/tls");
    let node_cfg = d.join("peer.toml");
    std::fs::write(
        &node_cfg,
        format!(
            "node_id = 3\nlisten = \"127.0.0.1:{p}\"\ndata_dir = \"{data}\"\nregion = \"r\"\nzone = \"z\"\n\
             [tls]\nca_file = \"{ca}\"\ncert_file = \"{tls}/cert.pem\"\nkey_file = \"{tls}/key.pem\"\n\
             [[peers]]\nnode_id = 3\naddr = \"127.0.0.1:{p}\"\nregion = \"r\"\nzone = \"z\"\n\
             [[peers]]\nnode_id = 5\naddr = \"{at}\"\nregion = \"r\"\nzone = \"z\"\n\
             [[peers]]\nnode_id = 6\naddr = \"127.0.0.1:{w}\"\nregion = \"r\"\nzone = \"z\"\n",
            data = d.join("peer-data").display(),
            ca = roots.display(),
            tls = tls.display(),
            w = wrong_node.port,
        ),
    )
    .unwrap();
    let node_log = d.join("peer.log");
    let node = Command::new(BIN)
        .args(["--log", "warn", "server", "--config"])
        .arg(&node_cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&node_log).unwrap())
        .spawn()
        .unwrap();
    let _node = Procs(vec![node]);
    let log = wait_for_text(&node_log, IMPOSTOR, Duration::from_secs(30)).await;
    let log = if log.contains("spiffe://dev.internal/node/1") {
        log
    } else {
        wait_for_text(
            &node_log,
            "spiffe://dev.internal/node/1",
            Duration::from_secs(30),
        )
        .await
    };
    assert!(
        log.contains("not spiffe://dev.internal/node/6"),
        "the peer must name the node it dialled: {log}"
    );

    assert_eq!(
        imp.completed.load(Ordering::SeqCst),
        0,
        "a client finished a handshake with the workload impostor"
    );
    assert_eq!(
        wrong_node.completed.load(Ordering::SeqCst),
        0,
        "the peer finished a handshake with the wrong node"
    );
}
