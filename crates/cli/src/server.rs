//! `quorumca server`: one node, until SIGINT or SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quorumca_api::ApiConfig;
use quorumca_consensus::{Node, ServerConfig};
use tokio::signal::unix::{signal, SignalKind};

/// Reads node.toml: the consensus part and, if present, the `[api]` part.
/// Everything is validated before anything touches disk or a port.
pub fn load(path: &Path) -> anyhow::Result<(ServerConfig, Option<ApiConfig>)> {
    let mut cfg = ServerConfig::load(path)?;
    let api = match cfg.api.take() {
        None => None,
        Some(table) => {
            let api: ApiConfig = table.try_into().map_err(|e| {
                anyhow::anyhow!("config file {}: [api] is not valid: {e}", path.display())
            })?;
            api.validate()
                .with_context(|| format!("config file {}", path.display()))?;
            Some(api)
        }
    };
    Ok((cfg, api))
}

pub async fn run(config_path: &Path, parent_pid: Option<u32>) -> anyhow::Result<()> {
    let (cfg, api_cfg) = load(config_path)?;
    let node = Arc::new(
        Node::start(cfg.node_config())
            .await
            .with_context(|| format!("starting node {}", cfg.node_id))?,
    );
    let members = cfg.initial_members();
    // The lowest id among the initial peers bootstraps; the others wait to
    // be contacted. Initialising is idempotent, so restarts are harmless.
    let bootstrapper = members.keys().next() == Some(&cfg.node_id);
    if bootstrapper {
        node.initialize(members.clone())
            .await
            .context("bootstrapping the cluster")?;
        tracing::info!("cluster bootstrapped (or already initialised)");
    }
    let api = match &api_cfg {
        Some(api_cfg) => {
            // The bootstrapping node also creates the hierarchy (when the
            // config asks for an internal root): one intermediate per region
            // of the initial members.
            let regions = bootstrapper.then(|| {
                let mut r: Vec<String> = members.values().map(|m| m.region.clone()).collect();
                r.sort();
                r.dedup();
                r
            });
            Some(
                quorumca_api::serve(node.clone(), api_cfg, &cfg.region, regions)
                    .await
                    .context("starting the API")?,
            )
        }
        None => {
            tracing::warn!("no [api] section in the config: this node serves Raft only");
            None
        }
    };
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
    let stop = async {
        if let Some(api) = api {
            api.shutdown().await;
        }
        node.shutdown().await;
    };
    match tokio::time::timeout(Duration::from_secs(10), stop).await {
        Ok(()) => tracing::info!("stopped cleanly"),
        Err(_) => tracing::warn!("shutdown took over 10 s; exiting anyway"),
    }
    Ok(())
}
