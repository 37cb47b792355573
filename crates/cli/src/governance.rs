//! `quorumca approve` and `quorumca audit query`: the second pair of eyes
//! on policy changes, and who did (or was refused) what.

use clap::{Args, Subcommand};
use quorumca_proto::audit_service_client::AuditServiceClient;
use quorumca_proto::policy_service_client::PolicyServiceClient;
use quorumca_proto::{ApproveChangeRequest, ListPendingChangesRequest, QueryAuditRequest};

use crate::cluster::Conn;
use crate::output::{json, table, Output};
use crate::policy::when;
use quorumca_client::Retry;

/// Approve a pending change (as an admin other than its proposer), or
/// list the pending ones.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  quorumca approve --list        # what waits, with diffs
  quorumca approve 3             # approve change 3; it takes effect now")]
pub struct ApproveArgs {
    /// Cluster connection and output options.
    #[command(flatten)]
    pub conn: Conn,
    /// The change to approve.
    #[arg(required_unless_present = "list")]
    pub id: Option<u64>,
    /// List pending changes instead.
    #[arg(long, conflicts_with = "id")]
    pub list: bool,
}

/// `quorumca audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Audit entries, oldest first: policy and CA changes, revocations,
    /// approvals, and every refused call.
    #[command(after_help = "Examples:
  quorumca audit query --denied
  quorumca audit query --actor spiffe://example.org/ns/payments/api --after 1200")]
    Query {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: Conn,
        /// Entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Return at most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only this identity's entries.
        #[arg(long, default_value = "")]
        actor: String,
        /// Only refusals.
        #[arg(long)]
        denied: bool,
    },
}

/// `quorumca approve`.
pub async fn approve(a: ApproveArgs) -> anyhow::Result<()> {
    let conn = &a.conn;
    let client = conn.target.client()?;
    let Some(id) = a.id.filter(|_| !a.list) else {
        let r = client
            .rpc(
                Retry::Idempotent,
                ListPendingChangesRequest {},
                |ch, r| async move { PolicyServiceClient::new(ch).list_pending_changes(r).await },
            )
            .await
            .map_err(crate::client::client_error)?;
        match conn.output {
            Output::Json => {
                let v: Vec<_> = r
                    .changes
                    .iter()
                    .map(|c| {
                        serde_json::json!({"id": c.id, "actor": c.actor,
                            "proposed_at_ms": c.proposed_at_ms, "description": c.description, "diff": c.diff})
                    })
                    .collect();
                crate::out!("{}", json(&v));
            }
            Output::Table => {
                if r.changes.is_empty() {
                    crate::out!("no pending changes");
                }
                for ch in &r.changes {
                    crate::out!(
                        "change {}: {} (proposed by {} at {})",
                        ch.id,
                        ch.description,
                        ch.actor,
                        when(ch.proposed_at_ms)
                    );
                    if !ch.diff.is_empty() {
                        crate::out!("{}", ch.diff.trim_end());
                    }
                    crate::out!();
                }
            }
        }
        return Ok(());
    };
    let r = client
        .rpc(
            Retry::UnlessSent,
            ApproveChangeRequest { id },
            |ch, r| async move { PolicyServiceClient::new(ch).approve_change(r).await },
        )
        .await
        .map_err(crate::client::client_error)?;
    match conn.output {
        Output::Json => crate::out!(
            "{}",
            json(&serde_json::json!({"id": id, "applied": r.applied, "version": r.version}))
        ),
        Output::Table if r.version > 0 => crate::out!(
            "approved change {id}: policy version {} is now current",
            r.version
        ),
        Output::Table => crate::out!("approved change {id}: applied"),
    }
    Ok(())
}

/// `quorumca audit`.
pub async fn audit(cmd: AuditCmd) -> anyhow::Result<()> {
    let AuditCmd::Query {
        conn,
        after,
        limit,
        actor,
        denied,
    } = cmd;
    let req = QueryAuditRequest {
        after_seq: after,
        limit,
        actor,
        denied_only: denied,
    };
    let r = conn
        .target
        .client()?
        .rpc(Retry::Idempotent, req, |ch, r| async move {
            AuditServiceClient::new(ch).query_audit(r).await
        })
        .await
        .map_err(crate::client::client_error)?;
    match conn.output {
        Output::Json => {
            let entries: Vec<_> = r
                .entries
                .iter()
                .map(|e| {
                    serde_json::json!({"seq": e.seq, "at_ms": e.at_ms, "actor": e.actor,
                        "action": e.action, "detail": e.detail, "denied": e.denied, "chain": e.chain})
                })
                .collect();
            crate::out!(
                "{}",
                json(
                    &serde_json::json!({"entries": entries, "chain_head": r.chain_head,
                        "chain_length": r.chain_length, "next_after_seq": r.next_after_seq})
                )
            );
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = r
                .entries
                .iter()
                .map(|e| {
                    vec![
                        e.seq.to_string(),
                        when(e.at_ms),
                        e.actor.clone(),
                        if e.denied { "DENIED" } else { "ok" }.into(),
                        e.action.clone(),
                        e.detail.clone(),
                    ]
                })
                .collect();
            crate::out!(
                "{}",
                table(
                    &["SEQ", "WHEN", "ACTOR", "RESULT", "ACTION", "DETAIL"],
                    &rows
                )
            );
            crate::out!(
                "\naudit chain: {} proposals, head {}",
                r.chain_length,
                r.chain_head
            );
            if r.next_after_seq > 0 {
                crate::out!(
                    "more entries follow: add --after {} for the next page",
                    r.next_after_seq
                );
            }
        }
    }
    Ok(())
}
