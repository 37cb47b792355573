//! Reaching a running cluster from the command line: endpoints from flags
//! or `QUORUMCA_ENDPOINTS`, credentials from `--credentials` or
//! `QUORUMCA_CREDENTIALS`. Every command goes through
//! `quorumca_client::Client` (failover, backoff, deadlines, the node
//! check); only commands about one particular node (`cluster status`
//! asks each node for its own view) open a channel to that node alone.

use std::time::Duration;

use tonic::transport::Channel;

/// Which cluster to talk to and as whom: the flags every command that
/// talks to a cluster shares.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Node addresses (host:port), comma separated. The first that answers
    /// is used.
    #[arg(
        long,
        env = "QUORUMCA_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    pub endpoints: Vec<String>,
    /// Credential bundle directory (ca.pem, cert.pem, key.pem) for mTLS.
    /// `quorumca dev` writes an admin bundle to dev-data/admin.
    #[arg(long, env = "QUORUMCA_CREDENTIALS")]
    pub credentials: Option<std::path::PathBuf>,
}

impl Target {
    /// The client over these endpoints, as whoever the credentials name.
    pub fn client(&self) -> anyhow::Result<quorumca_client::Client> {
        client_for(&self.endpoints, credentials(self.credentials.as_deref())?)
    }
}

/// The client library over `endpoints` (`host:port` or
/// `region=host:port`), as whoever `credentials` name;
/// `QUORUMCA_REGION`'s nodes first.
pub fn client_for(
    endpoints: &[String],
    credentials: Option<quorumca_client::Credentials>,
) -> anyhow::Result<quorumca_client::Client> {
    let eps = endpoints
        .iter()
        .map(|e| quorumca_client::Endpoint::parse(e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cfg = quorumca_client::ClientConfig::new(eps);
    cfg.local_region = std::env::var("QUORUMCA_REGION").ok();
    cfg.credentials = credentials;
    Ok(quorumca_client::Client::new(cfg)?)
}

/// A failed call as a person reads it, with the hint about credentials
/// when none were given and the failure looks like a refused handshake.
pub fn client_error(e: quorumca_client::ClientError) -> anyhow::Error {
    use quorumca_client::ClientError;
    match e {
        ClientError::Status { code, message } => status_error(tonic::Status::new(code, message)),
        e => {
            let hint = if std::env::var_os("QUORUMCA_CREDENTIALS").is_none() {
                " (if the cluster uses mTLS, the default, pass --credentials DIR or set QUORUMCA_CREDENTIALS; `. dev-data/env` does)"
            } else {
                ""
            };
            anyhow::anyhow!("{e}{hint}")
        }
    }
}

/// The credential bundle in `dir`, if one is given.
pub fn credentials(
    dir: Option<&std::path::Path>,
) -> anyhow::Result<Option<quorumca_client::Credentials>> {
    Ok(match dir {
        Some(d) => Some(quorumca_client::Credentials::from_dir(d)?),
        None => None,
    })
}

/// A channel to the one node at `endpoint`, over mTLS with the bundle in
/// `credentials` (plaintext without one): for questions about that node
/// itself, such as its own Raft status. Anything meant for the cluster
/// goes through [`Target::client`].
pub async fn node_channel(
    endpoint: &str,
    credentials: Option<&std::path::Path>,
) -> anyhow::Result<Channel> {
    let creds = self::credentials(credentials)?;
    let ep = quorumca_client::endpoint_for(endpoint, creds.as_ref())?;
    ep.connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(|err| {
            let hint = if creds.is_none() {
                " If the cluster uses mTLS (the default), pass --credentials or set QUORUMCA_CREDENTIALS (`. dev-data/env` does)."
            } else {
                ""
            };
            anyhow::anyhow!(
                "{endpoint}: {}. Is the node running? `quorumca dev` prints its endpoints.{hint}",
                quorumca_client::describe_transport_error(&err)
            )
        })
}

/// A gRPC error as a person reads it: the server's message says what to
/// fix; the code says what kind of failure it was.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    // A plaintext call to an mTLS port dies in the transport with nothing
    // to say; point at the likely cause.
    let hint = if std::env::var_os("QUORUMCA_CREDENTIALS").is_none()
        && matches!(
            s.code(),
            Code::Cancelled | Code::Unknown | Code::Unavailable
        ) {
        " (if the cluster uses mTLS, the default, pass --credentials DIR or set QUORUMCA_CREDENTIALS; `. dev-data/env` does)"
    } else {
        ""
    };
    anyhow::anyhow!("{} ({:?}){hint}", s.message(), s.code())
}
