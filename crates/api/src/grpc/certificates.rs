//! `CertificateService`: issue, renew, revoke, read.

use tonic::{Request, Response, Status};

use super::convert::{
    certificate_info, issue_response, nonempty, page_token, page_token_of, reason_of, seconds,
    serial_of,
};
use super::Services;
use crate::issuance::IssueArgs;
use crate::pb;
use crate::records::CertificateFilter;
use crate::revocation::RevokeTarget;

#[tonic::async_trait]
impl pb::certificate_service_server::CertificateService for Services {
    async fn issue(
        &self,
        req: Request<pb::IssueRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let issued = self
            .0
            .issue_for(
                &caller,
                IssueArgs {
                    csr: r.csr,
                    namespace: r.namespace,
                    profile: r.profile,
                    lifetime: seconds(r.lifetime_seconds),
                    idempotency_key: nonempty(r.idempotency_key),
                },
            )
            .await?;
        Ok(Response::new(issue_response(issued)))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let issued = self
            .0
            .renew_for(
                &caller,
                r.csr,
                seconds(r.lifetime_seconds),
                nonempty(r.idempotency_key),
            )
            .await?;
        Ok(Response::new(issue_response(issued)))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let target = if r.certificate.is_empty() {
            RevokeTarget::Serial {
                issuer: r.issuer,
                serial: serial_of(&r.serial)?.0,
            }
        } else {
            RevokeTarget::Certificate(r.certificate)
        };
        let reason = reason_of(r.reason)?;
        let key = nonempty(r.idempotency_key);
        let done = self
            .0
            .revoke_for(&caller, target, reason, key.as_deref())
            .await?;
        Ok(Response::new(pb::RevokeResponse {
            revoked_at_ms: done.revoked_at_ms,
            log_index: done.log_index,
            issuer: done.issuer,
            serial: hex::encode(&done.serial),
        }))
    }

    async fn revoke_by_key(
        &self,
        req: Request<pb::RevokeByKeyRequest>,
    ) -> Result<Response<pb::RevokeByKeyResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let n = self
            .0
            .revoke_key_for(&caller, &r.public_key, reason_of(r.reason)?)
            .await?;
        Ok(Response::new(pb::RevokeByKeyResponse { revoked: n as u64 }))
    }

    async fn get_certificate(
        &self,
        req: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::CertificateInfo>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let serial = serial_of(&r.serial)?;
        let view = self.0.certificate(&caller, &r.issuer, &serial).await?;
        Ok(Response::new(certificate_info(&view)))
    }

    async fn list_certificates(
        &self,
        req: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let after = page_token_of(&r.page_token)?;
        let filter = CertificateFilter {
            namespace: r.namespace,
            issuer: r.issuer,
            actor: r.actor,
            revoked_only: r.revoked_only,
        };
        let page = self
            .0
            .list_certificates(&caller, filter, after, r.page_size)
            .await?;
        Ok(Response::new(pb::ListCertificatesResponse {
            certificates: page.certificates.iter().map(certificate_info).collect(),
            next_page_token: page_token(page.next),
        }))
    }
}
