//! `quorumca policy apply | show | history | rollback`: the versioned
//! profiles and namespaces in the ledger.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use quorumca_proto::policy_service_client::PolicyServiceClient;
use quorumca_proto::{
    ApplyPolicyRequest, GetPolicyRequest, PolicyHistoryRequest, RollbackPolicyRequest,
};

use crate::cluster::Conn;
use crate::output::{json, table, Output};
use quorumca_client::Retry;

/// `quorumca policy`: the versioned issuance and access policy.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate a policy file, show the diff, and commit it as a new version.
    #[command(after_help = "Examples:
  quorumca policy apply -f profiles.toml --dry-run   # validate and diff only
  quorumca policy apply -f profiles.toml --expect-version 3")]
    Apply {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: Conn,
        /// The policy TOML ([profiles.*] and [namespaces.*]).
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Validate and print the diff; commit nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply only if the current version is this one, so two operators
        /// never overwrite each other unknowingly.
        #[arg(long)]
        expect_version: Option<u64>,
        /// A note recorded beside your identity in the history (e.g. a
        /// ticket); your identity is always recorded.
        #[arg(long, alias = "author", env = "USER", default_value = "operator")]
        note: String,
    },
    /// Print the current policy (or one version of it).
    Show {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: Conn,
        /// That version instead of the current one.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Every version: when, by whom, rollbacks.
    History(Conn),
    /// Make an earlier version current again (as a new version).
    Rollback {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: Conn,
        /// The version to restore.
        #[arg(long)]
        to: u64,
        /// As for `apply`.
        #[arg(long, alias = "author", env = "USER", default_value = "operator")]
        note: String,
    },
}

fn pending_note(id: u64) -> String {
    format!(
        "\nnot applied yet: the policy requires a second admin. Pending as change {id}; another admin runs `quorumca approve {id}`"
    )
}

pub(crate) fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Runs one `quorumca policy` subcommand.
pub async fn run(cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Apply {
            conn,
            file,
            dry_run,
            expect_version,
            note,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let r = conn
                .target
                .client()?
                .rpc(
                    Retry::UnlessSent,
                    ApplyPolicyRequest {
                        text,
                        expected_version: expect_version.unwrap_or(0),
                        dry_run,
                        note,
                    },
                    |ch, r| async move { PolicyServiceClient::new(ch).apply_policy(r).await },
                )
                .await
                .map_err(crate::client::client_error)
                .with_context(|| format!("applying {}", file.display()))?;
            match conn.output {
                Output::Json => crate::out!(
                    "{}",
                    json(
                        &serde_json::json!({"version": r.version, "applied": r.applied, "diff": r.diff, "pending_change": r.pending_change})
                    )
                ),
                Output::Table => {
                    if r.diff.is_empty() {
                        crate::out!("(no change from the current policy)");
                    } else {
                        crate::out!("{}", r.diff.trim_end());
                    }
                    if r.applied {
                        crate::out!("\napplied as version {}", r.version);
                    } else if r.pending_change > 0 {
                        crate::out!("{}", pending_note(r.pending_change));
                    } else {
                        crate::out!(
                            "\ndry run: valid, nothing committed (current version {})",
                            r.version
                        );
                    }
                }
            }
        }
        PolicyCmd::Show { conn, version } => {
            let v = conn
                .target
                .client()?
                .rpc(
                    Retry::Idempotent,
                    GetPolicyRequest {
                        version: version.unwrap_or(0),
                    },
                    |ch, r| async move { PolicyServiceClient::new(ch).get_policy(r).await },
                )
                .await
                .map_err(crate::client::client_error)?;
            match conn.output {
                Output::Json => crate::out!(
                    "{}",
                    json(&serde_json::json!({
                        "version": v.version, "actor": v.actor, "applied_at_ms": v.applied_at_ms,
                        "rollback_of": v.rollback_of, "text": v.text,
                    }))
                ),
                Output::Table => {
                    crate::out!(
                        "# policy version {} by {} at {}",
                        v.version,
                        v.actor,
                        when(v.applied_at_ms)
                    );
                    crate::out!("{}", v.text.trim_end());
                }
            }
        }
        PolicyCmd::History(conn) => {
            let h = conn
                .target
                .client()?
                .rpc(
                    Retry::Idempotent,
                    PolicyHistoryRequest {},
                    |ch, r| async move { PolicyServiceClient::new(ch).policy_history(r).await },
                )
                .await
                .map_err(crate::client::client_error)?;
            match conn.output {
                Output::Json => {
                    let vs: Vec<_> = h
                        .versions
                        .iter()
                        .map(|v| {
                            serde_json::json!({
                                "version": v.version, "actor": v.actor,
                                "applied_at_ms": v.applied_at_ms, "rollback_of": v.rollback_of,
                            })
                        })
                        .collect();
                    crate::out!("{}", json(&vs))
                }
                Output::Table => {
                    let rows: Vec<Vec<String>> = h
                        .versions
                        .iter()
                        .map(|v| {
                            vec![
                                v.version.to_string(),
                                when(v.applied_at_ms),
                                v.actor.clone(),
                                v.rollback_of
                                    .map(|r| format!("rollback to {r}"))
                                    .unwrap_or_default(),
                            ]
                        })
                        .collect();
                    crate::out!(
                        "{}",
                        table(&["VERSION", "APPLIED", "ACTOR", "ROLLBACK"], &rows)
                    );
                }
            }
        }
        PolicyCmd::Rollback { conn, to, note } => {
            let r = conn
                .target
                .client()?
                .rpc(
                    Retry::UnlessSent,
                    RollbackPolicyRequest {
                        to_version: to,
                        note,
                    },
                    |ch, r| async move { PolicyServiceClient::new(ch).rollback_policy(r).await },
                )
                .await
                .map_err(crate::client::client_error)?;
            match conn.output {
                Output::Json => crate::out!(
                    "{}",
                    json(
                        &serde_json::json!({"version": r.version, "diff": r.diff, "applied": r.applied, "pending_change": r.pending_change})
                    )
                ),
                Output::Table => {
                    crate::out!("{}", r.diff.trim_end());
                    if r.pending_change > 0 {
                        crate::out!("{}", pending_note(r.pending_change));
                    } else {
                        crate::out!("\nversion {to} restored as version {}", r.version);
                    }
                }
            }
        }
    }
    Ok(())
}
