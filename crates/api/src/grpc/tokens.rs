//! `TokenService`: join tokens and the roles they bound to keys.

use quorumca_ca::Action;
use tonic::{Request, Response, Status};

use super::convert::{nonempty, role_binding, seconds};
use super::Services;
use crate::pb;

#[tonic::async_trait]
impl pb::token_service_server::TokenService for Services {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = self.allow(&req, Action::CreateToken)?;
        let r = req.into_inner();
        let ttl = seconds(r.ttl_seconds).unwrap_or(crate::DEFAULT_TOKEN_TTL);
        let role = nonempty(r.role);
        let (token, expires_at_ms) = self
            .0
            .create_token(&caller, &r.namespace, &r.profile, role.as_deref(), ttl)
            .await?;
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
            .await?;
        Ok(Response::new(role_binding(&gone)))
    }
}
