//! How bytes reach a node and leave it. Production uses TCP; a simulation
//! (or a test that wants to cut links in-process) hands the node its own
//! connections on both sides, and everything above them (TLS, HTTP/2,
//! gRPC, Raft) runs unchanged.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A byte stream between two nodes.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One connection, with the addresses of its two ends (the server side
/// reports them as a TCP connection's, which is what tonic's TLS layer
/// attaches the peer's certificates to).
pub struct Conn {
    io: Box<dyn Io>,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
}

impl Conn {
    pub fn new(io: impl Io, local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Self {
        Self {
            io: Box::new(io),
            local,
            remote,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: self.remote,
        }
    }
}

/// Connections arriving at a node.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>;

/// Opens a connection to a peer's advertised address (`host:port`).
pub type Dial = Arc<dyn Fn(String) -> BoxFuture<'static, io::Result<Conn>> + Send + Sync>;

/// Where a node's connections come from and how it opens its own.
pub struct Transport {
    /// The address peers are told to dial (unless `advertise` overrides).
    pub local_addr: SocketAddr,
    pub incoming: Incoming,
    /// None: tonic dials TCP itself.
    pub dial: Option<Dial>,
}

impl Transport {
    /// TCP on a bound listener. Nagle is off per connection: tonic's own
    /// tcp_nodelay only covers listeners it binds, and Nagle plus delayed
    /// ACKs add ~40 ms to a fraction of Raft round trips.
    pub fn tcp(listener: TcpListener) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
            let s = conn?;
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!(error = %e, "set_nodelay");
            }
            let (local, remote) = (s.local_addr().ok(), s.peer_addr().ok());
            Ok(Conn::new(s, local, remote))
        });
        Ok(Self {
            local_addr,
            incoming: Box::pin(incoming),
            dial: None,
        })
    }
}
