//! The server half: the Raft transport and the Cluster service on one
//! tonic listener.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::Snapshot;
use quorumca_ledger::{Command, Proposal};
use quorumca_storage::{NodeInfo, TypeConfig};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::network::MAX_MESSAGE_BYTES;
use crate::node::{now_ms, Inner, Member};
use crate::pb::cluster_server::{Cluster, ClusterServer};
use crate::pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use crate::pb::{self, RaftMessage};
use crate::tls::{peer_interceptor, ClusterGate, ClusterOp, NodeTls};
use crate::wire::{self, decode, ForwardRequest, SnapshotTransfer};
use tonic::service::interceptor::InterceptedService;

pub(crate) async fn serve(
    inner: Arc<Inner>,
    incoming: crate::transport::Incoming,
    tls: Option<NodeTls>,
    limits: quorumca_net::ConnectionLimits,
    stop: oneshot::Receiver<()>,
) {
    let transport = RaftTransportServer::new(TransportService(inner.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let cluster = ClusterServer::new(ClusterService {
        inner: inner.clone(),
        gate: None,
    });
    let shutdown = async {
        let _ = stop.await;
    };
    // Keepalive, connection age and stream caps as on every node listener.
    // Peers cancel RPCs that outlive their deadline; behind a slow link many
    // are cancelled before this side accepts them, and h2's default (20
    // pending resets) would tear down the whole connection with every other
    // RPC on it: the builder raises that bound.
    let mut builder = quorumca_net::grpc::server(&limits, quorumca_net::grpc::Role::Raft);
    let result = match tls {
        None => {
            builder
                .add_service(transport)
                .add_service(cluster)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Some(tls) => {
            // Only nodes get past the interceptor: on this port, the Cluster
            // service too is for peers (operators use the API port).
            let check = peer_interceptor(tls.is_peer.clone(), inner.view.clone());
            match builder.tls_config(tls.server.clone().timeout(limits.handshake_timeout)) {
                Ok(mut b) => {
                    b.add_service(InterceptedService::new(transport, check.clone()))
                        .add_service(InterceptedService::new(cluster, check))
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                }
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server stopped");
    }
}

struct TransportService(Arc<Inner>);

fn raft_failed(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft: {e}"))
}

impl TransportService {
    fn reply<T: serde::Serialize>(&self, v: &T) -> Result<Response<RaftMessage>, Status> {
        // Replies are addressed back to "whoever asked"; 0 is never a node.
        Ok(Response::new(wire::encode(0, v)))
    }
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(self.0.id, "AppendEntries", req.get_ref())?;
        let resp = self.0.raft.append_entries(rpc).await.map_err(raft_failed)?;
        self.reply(&resp)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(self.0.id, "Vote", req.get_ref())?;
        let resp = self.0.raft.vote(rpc).await.map_err(raft_failed)?;
        self.reply(&resp)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: openraft::raft::TransferLeaderRequest<TypeConfig> =
            decode(self.0.id, "TransferLeader", req.get_ref())?;
        let resp = self
            .0
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(raft_failed)?;
        self.reply(&resp)
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(self.0.id, "PreVote", req.get_ref())?;
        let resp = self.0.raft.pre_vote(rpc).await.map_err(raft_failed)?;
        self.reply(&resp)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let t: SnapshotTransfer = decode(self.0.id, "InstallSnapshot", req.get_ref())?;
        // Check the data decodes before handing it to openraft, which treats
        // a failing install as fatal for the node: a bad message must not
        // take a healthy node down.
        quorumca_storage::validate_snapshot_data(&t.data)
            .map_err(|e| Status::invalid_argument(format!("InstallSnapshot: {e}")))?;
        let snapshot = Snapshot {
            meta: t.meta,
            snapshot: std::io::Cursor::new(t.data),
        };
        let resp = self
            .0
            .raft
            .install_full_snapshot(t.vote, snapshot)
            .await
            .map_err(raft_failed)?;
        self.reply(&resp)
    }

    async fn forward(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let fwd: ForwardRequest = decode(self.0.id, "Forward", req.get_ref())?;
        let timeout = self.0.propose_timeout;
        let result = self.0.execute_as_leader(&fwd, timeout).await;
        self.reply(&result)
    }
}

/// The Cluster service of one node; also mounted on the public API
/// listener (see [`crate::Node::cluster_service`]).
pub struct ClusterService {
    pub(crate) inner: Arc<Inner>,
    pub(crate) gate: Option<Arc<dyn ClusterGate>>,
}

impl ClusterService {
    fn check<T>(
        &self,
        req: &Request<T>,
        op: ClusterOp,
        method: &'static str,
    ) -> Result<(), Status> {
        match &self.gate {
            None => Ok(()),
            Some(g) => g.check(
                req.peer_certs().as_deref().map(|v| v.as_slice()),
                op,
                method,
            ),
        }
    }
}

fn member_pb(m: &Member) -> pb::Member {
    pb::Member {
        node_id: m.node_id,
        addr: m.info.addr.clone(),
        region: m.info.region.clone(),
        zone: m.info.zone.clone(),
        voter: m.voter,
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.check(&req, ClusterOp::Read, "Status")?;
        let s = self.inner.status();
        Ok(Response::new(pb::StatusResponse {
            node_id: s.node_id,
            role: s.role,
            leader_id: s.leader_id,
            term: s.term,
            last_log_index: s.last_log_index,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            members: s.members.iter().map(member_pb).collect(),
            ledger_hash: s.ledger_hash,
            snapshot_index: s.snapshot_index,
            live_certificates: s.live_certificates,
        }))
    }

    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        self.check(&req, ClusterOp::Read, "Ping")?;
        let payload = req.into_inner().payload;
        if payload.len() > 1024 {
            return Err(Status::invalid_argument(format!(
                "ping payload is {} bytes; the limit is 1024",
                payload.len()
            )));
        }
        let p = Proposal::new(now_ms(), Command::Noop { payload });
        let committed = self.inner.propose(p).await?;
        Ok(Response::new(pb::PingResponse {
            log_index: committed.log_index,
            leader_id: self.inner.leader_id().unwrap_or(0),
        }))
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.check(&req, ClusterOp::Change, "AddNode")?;
        let r = req.into_inner();
        let fwd = ForwardRequest::AddNode {
            node_id: r.node_id,
            info: NodeInfo {
                addr: r.addr,
                region: r.region,
                zone: r.zone,
            },
            voter: r.voter,
        };
        membership_reply(self.inner.change_membership(fwd).await?)
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.check(&req, ClusterOp::Change, "RemoveNode")?;
        let fwd = ForwardRequest::RemoveNode {
            node_id: req.into_inner().node_id,
        };
        membership_reply(self.inner.change_membership(fwd).await?)
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.check(&req, ClusterOp::Change, "TransferLeader")?;
        let to = req.into_inner().to_node_id;
        match self
            .inner
            .leader_call(ForwardRequest::TransferLeader { to })
            .await?
        {
            crate::wire::ForwardResponse::Transferred { leader, term } => {
                Ok(Response::new(pb::TransferLeaderResponse {
                    leader_id: leader,
                    term,
                }))
            }
            other => Err(Status::internal(format!(
                "the leader sent an unexpected answer: {other:?}"
            ))),
        }
    }
}

fn membership_reply(members: Vec<Member>) -> Result<Response<pb::MembershipResponse>, Status> {
    Ok(Response::new(pb::MembershipResponse {
        members: members.iter().map(member_pb).collect(),
    }))
}
