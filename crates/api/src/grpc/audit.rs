//! `AuditService`: pages of the audit log, sized for the wire.

use quorumca_ca::Action;
use tonic::{Request, Response, Status};

use super::Services;
use crate::pb;

/// About how many bytes of entries one QueryAudit page carries: a page
/// stays well under a client's 4 MiB message limit however large the
/// entries are; the caller pages on with `next_after_seq`.
const AUDIT_PAGE_BYTES: usize = 1024 * 1024;

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for Services {
    async fn query_audit(
        &self,
        req: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        self.allow(&req, Action::ReadAudit)?;
        let r = req.into_inner();
        let audit = self
            .0
            .audit_page(r.after_seq, r.limit, r.actor, r.denied_only)
            .await?;
        let mut trimmed = false;
        let mut bytes = 0usize;
        let mut page = Vec::with_capacity(audit.entries.len());
        for e in audit.entries {
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
        let next_after_seq = match page.last() {
            Some(last) if audit.full || trimmed => last.seq,
            _ => 0,
        };
        Ok(Response::new(pb::QueryAuditResponse {
            entries: page,
            chain_head: hex::encode(audit.chain_head),
            chain_length: audit.chain_length,
            next_after_seq,
        }))
    }
}
