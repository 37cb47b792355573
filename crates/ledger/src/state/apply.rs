//! The one entry point that changes the state: a proposal is unpacked (a
//! batch into its proposals), chained into the audit log, answered through
//! its idempotency key, and dispatched to the function of its command. Each
//! command's rules live with its domain (issuance, revocation, enrollment,
//! governance, hierarchy); this file only routes.

use super::{audit, enrollment, governance, hierarchy, idempotency, issuance, revocation};
use super::{invalid, State};
use crate::command::{AuditEntry, Command, Outcome, Proposal, MAX_PROPOSAL_BATCH};

/// Applies one proposal. Pure and deterministic: the same state and
/// proposal always give the same new state and outcome on every node.
pub fn apply(state: &mut State, proposal: &Proposal) -> Outcome {
    apply_evicting(state, proposal, &mut Vec::new())
}

/// [`apply`], handing the audit entries it evicts (over
/// [`MAX_AUDIT_ENTRIES`](super::MAX_AUDIT_ENTRIES) or
/// [`MAX_AUDIT_BYTES`](super::MAX_AUDIT_BYTES)) to `evicted`, oldest first,
/// so the node can archive them instead of losing them. Every node evicts
/// the same entries at the same index.
pub fn apply_evicting(
    state: &mut State,
    proposal: &Proposal,
    evicted: &mut Vec<AuditEntry>,
) -> Outcome {
    #[cfg(debug_assertions)]
    let before = state.audit_len;
    let outcome = match &proposal.command {
        Command::Batch(proposals) => apply_batch(state, proposals, evicted),
        _ => apply_one(state, proposal, evicted),
    };
    #[cfg(debug_assertions)]
    super::invariants::check_after(state, before);
    outcome
}

/// A batch leaves no trace of its own: the chain, the idempotency keys and
/// the outcomes are those of its proposals.
fn apply_batch(
    state: &mut State,
    proposals: &[Proposal],
    evicted: &mut Vec<AuditEntry>,
) -> Outcome {
    if proposals.is_empty() || proposals.len() > MAX_PROPOSAL_BATCH {
        return invalid(format!(
            "a batch holds 1 to {MAX_PROPOSAL_BATCH} proposals, got {}",
            proposals.len()
        ));
    }
    if proposals
        .iter()
        .any(|p| matches!(p.command, Command::Batch(_)))
    {
        return invalid("batches do not nest");
    }
    Outcome::Batch(
        proposals
            .iter()
            .map(|p| apply_one(state, p, evicted))
            .collect(),
    )
}

/// One proposal that is not a batch. A retry answered from its idempotency
/// key extends the chain (it was proposed) but files no second audit entry.
fn apply_one(state: &mut State, proposal: &Proposal, evicted: &mut Vec<AuditEntry>) -> Outcome {
    audit::extend_chain(state, proposal);
    idempotency::expire(state, proposal.at_ms);
    idempotency::idempotent(
        state,
        proposal.idempotency_key.as_deref(),
        || idempotency::command_digest(&proposal.command),
        proposal.at_ms,
        |state| {
            let outcome = command(state, &proposal.command, proposal.at_ms);
            audit::record(state, proposal, &outcome, evicted);
            outcome
        },
    )
}

/// Routes a command to its domain. Also applies the command an approved
/// change carries, which is why it is not private to [`apply_one`].
pub(super) fn command(state: &mut State, command: &Command, at_ms: u64) -> Outcome {
    match command {
        // Unpacked by `apply_evicting`, so only reached when nested.
        Command::Batch(_) => invalid("batches do not nest"),
        Command::SetNodeLabels {
            node_id,
            region,
            zone,
        } => governance::set_node_labels(state, *node_id, region, zone),
        Command::GrantSerialLease {
            node_id,
            issuer,
            block,
            expires_at_ms,
        } => issuance::grant_serial_lease(state, *node_id, issuer, *block, *expires_at_ms),
        Command::RecordIssuance(record) => issuance::record_issuance(state, record),
        Command::RecordIssuances(records) => issuance::record_issuances(state, records, at_ms),
        Command::PruneExpired { before_ms } => issuance::prune_expired(state, *before_ms),
        Command::Revoke {
            issuer,
            serial,
            reason,
            revoked_at_ms,
        } => revocation::revoke(state, issuer, serial, *reason, *revoked_at_ms),
        Command::RevokeByKey {
            spki_hash,
            reason,
            revoked_at_ms,
        } => revocation::revoke_by_key(state, spki_hash, *reason, *revoked_at_ms),
        Command::RevokeUnrecorded {
            issuer,
            serial,
            not_after_ms,
            reason,
            revoked_at_ms,
        } => revocation::revoke_unrecorded(
            state,
            issuer,
            serial,
            *not_after_ms,
            *reason,
            *revoked_at_ms,
        ),
        Command::NextCrlNumber { issuer } => revocation::next_crl_number(state, issuer),
        Command::Noop { .. } => Outcome::Noop,
        Command::Hierarchy(change) => hierarchy::apply(state, change, at_ms),
        Command::RegisterIssuer(rec) => governance::register_issuer(state, rec),
        Command::ApplyPolicy {
            text,
            actor,
            expected_version,
        } => governance::apply_policy(state, text, actor, *expected_version, at_ms),
        Command::RollbackPolicy { to_version, actor } => {
            governance::rollback_policy(state, *to_version, actor, at_ms)
        }
        // The entry `audit::record` files is the whole effect.
        Command::RecordDenial { .. } => Outcome::Audited,
        Command::ProposeChange { change, actor } => {
            governance::propose_change(state, change, actor, at_ms)
        }
        Command::ApproveChange { id, actor } => {
            governance::approve_change(state, *id, actor, at_ms)
        }
        Command::CreateToken(t) => enrollment::create_token(state, t, at_ms),
        Command::RedeemToken {
            token_hash,
            identity,
            spki_hash,
        } => enrollment::redeem_token(state, token_hash, identity, spki_hash, at_ms),
        Command::RebindRole {
            identity,
            from_spki,
            to_spki,
        } => enrollment::rebind_role(state, identity, from_spki, to_spki),
        Command::RemoveRoleBinding { identity } => enrollment::remove_role_binding(state, identity),
    }
}
