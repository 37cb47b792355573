//! The audit trail: a hash chain over every applied proposal, and entries
//! in words for the commands people answer for, bounded in count and bytes
//! so no caller can flood the replicated state with them.

use ring::digest::{Context, SHA256};

use super::State;
use crate::command::{AuditEntry, Command, HierarchyChange, Outcome, Proposal};

/// Audit entries the ledger keeps (the newest); older ones leave the hot
/// state for each node's archive ([`apply_evicting`](super::apply_evicting))
/// and stay covered by the hash chain head.
pub const MAX_AUDIT_ENTRIES: usize = 100_000;

/// Bytes of audit entries the ledger keeps, beside the count: a flood of
/// large entries must not fill memory and snapshots before the count cap
/// is reached. Measured by [`audit_entry_bytes`].
pub const MAX_AUDIT_BYTES: u64 = 64 * 1024 * 1024;

/// What one audit entry counts against [`MAX_AUDIT_BYTES`].
pub fn audit_entry_bytes(e: &AuditEntry) -> u64 {
    (e.actor.len() + e.action.len() + e.detail.len() + e.chain.len() + 24) as u64
}

/// Every proposal extends the chain, audited or not, so the head commits to
/// the whole history.
pub(super) fn extend_chain(state: &mut State, proposal: &Proposal) {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&state.audit_head);
    ctx.update(&postcard::to_stdvec(proposal).expect("proposal serialises"));
    state.audit_head = ctx.finish().as_ref().try_into().expect("32 bytes");
    state.audit_len += 1;
}

/// Files an audit entry for the commands people answer for; the
/// high-volume machinery (issuance records, leases, CRL numbers, pruning)
/// is covered by the hash chain only. Issuances are their own records.
pub(super) fn record(
    state: &mut State,
    p: &Proposal,
    outcome: &Outcome,
    evicted: &mut Vec<AuditEntry>,
) {
    let (action, detail, actor) = match &p.command {
        Command::Revoke {
            issuer,
            serial,
            reason,
            ..
        } => (
            "revoke",
            format!("issuer {issuer} serial {serial} reason {reason:?}"),
            p.actor.clone(),
        ),
        Command::RevokeByKey {
            spki_hash, reason, ..
        } => (
            "revoke-by-key",
            format!("key sha256 {} reason {reason:?}", hex::encode(spki_hash)),
            p.actor.clone(),
        ),
        Command::RegisterIssuer(rec) => (
            "register-issuer",
            format!("issuer {} parent {:?}", rec.id, rec.parent),
            p.actor.clone(),
        ),
        Command::ApplyPolicy { text, actor, .. } => (
            "apply-policy",
            format!("{} bytes", text.len()),
            actor.clone(),
        ),
        Command::RollbackPolicy { to_version, actor } => (
            "rollback-policy",
            format!("to version {to_version}"),
            actor.clone(),
        ),
        Command::RecordDenial {
            identity,
            action,
            reason,
        } => ("denied", format!("{action}: {reason}"), identity.clone()),
        Command::ProposeChange { change, actor } => {
            ("propose-change", change.describe(), actor.clone())
        }
        Command::ApproveChange { id, actor } => {
            ("approve-change", format!("change {id}"), actor.clone())
        }
        Command::CreateToken(t) => (
            "create-token",
            format!(
                "namespace {} profile {} role {:?} expires {} ms, token sha256 {}",
                t.namespace,
                t.profile,
                t.role,
                t.expires_at_ms,
                &hex::encode(t.token_hash)[..16]
            ),
            t.actor.clone(),
        ),
        Command::RedeemToken {
            token_hash,
            identity,
            spki_hash,
        } => (
            "redeem-token",
            format!(
                "token sha256 {}, key sha256 {}",
                &hex::encode(token_hash)[..16],
                &hex::encode(spki_hash)[..16]
            ),
            identity.clone(),
        ),
        Command::RebindRole {
            identity,
            from_spki,
            to_spki,
        } => (
            "rebind-role",
            format!(
                "role of {identity} from key sha256 {} to {}",
                &hex::encode(from_spki)[..16],
                &hex::encode(to_spki)[..16]
            ),
            p.actor.clone(),
        ),
        Command::RemoveRoleBinding { identity } => (
            "remove-role-binding",
            format!("role of {identity}"),
            p.actor.clone(),
        ),
        Command::RevokeUnrecorded {
            issuer,
            serial,
            reason,
            ..
        } => (
            "revoke",
            format!("issuer {issuer} serial {serial} (a bootstrap identity) reason {reason:?}"),
            p.actor.clone(),
        ),
        Command::Hierarchy(change) => (
            match change {
                HierarchyChange::Rotate { .. } => "rotate",
                HierarchyChange::Retire { .. } => "retire-issuer",
                HierarchyChange::ForceRenew { .. } => "force-renew",
            },
            change.describe(),
            p.actor.clone(),
        ),
        Command::SetNodeLabels {
            node_id,
            region,
            zone,
        } => (
            "set-node-labels",
            format!("node {node_id} region {region} zone {zone}"),
            p.actor.clone(),
        ),
        _ => return,
    };
    let (denied, detail) = match outcome {
        Outcome::Rejected(r) => (true, format!("{detail}; rejected: {r}")),
        Outcome::ChangePending { id } => (false, format!("{detail}; pending as change {id}")),
        Outcome::PolicyApplied { version } => {
            (false, format!("{detail}; policy version {version}"))
        }
        _ => (matches!(p.command, Command::RecordDenial { .. }), detail),
    };
    let entry = AuditEntry {
        seq: state.audit_len,
        at_ms: p.at_ms,
        actor,
        action: action.into(),
        detail,
        denied,
        chain: hex::encode(state.audit_head),
    };
    let size = audit_entry_bytes(&entry);
    while !state.audit_log.is_empty()
        && (state.audit_log.len() >= MAX_AUDIT_ENTRIES
            || state.audit_bytes + size > MAX_AUDIT_BYTES)
    {
        let old = state.audit_log.pop_front().expect("not empty");
        state.audit_bytes -= audit_entry_bytes(&old);
        evicted.push(old);
    }
    state.audit_bytes += size;
    state.audit_log.push_back(entry);
}
