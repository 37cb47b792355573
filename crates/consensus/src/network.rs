//! The client half of the Raft transport: openraft's network traits over
//! tonic, one lazily connected channel per peer address.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::RaftNetworkV2;
use quorumca_storage::{NodeInfo, Snapshot, SnapshotData, TypeConfig, Vote};
use tonic::transport::{Channel, Endpoint};

use crate::pb::raft_transport_client::RaftTransportClient;
use crate::pb::RaftMessage;
use crate::wire::{self, decode_payload, ForwardRequest, ForwardResult, SnapshotTransfer};

/// Snapshots and large append batches exceed tonic's 4 MiB default.
pub(crate) const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// How long opening a connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[cfg(test)]
use quorumca_net::never_sent;
use quorumca_net::NotSent;

/// Shared pool of channels to peers, keyed by node id and address. Channels
/// reconnect by themselves, so one per peer is enough for the node's
/// lifetime.
#[derive(Clone, Default)]
pub struct PeerPool {
    channels: Arc<Mutex<HashMap<(u64, String), Channel>>>,
    /// None: plaintext (test clusters).
    tls: Option<crate::tls::DialTls>,
    /// None: TCP.
    dial: Option<crate::transport::Dial>,
}

/// Opens the connection to `to` (TCP, or the transport's own dial), within
/// [`CONNECT_TIMEOUT`].
async fn open(
    dial: Option<&crate::transport::Dial>,
    to: &str,
) -> std::io::Result<crate::transport::Conn> {
    let opened = match dial {
        Some(dial) => tokio::time::timeout(CONNECT_TIMEOUT, dial(to.to_string())).await,
        None => {
            tokio::time::timeout(CONNECT_TIMEOUT, async {
                let s = tokio::net::TcpStream::connect(to).await?;
                s.set_nodelay(true)?;
                let (local, remote) = (s.local_addr().ok(), s.peer_addr().ok());
                Ok(crate::transport::Conn::new(s, local, remote))
            })
            .await
        }
    };
    opened.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {CONNECT_TIMEOUT:?}"),
        ))
    })
}

impl PeerPool {
    pub fn new(tls: Option<crate::tls::DialTls>, dial: Option<crate::transport::Dial>) -> Self {
        Self {
            channels: Default::default(),
            tls,
            dial,
        }
    }

    /// A client of node `target` at `addr`. Over TLS the connection is
    /// only kept if the server proves to be node `target`.
    pub fn client(
        &self,
        target: u64,
        addr: &str,
    ) -> Result<RaftTransportClient<Channel>, tonic::transport::Error> {
        let mut map = self.channels.lock().expect("peer pool lock");
        let key = (target, addr.to_string());
        let channel = match map.get(&key) {
            Some(c) => c.clone(),
            None => {
                // TLS, when configured, is done by the connector below (so
                // the verifier can require node `target`): tonic sees http.
                let e = Endpoint::from_shared(format!("http://{addr}"))?;
                let e = e
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    // A peer that crashed while segments to it were in
                    // flight can leave this connection waiting for acks
                    // that never come (the simulation found a follower
                    // left behind that way for longer than its 15 s check).
                    // Pings find a dead connection within 5 s, and the
                    // next call dials afresh.
                    .http2_keep_alive_interval(Duration::from_secs(2))
                    .keep_alive_timeout(Duration::from_secs(3))
                    .keep_alive_while_idle(true);
                // Our own connector, so a connection that cannot be opened
                // (or proves not to be node `target`) fails with a typed
                // `NotSent`: no request went out on it.
                let dial = self.dial.clone();
                let tls = self.tls.as_ref().map(|f| f(target));
                let c = e.connect_with_connector_lazy(tower::service_fn(
                    move |uri: tonic::codegen::http::Uri| {
                        let dial = dial.clone();
                        let tls = tls.clone();
                        async move {
                            let to = uri.authority().map(|a| a.to_string()).unwrap_or_default();
                            let conn = open(dial.as_ref(), &to)
                                .await
                                .map_err(|source| NotSent {
                                    addr: to.clone(),
                                    source,
                                })?;
                            let conn = match tls {
                                None => conn,
                                Some(tls) => {
                                    let host = uri.host().unwrap_or_default().to_string();
                                    let (local, remote) = (conn.local_addr(), conn.remote_addr());
                                    let secured = tokio::time::timeout(
                                        CONNECT_TIMEOUT * 4,
                                        quorumca_net::node_tls::handshake(tls, &host, conn),
                                    )
                                    .await
                                    .unwrap_or_else(|_| {
                                        Err(std::io::Error::new(
                                            std::io::ErrorKind::TimedOut,
                                            "TLS handshake did not finish in time",
                                        ))
                                    })
                                    .map_err(|source| {
                                        if let Some(n) =
                                            quorumca_net::node_tls::not_a_node(&source)
                                        {
                                            tracing::warn!(peer = target, addr = %to, "refusing the peer connection: {n}");
                                        }
                                        NotSent {
                                            addr: to.clone(),
                                            source,
                                        }
                                    })?;
                                    crate::transport::Conn::new(secured, local, remote)
                                }
                            };
                            Ok::<_, NotSent>(hyper_util::rt::TokioIo::new(conn))
                        }
                    },
                ));
                map.insert(key, c.clone());
                c
            }
        };
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Sends a forwarded request to `addr` and decodes the leader's answer.
    pub async fn forward(
        &self,
        target: u64,
        addr: &str,
        req: &ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResult, tonic::Status> {
        let mut client = self.client(target, addr).map_err(|e| {
            tonic::Status::invalid_argument(format!("bad peer address {addr}: {e}"))
        })?;
        let mut request = tonic::Request::new(wire::encode(target, req));
        request.set_timeout(timeout);
        let resp = client.forward(request).await?.into_inner();
        decode_payload("forward response", &resp.payload).map_err(tonic::Status::from)
    }
}

pub struct NetworkFactory {
    pub(crate) pool: PeerPool,
    /// Deadline of an append that carries entries; see [`PeerNetwork`].
    pub(crate) append_deadline: Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> PeerNetwork {
        PeerNetwork {
            target,
            client: self.pool.client(target, &node.addr),
            append_deadline: self.append_deadline,
        }
    }
}

pub struct PeerNetwork {
    target: u64,
    client: Result<RaftTransportClient<Channel>, tonic::transport::Error>,
    /// openraft gives every append the heartbeat interval as its deadline.
    /// Right for heartbeats; for appends that carry entries it means one
    /// retransmitted segment on a lossy cross-region link cancels the RPC,
    /// resets its stream and sends it all again, and replication crawls
    /// (the link-faults drill). Nothing in openraft times the replication
    /// stream itself, so entry-carrying appends get this longer deadline.
    append_deadline: Duration,
}

/// A status the peer answered with, or a transport failure. Transport
/// failures make openraft back off ("unreachable"); answers do not.
fn to_rpc_error(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&status))
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl PeerNetwork {
    async fn call<Req, Resp, F, Fut>(
        &mut self,
        req: &Req,
        ttl: Duration,
        what: &'static str,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftTransportClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let mut request = tonic::Request::new(wire::encode(self.target, req));
        request.set_timeout(ttl);
        let resp = f(client, request).await.map_err(to_rpc_error)?.into_inner();
        decode_payload(what, &resp.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = if rpc.entries.is_empty() {
            option.hard_ttl()
        } else {
            option.hard_ttl().max(self.append_deadline)
        };
        self.call(
            &rpc,
            ttl,
            "append-entries response",
            |mut c, r| async move { c.append_entries(r).await },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            &rpc,
            option.hard_ttl(),
            "vote response",
            |mut c, r| async move { c.vote(r).await },
        )
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: openraft::raft::TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<openraft::raft::TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            &req,
            option.hard_ttl(),
            "transfer-leader response",
            |mut c, r| async move { c.transfer_leader(r).await },
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            &rpc,
            option.hard_ttl(),
            "pre-vote response",
            |mut c, r| async move { c.pre_vote(r).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let transfer = SnapshotTransfer {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let send = self.call(
            &transfer,
            option.hard_ttl(),
            "install-snapshot response",
            |mut c, r| async move { c.install_snapshot(r).await },
        );
        // Biased: an unbiased select draws from tokio's unseeded RNG, and
        // the simulation must replay.
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => r.map_err(|e| match e {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn request() -> ForwardRequest {
        ForwardRequest::Propose(Box::new(quorumca_ledger::Proposal::new(
            1,
            quorumca_ledger::Command::Noop { payload: vec![] },
        )))
    }

    /// Security hardening 9: nothing listening is "never sent" by type; a
    /// connection reset after the request went out is not, although its
    /// message speaks of a connection (the old rule, UNAVAILABLE plus the
    /// word "connect", retried it and could apply a proposal twice).
    #[tokio::test]
    async fn only_a_connection_that_never_opened_counts_as_never_sent() {
        let pool = PeerPool::new(None, None);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let status = pool
            .forward(2, &addr, &request(), Duration::from_secs(2))
            .await
            .expect_err("nothing listens");
        assert!(never_sent(&status), "{status:?}");

        // A peer that reads the request, then resets the connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            // The HTTP/2 preface and settings, then the request's frames.
            while got < 100 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            // A zero linger makes the drop send RST (and does not block:
            // there is nothing left to flush).
            #[allow(deprecated)]
            s.set_linger(Some(Duration::ZERO)).unwrap();
            drop(s);
            got
        });
        let status = pool
            .forward(2, &addr, &request(), Duration::from_secs(2))
            .await
            .expect_err("the peer reset the connection");
        assert!(server.await.unwrap() >= 100, "the request was sent");
        assert!(!never_sent(&status), "{status:?}");
        // The words alone decide nothing: an UNAVAILABLE that speaks of a
        // reset connection (as hyper, a proxy or the leader itself may
        // say after the request arrived) is not "never sent".
        for words in [
            "error reading a body from connection: connection reset by peer",
            "tcp connect error: Connection refused",
        ] {
            assert!(!never_sent(&tonic::Status::unavailable(words)), "{words}");
        }
    }
}
