//! # quorumca-cli: the `quorumca` command
//!
//! Owns argument parsing ([`Cli`]), process life (signals, child processes
//! of `quorumca dev`) and presentation (`--output table|json`). Everything
//! that decides, agrees or stores lives in the library crates; this crate
//! wires them and talks to running nodes over gRPC.
//!
//! - `server`: one node from a `node.toml` ([`server`]).
//! - `dev`: a local multi-node cluster of `quorumca server` processes
//!   ([`dev`]).
//! - `cluster ...`: operator commands against running nodes ([`cluster`]).
//! - `issue`, `renew`, `revoke`, `crl`, `bundle` ([`certs`]) and `policy
//!   ...` ([`policy`]): the CA through the public gRPC API.
//! - `approve`, `audit query` ([`governance`]); `token create`, `enroll`
//!   ([`tokens`]).
//! - `agent`: the rotation agent and its status ([`agent`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The argument structs' doc comments are clap's `--help` text, written for
// a terminal (`<region>.csr`, `[tls]`), not rustdoc markup.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

pub mod agent;
pub mod ca;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod dev;
pub mod governance;
pub mod output;
pub mod policy;
pub mod server;
pub mod tokens;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// QuorumCA: a certificate authority that runs as a Raft cluster.
#[derive(Debug, Parser)]
#[command(name = "quorumca", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `quorumca=debug`.
    #[arg(
        long,
        global = true,
        env = "QUORUMCA_LOG",
        default_value = "info,openraft=warn"
    )]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

const EXAMPLES: &str = "Examples:
  quorumca dev                         start a local 3-node cluster in ./dev-data
  . ./dev-data/env                     point the commands below at it
  quorumca issue --dns web.default.svc.dev.internal --out-dir certs
  quorumca cluster status
  quorumca policy show
  quorumca renew --dir certs
  quorumca audit query --denied
  quorumca server --config node.toml   run one node of a real cluster";

/// Every `quorumca` command.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run one node, configured by a TOML file.
    Server {
        /// Path to node.toml (node_id, listen, data_dir, region, zone, peers).
        #[arg(long, short)]
        config: PathBuf,
        /// Stop when the process with this pid is no longer our parent.
        /// `quorumca dev` passes its own pid, so nodes never outlive it,
        /// even if it is killed with SIGKILL.
        #[arg(long, hide = true)]
        parent_pid: Option<u32>,
    },
    /// Start a local cluster of N nodes on loopback and keep it running
    /// until Ctrl-C. Running it again on the same data dir restarts the
    /// same cluster with its data.
    Dev(dev::DevArgs),
    /// Inspect and change the cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Issue a certificate (from a CSR, or for a key generated here).
    Issue(certs::IssueArgs),
    /// Revoke a certificate, or every certificate of a compromised key.
    Revoke(certs::RevokeArgs),
    /// Look up and list certificates.
    #[command(subcommand)]
    Cert(certs::CertCmd),
    /// Fetch CRLs.
    #[command(subcommand)]
    Crl(certs::CrlCmd),
    /// The trust bundle: roots to trust and the issuers under them.
    #[command(subcommand)]
    Bundle(certs::BundleCmd),
    /// Profiles and namespaces: apply (with a diff), show, history, rollback.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Renew the certificate you hold: it authenticates the request (mTLS),
    /// the new one keeps its names, namespace and profile.
    Renew(certs::RenewArgs),
    /// Approve a change that waits for a second admin, or list them.
    Approve(governance::ApproveArgs),
    /// Join tokens for new workloads.
    #[command(subcommand)]
    Token(tokens::TokenCmd),
    /// Get a first certificate with a join token.
    Enroll(tokens::EnrollArgs),
    /// Query the audit log.
    #[command(subcommand)]
    Audit(governance::AuditCmd),
    /// Root CA operations: init-root and sign-intermediate (offline),
    /// prepare-intermediate and install-intermediate (with the cluster).
    #[command(subcommand)]
    Ca(ca::CaCmd),
    /// The rotation agent: keeps declared certificates fresh on this host
    /// (`quorumca agent --config agent.toml`), or shows what it is doing
    /// (`quorumca agent status`).
    Agent(agent::AgentArgs),
}

/// Logs to stderr under the `--log` filter, in colour on a terminal.
pub fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// A failed command's error as one message that says what to fix.
pub fn render_error(e: &anyhow::Error) -> String {
    client::render(e)
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Server { config, parent_pid } => server::run(&config, parent_pid).await,
        Cmd::Dev(args) => dev::run(args, &cli.log).await,
        Cmd::Cluster(cmd) => cluster::run(cmd).await,
        Cmd::Issue(a) => certs::issue(a).await,
        Cmd::Revoke(a) => certs::revoke(a).await,
        Cmd::Cert(c) => certs::cert(c).await,
        Cmd::Crl(c) => certs::crl(c).await,
        Cmd::Bundle(c) => certs::bundle(c).await,
        Cmd::Policy(c) => policy::run(c).await,
        Cmd::Ca(cmd) => ca::run(cmd).await,
        Cmd::Renew(a) => certs::renew(a).await,
        Cmd::Approve(a) => governance::approve(a).await,
        Cmd::Audit(c) => governance::audit(c).await,
        Cmd::Token(c) => tokens::token(c).await,
        Cmd::Enroll(a) => tokens::enroll(a).await,
        Cmd::Agent(a) => agent::run(a).await,
    }
}
