//! A new node joins a running mTLS cluster with a join token: it enrols for
//! its own node certificate (spiffe://dev.internal/node/4) on the
//! enrolment port, starts with it, is added by an admin, and replicates.
//! Nothing but the token and the cluster's roots is handed to it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{env_value, free_ports, start_dev, Procs, BIN};
use quorumca_proto::cluster_client::ClusterClient;
use quorumca_proto::{PingRequest, StatusRequest};

const NODES_POLICY: &str = r#"
[profiles.node]
key_algorithms = ["ecdsa-p256"]
default_lifetime = "720h"
max_lifetime = "720h"
usages = ["server", "client"]

[namespaces.nodes]
profiles = ["node"]
dns = ["localhost"]
ips = ["127.0.0.0/8"]
uris = ["spiffe://dev.internal/node/*"]
# Node identities are reserved: this namespace certifies nodes on purpose.
allow_reserved_ids = true
"#;

fn run(env: &str, creds: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("QUORUMCA_ENDPOINTS", env_value(env, "QUORUMCA_ENDPOINTS"))
        .env("QUORUMCA_CREDENTIALS", creds)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_enrolled_with_a_join_token_joins_over_mtls() {
    let _turn = crate::support::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("dev");
    let (_dev, base, env) = start_dev(&data).await;
    let admin = std::path::PathBuf::from(env_value(&env, "QUORUMCA_CREDENTIALS"));

    let policy = d.join("nodes.toml");
    std::fs::write(&policy, NODES_POLICY).unwrap();
    ok(
        run(
            &env,
            &admin,
            &["policy", "apply", "-f", policy.to_str().unwrap()],
        ),
        "policy apply",
    );
    let out = ok(
        run(
            &env,
            &admin,
            &["token", "create", "--namespace", "nodes", "-o", "json"],
        ),
        "token create",
    );
    let token: serde_json::Value = serde_json::from_str(&out).unwrap();

    // The new machine has the token and the roots, nothing else.
    let tls = d.join("node4/tls");
    let o = Command::new(BIN)
        .args([
            "enroll",
            "--ca-file",
            admin.join("ca.pem").to_str().unwrap(),
        ])
        .args(["--uri", "spiffe://dev.internal/node/4", "--ip", "127.0.0.1"])
        .args(["--dns", "localhost", "--out-dir", tls.to_str().unwrap()])
        .env(
            "QUORUMCA_ENROLL_ENDPOINTS",
            env_value(&env, "QUORUMCA_ENROLL_ENDPOINTS"),
        )
        .env("QUORUMCA_JOIN_TOKEN", token["token"].as_str().unwrap())
        .output()
        .unwrap();
    ok(o, "enroll");

    let port = free_ports(1)[0];
    let cfg = d.join("node4.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = 4\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nregion = \"dev-a\"\nzone = \"dev-a-2\"\n\
             [tls]\nca_file = \"{t}/ca.pem\"\ncert_file = \"{t}/chain.pem\"\nkey_file = \"{t}/key.pem\"\n",
            d.join("node4/data").display(),
            t = tls.display()
        ),
    )
    .unwrap();
    let _node4 = Procs(vec![Command::new(BIN)
        .args(["--log", "warn", "server", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()]);

    ok(
        run(
            &env,
            &admin,
            &[
                "cluster",
                "add",
                "--id",
                "4",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--region",
                "dev-a",
                "--zone",
                "dev-a-2",
            ],
        ),
        "cluster add",
    );
    let members = ok(
        run(&env, &admin, &["cluster", "members", "-o", "json"]),
        "members",
    );
    assert!(members.contains("\"node_id\": 4"), "{members}");

    // Node 4 has what was committed: ask it on its Raft port, which only
    // admits nodes (node 1's certificate gets in).
    let mut leader = ClusterClient::new(
        crate::support::channel(base + 100, Some(&admin))
            .await
            .unwrap(),
    );
    let index = leader
        .ping(PingRequest {
            payload: b"after join".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .log_index;
    let node1 = data.join("node1/tls");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied = match crate::support::channel(port, Some(&node1)).await {
            Ok(ch) => ClusterClient::new(ch)
                .status(StatusRequest {})
                .await
                .map(|s| s.into_inner())
                .ok(),
            Err(_) => None,
        };
        if let Some(s) = &applied {
            if s.applied_index >= index {
                assert_eq!(s.members.len(), 4);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node 4 did not catch up to {index}: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The admin's certificate is not a node's: turned away on that port.
    let s = ClusterClient::new(crate::support::channel(port, Some(&admin)).await.unwrap())
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
}
