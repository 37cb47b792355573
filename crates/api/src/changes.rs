//! Changes to what the cluster enforces and trusts (its policy, its CA
//! hierarchy, its registered issuers) and the two-person rule over them.
//!
//! Whether a change commits now or is filed for a second admin is decided
//! here, from the current policy's `[approvals]`, and every proposal for it
//! is built here: the transport only passes the caller and the request on.

use quorumca_ca::Policy;
use quorumca_consensus::now_ms;
use quorumca_ledger::{Change, Command, HierarchyChange, Outcome, Proposal, Rejection};

use crate::auth::Caller;
use crate::authority::{rejected, Authority};
use crate::error::AuthorityError;
use crate::hierarchy::Install;

/// What became of a policy change (or an approval).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyChange {
    /// The version now in force (a dry run or a filed change: the current
    /// one; 0 for an approval of a CA change).
    pub version: u64,
    /// What the change does to the current policy, as text.
    pub diff: String,
    /// Committed now (false for a dry run or a change awaiting approval).
    pub applied: bool,
    /// The id of the change a second admin must approve, or 0.
    pub pending_change: u64,
}

/// What became of a hierarchy change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HierarchyUpdate {
    /// The trust bundle version it produced (0 while awaiting approval).
    pub bundle_version: u64,
    /// The id of the change a second admin must approve, or 0.
    pub pending_change: u64,
    /// Issuers the change creates.
    pub new_issuers: Vec<String>,
}

/// A change awaiting its second admin, described for people.
#[derive(Clone, Debug)]
pub struct PendingChangeView {
    /// The number `quorumca approve ID` names.
    pub id: u64,
    /// Who proposed it (they cannot approve it).
    pub actor: String,
    /// When it was proposed, Unix milliseconds.
    pub proposed_at_ms: u64,
    /// What it does, in a sentence.
    pub description: String,
    /// For a policy change, what it would change.
    pub diff: String,
}

/// The recorded actor: the authenticated identity, with the free-text
/// note the operator gave (never instead of the identity).
fn authored(caller: &Caller, note: &str) -> String {
    if note.is_empty() {
        caller.identity.clone()
    } else {
        format!("{} ({note})", caller.identity)
    }
}

/// A policy text as recorded, or the empty policy when there is none (or
/// it no longer parses, which only a diff for display could meet).
fn parsed(text: Option<&str>) -> Policy {
    text.and_then(|t| Policy::from_toml(t).ok())
        .unwrap_or_default()
}

fn policy_change(
    outcome: Outcome,
    current: u64,
    diff: String,
) -> Result<PolicyChange, AuthorityError> {
    let (version, applied, pending_change) = match outcome {
        Outcome::PolicyApplied { version } => (version, true, 0),
        // An approved CA change.
        Outcome::IssuerRegistered { .. } | Outcome::HierarchyChanged { .. } => (0, true, 0),
        Outcome::ChangePending { id } => (current, false, id),
        o => return Err(rejected(o)),
    };
    Ok(PolicyChange {
        version,
        diff,
        applied,
        pending_change,
    })
}

impl Authority {
    /// Validates `text` and applies it as the whole policy for `caller`
    /// (with `note` beside their identity as actor), or files it for
    /// approval when the current policy's `[approvals] policy` asks. A
    /// dry run only reports the diff. `expected_version` guards against
    /// replacing a policy someone else just changed.
    pub async fn change_policy(
        &self,
        caller: &Caller,
        text: &str,
        note: &str,
        expected_version: Option<u64>,
        dry_run: bool,
    ) -> Result<PolicyChange, AuthorityError> {
        let new = Policy::from_toml(text)?;
        let current = self.node.read_linearizable(|s| s.policy().cloned()).await?;
        let old = match &current {
            Some(v) => Policy::from_toml(&v.text)?,
            None => Policy::default(),
        };
        let diff = Policy::diff(&old, &new);
        let version = current.map(|v| v.version).unwrap_or(0);
        if dry_run {
            return Ok(PolicyChange {
                version,
                diff,
                applied: false,
                pending_change: 0,
            });
        }
        let outcome = if old.approvals.policy {
            let change = Change::ApplyPolicy {
                text: new.to_canonical_toml(),
                expected_version,
            };
            self.propose_change(caller, change).await?
        } else {
            let version = self
                .apply_policy(text, &authored(caller, note), expected_version)
                .await?;
            Outcome::PolicyApplied { version }
        };
        policy_change(outcome, version, diff)
    }

    /// Makes an earlier policy version current again (as a new version),
    /// or files that for approval.
    pub async fn rollback_policy(
        &self,
        caller: &Caller,
        to_version: u64,
        note: &str,
    ) -> Result<PolicyChange, AuthorityError> {
        let (old, target) = self
            .node
            .read_linearizable(move |s| {
                (
                    s.policy().map(|v| (v.version, v.text.clone())),
                    s.policy_history()
                        .iter()
                        .find(|v| v.version == to_version)
                        .map(|v| v.text.clone()),
                )
            })
            .await?;
        let version = old.as_ref().map(|o| o.0).unwrap_or(0);
        let old = parsed(old.as_ref().map(|o| o.1.as_str()));
        let diff = Policy::diff(&old, &parsed(target.as_deref()));
        let outcome = if old.approvals.policy {
            self.propose_change(caller, Change::RollbackPolicy { to_version })
                .await?
        } else {
            let p = Proposal::new(
                now_ms(),
                Command::RollbackPolicy {
                    to_version,
                    actor: authored(caller, note),
                },
            )
            .by(&caller.identity);
            self.propose(p).await?.0
        };
        policy_change(outcome, version, diff)
    }

    /// Approves a pending change as `caller`, who must not be the admin
    /// who proposed it (refused and audited by the ledger).
    pub async fn approve_change(
        &self,
        caller: &Caller,
        id: u64,
    ) -> Result<PolicyChange, AuthorityError> {
        let p = Proposal::new(
            now_ms(),
            Command::ApproveChange {
                id,
                actor: caller.identity.clone(),
            },
        )
        .by(&caller.identity);
        match self.propose(p).await?.0 {
            // Already in the audit log as a rejected approval; refused the
            // same way as any other denial.
            Outcome::Rejected(r @ Rejection::SelfApproval { .. }) => {
                Err(AuthorityError::Rejected(r))
            }
            outcome => policy_change(outcome, 0, String::new()),
        }
    }

    /// Every change awaiting a second admin, with what a policy change
    /// would do to the current policy.
    pub async fn pending_changes(&self) -> Result<Vec<PendingChangeView>, AuthorityError> {
        let (pending, current) = self
            .node
            .read_linearizable(|s| {
                (
                    s.pending_changes().cloned().collect::<Vec<_>>(),
                    s.policy().map(|p| p.text.clone()),
                )
            })
            .await?;
        let current = parsed(current.as_deref());
        Ok(pending
            .into_iter()
            .map(|c| PendingChangeView {
                id: c.id,
                actor: c.actor,
                proposed_at_ms: c.proposed_at_ms,
                description: c.change.describe(),
                diff: match &c.change {
                    Change::ApplyPolicy { text, .. } => Policy::from_toml(text)
                        .map(|p| Policy::diff(&current, &p))
                        .unwrap_or_default(),
                    Change::RollbackPolicy { .. }
                    | Change::RegisterIssuers(_)
                    | Change::Hierarchy(_) => String::new(),
                },
            })
            .collect())
    }

    /// Commits a hierarchy change for `caller`, or files it for a second
    /// admin when `approvable` and the policy's `[approvals] ca` asks. A
    /// forced renewal is not approvable: it only makes holders renew, an
    /// emergency measure that never waits.
    pub async fn change_hierarchy(
        &self,
        caller: &Caller,
        change: HierarchyChange,
        approvable: bool,
    ) -> Result<HierarchyUpdate, AuthorityError> {
        let new_issuers = match &change {
            HierarchyChange::Rotate {
                root,
                intermediates,
                ..
            } => root
                .iter()
                .chain(intermediates)
                .map(|r| r.id.clone())
                .collect(),
            _ => Vec::new(),
        };
        if approvable && self.local_policy().approvals.ca {
            return match self
                .propose_change(caller, Change::Hierarchy(change))
                .await?
            {
                Outcome::ChangePending { id } => Ok(HierarchyUpdate {
                    bundle_version: 0,
                    pending_change: id,
                    new_issuers,
                }),
                o => Err(rejected(o)),
            };
        }
        let bundle_version = self.apply_hierarchy(change, &caller.identity).await?;
        Ok(HierarchyUpdate {
            bundle_version,
            pending_change: 0,
            new_issuers,
        })
    }

    /// Installs an intermediate signed by an offline root for `caller`
    /// (see [`Authority::check_install`], which runs now whether it commits
    /// now or after approval). Returns the pending change id, or 0 when it
    /// committed.
    pub async fn install_intermediate_for(
        &self,
        caller: &Caller,
        region: &str,
        cert_der: &[u8],
        root_der: &[u8],
        sealed_key: &[u8],
    ) -> Result<u64, AuthorityError> {
        let records = match self
            .check_install(region, cert_der, root_der, sealed_key)
            .await?
        {
            Install::Register(records) => records,
            Install::Rotate(change) => {
                return Ok(self
                    .change_hierarchy(caller, change, true)
                    .await?
                    .pending_change)
            }
        };
        if !self.local_policy().approvals.ca {
            for rec in records {
                self.register_issuer(rec).await?;
            }
            return Ok(0);
        }
        match self
            .propose_change(caller, Change::RegisterIssuers(records))
            .await?
        {
            Outcome::ChangePending { id } => Ok(id),
            o => Err(rejected(o)),
        }
    }

    /// Files `change` for a second admin.
    async fn propose_change(
        &self,
        caller: &Caller,
        change: Change,
    ) -> Result<Outcome, AuthorityError> {
        let p = Proposal::new(
            now_ms(),
            Command::ProposeChange {
                change,
                actor: caller.identity.clone(),
            },
        )
        .by(&caller.identity);
        Ok(self.propose(p).await?.0)
    }
}
