//! Who is calling, and may they: the client certificate's identity, the
//! roles policy grants it, and an audit record for every refusal.
//!
//! TLS has already verified the certificate chains to the cluster's roots
//! (a caller without one never reaches a service); here the identity is
//! read from it and checked against `[[grants]]` in the current policy,
//! plus the break-glass admins named in node.toml.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quorumca_ca::{authorize, presented_cert, Action, Policy, PresentedCert, Rate};
use quorumca_consensus::{now_ms, ClusterGate, ClusterOp};
use quorumca_ledger::{Command, Proposal};
use rustls_pki_types::CertificateDer;

use crate::authority::Authority;
use crate::error::AuthorityError;

/// How callers are told apart.
#[derive(Clone, Debug)]
pub enum Access {
    /// No TLS: every caller may do everything. Only for in-process tests
    /// and clusters whose node.toml says `insecure_plaintext = true`.
    Open,
    /// mTLS: identities from client certificates, roles from policy.
    Mtls {
        /// Identities (or `prefix/*` patterns) that are admins whatever the
        /// policy says, so the first policy can be applied and a broken
        /// one repaired.
        admins: Vec<String>,
    },
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Its SPIFFE ID (`unauthenticated@<address>` with [`Access::Open`]).
    pub identity: String,
    /// The leaf certificate it presented (None with [`Access::Open`]).
    pub cert_der: Option<Vec<u8>>,
    /// SHA-256 of that certificate's public key: a role a join token
    /// granted holds only for the key it was granted to.
    pub spki_hash: Option<[u8; 32]>,
}

/// What telling callers apart keeps between requests.
#[derive(Default)]
pub(crate) struct Callers {
    /// Client certificates already read, by their DER: a client sends the
    /// same one on every request of its connection, and parsing it cost
    /// about 4 % of an issuance. Keyed by content, never by connection, so
    /// an entry can only ever describe the exact bytes presented.
    presented: Mutex<HashMap<Vec<u8>, PresentedCert>>,
    /// Refusals over the audit budget since the last recorded one; the
    /// next record says how many.
    denials_unrecorded: AtomicU64,
}

/// Denials recorded per identity and second: a refused client in a retry
/// loop must not turn into a flood of log entries. The refusals beyond it
/// are still refused, and logged locally.
const DENIAL_RECORDS: Rate = Rate {
    per_second: 1.0,
    burst: 5.0,
};

/// Denials this node records per second across every identity: an issuer
/// can mint identities, so the per-identity budget alone does not bound
/// the log. Every node has its own, so the cluster records at most the
/// number of nodes times this; what it does not record is counted and the
/// count goes into the next record.
const ALL_DENIAL_RECORDS: Rate = Rate {
    per_second: 10.0,
    burst: 50.0,
};

/// Budget key of [`ALL_DENIAL_RECORDS`] (never an identity's: those are
/// `denials of "..."`).
const ALL_DENIALS: &str = "denials of every identity";

/// Longest identity, action and reason a denial record keeps, in bytes:
/// the record is about the refusal, and must not carry a caller's payload
/// into the replicated log.
pub(crate) const DENIAL_FIELD_BYTES: usize = 512;

/// `s` cut to at most `max` bytes at a character boundary, marked when cut.
pub(crate) fn capped(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

impl Authority {
    /// The caller behind a request's TLS session.
    pub fn caller(
        &self,
        peer_certs: Option<&[CertificateDer<'static>]>,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<Caller, AuthorityError> {
        match &self.cfg.access {
            Access::Open => Ok(Caller {
                identity: match remote {
                    Some(a) => format!("unauthenticated@{a}"),
                    None => "unauthenticated".into(),
                },
                cert_der: None,
                spki_hash: None,
            }),
            Access::Mtls { .. } => {
                let leaf = peer_certs.and_then(|c| c.first()).ok_or_else(|| {
                    AuthorityError::Unauthenticated(
                        "no client certificate: connect with the credential bundle (QUORUMCA_CREDENTIALS or --credentials)".into(),
                    )
                })?;
                let presented = self.presented_cert(leaf.as_ref()).ok_or_else(|| {
                    AuthorityError::Unauthenticated(
                        "the client certificate has neither a spiffe:// URI SAN nor a common name"
                            .into(),
                    )
                })?;
                let (identity, spki_hash) = (presented.identity, presented.spki_hash);
                // TLS checked the chain and validity; revocation is ours to
                // check. Certificates made outside the ledger (bootstrap
                // identities) have no record and pass.
                if self.revoked(presented.serial) {
                    self.audit_denial(
                        &identity,
                        "authenticate",
                        "the client certificate is revoked",
                    );
                    return Err(AuthorityError::Unauthenticated(format!(
                        "the client certificate of {identity} is revoked; get a new one"
                    )));
                }
                Ok(Caller {
                    identity,
                    cert_der: Some(leaf.as_ref().to_vec()),
                    spki_hash: Some(spki_hash),
                })
            }
        }
    }

    /// The identity and serial of a client certificate, parsed once per
    /// distinct certificate. The cache is bounded: when full it starts
    /// over, which costs one parse per client.
    fn presented_cert(&self, der: &[u8]) -> Option<PresentedCert> {
        const MOST_CACHED: usize = 4096;
        let mut cache = self.callers.presented.lock().expect("presented cache");
        if let Some(p) = cache.get(der) {
            return Some(p.clone());
        }
        let p = presented_cert(der)?;
        if cache.len() >= MOST_CACHED {
            cache.clear();
        }
        cache.insert(der.to_vec(), p.clone());
        Some(p)
    }

    /// Whether this node's ledger lists a certificate with this serial as
    /// revoked.
    fn revoked(&self, serial: Vec<u8>) -> bool {
        let serial = quorumca_ledger::Serial(serial);
        self.node
            .read_local(|s| s.issuers().any(|i| s.revocation(&i.id, &serial).is_some()))
    }

    /// An idempotency key in the caller's own space: another identity
    /// reusing (or guessing) it neither collides with it nor gets its
    /// certificate back. Unscoped without TLS, where identities are not
    /// stable across connections.
    pub fn scoped_key(&self, caller: &Caller, key: &str) -> String {
        match self.cfg.access {
            Access::Open => key.to_string(),
            Access::Mtls { .. } => scope_idempotency_key(&caller.identity, key),
        }
    }

    /// The policy as this node has it, or an empty one before the first
    /// is applied (break-glass admins still hold every right). A policy
    /// that does not parse (it was validated before it was proposed)
    /// grants nothing beyond them either.
    pub(crate) fn local_policy(&self) -> Arc<Policy> {
        self.cached_policy()
            .ok()
            .flatten()
            .unwrap_or_else(|| Arc::new(Policy::default()))
    }

    /// Whether `caller` may do `action`; a refusal is audited.
    pub fn authorize(&self, caller: &Caller, action: Action) -> Result<(), AuthorityError> {
        let Access::Mtls { admins } = &self.cfg.access else {
            return Ok(());
        };
        let policy = self.local_policy();
        // A role from a join token counts only for the certificate it was
        // bound to: another certificate naming the same identity (which
        // an issuer of the namespace could mint) holds nothing from it.
        let enrolled = self.node.read_local(|s| {
            s.enrollment(&caller.identity)
                .filter(|e| Some(e.spki_hash) == caller.spki_hash)
                .and_then(|e| {
                    Some(quorumca_ca::Grant {
                        identity: e.identity.clone(),
                        role: quorumca_ca::Role::parse(&e.role)?,
                        namespaces: vec![e.namespace.clone()],
                    })
                })
        });
        authorize(
            &policy,
            admins,
            enrolled.as_ref(),
            &caller.identity,
            &action,
        )
        .map_err(|denied| {
            self.audit_denial(&caller.identity, &denied.action, &denied.why);
            AuthorityError::Denied(denied)
        })
    }

    /// Records a refusal in the ledger's audit log, without making the
    /// refused caller wait for it.
    pub fn audit_denial(&self, identity: &str, action: &str, reason: &str) {
        self.audit_denial_as(
            &format!("denials of {identity:?}"),
            identity,
            action,
            reason,
        )
    }

    /// Like [`Authority::audit_denial`], budgeted under `budget` (callers
    /// without a stable identity, such as enrolments, share one budget, so
    /// guessing tokens cannot flood the log).
    pub(crate) fn audit_denial_as(&self, budget: &str, identity: &str, action: &str, reason: &str) {
        let (identity, action) = (
            capped(identity, DENIAL_FIELD_BYTES),
            capped(action, DENIAL_FIELD_BYTES),
        );
        let mut reason = capped(reason, DENIAL_FIELD_BYTES);
        tracing::info!(identity, action, reason, "denied");
        if let Access::Open = self.cfg.access {
            return;
        }
        let budgets = [
            (capped(budget, DENIAL_FIELD_BYTES), DENIAL_RECORDS),
            (ALL_DENIALS.to_string(), ALL_DENIAL_RECORDS),
        ];
        if self.limiter.take(&budgets, Instant::now()).is_err() {
            self.callers
                .denials_unrecorded
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let skipped = self.callers.denials_unrecorded.swap(0, Ordering::Relaxed);
        if skipped > 0 {
            reason.push_str(&format!(
                " [{skipped} refusal(s) on this node before this one were over the audit budget and not recorded]"
            ));
        }
        let p = Proposal::new(
            now_ms(),
            Command::RecordDenial {
                identity: identity.clone(),
                action,
                reason,
            },
        )
        .by(identity);
        let node = self.node.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let r = tokio::time::timeout(Duration::from_secs(10), node.propose(p)).await;
                if !matches!(r, Ok(Ok(_))) {
                    tracing::warn!("a denial could not be written to the audit log");
                }
            });
        }
    }
}

/// The ledger's key for `identity`'s idempotency key `key`: the identity's
/// length, then the identity, then the key. Length-prefixed so the pair can
/// be read back unambiguously: with a plain separator, identity `.../x` with
/// key `y#k1` and identity `.../x#y` with key `k1` were one key, and one
/// caller could make another's retries fail. A scoped key starts with a
/// digit, so it never meets the enrolment keys (`enroll#<token hash>`).
pub(crate) fn scope_idempotency_key(identity: &str, key: &str) -> String {
    format!("{}:{identity}#{key}", identity.len())
}

/// The gate in front of the Cluster service on the API port.
pub struct Gate(pub Arc<Authority>);

impl ClusterGate for Gate {
    fn check(
        &self,
        peer_certs: Option<&[CertificateDer<'static>]>,
        op: ClusterOp,
        method: &'static str,
    ) -> Result<(), tonic::Status> {
        let caller = self
            .0
            .caller(peer_certs, None)
            .map_err(tonic::Status::from)?;
        let action = match op {
            ClusterOp::Read => Action::ReadCluster,
            ClusterOp::Change => Action::ChangeCluster,
        };
        self.0.authorize(&caller, action).map_err(|e| {
            let mut s = tonic::Status::from(e);
            s.metadata_mut()
                .insert("quorumca-method", method.parse().expect("ascii"));
            s
        })
    }
}

#[cfg(test)]
mod tests {
    use super::scope_idempotency_key;
    use proptest::prelude::*;

    /// Security hardening 6: the two pairs that collided under
    /// `identity#key`.
    #[test]
    fn keys_of_identities_that_share_a_prefix_do_not_collide() {
        let a = scope_idempotency_key("spiffe://td/ns/a/x", "y#k1");
        let b = scope_idempotency_key("spiffe://td/ns/a/x#y", "k1");
        assert_ne!(a, b);
        assert!(!a.starts_with("enroll#"));
    }

    proptest! {
        /// Injective: two different (identity, key) pairs never give the
        /// same scoped key, whatever characters either holds.
        #[test]
        fn scoping_is_injective(
            i1 in "[a-z#:/0-9]{0,12}", k1 in "[a-z#:/0-9]{0,12}",
            i2 in "[a-z#:/0-9]{0,12}", k2 in "[a-z#:/0-9]{0,12}",
        ) {
            if (i1.as_str(), k1.as_str()) != (i2.as_str(), k2.as_str()) {
                prop_assert_ne!(scope_idempotency_key(&i1, &k1), scope_idempotency_key(&i2, &k2));
            }
        }
    }
}
