//! Issuance: the decision, the serial, the signature and the record, for
//! a CSR from an authenticated caller (or a renewal of the certificate it
//! presented). A certificate is returned only once its record is committed
//! on a quorum; a retry with the same idempotency key answers with the
//! certificate recorded first.

use std::time::Duration;

use quorumca_ca::{parse_csr, pem_encode, LeafSpec, RecordForm};
use quorumca_consensus::now_ms;
use quorumca_ledger::{Command, IssuanceRecord, Outcome, Proposal, Rejection, Serial};

use crate::authority::{rejected, Authority};
use crate::error::AuthorityError;

/// A request to issue, after authentication (the caller's identity is
/// `actor`).
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// The PKCS#10 request, PEM or DER.
    pub csr: Vec<u8>,
    /// The namespace whose names it asks for.
    pub namespace: String,
    /// The profile to issue under.
    pub profile: String,
    /// A lifetime other than the profile's default, up to its maximum.
    pub lifetime: Option<Duration>,
    /// Who asks (recorded with the certificate and in the audit chain).
    pub actor: String,
    /// A retry with the same key never issues twice.
    pub idempotency_key: Option<String>,
}

/// What an authenticated caller asks to be issued (the requester is the
/// caller; see [`Authority::issue_for`]).
#[derive(Clone, Debug)]
pub struct IssueArgs {
    /// The PKCS#10 request, PEM or DER.
    pub csr: Vec<u8>,
    /// The namespace whose names it asks for.
    pub namespace: String,
    /// The profile to issue under.
    pub profile: String,
    /// A lifetime other than the profile's default, up to its maximum.
    pub lifetime: Option<Duration>,
    /// The caller's own key; scoped to the caller before use.
    pub idempotency_key: Option<String>,
}

/// A certificate, committed to the ledger before it is returned.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The issuer that signed it.
    pub issuer: String,
    /// Its serial.
    pub serial: Vec<u8>,
    /// The leaf, DER.
    pub cert_der: Vec<u8>,
    /// The leaf alone, PEM.
    pub cert_pem: String,
    /// Leaf, intermediate: what a TLS server presents.
    pub chain_pem: String,
    /// The log index of its record (0 when answering a retry).
    pub log_index: u64,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// True when this answers a retry: the certificate is the one the
    /// first attempt with the same idempotency key recorded (and
    /// `log_index` is 0).
    pub replayed: bool,
    /// The namespace it was issued in.
    pub namespace: String,
}

impl Authority {
    /// The certificate a first attempt with idempotency key `key` recorded,
    /// if there was one: a retry after a lost answer (possibly sent to
    /// another node) gets the same certificate, never a second one. A key
    /// already used for another request or another public key is refused.
    pub(crate) async fn replay(
        &self,
        key: &str,
        spki_hash: &[u8; 32],
        linearizable: bool,
    ) -> Result<Option<Issued>, AuthorityError> {
        let conflict = || {
            AuthorityError::Rejected(Rejection::IdempotencyKeyConflict {
                key: key.to_string(),
            })
        };
        let find = |s: &quorumca_ledger::State| match s.idempotent_outcome(key) {
            None => None,
            Some(Outcome::IssuanceRecorded { issuer, serial }) => {
                Some(s.record(issuer, serial).cloned())
            }
            Some(_) => Some(None),
        };
        let found = if linearizable {
            self.node.read_linearizable(find).await?
        } else {
            self.node.read_local(find)
        };
        let record = match found {
            None => return Ok(None),
            Some(None) => return Err(conflict()),
            Some(Some(found)) => found,
        };
        if record.spki_hash != *spki_hash {
            return Err(conflict());
        }
        let cert_der = record.full_der.ok_or_else(|| {
            AuthorityError::Internal("a keyed issuance was recorded without its certificate".into())
        })?;
        let cert_pem = pem_encode("CERTIFICATE", &cert_der);
        Ok(Some(Issued {
            chain_pem: cert_pem.clone() + &self.chain_tail(&record.issuer),
            cert_pem,
            namespace: record.namespace,
            issuer: record.issuer,
            serial: record.serial.0,
            cert_der,
            log_index: 0,
            not_before: (record.not_before_ms / 1000) as i64,
            not_after: (record.not_after_ms / 1000) as i64,
            replayed: true,
        }))
    }

    /// Issues a certificate for a CSR. With an idempotency key, retries are
    /// safe: every attempt with the same key and key pair answers with the
    /// one certificate recorded first.
    pub async fn issue(&self, req: IssueRequest) -> Result<Issued, AuthorityError> {
        self.issue_checked(req, None).await
    }

    /// Issues for an authenticated caller, if its roles allow issuing in
    /// the namespace. A refusal for a name or profile outside the
    /// namespace is audited like a role refusal. The idempotency key is
    /// scoped to the caller, so one caller's key never answers another's.
    pub async fn issue_for(
        &self,
        caller: &crate::auth::Caller,
        args: IssueArgs,
    ) -> Result<Issued, AuthorityError> {
        // Names first: a refusal below is audited and names the namespace,
        // which must not be an unbounded string of the caller's choosing.
        quorumca_ca::check_name("namespace", &args.namespace)?;
        if !args.profile.is_empty() {
            quorumca_ca::check_name("profile", &args.profile)?;
        }
        self.authorize(
            caller,
            quorumca_ca::Action::Issue {
                namespace: &args.namespace,
            },
        )?;
        let what = format!("issue in namespace {:?}", args.namespace);
        let req = IssueRequest {
            csr: args.csr,
            namespace: args.namespace,
            profile: args.profile,
            lifetime: args.lifetime,
            actor: caller.identity.clone(),
            idempotency_key: args.idempotency_key.map(|k| self.scoped_key(caller, &k)),
        };
        let issued = self.issue(req).await;
        issued.map_err(|e| self.audit_policy_refusal(caller, &what, e))
    }

    /// [`Authority::renew`] with the caller's idempotency key scoped to it,
    /// and policy refusals audited.
    pub async fn renew_for(
        &self,
        caller: &crate::auth::Caller,
        csr: Vec<u8>,
        lifetime: Option<Duration>,
        idempotency_key: Option<String>,
    ) -> Result<Issued, AuthorityError> {
        let key = idempotency_key.map(|k| self.scoped_key(caller, &k));
        let issued = self.renew(caller, csr, lifetime, key).await;
        issued.map_err(|e| self.audit_policy_refusal(caller, "renew", e))
    }

    /// Audits a policy refusal (a name or profile outside the namespace);
    /// role refusals ([`AuthorityError::Denied`]) were audited when made.
    fn audit_policy_refusal(
        &self,
        caller: &crate::auth::Caller,
        what: &str,
        e: AuthorityError,
    ) -> AuthorityError {
        if e.code() == crate::error::StatusCode::PermissionDenied
            && !matches!(e, AuthorityError::Denied(_))
        {
            self.audit_denial(&caller.identity, what, &e.to_string());
        }
        e
    }

    /// Renews the certificate `caller` presented over mTLS: a new
    /// certificate for the new CSR's key, in the old one's namespace and
    /// profile, with exactly its names. The old one must be live (in the
    /// ledger, unrevoked); holding it is the authority, no grant needed.
    pub async fn renew(
        &self,
        caller: &crate::auth::Caller,
        csr: Vec<u8>,
        lifetime: Option<Duration>,
        idempotency_key: Option<String>,
    ) -> Result<Issued, AuthorityError> {
        let denied = |why: &str| {
            self.audit_denial(&caller.identity, "renew", why);
            AuthorityError::Denied(quorumca_ca::Denied {
                identity: caller.identity.clone(),
                action: "renew".into(),
                why: why.into(),
            })
        };
        let Some(der) = &caller.cert_der else {
            return Err(AuthorityError::InvalidArgument(
                "Renew needs the certificate being renewed as the mTLS client certificate; this node runs without TLS".into(),
            ));
        };
        let (serial, spki) = quorumca_ca::certificate_serial_and_spki(der)?;
        let spki_hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &spki)
            .as_ref()
            .try_into()
            .expect("32 bytes");
        let serial = Serial(serial);
        let found = self
            .node
            .read_linearizable(move |s| {
                s.issuers()
                    .filter_map(|i| s.record(&i.id, &serial))
                    .find(|r| r.spki_hash == spki_hash)
                    .map(|r| (r.clone(), s.revocation(&r.issuer, &r.serial).is_some()))
            })
            .await?;
        let (record, revoked) = found.ok_or_else(|| {
            denied("the presented certificate is not a live certificate of this cluster (unknown, or expired and pruned); issue a new one")
        })?;
        if revoked {
            return Err(denied("the presented certificate is revoked"));
        }
        // A token-bound role held by the presented certificate's key moves
        // to the new key, before the new certificate is handed out. A
        // retry (same idempotency key) is answered with the recorded
        // certificate and moves it again if the first attempt did not.
        let bound = self.node.read_local(|s| {
            s.enrollment(&caller.identity)
                .is_some_and(|e| e.spki_hash == spki_hash)
        });
        let new_spki = if bound {
            let csr = parse_csr(&csr)?;
            let h: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &csr.spki_der)
                .as_ref()
                .try_into()
                .expect("32 bytes");
            Some(h)
        } else {
            None
        };
        let issued = self
            .issue_checked(
                IssueRequest {
                    csr,
                    namespace: record.namespace,
                    profile: record.profile,
                    lifetime,
                    actor: caller.identity.clone(),
                    idempotency_key,
                },
                Some(record.names_digest),
            )
            .await?;
        if let Some(to_spki) = new_spki.filter(|h| *h != spki_hash) {
            let p = Proposal::new(
                now_ms(),
                Command::RebindRole {
                    identity: caller.identity.clone(),
                    from_spki: spki_hash,
                    to_spki,
                },
            )
            .by(&caller.identity);
            match self.propose(p).await?.0 {
                Outcome::RoleRebound => {}
                o => return Err(rejected(o)),
            }
        }
        Ok(issued)
    }

    /// Issues; with `same_names`, only if the decided names digest to it
    /// (a renewal keeps its certificate's names).
    pub(crate) async fn issue_checked(
        &self,
        req: IssueRequest,
        same_names: Option<[u8; 32]>,
    ) -> Result<Issued, AuthorityError> {
        let csr = parse_csr(&req.csr)?;
        let spki_hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &csr.spki_der)
            .as_ref()
            .try_into()
            .expect("32 bytes");
        if let Some(key) = &req.idempotency_key {
            if let Some(done) = self.replay(key, &spki_hash, false).await? {
                return Ok(done);
            }
        }
        let policy = self.current_policy().await?;
        let now = now_ms() as i64 / 1000;
        let decision = policy.decide(&req.namespace, &req.profile, &csr, req.lifetime, now)?;
        // Before a serial is taken or anything signed: a caller over its
        // budget costs nothing but this check.
        let (per_identity, per_namespace) = policy.rates();
        let limits: Vec<(String, quorumca_ca::Rate)> = per_identity
            .map(|r| (format!("identity {:?}", req.actor), r))
            .into_iter()
            .chain(per_namespace.map(|r| (format!("namespace {:?}", req.namespace), r)))
            .collect();
        if !limits.is_empty() {
            self.limiter
                .take(&limits, std::time::Instant::now())
                .map_err(|(what, retry_after)| AuthorityError::RateLimited { what, retry_after })?;
        }
        // An identity a join token bound a role to is reserved for the
        // certificate holding that role: nobody else gets a certificate
        // naming it (its holder renews; an enrolment of it is refused).
        if !decision.uris.is_empty() {
            let taken = self.node.read_local(|s| {
                decision
                    .uris
                    .iter()
                    .find(|u| *u != &req.actor && s.enrollment(u).is_some())
                    .cloned()
            });
            if let Some(identity) = taken {
                return Err(AuthorityError::Rejected(Rejection::IdentityReserved {
                    identity,
                }));
            }
        }
        let names_digest =
            quorumca_ca::names::names_digest(&decision.dns, &decision.ips, &decision.uris);
        if same_names.is_some_and(|recorded| {
            !quorumca_ca::names::names_match(
                &recorded,
                &decision.dns,
                &decision.ips,
                &decision.uris,
            )
        }) {
            return Err(AuthorityError::InvalidArgument(
                "a renewal keeps the names of the certificate being renewed; put exactly its DNS, IP and URI names in the CSR (or Issue a new certificate)".into(),
            ));
        }
        let (issuer_id, signer) = self.issuer_for(&decision.uris).await?;
        let shards = self
            .node
            .read_local(|s| s.issuer(&issuer_id).map(|i| i.crl_shards.max(1)))
            .unwrap_or(1);
        let sequence = self.next_sequence(&issuer_id).await?;
        let serial = self.serial_for(sequence)?;
        // The ledger files a revocation under the same shard, computed the
        // same way from the issuer's registered shard count.
        let shard = sequence % shards;
        let spec = LeafSpec {
            serial: serial.clone(),
            validity: decision.validity,
            dns: decision.dns.clone(),
            ips: decision.ips.clone(),
            uris: decision.uris.clone(),
            usages: decision.usages.clone(),
            crl_url: Some(self.crl_url(&issuer_id, shard)),
            ocsp_url: Some(format!("{}/ocsp/{issuer_id}", self.cfg.base_url)),
        };
        let cert_der = quorumca_ca::sign_leaf(&signer, &csr, &spec)?;
        let record = IssuanceRecord {
            issuer: issuer_id.clone(),
            serial: Serial(serial.clone()),
            sequence,
            node_id: self.node.id(),
            not_before_ms: decision.validity.not_before as u64 * 1000,
            not_after_ms: decision.validity.not_after as u64 * 1000,
            names_digest,
            spki_hash,
            profile: decision.profile.clone(),
            namespace: decision.namespace.clone(),
            actor: req.actor.clone(),
            // A keyed issuance keeps its DER so a retry can be answered
            // with this very certificate; for a compact profile the ledger
            // drops it when the key expires.
            full_der: (decision.store == RecordForm::Full || req.idempotency_key.is_some())
                .then(|| cert_der.clone()),
            der_for_replay_only: decision.store != RecordForm::Full
                && req.idempotency_key.is_some(),
        };
        let (outcome, log_index) = self
            .records
            .get_or_init(|| crate::batch::RecordBatcher::start(self.node.clone()))
            .record(quorumca_ledger::BatchedRecord {
                record,
                idempotency_key: req.idempotency_key.clone(),
            })
            .await?;
        match outcome {
            // A concurrent attempt with the same key won: answer with its
            // certificate (this one's serial is simply never used).
            Outcome::Rejected(Rejection::IdempotencyKeyConflict { .. })
                if req.idempotency_key.is_some() =>
            {
                let key = req.idempotency_key.as_deref().expect("checked");
                match self.replay(key, &spki_hash, true).await? {
                    Some(done) => Ok(done),
                    None => Err(rejected(outcome)),
                }
            }
            Outcome::IssuanceRecorded { issuer, .. } => {
                let cert_pem = pem_encode("CERTIFICATE", &cert_der);
                let chain_pem = cert_pem.clone() + &self.chain_tail(&issuer);
                Ok(Issued {
                    cert_pem,
                    issuer,
                    serial,
                    cert_der,
                    chain_pem,
                    log_index,
                    not_before: decision.validity.not_before,
                    not_after: decision.validity.not_after,
                    replayed: false,
                    namespace: decision.namespace.clone(),
                })
            }
            o => Err(rejected(o)),
        }
    }
}
