//! `quorumca server`: one node, until SIGINT or SIGTERM.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use quorumca_consensus::{Node, ServerConfig};
use tokio::signal::unix::{signal, SignalKind};

pub async fn run(config_path: &Path, parent_pid: Option<u32>) -> anyhow::Result<()> {
    let cfg = ServerConfig::load(config_path)?;
    let node = Node::start(cfg.node_config())
        .await
        .with_context(|| format!("starting node {}", cfg.node_id))?;
    let members = cfg.initial_members();
    // The lowest id among the initial peers bootstraps; the others wait to
    // be contacted. Initialising is idempotent, so restarts are harmless.
    if members.keys().next() == Some(&cfg.node_id) {
        node.initialize(members)
            .await
            .context("bootstrapping the cluster")?;
        tracing::info!("cluster bootstrapped (or already initialised)");
    }
    tracing::info!(
        node_id = cfg.node_id,
        addr = %node.addr(),
        region = %cfg.region,
        zone = %cfg.zone,
        "serving"
    );
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let orphaned = async {
        match parent_pid {
            Some(pid) => loop {
                if std::os::unix::process::parent_id() != pid {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = orphaned => tracing::warn!("parent process is gone: shutting down"),
    }
    match tokio::time::timeout(Duration::from_secs(10), node.shutdown()).await {
        Ok(()) => tracing::info!("stopped cleanly"),
        Err(_) => tracing::warn!("shutdown took over 10 s; exiting anyway"),
    }
    Ok(())
}
