//! Reaching a running cluster from the command line: endpoints from flags
//! or `QUORUMCA_ENDPOINTS`, the first that accepts a connection is used.

use std::time::Duration;

use anyhow::bail;
use tonic::transport::Channel;

/// Connects to the first endpoint that accepts a connection.
pub async fn channel(endpoints: &[String]) -> anyhow::Result<Channel> {
    let mut errors = Vec::new();
    for e in endpoints {
        let ep = match tonic::transport::Endpoint::from_shared(format!("http://{e}")) {
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
            Err(err) => errors.push(format!("{e}: {err}")),
        }
    }
    bail!(
        "no endpoint answered ({}). Is the cluster running? `quorumca dev` prints its endpoints",
        errors.join("; ")
    )
}

/// A gRPC error as a person reads it: the server's message says what to
/// fix; the code says what kind of failure it was.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}
