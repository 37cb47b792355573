//! How bytes reach a node and leave it. Production uses TCP; a simulation
//! (or a test that wants to cut links in-process) hands the node its own
//! connections on both sides, and everything above them (TLS, HTTP/2,
//! gRPC, Raft) runs unchanged.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::Stream;
use tokio::net::TcpListener;

pub use quorumca_net::{Conn, Io};

/// Connections arriving at a node.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>;

/// Opens a connection to a peer's advertised address (`host:port`).
pub type Dial = Arc<dyn Fn(String) -> BoxFuture<'static, io::Result<Conn>> + Send + Sync>;

/// Where a node's connections come from and how it opens its own.
pub struct Transport {
    /// The address peers are told to dial (unless `advertise` overrides).
    pub local_addr: SocketAddr,
    /// Accepted connections the Raft server reads from.
    pub incoming: Incoming,
    /// None: tonic dials TCP itself.
    pub dial: Option<Dial>,
}

impl Transport {
    /// TCP on a bound listener, under `limits` (nodes only get past the
    /// TLS check, but anyone can open a TCP connection). Nagle is off per
    /// connection: tonic's own tcp_nodelay only covers listeners it binds,
    /// and Nagle plus delayed ACKs add ~40 ms to a fraction of Raft round
    /// trips.
    pub fn tcp(listener: TcpListener, limits: quorumca_net::ListenerLimits) -> io::Result<Self> {
        let bounded = quorumca_net::listen::bounded(listener, "raft", limits)?;
        Ok(Self {
            local_addr: bounded.local_addr,
            incoming: bounded.incoming,
            dial: None,
        })
    }
}
