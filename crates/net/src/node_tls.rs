//! Clients that check they reached a node.
//!
//! The cluster's root anchors every workload certificate too, so "chains to
//! the root and names this host" is something any workload with a leaf for
//! an allowed IP can satisfy: it could answer `quorumca enroll` and take
//! the join token, or accept `policy apply`. A QuorumCA node proves more:
//!
//! - its certificate is signed by a root directly. Workload leaves are only
//!   ever signed by the regional intermediates, and the cluster signs node
//!   identities with the root (or an operator does, offline), so no
//!   workload certificate passes whatever the policy says;
//! - it names `spiffe://<trust domain>/node/<id>`: of the caller's trust
//!   domain when the caller knows it, and of the very node id a Raft peer
//!   dialled;
//! - and, as any TLS server, it is valid now for the host name dialled.
//!
//! Every client of a node (the CLI, the Rust client and so the agent,
//! enrolment, and nodes dialling each other) connects through
//! [`connector`] with a [`NodeVerifier`]; tonic's own TLS settings have no
//! place for a verifier of our own.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

pub use rustls::ClientConfig as TlsClientConfig;

use crate::sent::NotSent;

/// Which node a client means to reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Any node; of this trust domain when it is known (a client with a
    /// certificate of its own knows it; one enrolling may not).
    AnyNode {
        /// The trust domain, when known.
        trust_domain: Option<String>,
    },
    /// Node `id` of `trust_domain`: what a Raft peer dialled.
    Node {
        /// The trust domain.
        trust_domain: String,
        /// The node's id.
        id: u64,
    },
}

impl Expect {
    fn allows(&self, identity: &str) -> bool {
        match self {
            Expect::AnyNode {
                trust_domain: Some(td),
            } => quorumca_ca::is_node_identity(td, identity),
            Expect::AnyNode { trust_domain: None } => quorumca_ca::trust_domain(identity)
                .is_some_and(|td| quorumca_ca::is_node_identity(td, identity)),
            Expect::Node { trust_domain, id } => {
                identity == quorumca_ca::node_identity(trust_domain, *id)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Expect::AnyNode {
                trust_domain: Some(td),
            } => format!("a node of {td} (spiffe://{td}/node/<id>)"),
            Expect::AnyNode { trust_domain: None } => {
                "a node (spiffe://<trust domain>/node/<id>)".into()
            }
            Expect::Node { trust_domain, id } => quorumca_ca::node_identity(trust_domain, *id),
        }
    }
}

/// Why a server is not the node a client meant to reach. The message names
/// what the server presented, so an operator can find who is answering.
#[derive(Debug, thiserror::Error)]
pub enum NotANode {
    /// The certificate is not signed directly by a root.
    #[error("the server presented {presented}, which is not signed by the cluster's root itself ({reason}); QuorumCA nodes present root-signed certificates for spiffe://<trust domain>/node/<id>, and no workload certificate is one")]
    NotRootSigned {
        /// What the certificate calls itself.
        presented: String,
        /// Why verification failed.
        reason: String,
    },
    /// The certificate is a node's, but not the one dialled.
    #[error("the server presented {presented}, not {expected}")]
    WrongIdentity {
        /// What the certificate calls itself.
        presented: String,
        /// The identity expected.
        expected: String,
    },
    /// The certificate is not valid for the host name dialled.
    #[error("the server presented {presented}, which is not valid for {host}: {reason}")]
    WrongHost {
        /// What the certificate calls itself.
        presented: String,
        /// The host dialled.
        host: String,
        /// Why it does not match.
        reason: String,
    },
}

/// What a certificate calls itself, for error messages.
fn presented(cert: &CertificateDer<'_>) -> String {
    match quorumca_ca::presented_cert(cert.as_ref()) {
        Some(p) if p.identity.starts_with("spiffe://") => {
            format!("a certificate for {}", p.identity)
        }
        Some(p) if !p.identity.is_empty() => {
            format!("a certificate for {:?} (no SPIFFE ID)", p.identity)
        }
        _ => "a certificate with no SPIFFE ID".into(),
    }
}

fn refuse(e: NotANode) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

/// Accepts only a server certificate signed directly by one of `roots`,
/// valid for the host dialled, naming the node [`Expect`]ed.
#[derive(Debug)]
pub struct NodeVerifier {
    roots: Vec<rustls::pki_types::TrustAnchor<'static>>,
    expect: Expect,
    provider: Arc<CryptoProvider>,
}

/// TLS material that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The roots do not parse or are empty.
    #[error("the cluster's roots: {0}")]
    Roots(String),
    /// The client certificate or key does not parse or do not match.
    #[error("the client certificate and key: {0}")]
    Identity(String),
}

impl NodeVerifier {
    /// A verifier trusting `roots_pem` (PEM certificates), accepting only the node `expect` names.
    pub fn new(roots_pem: &[u8], expect: Expect) -> Result<Self, TlsSetupError> {
        let mut roots = Vec::new();
        for der in rustls_pemfile_certs(roots_pem)? {
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| TlsSetupError::Roots(format!("not a usable root: {e}")))?;
            roots.push(anchor.to_owned());
        }
        if roots.is_empty() {
            return Err(TlsSetupError::Roots(
                "no certificate in the PEM text".into(),
            ));
        }
        Ok(Self {
            roots,
            expect,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Roots(format!("not PEM certificates: {e}")))
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
            refuse(NotANode::NotRootSigned {
                presented: presented(end_entity),
                reason: format!("it does not parse: {e}"),
            })
        })?;
        // No intermediates: a path must end at a root in one step.
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.roots,
            &[],
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            refuse(NotANode::NotRootSigned {
                presented: presented(end_entity),
                reason: e.to_string(),
            })
        })?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| {
                refuse(NotANode::WrongHost {
                    presented: presented(end_entity),
                    host: server_name.to_str().into_owned(),
                    reason: e.to_string(),
                })
            })?;
        let identity = quorumca_ca::identity_of(end_entity.as_ref()).unwrap_or_default();
        if !self.expect.allows(&identity) {
            return Err(refuse(NotANode::WrongIdentity {
                presented: presented(end_entity),
                expected: self.expect.describe(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client certificate chain (leaf first) and its key, PEM.
pub struct ClientIdentity<'a> {
    /// The chain, PEM, leaf first.
    pub chain_pem: &'a [u8],
    /// Its private key, PEM.
    pub key_pem: &'a [u8],
}

/// A rustls client configuration that speaks HTTP/2, trusts only a node
/// [`Expect`]ed under `roots_pem`, and presents `identity` if given.
pub fn client_config(
    roots_pem: &[u8],
    expect: Expect,
    identity: Option<ClientIdentity<'_>>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    let verifier = Arc::new(NodeVerifier::new(roots_pem, expect)?);
    let builder = ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Roots(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.chain_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsSetupError::Identity(format!("certificates: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(id.key_pem)
                .map_err(|e| TlsSetupError::Identity(format!("key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsSetupError::Identity(e.to_string()))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The trust domain of the first certificate in `chain_pem`, if it names a
/// SPIFFE ID: what a client with a certificate expects its nodes to be in.
pub fn trust_domain_of(chain_pem: &[u8]) -> Option<String> {
    let der = quorumca_ca::first_certificate_der(chain_pem).ok()?;
    let id = quorumca_ca::identity_of(&der)?;
    quorumca_ca::trust_domain(&id).map(str::to_string)
}

/// Completes TLS with `config` over `io`, to `host` (a DNS name or an IP).
pub async fn handshake<S: crate::Io>(
    config: Arc<ClientConfig>,
    host: &str,
    io: S,
) -> io::Result<tokio_rustls::client::TlsStream<S>> {
    let name = ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
}

/// What [`connector`] hands tonic.
pub type TlsIo =
    hyper_util::rt::TokioIo<crate::Watched<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>;

/// A connector for tonic (`Endpoint::connect_with_connector`): TCP to the
/// URI's host and port, then TLS with `config`. Use an `http://` URI:
/// TLS is done here, not by tonic. Why a connection fails after its
/// handshake (a TLS alert: a refused client certificate) is left in
/// `slot`, since the request waiting on it only sees "broken pipe".
pub fn connector(
    config: Arc<ClientConfig>,
    slot: crate::FailureSlot,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = TlsIo,
    Error = NotSent,
    Future = futures::future::BoxFuture<'static, Result<TlsIo, NotSent>>,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |uri: tonic::codegen::http::Uri| {
        let (config, slot) = (config.clone(), slot.clone());
        let dial: futures::future::BoxFuture<'static, Result<TlsIo, NotSent>> =
            Box::pin(async move {
                let (host, port, addr) = crate::sent::host_port(&uri)?;
                let not_sent = |source| NotSent {
                    addr: addr.clone(),
                    source,
                };
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(not_sent)?;
                tcp.set_nodelay(true).map_err(not_sent)?;
                let tls = handshake(config, &host, tcp).await.map_err(not_sent)?;
                Ok(hyper_util::rt::TokioIo::new(crate::Watched::tls(tls, slot)))
            });
        dial
    })
}

/// The [`NotANode`] inside an error chain, if that is why a connection
/// failed: callers say it plainly instead of "transport error".
pub fn not_a_node<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a NotANode> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(n) = err.downcast_ref::<NotANode>() {
            return Some(n);
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(o))) =
            err.downcast_ref::<rustls::Error>()
        {
            if let Some(n) = o.0.downcast_ref::<NotANode>() {
                return Some(n);
            }
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(n) = not_a_node(inner) {
                    return Some(n);
                }
            }
        }
        cur = err.source();
    }
    None
}
