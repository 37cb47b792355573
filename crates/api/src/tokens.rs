//! Join tokens: how a workload with no certificate yet gets its first one.
//!
//! An admin creates a token bound to a namespace, a profile and optionally
//! a role; the ledger keeps only its hash. The workload presents it once,
//! with a CSR, on the enrolment port (the only listener that admits
//! callers without a client certificate). From then on it renews with the
//! certificate it got. A role the token carries is bound to that
//! certificate's key (see [`quorumca_ledger::Enrollment`]): it follows the
//! key through renewals and goes when the certificate is revoked or
//! expires; its identity is reserved meanwhile.

use std::time::Duration;

use quorumca_consensus::now_ms;
use quorumca_ledger::{Command, JoinToken, Outcome, Proposal, Rejection};

use crate::auth::Caller;
use crate::authority::{rejected, Authority};
use crate::error::AuthorityError;
use crate::issuance::{IssueRequest, Issued};

/// Default and longest token validity.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Tokens live at most a day: a leaked token is a way in until it expires or is used.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Prefix of every token, so one found in a log or a paste is recognisable
/// (and greppable by secret scanners).
const TOKEN_PREFIX: &str = "qca_jt_";

/// One audit budget for every refused enrolment: the callers have no
/// identity, and a token guesser must not flood the log.
const ENROLMENT_DENIALS: &str = "denials of enrolments";

fn token_hash(token: &str) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes())
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

impl Authority {
    /// Creates a join token; returns the secret (shown once) and when it
    /// expires.
    pub async fn create_token(
        &self,
        caller: &Caller,
        namespace: &str,
        profile: &str,
        role: Option<&str>,
        ttl: Duration,
    ) -> Result<(String, u64), AuthorityError> {
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(AuthorityError::InvalidArgument(format!(
                "a token lives at most {MAX_TOKEN_TTL:?}, got {ttl:?}"
            )));
        }
        if let Some(r) = role {
            if r != "issuer" {
                return Err(AuthorityError::InvalidArgument(format!(
                    "a token can carry the issuer role or none, not {r:?}; grant other roles in the policy"
                )));
            }
        }
        let policy = self.local_policy();
        let ns = policy.namespaces.get(namespace).ok_or_else(|| {
            AuthorityError::Policy(quorumca_ca::PolicyError::UnknownNamespace(namespace.into()))
        })?;
        let profile = if profile.is_empty() {
            ns.profiles.first().cloned().unwrap_or_default()
        } else if ns.profiles.iter().any(|p| p == profile) {
            profile.to_string()
        } else {
            return Err(AuthorityError::Policy(
                quorumca_ca::PolicyError::ProfileNotAllowed {
                    namespace: namespace.into(),
                    profile: profile.into(),
                },
            ));
        };
        let secret: [u8; 32] = self.random()?;
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
        let expires_at_ms = now_ms() + ttl.as_millis() as u64;
        let p = Proposal::new(
            now_ms(),
            Command::CreateToken(JoinToken {
                token_hash: token_hash(&token),
                namespace: namespace.into(),
                profile,
                role: role.map(String::from),
                expires_at_ms,
                actor: caller.identity.clone(),
            }),
        )
        .by(&caller.identity);
        match self.propose(p).await?.0 {
            Outcome::TokenCreated => Ok((token, expires_at_ms)),
            o => Err(rejected(o)),
        }
    }

    /// Redeems `token` for a first certificate. The CSR is checked against
    /// the token's namespace before the token is used up, so a mistake in
    /// the CSR does not burn it. A retry after a lost answer (same token,
    /// same key) gets the certificate the first attempt recorded: the
    /// token's hash is the issuance's idempotency key.
    pub async fn enroll(
        &self,
        token: &str,
        csr: Vec<u8>,
        lifetime: Option<Duration>,
    ) -> Result<Issued, AuthorityError> {
        let hash = token_hash(token);
        let label = format!("join token {}", &hex::encode(hash)[..16]);
        let key = format!("enroll#{}", hex::encode(hash));
        let answered = self
            .node
            .read_linearizable({
                let key = key.clone();
                move |s| s.idempotent_outcome(&key).is_some()
            })
            .await?;
        if answered {
            // Only the replay path of issue runs: it answers with the
            // recorded certificate; another key means the token is spent.
            return self
                .issue(IssueRequest {
                    csr,
                    namespace: String::new(),
                    profile: String::new(),
                    lifetime,
                    actor: label.clone(),
                    idempotency_key: Some(key),
                })
                .await
                .map_err(|e| match e {
                    AuthorityError::Rejected(Rejection::IdempotencyKeyConflict { .. }) => {
                        self.audit_denial_as(
                            ENROLMENT_DENIALS,
                            &label,
                            "enroll",
                            "token already used",
                        );
                        AuthorityError::Rejected(Rejection::TokenNotUsable)
                    }
                    e => e,
                });
        }
        let now = now_ms();
        let found = self
            .node
            .read_linearizable(move |s| s.token(&hash, now).cloned())
            .await?;
        let Some(t) = found else {
            self.audit_denial_as(
                ENROLMENT_DENIALS,
                &label,
                "enroll",
                "unknown, used or expired token",
            );
            return Err(AuthorityError::Rejected(Rejection::TokenNotUsable));
        };
        let verified = quorumca_ca::parse_csr(&csr)?;
        let policy = self.local_policy();
        policy.decide(
            &t.namespace,
            &t.profile,
            &verified,
            lifetime,
            now as i64 / 1000,
        )?;
        let identity = verified
            .names
            .uris
            .iter()
            .find(|u| u.starts_with("spiffe://"))
            .cloned();
        let identity = match (&t.role, identity) {
            (_, Some(id)) => id,
            (None, None) => label.clone(),
            (Some(role), None) => {
                return Err(AuthorityError::InvalidArgument(format!(
                    "this token carries the {role} role, which is bound to the identity in the CSR: add a spiffe:// URI SAN"
                )))
            }
        };
        // An identity that holds a token-bound role is reserved for the
        // certificate holding it. Checked here to answer before the token
        // is touched; the ledger checks again when redeeming, so two
        // racing enrolments cannot both pass.
        let reserved = self
            .node
            .read_linearizable({
                let identity = identity.clone();
                move |s| s.enrollment(&identity).is_some()
            })
            .await?;
        let refuse_reserved = |identity: &str| {
            self.audit_denial_as(
                ENROLMENT_DENIALS,
                &label,
                "enroll",
                &format!("identity {identity:?} is reserved by a token-bound role"),
            );
            AuthorityError::Rejected(Rejection::IdentityReserved {
                identity: identity.into(),
            })
        };
        if reserved {
            return Err(refuse_reserved(&identity));
        }
        let spki_hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &verified.spki_der)
            .as_ref()
            .try_into()
            .expect("32 bytes");
        let p = Proposal::new(
            now_ms(),
            Command::RedeemToken {
                token_hash: hash,
                identity: identity.clone(),
                spki_hash,
            },
        )
        .by(&identity);
        match self.propose(p).await?.0 {
            Outcome::TokenRedeemed(_) => {}
            Outcome::Rejected(Rejection::IdentityReserved { identity }) => {
                return Err(refuse_reserved(&identity));
            }
            o => {
                self.audit_denial_as(
                    ENROLMENT_DENIALS,
                    &label,
                    "enroll",
                    "token used up meanwhile",
                );
                return Err(rejected(o));
            }
        }
        self.issue(IssueRequest {
            csr,
            namespace: t.namespace,
            profile: t.profile,
            lifetime,
            actor: identity,
            idempotency_key: Some(key),
        })
        .await
    }
}

impl Authority {
    /// Every role granted by a join token, with the key that holds it.
    pub fn role_bindings(&self) -> Vec<quorumca_ledger::Enrollment> {
        self.node.read_local(|s| s.enrollments().cloned().collect())
    }

    /// Withdraws the token-bound role of `identity` (an admin's call).
    pub async fn remove_role_binding(
        &self,
        actor: &str,
        identity: &str,
    ) -> Result<quorumca_ledger::Enrollment, AuthorityError> {
        let p = Proposal::new(
            now_ms(),
            Command::RemoveRoleBinding {
                identity: identity.into(),
            },
        )
        .by(actor);
        match self.propose(p).await?.0 {
            Outcome::RoleBindingRemoved(e) => Ok(e),
            o => Err(rejected(o)),
        }
    }
}
