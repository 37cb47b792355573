//! Reaching a running cluster from the command line: endpoints from flags
//! or `QUORUMCA_ENDPOINTS`, the first that accepts a connection is used.

use std::time::Duration;

use anyhow::bail;
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
    /// A channel to the first endpoint that answers, over mTLS when
    /// credentials are given.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        channel(&self.endpoints, self.credentials.as_deref()).await
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

/// Connects to the first endpoint that accepts a connection, over mTLS
/// with the bundle in `credentials` (plaintext without one).
pub async fn channel(
    endpoints: &[String],
    credentials: Option<&std::path::Path>,
) -> anyhow::Result<Channel> {
    let creds = self::credentials(credentials)?;
    let mut errors = Vec::new();
    for e in endpoints {
        let ep = match quorumca_client::endpoint_for(e, creds.as_ref()) {
            Ok(ep) => ep,
            Err(err) => {
                errors.push(format!("{e}: not host:port ({err})"));
                continue;
            }
        };
        match ep
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(20))
            .connect()
            .await
        {
            Ok(ch) => return Ok(ch),
            Err(err) => errors.push(format!(
                "{e}: {}",
                quorumca_client::describe_transport_error(&err)
            )),
        }
    }
    let hint = if creds.is_none() {
        " If the cluster uses mTLS (the default), pass --credentials or set QUORUMCA_CREDENTIALS (`. dev-data/env` does)."
    } else {
        ""
    };
    bail!(
        "no endpoint answered ({}). Is the cluster running? `quorumca dev` prints its endpoints.{hint}",
        errors.join("; ")
    )
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
