//! The `[tls]` section of node.toml: this node's certificate and key, and
//! the cluster's roots that every peer and client certificate must chain
//! to. One certificate serves both listeners (Raft and API) and is the
//! node's client identity when it dials peers.
//!
//! ```toml
//! [tls]
//! ca_file = "/etc/quorumca/tls/ca.pem"        # the cluster's root(s)
//! cert_file = "/etc/quorumca/tls/node.pem"    # spiffe://<domain>/node/<id>
//! key_file = "/etc/quorumca/tls/node.key"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quorumca_ca::{identity_of, is_node_identity, node_identity, presented_cert, trust_domain};
use quorumca_consensus::NodeTls;
use quorumca_net::node_tls::{client_config, ClientIdentity, Expect};
use serde::Deserialize;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// node.toml's `[tls]`: this node's identity and the cluster's roots.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster's root certificates, PEM; every peer and client must chain to one.
    pub ca_file: PathBuf,
    /// This node's certificate (and chain), PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
}

/// Why the TLS material cannot be used; each says which file and what to
/// fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("[tls] {field}: cannot read {path}: {source}")]
    Read {
        /// The `[tls]` field naming it.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The material is unusable; the message says which and why.
    #[error("[tls] {0}")]
    Invalid(String),
}

/// The loaded TLS material of one node.
#[derive(Clone)]
pub struct NodeCredentials {
    /// The cluster's root certificates, PEM.
    pub ca_pem: Vec<u8>,
    /// This node's certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Its private key, PEM.
    pub key_pem: Vec<u8>,
    /// `spiffe://<trust domain>/node/<id>`, read from the certificate.
    pub identity: String,
    /// The trust domain of `identity`.
    pub trust_domain: String,
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_path_buf(),
        source,
    })
}

impl TlsConfig {
    /// Reads the files and checks the certificate is node `node_id`'s.
    pub fn load(&self, node_id: u64) -> Result<NodeCredentials, TlsError> {
        let ca_pem = read("ca_file", &self.ca_file)?;
        let cert_pem = read("cert_file", &self.cert_file)?;
        let key_pem = read("key_file", &self.key_file)?;
        if quorumca_ca::first_certificate_der(&ca_pem).is_err() {
            return Err(TlsError::Invalid(format!(
                "ca_file {} holds no PEM certificate",
                self.ca_file.display()
            )));
        }
        let der = quorumca_ca::first_certificate_der(&cert_pem).map_err(|e| {
            TlsError::Invalid(format!("cert_file {}: {e}", self.cert_file.display()))
        })?;
        if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
            return Err(TlsError::Invalid(format!(
                "key_file {} holds no PEM private key",
                self.key_file.display()
            )));
        }
        let identity = identity_of(&der).unwrap_or_default();
        let td = trust_domain(&identity).map(str::to_string);
        match td {
            Some(td) if identity == node_identity(&td, node_id) => {
                let creds = NodeCredentials {
                    ca_pem,
                    cert_pem,
                    key_pem,
                    identity,
                    trust_domain: td,
                };
                // The same material dials peers: fail now, not on first dial.
                creds.dial_config(node_id).map_err(|e| {
                    TlsError::Invalid(format!(
                        "ca_file {} / cert_file {} / key_file {}: {e}",
                        self.ca_file.display(),
                        self.cert_file.display(),
                        self.key_file.display()
                    ))
                })?;
                Ok(creds)
            }
            _ => Err(TlsError::Invalid(format!(
                "cert_file {} names {identity:?}; node {node_id} needs a certificate for spiffe://<trust domain>/node/{node_id} (`quorumca dev` writes them; or `quorumca ca issue-identity`)",
                self.cert_file.display()
            ))),
        }
    }
}

impl NodeCredentials {
    /// Server side: this node's certificate; client certificates required
    /// and verified against the cluster's roots.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// The enrolment port: this node's certificate, no client certificate
    /// asked for (callers there have none yet; the join token is their
    /// credential).
    pub fn server_config_without_client_auth(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// Client side, dialling node `peer`: this node's certificate as client
    /// identity, and only node `peer`'s root-signed certificate accepted.
    fn dial_config(
        &self,
        peer: u64,
    ) -> Result<Arc<quorumca_net::node_tls::TlsClientConfig>, quorumca_net::node_tls::TlsSetupError>
    {
        client_config(
            &self.ca_pem,
            Expect::Node {
                trust_domain: self.trust_domain.clone(),
                id: peer,
            },
            Some(ClientIdentity {
                chain_pem: &self.cert_pem,
                key_pem: &self.key_pem,
            }),
        )
    }

    /// What the consensus layer needs: both configs, and the check that
    /// admits only this trust domain's nodes to the Raft port.
    pub fn node_tls(&self) -> NodeTls {
        let td = self.trust_domain.clone();
        let me = self.clone();
        NodeTls {
            server: self.server_config(),
            client: Arc::new(move |peer| me.dial_config(peer).expect("checked when loaded")),
            is_peer: Arc::new(move |chain, ledger| {
                let Some(presented) = chain.first().and_then(|c| presented_cert(c.as_ref())) else {
                    return false;
                };
                let serial = quorumca_ledger::Serial(presented.serial);
                is_node_identity(&td, &presented.identity)
                    && !ledger
                        .issuers()
                        .any(|i| ledger.revocation(&i.id, &serial).is_some())
            }),
        }
    }
}
