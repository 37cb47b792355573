//! `quorumca token create` (admins), `token grants` and `token
//! remove-grant` (the roles tokens granted), and `quorumca enroll` (a new
//! workload with a token and no certificate yet).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use quorumca_proto::enrollment_service_client::EnrollmentServiceClient;
use quorumca_proto::token_service_client::TokenServiceClient;
use quorumca_proto::{
    CreateTokenRequest, EnrollRequest, ListRoleBindingsRequest, RemoveRoleBindingRequest,
};

use crate::cluster::Conn;
use crate::output::{json, Output};
use quorumca_client::Retry;

/// `quorumca token`: join tokens and the roles they grant.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a single-use join token for one namespace: whoever presents
    /// it (once, before it expires) gets a first certificate there.
    #[command(after_help = "Examples:
  quorumca token create --namespace payments --ttl 10m
  quorumca token create --namespace payments --role issuer   # may issue in payments too")]
    Create {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: Conn,
        /// The namespace the enrolled identity gets its certificate in.
        #[arg(long)]
        namespace: String,
        /// Default: the namespace's first profile.
        #[arg(long, default_value = "")]
        profile: String,
        /// `issuer`: the enrolled identity may also issue in the namespace.
        #[arg(long)]
        role: Option<String>,
        /// How long the token stays usable (at most 24h).
        #[arg(long, default_value = "15m")]
        ttl: humantime::Duration,
    },
    /// List the roles join tokens granted. Each holds only for the
    /// certificate whose key it names, follows it through renewals, and
    /// ends when that certificate is revoked or expires; meanwhile its
    /// identity is reserved.
    #[command(after_help = "Example:
  quorumca token grants -o json")]
    Grants {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: Conn,
    },
    /// Withdraw the role a join token granted to an identity (and free the
    /// identity).
    #[command(after_help = "Example:
  quorumca token remove-grant --identity spiffe://dev.internal/ns/default/ci")]
    RemoveGrant {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: Conn,
        /// The identity (a SPIFFE ID) whose role to withdraw.
        #[arg(long)]
        identity: String,
    },
}

fn binding_json(b: &quorumca_proto::RoleBinding) -> serde_json::Value {
    serde_json::json!({
        "identity": b.identity,
        "role": b.role,
        "namespace": b.namespace,
        "enrolled_at_ms": b.enrolled_at_ms,
        "enrolled_at": crate::policy::when(b.enrolled_at_ms),
        "key_sha256": b.key_sha256,
    })
}

async fn grants(conn: Conn) -> anyhow::Result<()> {
    let r = conn
        .target
        .client()?
        .rpc(
            Retry::Idempotent,
            ListRoleBindingsRequest {},
            |ch, r| async move { TokenServiceClient::new(ch).list_role_bindings(r).await },
        )
        .await
        .map_err(crate::client::client_error)?;
    match conn.output {
        Output::Json => crate::out!(
            "{}",
            json(&serde_json::Value::Array(
                r.bindings.iter().map(binding_json).collect()
            ))
        ),
        Output::Table => {
            if r.bindings.is_empty() {
                crate::out!("no roles granted by join tokens");
            }
            for b in &r.bindings {
                crate::out!(
                    "{}  {} of {}  key sha256 {}  since {}",
                    b.identity,
                    b.role,
                    b.namespace,
                    &b.key_sha256[..b.key_sha256.len().min(16)],
                    crate::policy::when(b.enrolled_at_ms)
                );
            }
        }
    }
    Ok(())
}

async fn remove_grant(conn: Conn, identity: String) -> anyhow::Result<()> {
    let b = conn
        .target
        .client()?
        .rpc(
            Retry::Idempotent,
            RemoveRoleBindingRequest { identity },
            |ch, r| async move { TokenServiceClient::new(ch).remove_role_binding(r).await },
        )
        .await
        .map_err(crate::client::client_error)?;
    match conn.output {
        Output::Json => crate::out!("{}", json(&binding_json(&b))),
        Output::Table => crate::out!(
            "removed: {} no longer holds {} of {}",
            b.identity,
            b.role,
            b.namespace
        ),
    }
    Ok(())
}

/// Get a first certificate with a join token, on a node's enrolment port.
/// Generates the key here; writes a credential bundle (key.pem, cert.pem,
/// chain.pem, ca.pem) for QUORUMCA_CREDENTIALS and `quorumca renew`.
#[derive(Debug, Args)]
#[command(after_help = "Example:
  quorumca enroll --token qca_jt_... --ca-file ca.pem \\
      --uri spiffe://example.org/ns/payments/api --dns api.payments.svc --out-dir ./creds")]
pub struct EnrollArgs {
    /// Enrolment addresses (host:port), comma separated. `quorumca dev`
    /// writes them to dev-data/env.
    #[arg(long, env = "QUORUMCA_ENROLL_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// The token (`quorumca token create` printed it). Prefer
    /// QUORUMCA_JOIN_TOKEN over the flag: command lines are visible to
    /// other users of the machine.
    #[arg(long, env = "QUORUMCA_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The cluster's roots (PEM), to authenticate the node: get them from
    /// whoever gave you the token.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// DNS names to ask for (repeatable).
    #[arg(long)]
    pub dns: Vec<String>,
    /// IP addresses to ask for (repeatable).
    #[arg(long)]
    pub ip: Vec<std::net::IpAddr>,
    /// URI SANs; a token with a role binds it to the spiffe:// one.
    #[arg(long)]
    pub uri: Vec<String>,
    /// Directory for key.pem, cert.pem, chain.pem and ca.pem.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

/// Runs one `quorumca token` subcommand.
pub async fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    let (conn, namespace, profile, role, ttl) = match cmd {
        TokenCmd::Create {
            conn,
            namespace,
            profile,
            role,
            ttl,
        } => (conn, namespace, profile, role, ttl),
        TokenCmd::Grants { conn } => return grants(conn).await,
        TokenCmd::RemoveGrant { conn, identity } => return remove_grant(conn, identity).await,
    };
    let r = conn
        .target
        .client()?
        .rpc(
            Retry::UnlessSent,
            CreateTokenRequest {
                namespace: namespace.clone(),
                profile,
                role: role.unwrap_or_default(),
                ttl_seconds: ttl.as_secs(),
            },
            |ch, r| async move { TokenServiceClient::new(ch).create_token(r).await },
        )
        .await
        .map_err(crate::client::client_error)?;
    match conn.output {
        Output::Json => crate::out!(
            "{}",
            json(
                &serde_json::json!({"token": r.token, "expires_at_ms": r.expires_at_ms, "namespace": namespace})
            )
        ),
        Output::Table => {
            crate::out!("{}", r.token);
            eprintln!(
                "single use, for namespace {namespace}, until {}. Hand it over with the cluster's roots (`quorumca bundle get -o pem`); it is not shown again.",
                crate::policy::when(r.expires_at_ms)
            );
        }
    }
    Ok(())
}

/// `quorumca enroll`.
pub async fn enroll(a: EnrollArgs) -> anyhow::Result<()> {
    crate::client::require_endpoints(&a.endpoints, "QUORUMCA_ENROLL_ENDPOINTS")?;
    let ca_pem =
        std::fs::read(&a.ca_file).with_context(|| format!("reading {}", a.ca_file.display()))?;
    if a.dns.is_empty() && a.ip.is_empty() && a.uri.is_empty() {
        anyhow::bail!("name the certificate: --dns, --ip or --uri");
    }
    let key = crate::certs::generate_key(crate::certs::KeyType::EcdsaP256)?;
    let csr = crate::certs::csr_for(&key, &a.dns, &a.ip, &a.uri)?;
    // Server-authenticated TLS only (we have no certificate yet), and the
    // server must be a node: a workload holding a leaf for this address
    // must not be handed the token.
    let creds = quorumca_client::Credentials::server_only(ca_pem.clone());
    // A token works once: the request goes to another endpoint only if
    // this one could not be reached at all.
    let req = EnrollRequest {
        token: a.token.clone(),
        csr: csr.clone(),
        lifetime_seconds: 0,
    };
    let r = crate::client::client_for(&a.endpoints, Some(creds))?
        .rpc(Retry::UnlessSent, req, |ch, r| async move {
            EnrollmentServiceClient::new(ch).enroll(r).await
        })
        .await
        .map_err(crate::client::client_error)
        .context("enrolling")?;
    std::fs::create_dir_all(&a.out_dir)?;
    crate::ca::write_new(
        &a.out_dir.join("key.pem"),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    std::fs::write(a.out_dir.join("cert.pem"), &r.certificate_pem)?;
    std::fs::write(a.out_dir.join("chain.pem"), &r.chain_pem)?;
    std::fs::write(a.out_dir.join("ca.pem"), &ca_pem)?;
    match a.output {
        Output::Json => crate::out!(
            "{}",
            json(&serde_json::json!({"issuer": r.issuer, "serial": r.serial,
                "not_after": r.not_after, "dir": a.out_dir}))
        ),
        Output::Table => crate::out!(
            "enrolled: serial {} of {}; credential bundle in {} (renew with `quorumca renew --dir {}`)",
            r.serial,
            r.issuer,
            a.out_dir.display(),
            a.out_dir.display()
        ),
    }
    Ok(())
}
