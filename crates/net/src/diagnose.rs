//! Why a connection to a node failed, told apart by the types in the error
//! chain, never by its words: tonic's own message for most of these is
//! "transport error" or "h2 protocol error", which tells a person nothing
//! about what to fix.
//!
//! The causes a client can act on differ in what to fix: nothing listens
//! (start the node, or fix the address); the server wants a client
//! certificate we did not send, or refused the one we sent (use this
//! cluster's credentials); the server's certificate is not from our roots
//! (use this cluster's `ca.pem`); the server is not a node (a wrong
//! address, or someone else's server); the server does not speak TLS (a
//! plaintext node, or another service on the port).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::{AlertDescription, CertificateError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::node_tls::NotANode;
use crate::sent::NotSent;

/// What went wrong on the way to a node, as far as the error chain says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkFailure {
    /// The TCP connection was refused or has no route: nothing listens at
    /// the address (the node is down, or the address is wrong).
    #[error("nothing is listening there ({0})")]
    NothingListening(String),
    /// The server ended the TLS handshake because this client presented no
    /// certificate.
    #[error("the server requires a client certificate and this client sent none")]
    ClientCertificateRequired,
    /// The server refused the certificate this client presented; the TLS
    /// alert it sent is given (e.g. "unknown CA": not signed by its roots).
    #[error("the server refused this client's certificate (TLS alert: {0})")]
    ClientCertificateRefused(String),
    /// The server's certificate does not verify against this client's
    /// roots, or not as a node's (signed by a root itself).
    #[error("the server's certificate is not trusted as a node's by this client's roots: {0}")]
    ServerNotTrusted(String),
    /// The server's certificate verifies but is not a node's.
    #[error("{0}")]
    NotANode(String),
    /// The server answered something that is not TLS.
    #[error("the server does not speak TLS ({0})")]
    NotTls(String),
    /// This client dialled plaintext and the server answered in TLS: an
    /// mTLS node, reached without credentials.
    #[error("the server speaks TLS and this client dialled plaintext, without credentials")]
    ServerSpeaksTls,
    /// The server answered in HTTP/1: a web server (a node's HTTP port
    /// serves CRLs and OCSP), not the gRPC API.
    #[error("the server speaks HTTP/1, not gRPC")]
    NotGrpc,
    /// The server closed a plaintext connection before sending a byte: it
    /// is over its connection cap (a node closes such connections at
    /// once), or it is not a gRPC server (a node's HTTP port closes on an
    /// HTTP/2 preface without a word).
    #[error("the server closed the connection before answering (over its connection cap, or not a gRPC server)")]
    ClosedSilently,
}

impl LinkFailure {
    /// Whether another node may answer where this one did not: a node that
    /// is down is one node's problem; credentials, roots and the other
    /// causes are the same for every node of the cluster.
    pub fn is_one_node(&self) -> bool {
        matches!(self, Self::NothingListening(_) | Self::ClosedSilently)
    }
}

/// The first cause in `e`'s chain that says why a connection to a node
/// failed, if any does.
pub fn diagnose(e: &(dyn std::error::Error + 'static)) -> Option<LinkFailure> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(f) = one(err) {
            return Some(f);
        }
        // An io::Error's source() skips the error it wraps; look inside.
        if let Some(inner) = err.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(f) = diagnose(inner) {
                return Some(f);
            }
        }
        cur = err.source();
    }
    None
}

/// A node check's refusal: not signed by our roots at all is a matter of
/// trust (another cluster, or our roots out of date); signed by them but
/// for another identity or host is not a node.
fn node_check(n: &NotANode) -> LinkFailure {
    match n {
        NotANode::NotRootSigned { .. } => LinkFailure::ServerNotTrusted(n.to_string()),
        _ => LinkFailure::NotANode(n.to_string()),
    }
}

fn one(err: &(dyn std::error::Error + 'static)) -> Option<LinkFailure> {
    if let Some(n) = err.downcast_ref::<NotANode>() {
        return Some(node_check(n));
    }
    if let Some(w) = err.downcast_ref::<WrongProtocol>() {
        return Some(match w {
            WrongProtocol::Tls => LinkFailure::ServerSpeaksTls,
            WrongProtocol::Http1 => LinkFailure::NotGrpc,
        });
    }
    if let Some(s) = err.downcast_ref::<NotSent>() {
        if let Some(f) = refused_connect(&s.source) {
            return Some(f);
        }
    }
    if let Some(io) = err.downcast_ref::<io::Error>() {
        if let Some(f) = refused_connect(io) {
            return Some(f);
        }
    }
    let tls = err.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) => {
            match o.0.downcast_ref::<NotANode>() {
                Some(n) => node_check(n),
                None => LinkFailure::ServerNotTrusted(o.to_string()),
            }
        }
        rustls::Error::InvalidCertificate(c) => LinkFailure::ServerNotTrusted(certificate_error(c)),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            LinkFailure::ClientCertificateRequired
        }
        rustls::Error::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError),
        ) => LinkFailure::ClientCertificateRefused(alert_words(*a)),
        rustls::Error::InvalidMessage(m) => LinkFailure::NotTls(format!("{m:?}")),
        rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => {
            LinkFailure::NotTls(tls.to_string())
        }
        _ => return None,
    })
}

fn refused_connect(io: &io::Error) -> Option<LinkFailure> {
    use io::ErrorKind::*;
    matches!(
        io.kind(),
        ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
    )
    .then(|| LinkFailure::NothingListening(io.to_string()))
}

/// What a plaintext HTTP/2 client found the server speaking instead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WrongProtocol {
    #[error("the server answered in TLS")]
    Tls,
    #[error("the server answered in HTTP/1")]
    Http1,
}

/// Where a connection leaves why it failed. A read error inside the HTTP/2
/// connection never reaches the request that was waiting on it: the
/// request fails with "broken pipe", and the TLS alert or the foreign
/// protocol that caused it is lost. The connection's reader records it
/// here, and the client that owns the endpoint looks after a failure.
#[derive(Clone, Debug, Default)]
pub struct FailureSlot(Arc<Mutex<Option<LinkFailure>>>);

impl FailureSlot {
    /// The failure recorded since the last call, if any.
    pub fn take(&self) -> Option<LinkFailure> {
        self.0.lock().expect("failure slot").take()
    }

    fn set(&self, f: LinkFailure) {
        *self.0.lock().expect("failure slot") = Some(f);
    }
}

/// A stream to a node that records why its reads failed in a
/// [`FailureSlot`]. A plaintext one also checks the server's first bytes:
/// an HTTP/2 server speaks first with a SETTINGS frame, whose 3-byte length
/// is small; a TLS server answers a stray HTTP/2 preface with an alert
/// record (0x15 0x03 ...), and an HTTP/1 server with "HTTP/1.1 400".
/// Without this both surface from h2 as a bare "protocol error".
pub struct Watched<S> {
    inner: S,
    slot: FailureSlot,
    /// Whether the first bytes are still to be checked (plaintext only).
    sniff: bool,
}

impl<S> Watched<S> {
    /// Wraps a plaintext stream: its first bytes are checked.
    pub fn plain(inner: S, slot: FailureSlot) -> Self {
        Self {
            inner,
            slot,
            sniff: true,
        }
    }

    /// Wraps a TLS stream: read errors (a TLS alert after the handshake,
    /// such as a refused client certificate) are recorded.
    pub fn tls(inner: S, slot: FailureSlot) -> Self {
        Self {
            inner,
            slot,
            sniff: false,
        }
    }
}

/// What the server's first bytes say it speaks, if not HTTP/2.
fn foreign(first: &[u8]) -> Option<WrongProtocol> {
    match first {
        [0x15 | 0x16, 0x03, ..] | [0x15 | 0x16] => Some(WrongProtocol::Tls),
        _ if first.len() >= 4 && b"HTTP/".starts_with(&first[..first.len().min(5)]) => {
            Some(WrongProtocol::Http1)
        }
        _ => None,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) if self.sniff => {
                let got = &buf.filled()[before..];
                if got.is_empty() && buf.remaining() > 0 {
                    self.sniff = false;
                    self.slot.set(LinkFailure::ClosedSilently);
                } else if !got.is_empty() {
                    self.sniff = false;
                    if let Some(w) = foreign(got) {
                        let e = io::Error::other(w);
                        if let Some(f) = diagnose(&e) {
                            self.slot.set(f);
                        }
                        return Poll::Ready(Err(e));
                    }
                }
            }
            Poll::Ready(Err(e)) => {
                if let Some(f) = diagnose(e) {
                    self.slot.set(f);
                }
            }
            _ => {}
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A certificate error as a person reads it.
fn certificate_error(c: &CertificateError) -> String {
    match c {
        CertificateError::UnknownIssuer => {
            "it is not signed by any of them: another cluster's, or another CA's".into()
        }
        CertificateError::BadSignature => "its signature does not verify".into(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet: check this machine's clock".into()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it is not valid for the address dialled".into()
        }
        other => format!("{other:?}"),
    }
}

fn alert_words(a: AlertDescription) -> String {
    match a {
        AlertDescription::UnknownCA => "unknown CA: not signed by the server's roots".into(),
        AlertDescription::BadCertificate => "bad certificate".into(),
        AlertDescription::CertificateUnknown => "certificate unknown".into(),
        AlertDescription::CertificateRevoked => "certificate revoked".into(),
        AlertDescription::CertificateExpired => "certificate expired".into(),
        AlertDescription::UnsupportedCertificate => "unsupported certificate".into(),
        AlertDescription::AccessDenied => "access denied".into(),
        AlertDescription::DecryptError => "decrypt error: the key does not match".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(e: rustls::Error) -> io::Error {
        io::Error::other(e)
    }

    #[test]
    fn tells_the_causes_apart_through_io_errors() {
        let cases = [
            (
                wrapped(rustls::Error::AlertReceived(
                    AlertDescription::CertificateRequired,
                )),
                LinkFailure::ClientCertificateRequired,
            ),
            (
                wrapped(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
                LinkFailure::ClientCertificateRefused(
                    "unknown CA: not signed by the server's roots".into(),
                ),
            ),
            (
                wrapped(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
                LinkFailure::ServerNotTrusted(
                    "it is not signed by any of them: another cluster's, or another CA's".into(),
                ),
            ),
            (
                wrapped(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                LinkFailure::NotTls("InvalidContentType".into()),
            ),
            (
                io::Error::from(io::ErrorKind::ConnectionRefused),
                LinkFailure::NothingListening("connection refused".into()),
            ),
        ];
        for (e, want) in cases {
            let sent = NotSent {
                addr: "127.0.0.1:1".into(),
                source: e,
            };
            assert_eq!(diagnose(&sent), Some(want));
        }
    }

    #[test]
    fn a_plaintext_client_tells_tls_and_http1_servers_from_http2() {
        assert!(matches!(
            foreign(&[0x15, 0x03, 0x03, 0, 2]),
            Some(WrongProtocol::Tls)
        ));
        assert!(matches!(
            foreign(b"HTTP/1.1 400 Bad Request"),
            Some(WrongProtocol::Http1)
        ));
        // An HTTP/2 SETTINGS frame: length 0x000012, type 4.
        assert!(foreign(&[0, 0, 0x12, 4, 0, 0, 0, 0, 0]).is_none());
        let e = io::Error::other(WrongProtocol::Tls);
        assert_eq!(diagnose(&e), Some(LinkFailure::ServerSpeaksTls));
        let e = io::Error::other(WrongProtocol::Http1);
        assert_eq!(diagnose(&e), Some(LinkFailure::NotGrpc));
    }

    #[tokio::test]
    async fn a_watched_plain_stream_fails_the_first_read_from_a_tls_server_only() {
        use tokio::io::AsyncReadExt;
        let slot = FailureSlot::default();
        let tls_alert = [0x15u8, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32];
        let mut s = Watched::plain(&tls_alert[..], slot.clone());
        let mut buf = [0u8; 16];
        let e = s.read(&mut buf).await.unwrap_err();
        assert_eq!(diagnose(&e), Some(LinkFailure::ServerSpeaksTls));
        assert_eq!(slot.take(), Some(LinkFailure::ServerSpeaksTls));
        assert_eq!(slot.take(), None, "taken once");
        let settings_then_more = [0u8, 0, 0, 4, 0, 0, 0, 0, 0, 0x15, 0x03];
        let mut s = Watched::plain(&settings_then_more[..], slot.clone());
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(n, 11, "an HTTP/2 server's bytes pass through");
        assert_eq!(slot.take(), None);
        // An end of stream before any byte: closed without a word.
        let mut s = Watched::plain(&[][..], slot.clone());
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
        assert_eq!(slot.take(), Some(LinkFailure::ClosedSilently));
        // A TLS stream is not sniffed: its first bytes are decrypted data.
        let mut s = Watched::tls(&tls_alert[..], slot.clone());
        assert_eq!(s.read(&mut buf).await.unwrap(), 7);
    }

    /// A reader that fails as a TLS stream does when the server sends an
    /// alert after the handshake.
    struct Alerting;
    impl AsyncRead for Alerting {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
            )))
        }
    }

    #[tokio::test]
    async fn a_watched_tls_stream_records_an_alert_after_the_handshake() {
        use tokio::io::AsyncReadExt;
        let slot = FailureSlot::default();
        let mut s = Watched::tls(Alerting, slot.clone());
        let mut buf = [0u8; 4];
        assert!(s.read(&mut buf).await.is_err());
        assert_eq!(slot.take(), Some(LinkFailure::ClientCertificateRequired));
    }

    #[test]
    fn an_unrelated_error_is_no_diagnosis() {
        let e = io::Error::other("disk full");
        assert_eq!(diagnose(&e), None);
        let e = wrapped(rustls::Error::General("x".into()));
        assert_eq!(diagnose(&e), None);
    }
}
