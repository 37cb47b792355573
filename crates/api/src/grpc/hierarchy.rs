//! `AuthorityService`: the CA hierarchy (offline-root installation,
//! rotations, forced renewal), the trust bundle and CRLs.

use std::time::Duration;

use quorumca_ca::Action;
use quorumca_ledger::HierarchyChange;
use tonic::{Request, Response, Status};

use super::convert::{bundle_of, cert_der_of, nonempty, rotate_response};
use super::Services;
use crate::error::AuthorityError;
use crate::pb;

/// How often a trust bundle watch looks for a new version.
const WATCH_EVERY: Duration = Duration::from_millis(500);

#[tonic::async_trait]
impl pb::authority_service_server::AuthorityService for Services {
    async fn prepare_intermediate(
        &self,
        req: Request<pb::PrepareIntermediateRequest>,
    ) -> Result<Response<pb::PrepareIntermediateResponse>, Status> {
        self.allow(&req, Action::ChangeCa)?;
        let (csr_pem, sealed_key, issuer_id) =
            self.0.prepare_intermediate(&req.into_inner().region)?;
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
        let cert = cert_der_of(&r.certificate_pem, "certificate_pem")?;
        let root = cert_der_of(&r.root_pem, "root_pem")?;
        let pending_change = self
            .0
            .install_intermediate_for(&caller, &r.region, &cert, &root, &r.sealed_key)
            .await?;
        Ok(Response::new(pb::InstallIntermediateResponse {
            pending_change,
        }))
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
            .map_err(AuthorityError::from)?;
        Ok(Response::new(bundle))
    }

    async fn rotate_intermediate(
        &self,
        req: Request<pb::RotateIntermediateRequest>,
    ) -> Result<Response<pb::RotateResponse>, Status> {
        let caller = self.allow(&req, Action::ChangeCa)?;
        let region = req.into_inner().region;
        let change = self.0.plan_intermediate_rotation(&region).await?;
        let done = self.0.change_hierarchy(&caller, change, true).await?;
        Ok(Response::new(rotate_response(done)))
    }

    async fn rotate_root(
        &self,
        req: Request<pb::RotateRootRequest>,
    ) -> Result<Response<pb::RotateResponse>, Status> {
        let caller = self.allow(&req, Action::ChangeCa)?;
        let grace = match req.into_inner().grace_seconds {
            0 => crate::hierarchy::DEFAULT_ROOT_GRACE,
            s => Duration::from_secs(s),
        };
        let change = self.0.plan_root_rotation(grace).await?;
        let done = self.0.change_hierarchy(&caller, change, true).await?;
        Ok(Response::new(rotate_response(done)))
    }

    async fn force_renew(
        &self,
        req: Request<pb::ForceRenewRequest>,
    ) -> Result<Response<pb::RotateResponse>, Status> {
        let caller = self.allow(&req, Action::ChangeCa)?;
        let r = req.into_inner();
        let change = HierarchyChange::ForceRenew {
            issuer: nonempty(r.issuer),
            namespace: nonempty(r.namespace),
        };
        let done = self.0.change_hierarchy(&caller, change, false).await?;
        Ok(Response::new(rotate_response(done)))
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
            .map_err(AuthorityError::from)?;
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
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
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
        let c = self.0.crl(&r.issuer, r.shard, r.delta)?;
        Ok(Response::new(pb::GetCrlResponse {
            crl: c.der.to_vec(),
            crl_number: c.number,
            this_update: c.this_update,
            next_update: c.next_update,
        }))
    }
}
