//! `quorumca agent --config agent.toml` (the rotation agent) and `quorumca
//! agent status` (what it is doing).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use quorumca_agent::config::AgentConfig;
use quorumca_agent::status::Status;

use crate::output::{json, Output};

const AGENT_EXAMPLE: &str = "Examples:
  quorumca agent --config /etc/quorumca/agent.toml
  quorumca agent status --config /etc/quorumca/agent.toml
  quorumca agent status --state-dir /var/lib/quorumca-agent -o json

A minimal agent.toml:
  state_dir = \"/var/lib/quorumca-agent\"
  [cluster]
  endpoints = [\"10.0.0.1:7100\", \"10.0.0.2:7100\"]
  enroll_endpoints = [\"10.0.0.1:7300\"]
  ca_file = \"/etc/quorumca/roots.pem\"
  [[intent]]
  name = \"web\"
  dns = [\"web.default.svc.example\"]
  lifetime = \"24h\"
  key_file = \"/etc/web/tls/key.pem\"
  cert_file = \"/etc/web/tls/cert.pem\"
  chain_file = \"/etc/web/tls/chain.pem\"
  bundle_file = \"/etc/web/tls/roots.pem\"
  join_token_file = \"/etc/quorumca/web.token\"
  reload = { signal = \"HUP\", pid_file = \"/run/web.pid\" }

docs/agent.md describes every field.";

/// Keep certificates fresh: renew before expiry, write atomically, reload.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, after_help = AGENT_EXAMPLE)]
pub struct AgentArgs {
    /// The agent's configuration (cluster and certificate intents).
    #[arg(long, short, env = "QUORUMCA_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Without a subcommand: run the agent.
    #[command(subcommand)]
    pub cmd: Option<AgentCmd>,
}

/// What `quorumca agent` does besides running.
#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Each certificate's expiry, renewal point and renewal state, from the
    /// agent's status file.
    Status {
        /// Read the state_dir from this configuration...
        #[arg(
            long,
            short,
            env = "QUORUMCA_AGENT_CONFIG",
            conflicts_with = "state_dir"
        )]
        config: Option<PathBuf>,
        /// ...or name it directly.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
}

/// Runs the agent, or one of its subcommands.
pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    match a.cmd {
        Some(AgentCmd::Status {
            config,
            state_dir,
            output,
        }) => status(config, state_dir, output),
        None => {
            let path = a
                .config
                .context("give the agent its configuration: --config agent.toml")?;
            let cfg = AgentConfig::from_file(&path)?;
            eprintln!(
                "quorumca agent: {} intent(s), state in {}",
                cfg.intents.len(),
                cfg.state_dir.display()
            );
            let agent = quorumca_agent::Agent::new(cfg)?;
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
            let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
            // Every write is crash-safe: stopping mid-renewal is fine.
            tokio::select! {
                r = agent.run() => r.map_err(Into::into),
                _ = term.recv() => Ok(()),
                _ = int.recv() => Ok(()),
            }
        }
    }
}

fn status(
    config: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    output: Output,
) -> anyhow::Result<()> {
    let dir = match (config, state_dir) {
        (_, Some(d)) => d,
        (Some(c), None) => AgentConfig::from_file(&c)?.state_dir,
        (None, None) => anyhow::bail!("give --config agent.toml or --state-dir DIR"),
    };
    let s = Status::read(&dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    match output {
        Output::Json => crate::out!("{}", json(&serde_json::to_value(&s)?)),
        Output::Table => {
            let left = |t: Option<i64>| match t {
                None => "-".to_string(),
                Some(t) if t >= now => {
                    humantime::format_duration(std::time::Duration::from_secs((t - now) as u64))
                        .to_string()
                }
                Some(t) => format!(
                    "{} ago",
                    humantime::format_duration(std::time::Duration::from_secs((now - t) as u64))
                ),
            };
            crate::out!(
                "{:<16} {:<9} {:<34} {:<14} {:<14} {:>8} {:>8}  last error",
                "INTENT",
                "STATE",
                "SERIAL",
                "EXPIRES IN",
                "RENEWS IN",
                "RENEWALS",
                "FAILURES"
            );
            for (name, i) in &s.intents {
                crate::out!(
                    "{:<16} {:<9} {:<34} {:<14} {:<14} {:>8} {:>8}  {}",
                    name,
                    serde_json::to_value(i.state)?.as_str().unwrap_or("?"),
                    i.serial.as_deref().unwrap_or("-"),
                    left(i.not_after),
                    left(i.renew_after),
                    i.renewals,
                    i.failures,
                    i.last_error.as_deref().unwrap_or("")
                );
            }
            crate::out!(
                "trust bundle version {}{}",
                s.bundle_version,
                s.bundle_updated_at
                    .map(|t| format!(", written {}", left(Some(t))))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}
