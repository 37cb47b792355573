//! `EnrollmentService`: a first certificate for a join token (the one
//! service callers reach without a client certificate).

use tonic::{Request, Response, Status};

use super::convert::{issue_response, seconds};
use super::Services;
use crate::pb;

#[tonic::async_trait]
impl pb::enrollment_service_server::EnrollmentService for Services {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let r = req.into_inner();
        let issued = self
            .0
            .enroll(&r.token, r.csr, seconds(r.lifetime_seconds))
            .await?;
        Ok(Response::new(issue_response(issued)))
    }
}
