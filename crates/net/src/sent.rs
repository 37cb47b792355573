//! Whether a request left this process: the one question a client must
//! answer before it sends a write again.
//!
//! A failure to open a connection (nothing listening, a refused or failed
//! TLS handshake, a server that is not a node) means no request went out
//! on it, so any request may go to another node. Any failure once a
//! connection exists (a reset, a timeout, a closed stream) may come after
//! the server executed the request, so only an idempotent request may be
//! sent again. The connectors of this crate return [`NotSent`] for the
//! first kind; [`never_sent`] finds it by type, never by the message's
//! words ("connection reset" must not read as "could not connect").

use std::io;

use crate::diagnose::{FailureSlot, Watched};

/// The connection could not be opened, so no request went out on it.
#[derive(Debug, thiserror::Error)]
#[error("could not connect to {addr}: {source}")]
pub struct NotSent {
    /// The address dialled.
    pub addr: String,
    /// Why the connection failed.
    #[source]
    pub source: io::Error,
}

/// Whether `error` (a tonic `Status`, a transport error, anything with
/// sources) is a failure to open the connection: a [`NotSent`] somewhere
/// in its chain of sources.
pub fn never_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<NotSent>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<NotSent>().is_some())
            {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// A plaintext connection as tonic sees it.
pub type PlainIo = hyper_util::rt::TokioIo<Watched<tokio::net::TcpStream>>;

/// A plaintext TCP connector for tonic (test clusters and nodes without
/// TLS) whose connection failures are [`NotSent`], and which tells a TLS or
/// HTTP/1 server from a plaintext node ([`Watched`]), leaving why a
/// connection failed in `slot`.
pub fn tcp_connector(
    slot: FailureSlot,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = PlainIo,
    Error = NotSent,
    Future = futures::future::BoxFuture<'static, Result<PlainIo, NotSent>>,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |uri: tonic::codegen::http::Uri| {
        let slot = slot.clone();
        let dial: futures::future::BoxFuture<'static, _> = Box::pin(async move {
            let (host, port, addr) = host_port(&uri)?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|source| NotSent {
                    addr: addr.clone(),
                    source,
                })?;
            tcp.set_nodelay(true)
                .map_err(|source| NotSent { addr, source })?;
            Ok(hyper_util::rt::TokioIo::new(Watched::plain(tcp, slot)))
        });
        dial
    })
}

/// Host (without IPv6 brackets), port and `host:port` of a dialled URI.
pub(crate) fn host_port(uri: &tonic::codegen::http::Uri) -> Result<(String, u16, String), NotSent> {
    let addr = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let host = uri.host().ok_or_else(|| NotSent {
        addr: addr.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "no host in the URI"),
    })?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, uri.port_u16().unwrap_or(443), addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_through_io_errors_and_sources_but_not_by_words() {
        let sent = NotSent {
            addr: "a:1".into(),
            source: io::Error::new(io::ErrorKind::ConnectionRefused, "refused"),
        };
        let wrapped = io::Error::other(sent);
        assert!(never_sent(&wrapped));
        let status = tonic::Status::from_error(Box::new(wrapped));
        assert!(never_sent(&status));
        let reset = io::Error::new(
            io::ErrorKind::ConnectionReset,
            "could not connect: connection reset",
        );
        assert!(!never_sent(&reset));
        assert!(!never_sent(&tonic::Status::unavailable("connect error")));
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_not_sent() {
        use tower::ServiceExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let uri: tonic::codegen::http::Uri = format!("http://127.0.0.1:{port}").parse().unwrap();
        let e = tcp_connector(Default::default())
            .oneshot(uri)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(never_sent(&e), "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}
