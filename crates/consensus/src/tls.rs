//! mTLS between nodes, and the gate in front of the Cluster service.
//!
//! This crate does not read certificates or decide who is who: the binary
//! hands it ready TLS configurations and two checks ([`NodeTls`]), so the
//! parsing of identities stays with the crates that own PKI and roles.

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tonic::transport::ServerTlsConfig;
use tonic::Status;

/// Decides whether a TLS peer (its certificate chain, leaf first) is a node
/// of this cluster: only nodes may speak Raft or forward proposals. It sees
/// this node's ledger, so a node identity revoked there is refused.
pub type PeerCheck =
    Arc<dyn Fn(&[CertificateDer<'static>], &quorumca_ledger::State) -> bool + Send + Sync>;

/// The TLS client configuration for dialling node `id`: this node's
/// certificate as client identity, and a verifier that accepts only node
/// `id`'s certificate (`quorumca_net::node_tls`), so a peer is sure it
/// reached the node it meant, not another node or a workload.
pub type DialTls = Arc<dyn Fn(u64) -> Arc<quorumca_net::node_tls::TlsClientConfig> + Send + Sync>;

/// The TLS side of one node.
#[derive(Clone)]
pub struct NodeTls {
    /// The Raft listener: this node's certificate, client certificates
    /// required and verified against the cluster's roots.
    pub server: ServerTlsConfig,
    /// Dialling peers.
    pub client: DialTls,
    /// Whether a verified peer certificate is a node of this cluster.
    pub is_peer: PeerCheck,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

/// What a Cluster call would do, for [`ClusterGate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterOp {
    /// Status, and Ping (a no-op through the log: a liveness probe).
    Read,
    /// Membership and leadership changes.
    Change,
}

/// Authorises Cluster calls that arrive on the public API port (the Raft
/// port only admits nodes). Implemented by the API crate, which knows roles.
pub trait ClusterGate: Send + Sync + 'static {
    /// Whether a caller with these certificates may perform `op`; `method` names it in refusals and
    /// audit.
    fn check(
        &self,
        peer_certs: Option<&[CertificateDer<'static>]>,
        op: ClusterOp,
        method: &'static str,
    ) -> Result<(), Status>;
}

/// The interceptor of the Raft listener: refuses any caller whose client
/// certificate is not a node's.
pub(crate) fn peer_interceptor(
    check: PeerCheck,
    view: quorumca_storage::LedgerView,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, Status> + Clone {
    move |req: tonic::Request<()>| {
        let certs = req.peer_certs();
        match certs.as_deref() {
            Some(chain) if !chain.is_empty() && check(chain, &view.read().state) => Ok(req),
            Some(_) => Err(Status::permission_denied(
                "the Raft port admits cluster nodes only (an unrevoked certificate with spiffe://<trust domain>/node/<id>); use the API port",
            )),
            None => Err(Status::unauthenticated(
                "the Raft port requires a node's client certificate",
            )),
        }
    }
}
