//! `quorumca dev`: a local cluster of real `quorumca server` processes on
//! loopback, each with its own sled directory and port, bootstrapped through
//! the same code path a production cluster uses.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use quorumca_consensus::pb::cluster_client::ClusterClient;
use quorumca_consensus::pb::{PingRequest, StatusRequest};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of nodes (1 to 9). Use an odd number: 3 tolerates one failure.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Where the nodes keep their data, configs and logs.
    #[arg(long, default_value = "dev-data")]
    pub data_dir: PathBuf,
    /// Node N listens on 127.0.0.1:(base-port + N - 1).
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

fn node_toml(id: u64, layout: &DevLayout, data_dir: &Path) -> String {
    let addr = |n: u64| format!("127.0.0.1:{}", layout.base_port as u64 + n - 1);
    let (region, zone) = region_of(id);
    let mut s = format!(
        "# Written by `quorumca dev`; edits are overwritten on the next run.\n\
         node_id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\nregion = \"{region}\"\nzone = \"{zone}\"\n",
        addr(id),
        data_dir.join(format!("node{id}")).display()
    );
    for n in 1..=layout.nodes {
        let (r, z) = region_of(n);
        s.push_str(&format!(
            "\n[[peers]]\nnode_id = {n}\naddr = \"{}\"\nregion = \"{r}\"\nzone = \"{z}\"\n",
            addr(n)
        ));
    }
    s
}

pub async fn run(args: DevArgs, log: &str) -> anyhow::Result<()> {
    let base = args.data_dir.clone();
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let base = base.canonicalize()?;
    if args.base_port as u64 + args.nodes > 65_536 {
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
    for n in 0..args.nodes {
        let port = args.base_port as u64 + n;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_err() {
            bail!("port {port} is in use (is another `quorumca dev` running?); pass --base-port");
        }
    }
    std::fs::write(&layout_path, toml::to_string(&layout)?)?;

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

    let result = wait_until_ready(&mut nodes, Duration::from_secs(args.startup_timeout)).await;
    let (leader, index) = match result {
        Ok(v) => v,
        Err(e) => {
            stop_all(&mut nodes).await;
            return Err(e);
        }
    };

    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let env_path = base.join("env");
    std::fs::write(
        &env_path,
        format!(
            "# Source this file: . {}\nexport QUORUMCA_ENDPOINTS={}\n",
            env_path.display(),
            endpoints.join(",")
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
            "  node {}  {}  region {r}  zone {z}  data {}",
            n.id,
            n.addr,
            n.dir.display()
        );
    }
    crate::out!();
    crate::out!("Talk to it from another terminal:");
    crate::out!("  . {}", env_path.display());
    crate::out!("  quorumca cluster status        # leader, term, indexes, members");
    crate::out!("  quorumca cluster ping          # commit a no-op through Raft");
    crate::out!("(with cargo: cargo run --release -- cluster status)");
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

async fn wait_until_ready(nodes: &mut [DevNode], timeout: Duration) -> anyhow::Result<(u64, u64)> {
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
        for n in nodes.iter() {
            if let Ok(mut c) = ClusterClient::connect(format!("http://{}", n.addr)).await {
                if let Ok(s) = c.status(StatusRequest {}).await {
                    leaders.push(s.into_inner().leader_id);
                }
            }
        }
        if leaders.len() == nodes.len()
            && leaders[0].is_some()
            && leaders.iter().all(|l| *l == leaders[0])
        {
            let mut c = ClusterClient::connect(format!("http://{}", nodes[0].addr)).await?;
            if let Ok(p) = c
                .ping(PingRequest {
                    payload: b"dev ready".to_vec(),
                })
                .await
            {
                let p = p.into_inner();
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
