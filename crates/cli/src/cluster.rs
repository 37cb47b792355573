//! `quorumca cluster ...`: operator commands against running nodes.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use quorumca_proto::cluster_client::ClusterClient;
use quorumca_proto::{self as pb, AddNodeRequest, PingRequest, RemoveNodeRequest, StatusRequest};
use serde::Serialize;

use crate::client::{explain, node_client};
use crate::output::{json, table, Output};
use quorumca_client::Retry;

/// Where to send a command, and how to show its answer.
#[derive(Debug, Args)]
pub struct Conn {
    /// Cluster connection and output options.
    #[command(flatten)]
    pub target: crate::client::Target,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

/// `quorumca cluster`: membership and leadership.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Leader, term, indexes and members as seen by each endpoint.
    ///
    /// Example: quorumca cluster status --endpoints 127.0.0.1:7201 --credentials dev-data/admin
    Status(Conn),
    /// Commit a no-op through Raft: proves the cluster can commit now.
    Ping(Conn),
    /// Add a node (as a learner, then a voter unless --learner).
    #[command(alias = "add")]
    AddNode {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: Conn,
        /// The new node's id (never used before in this cluster).
        #[arg(long)]
        id: u64,
        /// host:port the new node listens on.
        #[arg(long)]
        addr: String,
        /// Its region.
        #[arg(long)]
        region: String,
        /// Its zone.
        #[arg(long)]
        zone: String,
        /// Keep it a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// The members (voters and learners) with their regions and zones.
    Members(Conn),
    /// Hand leadership to a voter and wait until it leads.
    ///
    /// Example: quorumca cluster transfer-leader --to 2
    TransferLeader {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: Conn,
        /// The voter to lead.
        #[arg(long)]
        to: u64,
    },
    /// Remove a node from the cluster.
    #[command(alias = "remove")]
    RemoveNode {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: Conn,
        /// The node to remove.
        #[arg(long)]
        id: u64,
    },
}

#[derive(Serialize)]
struct MemberOut {
    node_id: u64,
    addr: String,
    region: String,
    zone: String,
    voter: bool,
}

#[derive(Default, Serialize)]
struct StatusOut {
    endpoint: String,
    reachable: bool,
    node_id: u64,
    role: String,
    leader_id: Option<u64>,
    term: u64,
    last_log_index: u64,
    commit_index: u64,
    applied_index: u64,
    snapshot_index: u64,
    ledger_hash: String,
    live_certificates: u64,
    members: Vec<MemberOut>,
}

fn members_out(ms: &[pb::Member]) -> Vec<MemberOut> {
    ms.iter()
        .map(|m| MemberOut {
            node_id: m.node_id,
            addr: m.addr.clone(),
            region: m.region.clone(),
            zone: m.zone.clone(),
            voter: m.voter,
        })
        .collect()
}

fn members_table(ms: &[MemberOut]) -> String {
    let rows: Vec<Vec<String>> = ms
        .iter()
        .map(|m| {
            vec![
                m.node_id.to_string(),
                m.addr.clone(),
                m.region.clone(),
                m.zone.clone(),
                if m.voter { "voter" } else { "learner" }.into(),
            ]
        })
        .collect();
    table(&["NODE", "ADDRESS", "REGION", "ZONE", "ROLE"], &rows)
}

/// Runs one `quorumca cluster` subcommand.
pub async fn run(cmd: ClusterCmd) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Status(conn) => {
            let mut out = Vec::new();
            crate::client::require_endpoints(&conn.target.endpoints, "QUORUMCA_ENDPOINTS")?;
            let mut why_not = Vec::new();
            for e in &conn.target.endpoints {
                let client = node_client(e, conn.target.credentials.as_deref())?;
                let s = match client
                    .rpc(Retry::Idempotent, StatusRequest {}, |ch, r| async move {
                        ClusterClient::new(ch).status(r).await
                    })
                    .await
                {
                    Ok(s) => Some(s),
                    Err(err) => {
                        why_not.push(format!("{e}: {}", explain(&err)));
                        None
                    }
                };
                out.push(match s {
                    Some(s) => StatusOut {
                        endpoint: e.clone(),
                        reachable: true,
                        node_id: s.node_id,
                        role: s.role,
                        leader_id: s.leader_id,
                        term: s.term,
                        last_log_index: s.last_log_index,
                        commit_index: s.commit_index,
                        applied_index: s.applied_index,
                        snapshot_index: s.snapshot_index,
                        ledger_hash: s.ledger_hash,
                        live_certificates: s.live_certificates,
                        members: members_out(&s.members),
                    },
                    None => StatusOut {
                        endpoint: e.clone(),
                        role: "unreachable".into(),
                        ..Default::default()
                    },
                });
            }
            match conn.output {
                Output::Json => crate::out!("{}", json(&out)),
                Output::Table => {
                    let rows: Vec<Vec<String>> = out
                        .iter()
                        .map(|s| {
                            vec![
                                s.endpoint.clone(),
                                if s.reachable {
                                    s.node_id.to_string()
                                } else {
                                    "-".into()
                                },
                                s.role.clone(),
                                s.leader_id.map(|l| l.to_string()).unwrap_or("-".into()),
                                s.term.to_string(),
                                s.commit_index.to_string(),
                                s.applied_index.to_string(),
                                s.live_certificates.to_string(),
                                s.ledger_hash.chars().take(12).collect(),
                            ]
                        })
                        .collect();
                    crate::out!(
                        "{}",
                        table(
                            &[
                                "ENDPOINT", "NODE", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED",
                                "CERTS", "LEDGER"
                            ],
                            &rows
                        )
                    );
                    if let Some(s) = out.iter().find(|s| s.reachable) {
                        crate::out!(
                            "\nMembers (as seen by node {}):\n{}",
                            s.node_id,
                            members_table(&s.members)
                        );
                    }
                }
            }
            // Why each unreachable node is: down, refused, or not a node.
            for w in &why_not {
                eprintln!("{w}");
            }
            if out.iter().all(|s| !s.reachable) {
                bail!("no endpoint answered (each one's reason is above)");
            }
            Ok(())
        }
        ClusterCmd::Ping(conn) => {
            let started = std::time::Instant::now();
            let r = conn
                .target
                .client()?
                .rpc(
                    Retry::Idempotent,
                    PingRequest {
                        payload: b"quorumca cluster ping".to_vec(),
                    },
                    |ch, r| async move { ClusterClient::new(ch).ping(r).await },
                )
                .await
                .map_err(crate::client::client_error)?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match conn.output {
                Output::Json => crate::out!(
                    "{}",
                    json(
                        &serde_json::json!({"log_index": r.log_index, "leader_id": r.leader_id, "millis": ms})
                    )
                ),
                Output::Table => crate::out!(
                    "committed at log index {} (leader {}) in {ms:.1} ms",
                    r.log_index,
                    r.leader_id
                ),
            }
            Ok(())
        }
        ClusterCmd::AddNode {
            conn,
            id,
            addr,
            region,
            zone,
            learner,
        } => {
            let r = conn
                .target
                .client()?
                .rpc(
                    Retry::UnlessSent,
                    AddNodeRequest {
                        node_id: id,
                        addr,
                        region,
                        zone,
                        voter: !learner,
                    },
                    |ch, r| async move { ClusterClient::new(ch).add_node(r).await },
                )
                .await
                .map_err(crate::client::client_error)
                .context("adding the node")?;
            print_members(conn.output, &r.members);
            Ok(())
        }
        ClusterCmd::Members(conn) => {
            let s = conn
                .target
                .client()?
                .rpc(Retry::Idempotent, StatusRequest {}, |ch, r| async move {
                    ClusterClient::new(ch).status(r).await
                })
                .await
                .map_err(crate::client::client_error)?;
            print_members(conn.output, &s.members);
            Ok(())
        }
        ClusterCmd::TransferLeader { conn, to } => {
            let r = conn
                .target
                .client()?
                .rpc(
                    Retry::UnlessSent,
                    pb::TransferLeaderRequest { to_node_id: to },
                    |ch, r| async move { ClusterClient::new(ch).transfer_leader(r).await },
                )
                .await
                .map_err(crate::client::client_error)
                .context("transferring leadership")?;
            match conn.output {
                Output::Json => crate::out!(
                    "{}",
                    json(&serde_json::json!({"leader_id": r.leader_id, "term": r.term}))
                ),
                Output::Table => crate::out!("node {} leads (term {})", r.leader_id, r.term),
            }
            Ok(())
        }
        ClusterCmd::RemoveNode { conn, id } => {
            let r = conn
                .target
                .client()?
                .rpc(
                    Retry::UnlessSent,
                    RemoveNodeRequest { node_id: id },
                    |ch, r| async move { ClusterClient::new(ch).remove_node(r).await },
                )
                .await
                .map_err(crate::client::client_error)
                .context("removing the node")?;
            print_members(conn.output, &r.members);
            Ok(())
        }
    }
}

fn print_members(output: Output, ms: &[pb::Member]) {
    let ms = members_out(ms);
    match output {
        Output::Json => crate::out!("{}", json(&ms)),
        Output::Table => crate::out!("{}", members_table(&ms)),
    }
}
