//! Revocation and OCSP: taking certificates out of service (one by issuer
//! and serial, one presented whole, every certificate of a compromised
//! key) and answering OCSP from this node's applied ledger.
//!
//! Who may revoke depends on the namespace of what is revoked, so the
//! record is looked up (through the leader) before the role check. A
//! certificate the ledger has no record of (a bootstrap identity) can be
//! revoked when presented whole; its namespace is none, so only admins and
//! operators may.

use quorumca_ca::{Action, OcspStatus};
use quorumca_consensus::now_ms;
use quorumca_ledger::{Command, Outcome, Proposal, Rejection, RevocationReason, Serial};

use crate::auth::Caller;
use crate::authority::{rejected, Authority};
use crate::error::AuthorityError;

/// What to revoke.
#[derive(Clone, Debug)]
pub enum RevokeTarget {
    /// A certificate of the cluster by its issuer and serial.
    Serial {
        /// The issuer's id.
        issuer: String,
        /// The serial, as in the certificate.
        serial: Vec<u8>,
    },
    /// The certificate itself, PEM or DER: its issuer is found in the
    /// hierarchy.
    Certificate(Vec<u8>),
}

/// A committed revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// The issuer of the revoked certificate.
    pub issuer: String,
    /// Its serial.
    pub serial: Vec<u8>,
    /// When it took effect, Unix ms (the first attempt's, for a retry).
    pub revoked_at_ms: u64,
    /// The log index of the revocation; 0 when this answered a retry.
    pub log_index: u64,
}

impl Authority {
    /// Revokes `target` for `caller`, if its roles allow revoking in the
    /// certificate's namespace. With an idempotency key (scoped to the
    /// caller here) a retry answers with the first attempt's revocation.
    pub async fn revoke_for(
        &self,
        caller: &Caller,
        target: RevokeTarget,
        reason: RevocationReason,
        idempotency_key: Option<&str>,
    ) -> Result<Revoked, AuthorityError> {
        let (issuer, serial, leaf) = match target {
            RevokeTarget::Serial { issuer, serial } => (issuer, serial, None),
            RevokeTarget::Certificate(pem_or_der) => {
                let der = quorumca_ca::first_certificate_der(&pem_or_der)?;
                let (issuer, leaf) = self.issuer_of(&der)?;
                (issuer, leaf.serial.clone(), Some(leaf))
            }
        };
        let namespace = self
            .namespace_of(&issuer, &serial)
            .await?
            .unwrap_or_default();
        self.authorize(
            caller,
            Action::Revoke {
                namespace: &namespace,
            },
        )?;
        let key = idempotency_key.map(|k| self.scoped_key(caller, k));
        let (revoked_at_ms, log_index) = match &leaf {
            Some(leaf) => {
                self.revoke_signed_leaf(&caller.identity, &issuer, leaf, reason, key.as_deref())
                    .await
            }
            None => {
                self.revoke_as(&caller.identity, &issuer, &serial, reason, key.as_deref())
                    .await
            }
        }?;
        Ok(Revoked {
            issuer,
            serial,
            revoked_at_ms,
            log_index,
        })
    }

    /// Revokes every live certificate of the public key in `key` (PEM or
    /// DER: a SubjectPublicKeyInfo, a private key or a certificate) for
    /// `caller`. Returns how many were newly revoked.
    pub async fn revoke_key_for(
        &self,
        caller: &Caller,
        key: &[u8],
        reason: RevocationReason,
    ) -> Result<usize, AuthorityError> {
        self.authorize(caller, Action::RevokeByKey)?;
        let spki = quorumca_ca::public_key_of(key)?;
        self.revoke_by_key_as(&caller.identity, &spki, reason).await
    }

    /// Revokes one certificate; returns when it was revoked (Unix ms) and
    /// the log index of the revocation.
    pub async fn revoke(
        &self,
        issuer: &str,
        serial: &[u8],
        reason: RevocationReason,
    ) -> Result<(u64, u64), AuthorityError> {
        self.revoke_with_key(issuer, serial, reason, None).await
    }

    /// Like [`Authority::revoke`]; with an idempotency key a retry of the
    /// same revocation answers with the first one's time instead of
    /// "already revoked" (log index 0 unless the retry was byte-identical).
    pub async fn revoke_with_key(
        &self,
        issuer: &str,
        serial: &[u8],
        reason: RevocationReason,
        idempotency_key: Option<&str>,
    ) -> Result<(u64, u64), AuthorityError> {
        self.revoke_as("", issuer, serial, reason, idempotency_key)
            .await
    }

    /// Like [`Authority::revoke_with_key`], recording `actor` in the audit
    /// log.
    pub async fn revoke_as(
        &self,
        actor: &str,
        issuer: &str,
        serial: &[u8],
        reason: RevocationReason,
        idempotency_key: Option<&str>,
    ) -> Result<(u64, u64), AuthorityError> {
        let mut p = Proposal::new(
            now_ms(),
            Command::Revoke {
                issuer: issuer.into(),
                serial: Serial(serial.to_vec()),
                reason,
                revoked_at_ms: now_ms(),
            },
        )
        .by(actor);
        p.idempotency_key = idempotency_key.map(String::from);
        match self.propose(p).await? {
            (Outcome::Revoked { revoked_at_ms, .. }, index) => Ok((revoked_at_ms, index)),
            (o @ Outcome::Rejected(Rejection::IdempotencyKeyConflict { .. }), _) => {
                let key = idempotency_key.expect("only keyed proposals conflict");
                let first = self
                    .node
                    .read_linearizable(|s| s.idempotent_outcome(key).cloned())
                    .await?;
                match first {
                    Some(Outcome::Revoked {
                        issuer: i,
                        serial: s,
                        revoked_at_ms,
                    }) if i == issuer && s.0 == serial => Ok((revoked_at_ms, 0)),
                    _ => Err(rejected(o)),
                }
            }
            (o, _) => Err(rejected(o)),
        }
    }

    /// The issuer of the cluster that signed `cert_der`, and what the
    /// certificate says; NOT_FOUND-style error when none of them did.
    pub fn issuer_of(
        &self,
        cert_der: &[u8],
    ) -> Result<(String, quorumca_ca::SignedLeaf), AuthorityError> {
        let issuers: Vec<(String, Vec<u8>)> = self.node.read_local(|s| {
            s.issuers()
                .map(|i| (i.id.clone(), i.cert_der.clone()))
                .collect()
        });
        let mut last = None;
        for (id, issuer_der) in issuers {
            match quorumca_ca::signed_leaf(&issuer_der, cert_der) {
                Ok(leaf) => return Ok((id, leaf)),
                Err(e) => last = Some(e),
            }
        }
        Err(AuthorityError::InvalidArgument(format!(
            "no issuer of this cluster signed the certificate{}",
            last.map(|e| format!(" (last check: {e})"))
                .unwrap_or_default()
        )))
    }

    /// Revokes a certificate `issuer` signed: as a recorded one when the
    /// ledger has its record, otherwise as an unrecorded one (a bootstrap
    /// identity), which every node then refuses as a client.
    pub async fn revoke_signed_leaf(
        &self,
        actor: &str,
        issuer: &str,
        leaf: &quorumca_ca::SignedLeaf,
        reason: RevocationReason,
        idempotency_key: Option<&str>,
    ) -> Result<(u64, u64), AuthorityError> {
        let serial = Serial(leaf.serial.clone());
        let recorded = self
            .node
            .read_linearizable({
                let (issuer, serial) = (issuer.to_string(), serial.clone());
                move |s| s.record(&issuer, &serial).is_some()
            })
            .await?;
        if recorded {
            return self
                .revoke_as(actor, issuer, &leaf.serial, reason, idempotency_key)
                .await;
        }
        let now = now_ms();
        let mut p = Proposal::new(
            now,
            Command::RevokeUnrecorded {
                issuer: issuer.into(),
                serial,
                not_after_ms: (leaf.not_after.max(0) as u64) * 1000,
                reason,
                revoked_at_ms: now,
            },
        )
        .by(actor);
        p.idempotency_key = idempotency_key.map(String::from);
        match self.propose(p).await? {
            (Outcome::Revoked { revoked_at_ms, .. }, index) => Ok((revoked_at_ms, index)),
            (o, _) => Err(rejected(o)),
        }
    }

    /// Revokes every live certificate for the public key in `spki_der` (a
    /// SubjectPublicKeyInfo, e.g. from a leaked key or one of its
    /// certificates): the key-compromise response. Returns how many were
    /// newly revoked.
    pub async fn revoke_by_key(
        &self,
        spki_der: &[u8],
        reason: RevocationReason,
    ) -> Result<usize, AuthorityError> {
        self.revoke_by_key_as("", spki_der, reason).await
    }

    /// Like [`Authority::revoke_by_key`], recording `actor` in the audit
    /// log.
    pub async fn revoke_by_key_as(
        &self,
        actor: &str,
        spki_der: &[u8],
        reason: RevocationReason,
    ) -> Result<usize, AuthorityError> {
        let spki_hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, spki_der)
            .as_ref()
            .try_into()
            .expect("32 bytes");
        let p = Proposal::new(
            now_ms(),
            Command::RevokeByKey {
                spki_hash,
                reason,
                revoked_at_ms: now_ms(),
            },
        )
        .by(actor);
        match self.propose(p).await?.0 {
            Outcome::RevokedByKey { revoked } => Ok(revoked.len()),
            o => Err(rejected(o)),
        }
    }

    /// Answers an OCSP request from this node's applied ledger.
    pub fn ocsp(&self, issuer: &str, request_der: &[u8]) -> Vec<u8> {
        // A retired issuer has no key to answer with, even if this node
        // still holds its signer until the next housekeeping pass.
        if self.node.read_local(|s| s.retired_at(issuer).is_some()) {
            return quorumca_ca::OcspError::NotOurIssuer.response_der();
        }
        let signer = match self.signer(issuer) {
            Ok(s) => s,
            Err(_) => return quorumca_ca::OcspError::NotOurIssuer.response_der(),
        };
        let now = now_ms() as i64 / 1000;
        let lookup = |serial: &[u8]| {
            let serial = Serial(serial.to_vec());
            self.node.read_local(|s| {
                match (s.record(issuer, &serial), s.revocation(issuer, &serial)) {
                    (_, Some(r)) => OcspStatus::Revoked {
                        at: (r.revoked_at_ms / 1000) as i64,
                        reason: r.reason.code(),
                    },
                    (Some(_), None) => OcspStatus::Good,
                    (None, None) => OcspStatus::Unknown,
                }
            })
        };
        match quorumca_ca::ocsp_respond(&signer, request_der, now, 3600, lookup) {
            Ok(der) => der,
            Err(e) => e.response_der(),
        }
    }
}
