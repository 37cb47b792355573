//! Join tokens and the roles they bind. A token is used once; the role it
//! carries is bound to the key of the certificate it enrolled (its SPKI
//! hash), moves with Renew, and goes when that key is revoked or has no
//! certificate left (see `issuance::prune_expired`).

use super::{invalid, State};
use crate::command::{Enrollment, JoinToken, Outcome, Rejection};

/// How long a token-bound role survives without a live certificate for its
/// key: the certificate is issued right after the token is redeemed, and a
/// prune in between must not take the role away from it.
pub const ENROLLMENT_GRACE_MS: u64 = 10 * 60 * 1000;

pub(super) fn create_token(state: &mut State, t: &JoinToken, at_ms: u64) -> Outcome {
    if t.namespace.is_empty() || t.expires_at_ms <= at_ms {
        return invalid("a join token needs a namespace and an expiry in the future");
    }
    // Expired tokens go whenever a new one is filed: the map stays the size
    // of what is usable.
    state.tokens.retain(|_, old| old.expires_at_ms > at_ms);
    if state.tokens.contains_key(&t.token_hash) {
        return invalid("a token with this hash exists");
    }
    state.tokens.insert(t.token_hash, t.clone());
    Outcome::TokenCreated
}

pub(super) fn redeem_token(
    state: &mut State,
    token_hash: &[u8; 32],
    identity: &str,
    spki_hash: &[u8; 32],
    at_ms: u64,
) -> Outcome {
    let usable = state
        .tokens
        .get(token_hash)
        .is_some_and(|t| t.expires_at_ms > at_ms);
    if !usable {
        // An expired token goes now rather than at the next filing.
        state.tokens.remove(token_hash);
        return Outcome::Rejected(Rejection::TokenNotUsable);
    }
    // Checked before the token is used up: a reserved identity is the
    // enrollee's mistake (or an attack), and the token stays.
    if state.enrollments.contains_key(identity) {
        return Outcome::Rejected(Rejection::IdentityReserved {
            identity: identity.to_string(),
        });
    }
    let t = state.tokens.remove(token_hash).expect("checked usable");
    if let Some(role) = &t.role {
        state.enrollments.insert(
            identity.to_string(),
            Enrollment {
                identity: identity.to_string(),
                role: role.clone(),
                namespace: t.namespace.clone(),
                enrolled_at_ms: at_ms,
                spki_hash: *spki_hash,
            },
        );
    }
    Outcome::TokenRedeemed(t)
}

/// Renew moves a role from the old certificate's key to the new one's, once
/// the new certificate is recorded.
pub(super) fn rebind_role(
    state: &mut State,
    identity: &str,
    from_spki: &[u8; 32],
    to_spki: &[u8; 32],
) -> Outcome {
    let has_live_cert = state.key_index.contains_key(to_spki);
    match state.enrollments.get_mut(identity) {
        Some(e) if e.spki_hash == *to_spki => Outcome::RoleRebound,
        Some(e) if e.spki_hash == *from_spki && has_live_cert => {
            e.spki_hash = *to_spki;
            Outcome::RoleRebound
        }
        Some(_) => invalid(format!(
            "the role of {identity} is not bound to the renewed certificate's key, or the new key has no certificate"
        )),
        None => Outcome::Rejected(Rejection::NoRoleBinding {
            identity: identity.to_string(),
        }),
    }
}

pub(super) fn remove_role_binding(state: &mut State, identity: &str) -> Outcome {
    match state.enrollments.remove(identity) {
        Some(e) => Outcome::RoleBindingRemoved(e),
        None => Outcome::Rejected(Rejection::NoRoleBinding {
            identity: identity.to_string(),
        }),
    }
}
