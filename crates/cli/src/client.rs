//! Reaching a running cluster from the command line: endpoints from flags
//! or `QUORUMCA_ENDPOINTS`, credentials from `--credentials` or
//! `QUORUMCA_CREDENTIALS`. Every command goes through
//! `quorumca_client::Client` (failover, backoff, deadlines, the node
//! check); only commands about one particular node (`cluster status`
//! asks each node for its own view) open a channel to that node alone.

use std::time::Duration;

/// Which cluster to talk to and as whom: the flags every command that
/// talks to a cluster shares.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Node addresses (host:port), comma separated. The first that answers
    /// is used.
    #[arg(long, env = "QUORUMCA_ENDPOINTS", value_delimiter = ',')]
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
    require_endpoints(endpoints, "QUORUMCA_ENDPOINTS")?;
    let eps = endpoints
        .iter()
        .map(|e| quorumca_client::Endpoint::parse(e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cfg = quorumca_client::ClientConfig::new(eps);
    cfg.local_region = std::env::var("QUORUMCA_REGION").ok();
    cfg.credentials = credentials;
    Ok(quorumca_client::Client::new(cfg)?)
}

/// Refuses an empty endpoint list with what sets one: clap's own line
/// ("required argument --endpoints") names neither the variable nor the
/// file `quorumca dev` writes it to.
pub fn require_endpoints(endpoints: &[String], var: &str) -> anyhow::Result<()> {
    if endpoints.iter().all(|e| e.trim().is_empty()) {
        anyhow::bail!(
            "no endpoints: this command needs the cluster's node addresses. Pass --endpoints host:port,... or set {var}; after `quorumca dev`, `. dev-data/env` sets it (and QUORUMCA_CREDENTIALS)"
        );
    }
    Ok(())
}

/// How to point a command at a cluster: where every connection hint ends.
const HOW_TO_CONNECT: &str = "pass --endpoints and --credentials, or set QUORUMCA_ENDPOINTS and QUORUMCA_CREDENTIALS (after `quorumca dev`, `. dev-data/env` sets both)";

/// A failed call as a person reads it: what happened, then what to fix,
/// by the failure's type (never by its words).
pub fn client_error(e: quorumca_client::ClientError) -> anyhow::Error {
    anyhow::anyhow!("{}", explain(&e))
}

/// [`client_error`]'s text, for an error found anywhere in a chain.
pub fn explain(e: &quorumca_client::ClientError) -> String {
    use quorumca_client::ClientError;
    use quorumca_client::LinkFailure;
    let text = match e {
        ClientError::Status { code, message } => {
            status_error(tonic::Status::new(*code, message.clone()))
        }
        ClientError::Unreachable { addr, why } => {
            let fix = match &why {
                LinkFailure::ClientCertificateRequired | LinkFailure::ServerSpeaksTls => format!(
                    "this command ran without credentials; {HOW_TO_CONNECT}"
                ),
                LinkFailure::ClientCertificateRefused(_) => format!(
                    "the credential bundle is not one this cluster issued (another cluster's, or expired); use this cluster's: {HOW_TO_CONNECT}"
                ),
                LinkFailure::ServerNotTrusted(_) => format!(
                    "the credential bundle's ca.pem holds another cluster's roots (use this cluster's bundle), or {addr} is not a node of it; {HOW_TO_CONNECT}"
                ),
                LinkFailure::NotANode(_) | LinkFailure::NotTls(_) | LinkFailure::NotGrpc => format!(
                    "{addr} is not a QuorumCA node's API port (the HTTP port serves CRLs and OCSP, not the API; a node with insecure_plaintext takes no --credentials); {HOW_TO_CONNECT}"
                ),
                LinkFailure::ClosedSilently => format!(
                    "check that {addr} is a node's API port (`quorumca dev` prints them), not its HTTP port; {HOW_TO_CONNECT}"
                ),
                LinkFailure::NothingListening(_) => format!(
                    "is the node running? `quorumca dev` starts a local cluster; {HOW_TO_CONNECT}"
                ),
            };
            anyhow::anyhow!("cannot reach {addr}: {why}.\nTo fix: {fix}")
        }
        e @ ClientError::Exhausted {
            cause: Some(LinkFailure::NothingListening(_)),
            ..
        } => anyhow::anyhow!(
            "{e}.\nTo fix: start the cluster (`quorumca dev` runs a local one), or point at its nodes: {HOW_TO_CONNECT}"
        ),
        e @ ClientError::Exhausted {
            cause: Some(LinkFailure::ClosedSilently),
            ..
        } => anyhow::anyhow!(
            "{e}.\nTo fix: check that the endpoints are the nodes' API ports (`quorumca dev` prints them), not their HTTP ports; a node over its connection cap recovers as connections close"
        ),
        e @ ClientError::Exhausted { .. } if std::env::var_os("QUORUMCA_CREDENTIALS").is_none() => anyhow::anyhow!(
            "{e}.\nTo fix: if the cluster uses mTLS (the default), this command needs credentials; {HOW_TO_CONNECT}"
        ),
        e @ ClientError::Exhausted { .. } => anyhow::anyhow!(
            "{e}.\nThe nodes could not answer in time: `quorumca cluster status` shows whether there is a leader and a quorum"
        ),
        ClientError::Endpoint(m) => anyhow::anyhow!("{m}"),
    };
    text.to_string()
}

/// An error chain as one message: each cause once (a context that already
/// quotes its cause is not followed by it again), and a client error
/// anywhere in it explained with what to fix.
pub fn render(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<quorumca_client::ClientError>() {
            Some(c) => explain(c),
            None => cause.to_string(),
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        if cause.is::<quorumca_client::ClientError>() {
            break;
        }
    }
    parts.join(": ")
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

/// A client for one node alone, for commands about that node's own view
/// (`cluster status` asks each node): the same connection path, checks and
/// error explanations as every other command, with a short deadline, since
/// a node that is down should not hold up the others' answers.
pub fn node_client(
    endpoint: &str,
    credentials: Option<&std::path::Path>,
) -> anyhow::Result<quorumca_client::Client> {
    let ep = quorumca_client::Endpoint::parse(endpoint)?;
    let mut cfg = quorumca_client::ClientConfig::new(vec![ep]);
    cfg.credentials = self::credentials(credentials)?;
    cfg.attempt_timeout = Duration::from_secs(2);
    cfg.call_timeout = Duration::from_secs(2);
    Ok(quorumca_client::Client::new(cfg)?)
}

/// A channel to one node alone, for drivers that call its services
/// directly (the chaos drills read each node's own ledger); the CLI's
/// commands use [`node_client`]. Fails with the same explanations.
pub async fn node_channel(
    endpoint: &str,
    credentials: Option<&std::path::Path>,
) -> anyhow::Result<tonic::transport::Channel> {
    let creds = self::credentials(credentials)?;
    let ep = quorumca_client::endpoint_for(endpoint, creds.as_ref())?;
    ep.connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(|err| {
            let why = quorumca_client::diagnose(&err)
                .map(|w| w.to_string())
                .unwrap_or_else(|| quorumca_client::describe_transport_error(&err));
            anyhow::anyhow!("{endpoint}: {why}")
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
