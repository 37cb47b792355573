//! [`Conn`]: one connection of a node, whichever side opened it and
//! whatever carries it (TCP, or a simulation's in-memory pipe).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::listen::Admission;

use crate::Io;

/// One connection, with the addresses of its two ends (the server side
/// reports them as a TCP connection's, which is what tonic's TLS layer
/// attaches the peer's certificates to). One accepted by a bounded listener
/// holds its place under the listener's caps until it is dropped.
pub struct Conn {
    io: Box<dyn Io>,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    _admission: Option<Admission>,
}

impl Conn {
    /// Wraps an accepted or dialled stream with its addresses.
    pub fn new(io: impl Io, local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Self {
        Self {
            io: Box::new(io),
            local,
            remote,
            _admission: None,
        }
    }

    pub(crate) fn admitted(mut self, admission: Admission) -> Self {
        self._admission = Some(admission);
        self
    }

    /// The peer's address, if known.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// This side's address, if known.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
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
