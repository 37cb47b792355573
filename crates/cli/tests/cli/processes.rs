//! Real `quorumca` processes: kill -9 every node of a cluster and restart
//! them; acknowledged writes must still be there (durability, not only
//! replication). And a bad config changes nothing on disk.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quorumca_proto::cluster_client::ClusterClient;
use quorumca_proto::{PingRequest, StatusRequest};

use crate::support::{free_base_port, free_ports, wait_for_file, Procs, BIN};

fn write_configs(dir: &Path, ports: &[u16]) -> Vec<std::path::PathBuf> {
    let mut paths = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let id = i + 1;
        let mut s = format!(
            "node_id = {id}\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nregion = \"r{id}\"\nzone = \"z{id}\"\n\
             insecure_plaintext = true\n\
             [raft]\nheartbeat_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n",
            dir.join(format!("node{id}")).display()
        );
        for (j, p) in ports.iter().enumerate() {
            s.push_str(&format!(
                "[[peers]]\nnode_id = {}\naddr = \"127.0.0.1:{p}\"\nregion = \"r{}\"\nzone = \"z{}\"\n",
                j + 1,
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
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start quorumca server")
}

/// Status from each port: plaintext Raft ports, or with `creds` the API
/// ports of an mTLS cluster.
async fn status_all(
    ports: &[u16],
    creds: Option<&Path>,
) -> Vec<Option<quorumca_proto::StatusResponse>> {
    let mut out = Vec::new();
    for p in ports {
        let s = match crate::support::channel(*p, creds)
            .await
            .map(ClusterClient::new)
        {
            Ok(mut c) => c
                .status(StatusRequest {})
                .await
                .ok()
                .map(|r| r.into_inner()),
            Err(_) => None,
        };
        out.push(s);
    }
    out
}

/// Waits until every node answers with the same leader and, if given, the
/// same applied ledger hash.
async fn wait_agreed(
    ports: &[u16],
    creds: Option<&Path>,
    min_applied: u64,
    timeout: Duration,
) -> quorumca_proto::StatusResponse {
    let deadline = Instant::now() + timeout;
    loop {
        let st = status_all(ports, creds).await;
        if st.iter().all(|s| s.is_some()) {
            let st: Vec<_> = st.into_iter().flatten().collect();
            let same = st.iter().all(|s| {
                s.leader_id.is_some()
                    && s.applied_index >= min_applied
                    && s.leader_id == st[0].leader_id
                    && s.applied_index == st[0].applied_index
                    && s.ledger_hash == st[0].ledger_hash
            });
            if same {
                return st[0].clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not agree within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_every_process() {
    let _turn = crate::support::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let cfgs = write_configs(dir.path(), &ports);
    let mut children = Procs(cfgs.iter().map(|c| spawn(c)).collect());
    wait_agreed(&ports, None, 0, Duration::from_secs(30)).await;

    // Every ping is a Raft entry that extends the ledger's audit chain, so
    // the ledger hash covers every acknowledged one.
    let mut client = ClusterClient::connect(format!("http://127.0.0.1:{}", ports[1]))
        .await
        .unwrap();
    let mut acked = 0;
    for i in 0..40u32 {
        client
            .ping(PingRequest {
                payload: i.to_be_bytes().to_vec(),
            })
            .await
            .unwrap();
        acked += 1;
    }
    let before = wait_agreed(&ports, None, 0, Duration::from_secs(10)).await;

    // SIGKILL: no shutdown path runs, nothing is flushed on the way out.
    children.kill_all();
    let mut children = Procs(cfgs.iter().map(|c| spawn(c)).collect());
    // Every node must come back to the acknowledged state from its own disk.
    // (A leader whose committed vote survived may resume its term without a
    // new election, so the applied index can be exactly the old one.)
    let after = wait_agreed(&ports, None, before.applied_index, Duration::from_secs(30)).await;
    assert_eq!(
        after.ledger_hash, before.ledger_hash,
        "an acknowledged write was lost ({acked} acked)"
    );
    // And the restarted cluster commits new writes.
    let mut client = ClusterClient::connect(format!("http://127.0.0.1:{}", ports[2]))
        .await
        .unwrap();
    let p = client
        .ping(PingRequest {
            payload: b"after".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(p.log_index > before.applied_index);
    children.kill_all();
}

#[test]
fn a_bad_config_is_refused_with_a_clear_error_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never-created");
    let cases = [
        (format!("node_id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"{}\"\nregion = \"r\"\n", data.display()), "missing field `zone`"),
        (format!("node_id = 1\nlisten = \"nonsense\"\ndata_dir = \"{}\"\nregion = \"r\"\nzone = \"z\"\n", data.display()), "`listen` must be ip:port"),
        (format!("node_id = 3\nlisten = \"127.0.0.1:1\"\ndata_dir = \"{}\"\nregion = \"r\"\nzone = \"z\"\n[[peers]]\nnode_id = 1\naddr = \"127.0.0.1:1\"\nregion = \"r\"\nzone = \"z\"\n", data.display()), "not among the peers"),
        // Safe default: no [tls] means no start, unless plaintext is asked for.
        (format!("node_id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"{}\"\nregion = \"r\"\nzone = \"z\"\n", data.display()), "no [tls] section"),
        (format!("node_id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"{}\"\nregion = \"r\"\nzone = \"z\"\n[tls]\nca_file = \"/nonexistent/ca.pem\"\ncert_file = \"c\"\nkey_file = \"k\"\n", data.display()), "[tls] ca_file: cannot read /nonexistent/ca.pem"),
    ];
    for (text, needle) in cases {
        let cfg = dir.path().join("node.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(BIN)
            .args(["server", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
        assert!(
            !data.exists(),
            "a refused config must not create the data dir"
        );
    }
    let out = Command::new(BIN)
        .args(["server", "--config", "/nonexistent/node.toml"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read config file /nonexistent/node.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_starts_writes_env_stops_on_sigterm_and_restarts_with_its_data() {
    let _turn = crate::support::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let base = free_base_port();
    let start = || {
        Command::new(BIN)
            .args(["--log", "warn", "dev", "--data-dir"])
            .arg(&data)
            .args(["--base-port", &base.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut dev = Procs(vec![start()]);
    let env = wait_for_file(&data.join("env"), Duration::from_secs(60)).await;
    let ports: Vec<u16> = (0..3).map(|i| base + i).collect();
    // Everything speaks mTLS: status through the API ports, as the admin
    // whose bundle dev wrote.
    let api: Vec<u16> = ports.iter().map(|p| p + 100).collect();
    let admin = data.join("admin");
    assert_eq!(
        crate::support::env_value(&env, "QUORUMCA_CREDENTIALS"),
        admin.display().to_string()
    );
    // The env file points commands at the public API ports.
    let expected = ports
        .iter()
        .map(|p| format!("127.0.0.1:{}", p + 100))
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        env.contains(&format!("export QUORUMCA_ENDPOINTS={expected}")),
        "{env}"
    );
    let before = wait_agreed(&api, Some(&admin), 0, Duration::from_secs(30)).await;
    assert_eq!(before.members.len(), 3);
    let mut client =
        ClusterClient::new(crate::support::channel(api[0], Some(&admin)).await.unwrap());
    for _ in 0..5 {
        client.ping(PingRequest { payload: vec![1] }).await.unwrap();
    }
    let before = wait_agreed(&api, Some(&admin), 0, Duration::from_secs(10)).await;

    // SIGTERM to `dev` stops every node and exits cleanly.
    let pid = dev.0[0].id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = dev.0[0].wait().unwrap();
    assert!(status.success(), "dev exited with {status}");
    let down = status_all(&api, Some(&admin)).await;
    assert!(
        down.iter().all(|s| s.is_none()),
        "nodes still answer after dev stopped"
    );

    // Again on the same data dir: the same cluster, with its data.
    std::fs::remove_file(data.join("env")).unwrap();
    let mut dev = Procs(vec![start()]);
    wait_for_file(&data.join("env"), Duration::from_secs(60)).await;
    let after = wait_agreed(
        &api,
        Some(&admin),
        before.applied_index,
        Duration::from_secs(30),
    )
    .await;
    assert!(after.applied_index >= before.applied_index);
    assert_eq!(after.members.len(), 3);

    // Even SIGKILL of `dev` leaves no nodes behind: they watch their parent.
    dev.kill_all();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_all(&api, Some(&admin))
        .await
        .iter()
        .any(|s| s.is_some())
    {
        assert!(
            Instant::now() < deadline,
            "nodes outlived a killed `quorumca dev`"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
