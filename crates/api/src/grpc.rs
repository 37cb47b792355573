//! The public gRPC services (`proto/quorumca/v1/ca.proto`) over an
//! [`Authority`]: request decoding, error mapping to status codes, nothing
//! else. Every decision stays in the authority and the CA crate.
//!
//! Each call starts by naming its caller (the client certificate's
//! identity, see `auth`) and asking whether its roles allow the call.

use std::sync::Arc;
use std::time::Duration;

use quorumca_ca::{pem_encode, Action, Policy};
use quorumca_ledger::{Change, Command, Outcome, Proposal, RevocationReason};
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::authority::{rejected, Authority, IssueRequest};
use crate::error::{AuthorityError, StatusCode};
use crate::pb;

/// Largest request the public services accept; a CSR is at most 64 KiB and
/// a policy file far smaller.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

pub fn to_status(e: AuthorityError) -> Status {
    let msg = e.to_string();
    match e.code() {
        StatusCode::InvalidArgument => Status::invalid_argument(msg),
        StatusCode::Unauthenticated => Status::unauthenticated(msg),
        StatusCode::PermissionDenied => Status::permission_denied(msg),
        StatusCode::NotFound => Status::not_found(msg),
        StatusCode::FailedPrecondition => Status::failed_precondition(msg),
        StatusCode::Unavailable => Status::unavailable(msg),
        StatusCode::ResourceExhausted => Status::resource_exhausted(msg),
        StatusCode::Internal => Status::internal(msg),
    }
}

/// Parses a serial as printed by us or by `openssl x509 -serial`: hex,
/// optionally with colons or a 0x prefix, returned as the minimal DER
/// INTEGER content our certificates carry.
pub fn parse_serial(text: &str) -> Result<Vec<u8>, AuthorityError> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t).replace(':', "");
    let bad = || {
        AuthorityError::InvalidArgument(format!(
            "serial {text:?} is not hex (expected e.g. 0a1b2c..., as printed by `openssl x509 -serial`)"
        ))
    };
    if t.is_empty() || t.len() > 42 {
        return Err(bad());
    }
    let t = if t.len() % 2 == 1 { format!("0{t}") } else { t };
    let mut b = hex::decode(&t).map_err(|_| bad())?;
    while b.len() > 1 && b[0] == 0 && b[1] & 0x80 == 0 {
        b.remove(0);
    }
    if b[0] & 0x80 != 0 {
        b.insert(0, 0);
    }
    Ok(b)
}

fn reason_of(r: i32) -> Result<RevocationReason, AuthorityError> {
    use pb::RevocationReason as P;
    Ok(
        match P::try_from(r).map_err(|_| {
            AuthorityError::InvalidArgument(format!("{r} is not an RFC 5280 revocation reason"))
        })? {
            P::Unspecified => RevocationReason::Unspecified,
            P::KeyCompromise => RevocationReason::KeyCompromise,
            P::CaCompromise => RevocationReason::CaCompromise,
            P::AffiliationChanged => RevocationReason::AffiliationChanged,
            P::Superseded => RevocationReason::Superseded,
            P::CessationOfOperation => RevocationReason::CessationOfOperation,
            P::CertificateHold => RevocationReason::CertificateHold,
            P::RemoveFromCrl => RevocationReason::RemoveFromCrl,
            P::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
            P::AaCompromise => RevocationReason::AaCompromise,
        },
    )
}

fn reason_pb(r: RevocationReason) -> pb::RevocationReason {
    use pb::RevocationReason as P;
    match r {
        RevocationReason::Unspecified => P::Unspecified,
        RevocationReason::KeyCompromise => P::KeyCompromise,
        RevocationReason::CaCompromise => P::CaCompromise,
        RevocationReason::AffiliationChanged => P::AffiliationChanged,
        RevocationReason::Superseded => P::Superseded,
        RevocationReason::CessationOfOperation => P::CessationOfOperation,
        RevocationReason::CertificateHold => P::CertificateHold,
        RevocationReason::RemoveFromCrl => P::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn => P::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => P::AaCompromise,
    }
}

fn info_of(
    r: &quorumca_ledger::IssuanceRecord,
    rev: Option<&quorumca_ledger::Revocation>,
    archived: bool,
) -> pb::CertificateInfo {
    pb::CertificateInfo {
        issuer: r.issuer.clone(),
        serial: hex::encode(&r.serial.0),
        namespace: r.namespace.clone(),
        profile: r.profile.clone(),
        requester: r.requester.clone(),
        not_before: (r.not_before_ms / 1000) as i64,
        not_after: (r.not_after_ms / 1000) as i64,
        spki_sha256: hex::encode(r.spki_hash),
        revoked: rev.is_some(),
        revoked_at_ms: rev.map(|v| v.revoked_at_ms).unwrap_or(0),
        revocation_reason: rev.map(|v| reason_pb(v.reason)).unwrap_or_default() as i32,
        certificate_pem: r
            .full_der
            .as_ref()
            .map(|d| pem_encode("CERTIFICATE", d))
            .unwrap_or_default(),
        archived,
    }
}

/// Page tokens are `issuer/serial-hex` of the last record returned.
fn parse_page_token(t: &str) -> Result<Option<(String, quorumca_ledger::Serial)>, AuthorityError> {
    if t.is_empty() {
        return Ok(None);
    }
    let bad = || {
        AuthorityError::InvalidArgument(format!("page_token {t:?} is not one this API returned"))
    };
    let (issuer, serial) = t.split_once('/').ok_or_else(bad)?;
    let serial = hex::decode(serial).map_err(|_| bad())?;
    Ok(Some((issuer.to_string(), quorumca_ledger::Serial(serial))))
}

/// Most records a listing examines per call, so a filter that matches
/// little cannot make one request scan the whole ledger.
const LIST_SCAN_LIMIT: usize = 20_000;

/// The public services, sharing one authority.
#[derive(Clone)]
pub struct Services(pub Arc<Authority>);

impl Services {
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let certs = req.peer_certs();
        self.0
            .caller(certs.as_deref().map(|v| v.as_slice()), req.remote_addr())
            .map_err(to_status)
    }

    /// The caller, if its roles allow `action` (refusals are audited).
    fn allow<T>(&self, req: &Request<T>, action: Action) -> Result<Caller, Status> {
        let caller = self.caller(req)?;
        self.0.authorize(&caller, action).map_err(to_status)?;
        Ok(caller)
    }

    /// Maps an issuance error, auditing policy refusals (a name or profile
    /// outside the namespace) like role refusals.
    fn issue_error(&self, caller: &Caller, what: &str, e: AuthorityError) -> Status {
        if e.code() == StatusCode::PermissionDenied && !matches!(e, AuthorityError::Denied(_)) {
            self.0.audit_denial(&caller.identity, what, &e.to_string());
        }
        to_status(e)
    }

    /// The namespace of a recorded certificate, read through the leader
    /// (a record this node has not applied yet still counts).
    async fn namespace_of(&self, issuer: &str, serial: &[u8]) -> Result<Option<String>, Status> {
        let (issuer, serial) = (issuer.to_string(), quorumca_ledger::Serial(serial.to_vec()));
        self.0
            .node()
            .read_linearizable(move |s| s.record(&issuer, &serial).map(|r| r.namespace.clone()))
            .await
            .map_err(|e| to_status(e.into()))
    }
}

fn issue_response(issued: crate::authority::Issued) -> pb::IssueResponse {
    pb::IssueResponse {
        issuer: issued.issuer,
        serial: hex::encode(&issued.serial),
        certificate_pem: issued.cert_pem,
        chain_pem: issued.chain_pem,
        not_before: issued.not_before,
        not_after: issued.not_after,
        log_index: issued.log_index,
        replayed: issued.replayed,
        namespace: issued.namespace,
    }
}

#[tonic::async_trait]
impl pb::certificate_service_server::CertificateService for Services {
    async fn issue(
        &self,
        req: Request<pb::IssueRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        // Names first: a refusal below is audited and names the namespace,
        // which must not be an unbounded string of the caller's choosing.
        let namespace = req.get_ref().namespace.clone();
        quorumca_ca::check_name("namespace", &namespace)
            .map_err(|e| to_status(AuthorityError::Policy(e)))?;
        if !req.get_ref().profile.is_empty() {
            quorumca_ca::check_name("profile", &req.get_ref().profile)
                .map_err(|e| to_status(AuthorityError::Policy(e)))?;
        }
        let caller = self.allow(
            &req,
            Action::Issue {
                namespace: &namespace,
            },
        )?;
        let r = req.into_inner();
        let issued = self
            .0
            .issue(IssueRequest {
                csr: r.csr,
                namespace: r.namespace,
                profile: r.profile,
                lifetime: (r.lifetime_seconds > 0).then(|| Duration::from_secs(r.lifetime_seconds)),
                requester: caller.identity.clone(),
                idempotency_key: (!r.idempotency_key.is_empty())
                    .then(|| self.0.scoped_key(&caller, &r.idempotency_key)),
            })
            .await
            .map_err(|e| {
                self.issue_error(&caller, &format!("issue in namespace {namespace:?}"), e)
            })?;
        Ok(Response::new(issue_response(issued)))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let key =
            (!r.idempotency_key.is_empty()).then(|| self.0.scoped_key(&caller, &r.idempotency_key));
        let lifetime = (r.lifetime_seconds > 0).then(|| Duration::from_secs(r.lifetime_seconds));
        let issued = self
            .0
            .renew(&caller, r.csr, lifetime, key)
            .await
            .map_err(|e| self.issue_error(&caller, "renew", e))?;
        Ok(Response::new(issue_response(issued)))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        // Named by issuer and serial, or by the certificate itself: then the
        // issuer that signed it is found in the hierarchy, and one the
        // ledger has no record of (a bootstrap identity) is revoked as such,
        // by an admin or operator (its namespace is none).
        let (issuer, serial, leaf) = if req.get_ref().certificate.is_empty() {
            let serial = parse_serial(&req.get_ref().serial).map_err(to_status)?;
            (req.get_ref().issuer.clone(), serial, None)
        } else {
            let der = quorumca_ca::first_certificate_der(&req.get_ref().certificate)
                .map_err(|e| to_status(AuthorityError::Sign(e)))?;
            let (issuer, leaf) = self.0.issuer_of(&der).map_err(to_status)?;
            (issuer, leaf.serial.clone(), Some(leaf))
        };
        let namespace = self
            .namespace_of(&issuer, &serial)
            .await?
            .unwrap_or_default();
        let caller = self.allow(
            &req,
            Action::Revoke {
                namespace: &namespace,
            },
        )?;
        let r = req.into_inner();
        let reason = reason_of(r.reason).map_err(to_status)?;
        let key =
            (!r.idempotency_key.is_empty()).then(|| self.0.scoped_key(&caller, &r.idempotency_key));
        let (revoked_at_ms, log_index) = match &leaf {
            Some(leaf) => {
                self.0
                    .revoke_signed_leaf(&caller.identity, &issuer, leaf, reason, key.as_deref())
                    .await
            }
            None => {
                self.0
                    .revoke_as(&caller.identity, &issuer, &serial, reason, key.as_deref())
                    .await
            }
        }
        .map_err(to_status)?;
        Ok(Response::new(pb::RevokeResponse {
            revoked_at_ms,
            log_index,
            issuer,
            serial: hex::encode(&serial),
        }))
    }

    async fn revoke_by_key(
        &self,
        req: Request<pb::RevokeByKeyRequest>,
    ) -> Result<Response<pb::RevokeByKeyResponse>, Status> {
        let caller = self.allow(&req, Action::RevokeByKey)?;
        let r = req.into_inner();
        let spki = quorumca_ca::public_key_of(&r.public_key)
            .map_err(|e| to_status(AuthorityError::Csr(e)))?;
        let reason = reason_of(r.reason).map_err(to_status)?;
        let n = self
            .0
            .revoke_by_key_as(&caller.identity, &spki, reason)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RevokeByKeyResponse { revoked: n as u64 }))
    }

    async fn get_certificate(
        &self,
        req: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::CertificateInfo>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let serial = quorumca_ledger::Serial(parse_serial(&r.serial).map_err(to_status)?);
        let allow = |namespace: Option<&str>| {
            self.0
                .authorize(&caller, Action::ReadCertificates { namespace })
                .map_err(to_status)
        };
        let live = self
            .0
            .node()
            .read_linearizable({
                let (issuer, serial) = (r.issuer.clone(), serial.clone());
                move |s| {
                    s.record(&issuer, &serial)
                        .map(|rec| info_of(rec, s.revocation(&issuer, &serial), false))
                }
            })
            .await
            .map_err(|e| to_status(e.into()))?;
        if let Some(info) = live {
            allow(Some(&info.namespace))?;
            return Ok(Response::new(info));
        }
        match self.0.node().archive().get(&r.issuer, &serial) {
            Ok(Some(a)) => {
                allow(Some(&a.record.namespace))?;
                Ok(Response::new(info_of(
                    &a.record,
                    a.revocation.as_ref(),
                    true,
                )))
            }
            Ok(None) => Err(allow(None).err().unwrap_or_else(|| {
                Status::not_found(format!(
                    "no certificate {} of issuer {:?} (live or archived on this node)",
                    r.serial, r.issuer
                ))
            })),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    async fn list_certificates(
        &self,
        req: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let ns = req.get_ref().namespace.clone();
        if !ns.is_empty() {
            quorumca_ca::check_name("namespace", &ns)
                .map_err(|e| to_status(AuthorityError::Policy(e)))?;
        }
        self.allow(
            &req,
            Action::ReadCertificates {
                namespace: (!ns.is_empty()).then_some(ns.as_str()),
            },
        )?;
        let r = req.into_inner();
        let page = match r.page_size {
            0 => 100,
            n if n > 1000 => {
                return Err(Status::invalid_argument(format!(
                    "page_size is at most 1000, got {n}"
                )))
            }
            n => n as usize,
        };
        let after = parse_page_token(&r.page_token).map_err(to_status)?;
        let (certificates, next) = self
            .0
            .node()
            .read_linearizable(move |s| {
                let mut out = Vec::new();
                let mut last = None;
                let mut more = false;
                let after = after.as_ref().map(|(i, s)| (i.as_str(), s));
                for (scanned, rec) in s.records_after(after).enumerate() {
                    if out.len() == page || scanned == LIST_SCAN_LIMIT {
                        more = true;
                        break;
                    }
                    last = Some((rec.issuer.clone(), rec.serial.clone()));
                    let rev = s.revocation(&rec.issuer, &rec.serial);
                    let keep = (r.namespace.is_empty() || rec.namespace == r.namespace)
                        && (r.issuer.is_empty() || rec.issuer == r.issuer)
                        && (r.requester.is_empty() || rec.requester == r.requester)
                        && (!r.revoked_only || rev.is_some());
                    if keep {
                        out.push(info_of(rec, rev, false));
                    }
                }
                let next = match (more, last) {
                    (true, Some((i, s))) => format!("{i}/{}", hex::encode(&s.0)),
                    _ => String::new(),
                };
                (out, next)
            })
            .await
            .map_err(|e| to_status(e.into()))?;
        Ok(Response::new(pb::ListCertificatesResponse {
            certificates,
            next_page_token: next,
        }))
    }
}

/// The DER of the first certificate in `pem`, or INVALID_ARGUMENT naming
/// the field.
fn cert_der_of(pem: &str, what: &str) -> Result<Vec<u8>, AuthorityError> {
    quorumca_ca::first_certificate_der(pem.as_bytes())
        .map_err(|e| AuthorityError::InvalidArgument(format!("{what}: {e}")))
}

#[tonic::async_trait]
impl pb::authority_service_server::AuthorityService for Services {
    async fn prepare_intermediate(
        &self,
        req: Request<pb::PrepareIntermediateRequest>,
    ) -> Result<Response<pb::PrepareIntermediateResponse>, Status> {
        self.allow(&req, Action::ChangeCa)?;
        let (csr_pem, sealed_key, issuer_id) = self
            .0
            .prepare_intermediate(&req.into_inner().region)
            .map_err(to_status)?;
        Ok(Response::new(pb::PrepareIntermediateResponse {
            csr_pem,
            sealed_key,
            issuer_id,
        }))
    }

    async fn install_intermediate(
        &self,
        req: Request<pb::InstallIntermediateRequest>,
    ) -> Result<Response<pb::InstallIntermediateResponse>, Status> {
        let caller = self.allow(&req, Action::ChangeCa)?;
        let r = req.into_inner();
        let cert = cert_der_of(&r.certificate_pem, "certificate_pem").map_err(to_status)?;
        let root = cert_der_of(&r.root_pem, "root_pem").map_err(to_status)?;
        // Checked now, whether it applies now or after approval.
        let install = self
            .0
            .check_install(&r.region, &cert, &root, &r.sealed_key)
            .await
            .map_err(to_status)?;
        let records = match install {
            crate::authority::Install::Register(records) => records,
            crate::authority::Install::Rotate(change) => {
                let r = self.hierarchy_change(&caller, change, true).await?;
                return Ok(Response::new(pb::InstallIntermediateResponse {
                    pending_change: r.into_inner().pending_change,
                }));
            }
        };
        if !self.0.local_policy().approvals.ca {
            for rec in records {
                self.0.register_issuer(rec).await.map_err(to_status)?;
            }
            return Ok(Response::new(pb::InstallIntermediateResponse {
                pending_change: 0,
            }));
        }
        match self
            .propose_change(&caller, Change::RegisterIssuers(records))
            .await?
        {
            Outcome::ChangePending { id } => Ok(Response::new(pb::InstallIntermediateResponse {
                pending_change: id,
            })),
            o => Err(to_status(rejected(o))),
        }
    }

    async fn get_trust_bundle(
        &self,
        req: Request<pb::GetTrustBundleRequest>,
    ) -> Result<Response<pb::TrustBundle>, Status> {
        self.caller(&req)?;
        let bundle = self
            .0
            .node()
            .read_linearizable(bundle_of)
            .await
            .map_err(|e| to_status(e.into()))?;
        Ok(Response::new(bundle))
    }

    async fn rotate_intermediate(
        &self,
        req: Request<pb::RotateIntermediateRequest>,
    ) -> Result<Response<pb::RotateResponse>, Status> {
        let caller = self.allow(&req, Action::ChangeCa)?;
        let region = req.into_inner().region;
        let change = self
            .0
            .plan_intermediate_rotation(&region)
            .await
            .map_err(to_status)?;
        self.hierarchy_change(&caller, change, true).await
    }

    async fn rotate_root(
        &self,
        req: Request<pb::RotateRootRequest>,
    ) -> Result<Response<pb::RotateResponse>, Status> {
        let caller = self.allow(&req, Action::ChangeCa)?;
        let grace = match req.into_inner().grace_seconds {
            0 => Duration::from_secs(30 * 86_400),
            s => Duration::from_secs(s),
        };
        let change = self.0.plan_root_rotation(grace).await.map_err(to_status)?;
        self.hierarchy_change(&caller, change, true).await
    }

    async fn force_renew(
        &self,
        req: Request<pb::ForceRenewRequest>,
    ) -> Result<Response<pb::RotateResponse>, Status> {
        let caller = self.allow(&req, Action::ChangeCa)?;
        let r = req.into_inner();
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let change = quorumca_ledger::HierarchyChange::ForceRenew {
            issuer: nonempty(r.issuer),
            namespace: nonempty(r.namespace),
        };
        // An emergency measure: it only makes holders renew, so it never
        // waits for a second admin.
        self.hierarchy_change(&caller, change, false).await
    }

    type WatchTrustBundleStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::TrustBundle, Status>>;

    async fn watch_trust_bundle(
        &self,
        req: Request<pb::GetTrustBundleRequest>,
    ) -> Result<Response<Self::WatchTrustBundleStream>, Status> {
        self.caller(&req)?;
        let node = self.0.node().clone();
        // Start from the leader's view, so the first bundle is current.
        node.read_linearizable(|_| ())
            .await
            .map_err(|e| to_status(e.into()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut sent = None;
            loop {
                let bundle = node.read_local(bundle_of);
                if sent != Some(bundle.version) {
                    sent = Some(bundle.version);
                    if tx.send(Ok(bundle)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn get_crl(
        &self,
        req: Request<pb::GetCrlRequest>,
    ) -> Result<Response<pb::GetCrlResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let c = self.0.crl(&r.issuer, r.shard, r.delta).map_err(to_status)?;
        Ok(Response::new(pb::GetCrlResponse {
            crl: c.der.to_vec(),
            crl_number: c.number,
            this_update: c.this_update,
            next_update: c.next_update,
        }))
    }
}

/// The trust bundle as the ledger holds it: roots not withdrawn, issuers
/// not retired, cross certificates of a rollover, forced-renewal markers.
fn bundle_of(s: &quorumca_ledger::State) -> pb::TrustBundle {
    use quorumca_ledger::IssuerPhase;
    let live: Vec<_> = s
        .issuers()
        .filter_map(|i| match s.issuer_phase(&i.id)? {
            IssuerPhase::Retired => None,
            phase => Some((i, phase)),
        })
        .collect();
    pb::TrustBundle {
        roots_pem: live
            .iter()
            .filter(|(i, _)| i.parent.is_none())
            .map(|(i, _)| pem_encode("CERTIFICATE", &i.cert_der))
            .collect(),
        version: s.bundle_version(),
        issuers: live
            .into_iter()
            .map(|(i, phase)| pb::Issuer {
                certificate_pem: pem_encode("CERTIFICATE", &i.cert_der),
                id: i.id.clone(),
                region: i.region.clone().unwrap_or_default(),
                parent: i.parent.clone().unwrap_or_default(),
                crl_shards: i.crl_shards,
                phase: match phase {
                    IssuerPhase::CurrentRoot => "current-root",
                    IssuerPhase::PreviousRoot => "previous-root",
                    IssuerPhase::Active => "active",
                    IssuerPhase::Retiring => "retiring",
                    IssuerPhase::Retired => "retired",
                }
                .into(),
            })
            .collect(),
        cross_certificates: s
            .cross_certs()
            .map(|c| pb::CrossCertificate {
                subject: c.subject.clone(),
                signer: c.signer.clone(),
                certificate_pem: pem_encode("CERTIFICATE", &c.cert_der),
            })
            .collect(),
        force_renew: s
            .force_renew_markers()
            .map(|m| pb::ForceRenewMarker {
                id: m.id,
                issuer: m.issuer.clone().unwrap_or_default(),
                namespace: m.namespace.clone().unwrap_or_default(),
                at_ms: m.at_ms,
            })
            .collect(),
    }
}

fn version_of(v: &quorumca_ledger::PolicyVersion, with_text: bool) -> pb::PolicyVersion {
    pb::PolicyVersion {
        version: v.version,
        text: if with_text {
            v.text.clone()
        } else {
            String::new()
        },
        applied_at_ms: v.applied_at_ms,
        author: v.author.clone(),
        rollback_of: v.rollback_of,
    }
}

#[tonic::async_trait]
impl pb::policy_service_server::PolicyService for Services {
    async fn apply_policy(
        &self,
        req: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let action = if req.get_ref().dry_run {
            Action::ReadPolicy
        } else {
            Action::ChangePolicy
        };
        let caller = self.allow(&req, action)?;
        let r = req.into_inner();
        let author = authored(&caller, &r.author);
        let new = Policy::from_toml(&r.text).map_err(|e| to_status(e.into()))?;
        let current = self
            .0
            .node()
            .read_linearizable(|s| s.policy().cloned())
            .await
            .map_err(|e| to_status(e.into()))?;
        let old = match &current {
            Some(v) => Policy::from_toml(&v.text).map_err(|e| to_status(e.into()))?,
            None => Policy::default(),
        };
        let diff = Policy::diff(&old, &new);
        let version = current.map(|v| v.version).unwrap_or(0);
        if r.dry_run {
            return Ok(Response::new(pb::ApplyPolicyResponse {
                version,
                diff,
                applied: false,
                pending_change: 0,
            }));
        }
        let expected = (r.expected_version > 0).then_some(r.expected_version);
        let outcome = if old.approvals.policy {
            let change = Change::ApplyPolicy {
                text: new.to_canonical_toml(),
                expected_version: expected,
            };
            self.propose_change(&caller, change).await?
        } else {
            let version = self
                .0
                .apply_policy(&r.text, &author, expected)
                .await
                .map_err(to_status)?;
            Outcome::PolicyApplied { version }
        };
        policy_reply(outcome, version, diff)
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyVersion>, Status> {
        self.allow(&req, Action::ReadPolicy)?;
        let want = req.into_inner().version;
        let found = self
            .0
            .node()
            .read_linearizable(move |s| {
                if want == 0 {
                    s.policy().cloned()
                } else {
                    s.policy_history()
                        .iter()
                        .find(|v| v.version == want)
                        .cloned()
                }
            })
            .await
            .map_err(|e| to_status(e.into()))?;
        match found {
            Some(v) => Ok(Response::new(version_of(&v, true))),
            None if want == 0 => Err(to_status(AuthorityError::NoPolicy)),
            None => Err(Status::not_found(format!(
                "policy version {want} does not exist; see `quorumca policy history`"
            ))),
        }
    }

    async fn policy_history(
        &self,
        req: Request<pb::PolicyHistoryRequest>,
    ) -> Result<Response<pb::PolicyHistoryResponse>, Status> {
        self.allow(&req, Action::ReadPolicy)?;
        let versions = self
            .0
            .node()
            .read_linearizable(|s| {
                s.policy_history()
                    .iter()
                    .map(|v| version_of(v, false))
                    .collect()
            })
            .await
            .map_err(|e| to_status(e.into()))?;
        Ok(Response::new(pb::PolicyHistoryResponse { versions }))
    }

    async fn rollback_policy(
        &self,
        req: Request<pb::RollbackPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let caller = self.allow(&req, Action::ChangePolicy)?;
        let r = req.into_inner();
        let author = authored(&caller, &r.author);
        let (old, target) = self
            .0
            .node()
            .read_linearizable(|s| {
                (
                    s.policy().map(|v| (v.version, v.text.clone())),
                    s.policy_history()
                        .iter()
                        .find(|v| v.version == r.to_version)
                        .map(|v| v.text.clone()),
                )
            })
            .await
            .map_err(|e| to_status(e.into()))?;
        let version = old.as_ref().map(|o| o.0).unwrap_or(0);
        let parse = |t: Option<String>| {
            t.and_then(|t| Policy::from_toml(&t).ok())
                .unwrap_or_default()
        };
        let old = parse(old.map(|o| o.1));
        let diff = Policy::diff(&old, &parse(target));
        let outcome = if old.approvals.policy {
            let change = Change::RollbackPolicy {
                to_version: r.to_version,
            };
            self.propose_change(&caller, change).await?
        } else {
            let p = Proposal::new(
                quorumca_consensus::now_ms(),
                Command::RollbackPolicy {
                    to_version: r.to_version,
                    author,
                },
            )
            .by(&caller.identity);
            self.0.propose(p).await.map_err(to_status)?.0
        };
        policy_reply(outcome, version, diff)
    }

    async fn list_pending_changes(
        &self,
        req: Request<pb::ListPendingChangesRequest>,
    ) -> Result<Response<pb::ListPendingChangesResponse>, Status> {
        self.allow(&req, Action::ReadAudit)?;
        let (pending, current) = self
            .0
            .node()
            .read_linearizable(|s| {
                (
                    s.pending_changes().cloned().collect::<Vec<_>>(),
                    s.policy().map(|p| p.text.clone()),
                )
            })
            .await
            .map_err(|e| to_status(e.into()))?;
        let current = current
            .and_then(|t| Policy::from_toml(&t).ok())
            .unwrap_or_default();
        let changes = pending
            .into_iter()
            .map(|c| pb::PendingChange {
                id: c.id,
                proposer: c.proposer,
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
            .collect();
        Ok(Response::new(pb::ListPendingChangesResponse { changes }))
    }

    async fn approve_change(
        &self,
        req: Request<pb::ApproveChangeRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let caller = self.allow(&req, Action::Approve)?;
        let id = req.into_inner().id;
        let p = Proposal::new(
            quorumca_consensus::now_ms(),
            Command::ApproveChange {
                id,
                approver: caller.identity.clone(),
            },
        )
        .by(&caller.identity);
        let outcome = self.0.propose(p).await.map_err(to_status)?.0;
        if let Outcome::Rejected(r @ quorumca_ledger::Rejection::SelfApproval { .. }) = &outcome {
            // Already in the audit log as a rejected approval; refused the
            // same way as any other denial.
            return Err(to_status(AuthorityError::Rejected(r.clone())));
        }
        policy_reply(outcome, 0, String::new())
    }
}

impl Services {
    /// Commits a hierarchy change, or files it for a second admin when
    /// `approvable` and the policy's `[approvals] ca` asks for one.
    async fn hierarchy_change(
        &self,
        caller: &Caller,
        change: quorumca_ledger::HierarchyChange,
        approvable: bool,
    ) -> Result<Response<pb::RotateResponse>, Status> {
        let new_issuers = match &change {
            quorumca_ledger::HierarchyChange::Rotate {
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
        if approvable && self.0.local_policy().approvals.ca {
            return match self
                .propose_change(caller, Change::Hierarchy(change))
                .await?
            {
                Outcome::ChangePending { id } => Ok(Response::new(pb::RotateResponse {
                    bundle_version: 0,
                    pending_change: id,
                    new_issuers,
                })),
                o => Err(to_status(rejected(o))),
            };
        }
        let bundle_version = self
            .0
            .apply_hierarchy(change, &caller.identity)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RotateResponse {
            bundle_version,
            pending_change: 0,
            new_issuers,
        }))
    }

    async fn propose_change(&self, caller: &Caller, change: Change) -> Result<Outcome, Status> {
        let p = Proposal::new(
            quorumca_consensus::now_ms(),
            Command::ProposeChange {
                change,
                proposer: caller.identity.clone(),
            },
        )
        .by(&caller.identity);
        Ok(self.0.propose(p).await.map_err(to_status)?.0)
    }
}

/// The recorded author: the authenticated identity, with the free-text
/// note the operator gave (never instead of the identity).
fn authored(caller: &Caller, note: &str) -> String {
    if note.is_empty() {
        caller.identity.clone()
    } else {
        format!("{} ({note})", caller.identity)
    }
}

fn policy_reply(
    outcome: Outcome,
    current: u64,
    diff: String,
) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
    match outcome {
        Outcome::PolicyApplied { version } => Ok(Response::new(pb::ApplyPolicyResponse {
            version,
            diff,
            applied: true,
            pending_change: 0,
        })),
        // An approved CA change.
        Outcome::IssuerRegistered { .. } | Outcome::HierarchyChanged { .. } => {
            Ok(Response::new(pb::ApplyPolicyResponse {
                version: 0,
                diff,
                applied: true,
                pending_change: 0,
            }))
        }
        Outcome::ChangePending { id } => Ok(Response::new(pb::ApplyPolicyResponse {
            version: current,
            diff,
            applied: false,
            pending_change: id,
        })),
        o => Err(to_status(rejected(o))),
    }
}

#[tonic::async_trait]
impl pb::token_service_server::TokenService for Services {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = self.allow(&req, Action::CreateToken)?;
        let r = req.into_inner();
        let ttl = match r.ttl_seconds {
            0 => crate::DEFAULT_TOKEN_TTL,
            n => Duration::from_secs(n),
        };
        let role = (!r.role.is_empty()).then_some(r.role.as_str());
        let (token, expires_at_ms) = self
            .0
            .create_token(&caller, &r.namespace, &r.profile, role, ttl)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token,
            expires_at_ms,
        }))
    }

    async fn list_role_bindings(
        &self,
        req: Request<pb::ListRoleBindingsRequest>,
    ) -> Result<Response<pb::ListRoleBindingsResponse>, Status> {
        self.allow(&req, Action::ReadRoleBindings)?;
        let bindings = self.0.role_bindings().iter().map(role_binding).collect();
        Ok(Response::new(pb::ListRoleBindingsResponse { bindings }))
    }

    async fn remove_role_binding(
        &self,
        req: Request<pb::RemoveRoleBindingRequest>,
    ) -> Result<Response<pb::RoleBinding>, Status> {
        let caller = self.allow(&req, Action::RemoveRoleBinding)?;
        let r = req.into_inner();
        let gone = self
            .0
            .remove_role_binding(&caller.identity, &r.identity)
            .await
            .map_err(to_status)?;
        Ok(Response::new(role_binding(&gone)))
    }
}

/// About how many bytes of entries one QueryAudit page carries.
const AUDIT_PAGE_BYTES: usize = 1024 * 1024;

fn role_binding(e: &quorumca_ledger::Enrollment) -> pb::RoleBinding {
    pb::RoleBinding {
        identity: e.identity.clone(),
        role: e.role.clone(),
        namespace: e.namespace.clone(),
        enrolled_at_ms: e.enrolled_at_ms,
        key_sha256: hex::encode(e.spki_hash),
    }
}

#[tonic::async_trait]
impl pb::enrollment_service_server::EnrollmentService for Services {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let r = req.into_inner();
        let lifetime = (r.lifetime_seconds > 0).then(|| Duration::from_secs(r.lifetime_seconds));
        let issued = self
            .0
            .enroll(&r.token, r.csr, lifetime)
            .await
            .map_err(to_status)?;
        Ok(Response::new(issue_response(issued)))
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for Services {
    async fn query_audit(
        &self,
        req: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        self.allow(&req, Action::ReadAudit)?;
        let r = req.into_inner();
        let limit = match r.limit {
            0 => 100,
            n if n > 1000 => {
                return Err(Status::invalid_argument(format!(
                    "limit is at most 1000, got {n}"
                )))
            }
            n => n as usize,
        };
        let keep = {
            let (actor, denied_only) = (r.actor.clone(), r.denied_only);
            move |e: &quorumca_ledger::AuditEntry| {
                (actor.is_empty() || e.actor == actor) && (!denied_only || e.denied)
            }
        };
        let (ledger_entries, head, len, oldest) = self
            .0
            .node()
            .read_linearizable({
                let keep = keep.clone();
                move |s| {
                    let entries = s.audit_entries(r.after_seq, limit, keep);
                    (
                        entries,
                        hex::encode(s.audit_head()),
                        s.audit_len(),
                        s.oldest_audit_seq(),
                    )
                }
            })
            .await
            .map_err(|e| to_status(e.into()))?;
        // Entries older than the oldest the ledger holds were evicted into
        // this node's archive: that part of the page comes from there.
        let mut entries = Vec::new();
        if oldest.is_some_and(|o| r.after_seq.saturating_add(1) < o) {
            let oldest = oldest.expect("checked");
            let archived = self
                .0
                .node()
                .archive()
                .audit_after(r.after_seq, limit, &keep)
                .map_err(|e| Status::internal(format!("reading the audit archive: {e}")))?;
            entries.extend(archived.into_iter().filter(|e| e.seq < oldest));
        }
        entries.extend(ledger_entries);
        entries.truncate(limit);
        // A page stays well under a client's 4 MiB message limit however
        // large the entries are; the caller pages on with next_after_seq.
        let full_page = entries.len() == limit;
        let mut trimmed = false;
        let mut bytes = 0usize;
        let mut page = Vec::with_capacity(entries.len());
        for e in entries {
            let size = e.actor.len() + e.action.len() + e.detail.len() + e.chain.len() + 32;
            if !page.is_empty() && bytes + size > AUDIT_PAGE_BYTES {
                trimmed = true;
                break;
            }
            bytes += size;
            page.push(pb::AuditEntry {
                seq: e.seq,
                at_ms: e.at_ms,
                actor: crate::auth::capped(&e.actor, AUDIT_PAGE_BYTES / 4),
                action: crate::auth::capped(&e.action, AUDIT_PAGE_BYTES / 4),
                detail: crate::auth::capped(&e.detail, AUDIT_PAGE_BYTES / 4),
                denied: e.denied,
                chain: e.chain,
            });
        }
        let more = full_page || trimmed;
        let next_after_seq = match page.last() {
            Some(last) if more => last.seq,
            _ => 0,
        };
        Ok(Response::new(pb::QueryAuditResponse {
            entries: page,
            chain_head: head,
            chain_length: len,
            next_after_seq,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_parse_like_openssl_prints_them() {
        assert_eq!(parse_serial("0A1B").unwrap(), vec![0x0a, 0x1b]);
        assert_eq!(parse_serial("0x00:0a:1b").unwrap(), vec![0x0a, 0x1b]);
        // A high first bit needs the leading zero octet back.
        assert_eq!(parse_serial("C1").unwrap(), vec![0x00, 0xc1]);
        assert_eq!(parse_serial("00c1").unwrap(), vec![0x00, 0xc1]);
        assert_eq!(parse_serial("abc").unwrap(), vec![0x0a, 0xbc]);
        for bad in ["", "zz", &"a".repeat(43)] {
            let e = parse_serial(bad).unwrap_err();
            assert_eq!(e.code(), StatusCode::InvalidArgument, "{e}");
        }
    }
}
