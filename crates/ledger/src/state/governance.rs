//! What admins change: node labels, issuer registration, the versioned
//! policy with rollback, and the two-person rule's pending changes, which
//! apply the command they carry once a second admin approves.

use super::{apply, invalid, NodeLabels, State};
use crate::command::{
    Change, Command, IssuerRecord, Outcome, PendingChange, PolicyVersion, Rejection, MAX_CRL_SHARDS,
};

pub(super) fn set_node_labels(
    state: &mut State,
    node_id: u64,
    region: &str,
    zone: &str,
) -> Outcome {
    if region.is_empty() || zone.is_empty() {
        return invalid("region and zone labels must not be empty");
    }
    state.nodes.insert(
        node_id,
        NodeLabels {
            region: region.to_string(),
            zone: zone.to_string(),
        },
    );
    Outcome::LabelsSet
}

pub(super) fn register_issuer(state: &mut State, rec: &IssuerRecord) -> Outcome {
    if rec.id.is_empty() || rec.cert_der.is_empty() {
        return invalid("an issuer needs an id and a certificate");
    }
    if rec.crl_shards == 0 || rec.crl_shards > MAX_CRL_SHARDS {
        return invalid(format!(
            "an issuer needs 1 to {MAX_CRL_SHARDS} CRL shards, got {}",
            rec.crl_shards
        ));
    }
    if state.issuers.contains_key(&rec.id) {
        return Outcome::Rejected(Rejection::IssuerExists { id: rec.id.clone() });
    }
    if let Some(parent) = &rec.parent {
        if !state.issuers.contains_key(parent) {
            return Outcome::Rejected(Rejection::UnknownIssuer { id: parent.clone() });
        }
    }
    state.issuers.insert(rec.id.clone(), rec.clone());
    state.hierarchy.registered(rec);
    Outcome::IssuerRegistered { id: rec.id.clone() }
}

/// A new policy version; with `expected_version`, only on top of that one
/// (compare-and-set, so two admins cannot overwrite each other unseen).
pub(super) fn apply_policy(
    state: &mut State,
    text: &str,
    author: &str,
    expected_version: Option<u64>,
    at_ms: u64,
) -> Outcome {
    let current = state.policy_history.last().map(|p| p.version).unwrap_or(0);
    if let Some(expected) = expected_version {
        if expected != current {
            return Outcome::Rejected(Rejection::PolicyConflict { expected, current });
        }
    }
    push_policy(state, text.to_string(), author.to_string(), None, at_ms)
}

/// An old version's text as a new version: history only grows.
pub(super) fn rollback_policy(
    state: &mut State,
    to_version: u64,
    author: &str,
    at_ms: u64,
) -> Outcome {
    let Some(old) = state
        .policy_history
        .iter()
        .find(|p| p.version == to_version)
        .cloned()
    else {
        return Outcome::Rejected(Rejection::UnknownPolicyVersion {
            version: to_version,
        });
    };
    push_policy(state, old.text, author.to_string(), Some(to_version), at_ms)
}

fn push_policy(
    state: &mut State,
    text: String,
    author: String,
    rollback_of: Option<u64>,
    at_ms: u64,
) -> Outcome {
    let version = state.policy_history.last().map(|p| p.version).unwrap_or(0) + 1;
    state.policy_history.push(PolicyVersion {
        version,
        text,
        applied_at_ms: at_ms,
        actor: author,
        rollback_of,
    });
    Outcome::PolicyApplied { version }
}

pub(super) fn propose_change(
    state: &mut State,
    change: &Change,
    proposer: &str,
    at_ms: u64,
) -> Outcome {
    if proposer.is_empty() {
        return invalid("a change needs its proposer's identity");
    }
    state.next_change_id += 1;
    let id = state.next_change_id;
    state.pending.insert(
        id,
        PendingChange {
            id,
            change: change.clone(),
            actor: proposer.to_string(),
            proposed_at_ms: at_ms,
        },
    );
    Outcome::ChangePending { id }
}

/// A second admin's approval: the change leaves the pending set and its
/// command applies, authored by both.
pub(super) fn approve_change(state: &mut State, id: u64, approver: &str, at_ms: u64) -> Outcome {
    let Some(pending) = state.pending.get(&id) else {
        return Outcome::Rejected(Rejection::UnknownChange { id });
    };
    if pending.actor == approver {
        return Outcome::Rejected(Rejection::SelfApproval {
            id,
            actor: pending.actor.clone(),
        });
    }
    let pending = state.pending.remove(&id).expect("checked");
    let actor = format!("{} (approved by {approver})", pending.actor);
    let command = match pending.change {
        Change::RegisterIssuers(recs) => {
            let mut last = String::new();
            for rec in recs {
                last = rec.id.clone();
                let is_root = rec.parent.is_none();
                match register_issuer(state, &rec) {
                    Outcome::IssuerRegistered { .. } => {}
                    Outcome::Rejected(Rejection::IssuerExists { .. }) if is_root => {}
                    other => return other,
                }
            }
            return Outcome::IssuerRegistered { id: last };
        }
        Change::ApplyPolicy {
            text,
            expected_version,
        } => Command::ApplyPolicy {
            text,
            actor,
            expected_version,
        },
        Change::RollbackPolicy { to_version } => Command::RollbackPolicy { to_version, actor },
        Change::Hierarchy(h) => Command::Hierarchy(h),
    };
    // A change that no longer applies (the policy moved on past its
    // expected version) is consumed all the same: the proposer files a
    // fresh one against what is current.
    apply::command(state, &command, at_ms)
}
