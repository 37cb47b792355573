//! `quorumca server`: one node, until SIGINT or SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quorumca_api::{ApiConfig, NodeCredentials, TlsConfig};
use quorumca_consensus::{Node, ServerConfig};
use tokio::signal::unix::{signal, SignalKind};

/// Everything node.toml configures, validated.
pub struct Loaded {
    /// The Raft side: identity, peers, storage, `[raft]`, `[connections]`.
    pub node: ServerConfig,
    /// `[api]`, if the file has one.
    pub api: Option<ApiConfig>,
    /// None only with `insecure_plaintext = true`.
    pub tls: Option<NodeCredentials>,
}

/// Reads node.toml: the consensus part, `[tls]`, and, if present, `[api]`.
/// Everything is validated (and the TLS files read) before anything
/// touches disk or a port.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let mut cfg = ServerConfig::load(path)?;
    let tls = match (cfg.tls.take(), cfg.insecure_plaintext) {
        (Some(table), _) => {
            let t: TlsConfig = table.try_into().map_err(|e| {
                anyhow::anyhow!("config file {}: [tls] is not valid: {e}", path.display())
            })?;
            Some(
                t.load(cfg.node_id)
                    .with_context(|| format!("config file {}", path.display()))?,
            )
        }
        (None, true) => None,
        (None, false) => anyhow::bail!(
            "config file {}: no [tls] section. Give the node its certificate (ca_file, cert_file, key_file; `quorumca dev` shows the layout), or set `insecure_plaintext = true` for a throwaway cluster on one host",
            path.display()
        ),
    };
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
    Ok(Loaded {
        node: cfg,
        api,
        tls,
    })
}

/// Runs one node until SIGTERM or Ctrl-C (or until `parent_pid` exits).
pub async fn run(config_path: &Path, parent_pid: Option<u32>) -> anyhow::Result<()> {
    let Loaded {
        node: cfg,
        api: api_cfg,
        tls,
    } = load(config_path)?;
    if tls.is_none() {
        tracing::warn!("insecure_plaintext: no TLS, no authentication; every caller is an admin");
    }
    let mut node_cfg = cfg.node_config();
    node_cfg.tls = tls.as_ref().map(|t| t.node_tls());
    let node = Arc::new(
        Node::start(node_cfg)
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
                quorumca_api::serve(
                    node.clone(),
                    api_cfg,
                    &cfg.region,
                    regions,
                    tls.as_ref(),
                    &cfg.connections,
                )
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
        reason = node.fatal() => {
            tracing::error!(%reason, "the Raft core stopped; exiting");
            anyhow::bail!(
                "node {} stopped: {reason}. Fix the cause (is the data disk full?) and start it again; it recovers from its data dir",
                cfg.node_id
            );
        }
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
