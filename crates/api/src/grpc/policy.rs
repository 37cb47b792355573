//! `PolicyService`: the policy, its history, and changes awaiting a second
//! admin.

use quorumca_ca::Action;
use tonic::{Request, Response, Status};

use super::convert::{policy_change, policy_version};
use super::Services;
use crate::error::AuthorityError;
use crate::pb;

#[tonic::async_trait]
impl pb::policy_service_server::PolicyService for Services {
    async fn apply_policy(
        &self,
        req: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        // A dry run only reads.
        let action = if req.get_ref().dry_run {
            Action::ReadPolicy
        } else {
            Action::ChangePolicy
        };
        let caller = self.allow(&req, action)?;
        let r = req.into_inner();
        let expected = (r.expected_version > 0).then_some(r.expected_version);
        let done = self
            .0
            .change_policy(&caller, &r.text, &r.note, expected, r.dry_run)
            .await?;
        Ok(Response::new(policy_change(done)))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyVersion>, Status> {
        self.allow(&req, Action::ReadPolicy)?;
        let version = self.0.policy_version(req.into_inner().version).await?;
        Ok(Response::new(policy_version(&version, true)))
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
                    .map(|v| policy_version(v, false))
                    .collect()
            })
            .await
            .map_err(AuthorityError::from)?;
        Ok(Response::new(pb::PolicyHistoryResponse { versions }))
    }

    async fn rollback_policy(
        &self,
        req: Request<pb::RollbackPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let caller = self.allow(&req, Action::ChangePolicy)?;
        let r = req.into_inner();
        let done = self
            .0
            .rollback_policy(&caller, r.to_version, &r.note)
            .await?;
        Ok(Response::new(policy_change(done)))
    }

    async fn list_pending_changes(
        &self,
        req: Request<pb::ListPendingChangesRequest>,
    ) -> Result<Response<pb::ListPendingChangesResponse>, Status> {
        self.allow(&req, Action::ReadAudit)?;
        let changes = self
            .0
            .pending_changes()
            .await?
            .into_iter()
            .map(|c| pb::PendingChange {
                id: c.id,
                actor: c.actor,
                proposed_at_ms: c.proposed_at_ms,
                description: c.description,
                diff: c.diff,
            })
            .collect();
        Ok(Response::new(pb::ListPendingChangesResponse { changes }))
    }

    async fn approve_change(
        &self,
        req: Request<pb::ApproveChangeRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let caller = self.allow(&req, Action::Approve)?;
        let done = self.0.approve_change(&caller, req.into_inner().id).await?;
        Ok(Response::new(policy_change(done)))
    }
}
