//! `quorumca issue | revoke | crl | bundle`: certificates from a running
//! cluster.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use quorumca_proto::{self as pb, GetCrlRequest};
use serde::Serialize;

use crate::output::{json, table};

/// Output of commands that return certificates or CRLs.
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum CertOutput {
    /// A short summary.
    #[default]
    Table,
    /// Everything, as JSON, for scripts.
    Json,
    /// The certificate chain (or CRL) as PEM, nothing else: pipe it.
    Pem,
}

/// Where to send a certificate command, and how to show its answer.
#[derive(Debug, Args)]
pub struct CertConn {
    /// Cluster connection and output options.
    #[command(flatten)]
    pub target: crate::client::Target,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: CertOutput,
}

/// Key types `issue` and `renew` generate.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KeyType {
    /// ECDSA over P-256.
    EcdsaP256,
    /// ECDSA over P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

/// Issue a certificate from a CSR, or generate a key here and issue for it.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  quorumca issue --dns web.default.svc.dev.internal --out-dir ./certs
  quorumca issue --csr req.pem --namespace payments --profile service -o pem > chain.pem")]
pub struct IssueArgs {
    /// Cluster connection and output options.
    #[command(flatten)]
    pub conn: CertConn,
    /// A PKCS#10 CSR file (PEM or DER). Without it, a key is generated
    /// locally (never sent anywhere) for the names given.
    #[arg(long, conflicts_with_all = ["dns", "ip", "uri", "key_type"])]
    pub csr: Option<PathBuf>,
    /// DNS names for a generated key (repeatable).
    #[arg(long)]
    pub dns: Vec<String>,
    /// IP addresses for a generated key (repeatable).
    #[arg(long)]
    pub ip: Vec<IpAddr>,
    /// URI SANs, e.g. SPIFFE IDs, for a generated key (repeatable).
    #[arg(long)]
    pub uri: Vec<String>,
    /// Key type to generate.
    #[arg(long, value_enum)]
    pub key_type: Option<KeyType>,
    /// The namespace whose names to issue for.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The profile to issue under.
    #[arg(long, default_value = "service")]
    pub profile: String,
    /// Requested lifetime (e.g. 24h); the profile's default if absent.
    #[arg(long)]
    pub lifetime: Option<humantime::Duration>,
    /// Write key.pem (if generated), cert.pem, chain.pem and ca.pem (the
    /// cluster's roots) here: a credential bundle for QUORUMCA_CREDENTIALS
    /// and `quorumca renew --dir`.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// Renew a certificate with itself: it is the mTLS client identity of the
/// request, and the new certificate keeps its names, namespace and
/// profile. A new key is generated; the files in --dir are replaced
/// atomically (key.pem, cert.pem, chain.pem, as `quorumca issue --out-dir`
/// wrote them).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  quorumca renew --dir ./certs
  quorumca renew --dir ./certs --ca-file roots.pem --key-type ed25519")]
pub struct RenewArgs {
    /// Node API addresses (host:port), comma separated.
    #[arg(long, env = "QUORUMCA_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Holds key.pem and chain.pem (leaf first) of the certificate to
    /// renew; the renewed ones replace them.
    #[arg(long)]
    pub dir: PathBuf,
    /// The cluster's roots (PEM). Default: ca.pem of the credential bundle
    /// in QUORUMCA_CREDENTIALS.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Key type of the new key.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Requested lifetime (e.g. 24h); the profile's default if absent.
    #[arg(long)]
    pub lifetime: Option<humantime::Duration>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: CertOutput,
}

/// The reasons `revoke --reason` accepts: the wire's own enum (one name per
/// concept), spelled as `reason_name` prints them. removeFromCRL and
/// aACompromise are left out: the first only undoes a hold in delta CRLs,
/// the second concerns attribute authorities, which this CA is not.
const REVOKE_REASONS: [(&str, pb::RevocationReason); 8] = [
    ("unspecified", pb::RevocationReason::Unspecified),
    ("key-compromise", pb::RevocationReason::KeyCompromise),
    ("ca-compromise", pb::RevocationReason::CaCompromise),
    (
        "affiliation-changed",
        pb::RevocationReason::AffiliationChanged,
    ),
    ("superseded", pb::RevocationReason::Superseded),
    (
        "cessation-of-operation",
        pb::RevocationReason::CessationOfOperation,
    ),
    ("certificate-hold", pb::RevocationReason::CertificateHold),
    (
        "privilege-withdrawn",
        pb::RevocationReason::PrivilegeWithdrawn,
    ),
];

/// `--reason`'s parser: the kebab-case names, listed in `--help`.
fn reason_arg() -> impl clap::builder::TypedValueParser<Value = pb::RevocationReason> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(REVOKE_REASONS.map(|(name, _)| name)).map(|name| {
        REVOKE_REASONS
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r)
            .expect("a possible value")
    })
}

/// Revoke one certificate (by issuer and serial, or the certificate file)
/// or every certificate of a compromised key (--key).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  quorumca revoke --issuer dev-a --serial 0000000000000005a1b2c3d4e5f60718 --reason superseded
  quorumca revoke --cert dev-data/admin/cert.pem --reason key-compromise   # also bootstrap identities
  quorumca revoke --key leaked-cert.pem --reason key-compromise")]
pub struct RevokeArgs {
    /// Cluster connection and output options.
    #[command(flatten)]
    pub conn: CertConn,
    /// Issuer of the certificate (e.g. dev-a), with --serial.
    #[arg(long, required_unless_present_any = ["key", "cert"], requires = "serial")]
    pub issuer: Option<String>,
    /// Serial in hex, as printed by `quorumca issue` or `openssl x509 -serial`.
    #[arg(long, requires = "issuer")]
    pub serial: Option<String>,
    /// A public key, certificate or CSR (PEM or DER) holding the compromised
    /// key: revokes every live certificate for that key.
    #[arg(long, conflicts_with_all = ["issuer", "serial", "cert"])]
    pub key: Option<PathBuf>,
    /// The certificate to revoke (PEM or DER). Works for certificates the
    /// ledger has no record of too: the node and admin identities made by
    /// `quorumca dev` and `ca issue-identity`.
    #[arg(long, conflicts_with_all = ["issuer", "serial"])]
    pub cert: Option<PathBuf>,
    /// Why it is revoked.
    #[arg(long, value_parser = reason_arg(), default_value = "unspecified")]
    pub reason: pb::RevocationReason,
}

/// `quorumca crl`.
#[derive(Debug, Subcommand)]
pub enum CrlCmd {
    /// Fetch one CRL shard (as served over HTTP at the URL in certificates).
    Get {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: CertConn,
        /// The issuer (e.g. dev-a).
        #[arg(long)]
        issuer: String,
        /// The shard (a certificate's CRL URL names it).
        #[arg(long, default_value_t = 0)]
        shard: u64,
        /// The delta CRL instead of the full one.
        #[arg(long)]
        delta: bool,
        /// Write the DER CRL to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `quorumca cert`.
#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// One certificate: record, revocation status, the PEM if stored.
    ///
    /// Example: quorumca cert get --issuer dev-a --serial 36a2b825dc208da3
    Get {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: CertConn,
        /// The issuer (e.g. dev-a).
        #[arg(long)]
        issuer: String,
        /// Serial in hex, as `quorumca issue` printed it.
        #[arg(long)]
        serial: String,
    },
    /// Live certificates, filtered, in (issuer, serial) order.
    ///
    /// Example: quorumca cert list --namespace payments --revoked --limit 50
    List {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: CertConn,
        /// Only this namespace's certificates.
        #[arg(long, default_value = "")]
        namespace: String,
        /// Only this issuer's certificates (e.g. dev-a).
        #[arg(long, default_value = "")]
        issuer: String,
        /// Only certificates this identity asked for.
        #[arg(long, alias = "requester", default_value = "")]
        actor: String,
        /// Only revoked certificates.
        #[arg(long)]
        revoked: bool,
        /// Stop after this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// `quorumca bundle`.
#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// The roots (PEM) to trust, and the issuers under them.
    Get(CertConn),
}

/// The client library over the given endpoints (`host:port` or
/// `region=host:port`): failover, backoff and idempotent retries.
fn ca_client(conn: &CertConn) -> anyhow::Result<quorumca_client::Client> {
    let credentials = crate::client::credentials(conn.target.credentials.as_deref())?;
    crate::client::client_for(&conn.target.endpoints, credentials)
}

#[derive(Serialize)]
struct IssuedOut<'a> {
    issuer: &'a str,
    serial: &'a str,
    not_before: i64,
    not_after: i64,
    log_index: u64,
    certificate_pem: &'a str,
    chain_pem: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    written_to: Option<String>,
}

fn time_str(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64),
    )
    .to_string()
}

/// `quorumca issue`.
pub async fn issue(a: IssueArgs) -> anyhow::Result<()> {
    let (csr, key_pem) = match &a.csr {
        Some(path) => (
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            None,
        ),
        None => {
            if a.dns.is_empty() && a.ip.is_empty() && a.uri.is_empty() {
                bail!(
                    "give --csr FILE, or at least one --dns/--ip/--uri name to generate a key for"
                );
            }
            let key = generate_key(a.key_type.unwrap_or(KeyType::EcdsaP256))?;
            let csr = csr_for(&key, &a.dns, &a.ip, &a.uri)?;
            (csr, Some(zeroize::Zeroizing::new(key.serialize_pem())))
        }
    };
    let client = ca_client(&a.conn)?;
    let r = client
        .issue(pb::IssueRequest {
            csr,
            namespace: a.namespace.clone(),
            profile: a.profile.clone(),
            lifetime_seconds: a.lifetime.map(|d| d.as_secs()).unwrap_or(0),
            // One key for every retry the client makes: never two certificates.
            idempotency_key: quorumca_client::new_idempotency_key(),
        })
        .await
        .context("issuing")?;
    let written_to = match &a.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            if let Some(k) = &key_pem {
                replace_file(&dir.join("key.pem"), k.as_bytes(), 0o600)?;
            }
            replace_file(&dir.join("cert.pem"), r.certificate_pem.as_bytes(), 0o644)?;
            replace_file(&dir.join("chain.pem"), r.chain_pem.as_bytes(), 0o644)?;
            // With the roots beside them, the directory is a credential
            // bundle (QUORUMCA_CREDENTIALS) for whoever holds this identity.
            let bundle = client.trust_bundle().await.context("fetching the roots")?;
            replace_file(&dir.join("ca.pem"), bundle.roots_pem.as_bytes(), 0o644)?;
            Some(dir.display().to_string())
        }
        None => None,
    };
    match a.conn.output {
        CertOutput::Pem => {
            crate::out!("{}", r.chain_pem.trim_end());
            if let (Some(k), None) = (&key_pem, &a.out_dir) {
                crate::out!("{}", k.trim_end());
            }
        }
        CertOutput::Json => crate::out!(
            "{}",
            json(&IssuedOut {
                issuer: &r.issuer,
                serial: &r.serial,
                not_before: r.not_before,
                not_after: r.not_after,
                log_index: r.log_index,
                certificate_pem: &r.certificate_pem,
                chain_pem: &r.chain_pem,
                written_to: written_to.clone(),
            })
        ),
        CertOutput::Table => {
            crate::out!(
                "{}",
                table(
                    &["ISSUER", "SERIAL", "NOT BEFORE", "NOT AFTER", "LOG INDEX"],
                    &[vec![
                        r.issuer.clone(),
                        r.serial.clone(),
                        time_str(r.not_before),
                        time_str(r.not_after),
                        r.log_index.to_string(),
                    ]]
                )
            );
            match (&written_to, &key_pem) {
                (Some(d), Some(_)) => crate::out!("\nwrote {d}/key.pem (0600), {d}/cert.pem, {d}/chain.pem, {d}/ca.pem (roots)"),
                (Some(d), None) => crate::out!("\nwrote {d}/cert.pem, {d}/chain.pem, {d}/ca.pem (roots)"),
                (None, Some(_)) => eprintln!(
                    "note: the generated private key was not saved; pass --out-dir DIR (or -o pem) to keep it"
                ),
                (None, None) => eprintln!("note: pass --out-dir DIR or -o pem to get the certificate"),
            }
        }
    }
    Ok(())
}

/// A CSR for `key` asking for exactly these names.
pub(crate) fn csr_for(
    key: &rcgen::KeyPair,
    dns: &[String],
    ips: &[IpAddr],
    uris: &[String],
) -> anyhow::Result<Vec<u8>> {
    Ok(quorumca_agent::keys::csr_for(key, dns, ips, uris)?)
}

pub(crate) fn generate_key(t: KeyType) -> anyhow::Result<rcgen::KeyPair> {
    use quorumca_agent::keys::KeyAlgorithm;
    Ok(match t {
        KeyType::EcdsaP256 => KeyAlgorithm::EcdsaP256,
        KeyType::EcdsaP384 => KeyAlgorithm::EcdsaP384,
        KeyType::Ed25519 => KeyAlgorithm::Ed25519,
    }
    .generate()?)
}

/// Writes `data` to `path` the one way this project replaces files (the
/// agent's: a temporary file with exactly `mode` whatever the umask or a
/// leftover had, fsynced, renamed over `path`, the directory fsynced), so
/// a reader sees the old file or the new one and a key never widens.
fn replace_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    quorumca_agent::store::replace_file(path, data, mode, None)
        .with_context(|| format!("writing {}", path.display()))
}

/// `quorumca renew`.
pub async fn renew(a: RenewArgs) -> anyhow::Result<()> {
    let read = |p: PathBuf| std::fs::read(&p).with_context(|| format!("reading {}", p.display()));
    let chain_pem = read(a.dir.join("chain.pem"))?;
    let key_pem = read(a.dir.join("key.pem"))?;
    let ca_pem = match (&a.ca_file, std::env::var_os("QUORUMCA_CREDENTIALS")) {
        (Some(f), _) => read(f.clone())?,
        (None, Some(dir)) => read(PathBuf::from(dir).join("ca.pem"))?,
        (None, None) => anyhow::bail!(
            "pass --ca-file with the cluster's roots (or set QUORUMCA_CREDENTIALS to a bundle holding ca.pem)"
        ),
    };
    let leaf = quorumca_ca::first_certificate_der(&chain_pem)
        .with_context(|| format!("{}/chain.pem", a.dir.display()))?;
    // The new CSR asks for exactly the old certificate's names.
    let names = quorumca_ca::certificate_names(&leaf)
        .with_context(|| format!("reading the names of {}/chain.pem", a.dir.display()))?;
    let key = generate_key(a.key_type)?;
    let csr = csr_for(&key, &names.dns, &names.ips, &names.uris)?;
    let credentials = quorumca_client::Credentials {
        ca_pem,
        cert_pem: chain_pem,
        key_pem,
    };
    let r = crate::client::client_for(&a.endpoints, Some(credentials))?
        .renew(pb::RenewRequest {
            csr,
            lifetime_seconds: a.lifetime.map(|d| d.as_secs()).unwrap_or(0),
            idempotency_key: quorumca_client::new_idempotency_key(),
        })
        .await
        .context("renewing")?;
    // Key first: a reader that sees the new chain finds its key already.
    replace_file(
        &a.dir.join("key.pem"),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    replace_file(&a.dir.join("chain.pem"), r.chain_pem.as_bytes(), 0o644)?;
    replace_file(&a.dir.join("cert.pem"), r.certificate_pem.as_bytes(), 0o644)?;
    match a.output {
        CertOutput::Json => crate::out!(
            "{}",
            json(&serde_json::json!({"issuer": r.issuer, "serial": r.serial,
                "not_before": r.not_before, "not_after": r.not_after, "dir": a.dir}))
        ),
        CertOutput::Pem => crate::out!("{}", r.chain_pem.trim_end()),
        CertOutput::Table => crate::out!(
            "renewed: serial {} of {} valid until {}; replaced {}/key.pem, cert.pem, chain.pem",
            r.serial,
            r.issuer,
            time_str(r.not_after),
            a.dir.display()
        ),
    }
    Ok(())
}

/// `quorumca revoke`.
pub async fn revoke(a: RevokeArgs) -> anyhow::Result<()> {
    let client = ca_client(&a.conn)?;
    let summary = if let Some(path) = &a.key {
        let public_key =
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let r = client
            .revoke_by_key(pb::RevokeByKeyRequest {
                public_key,
                reason: a.reason as i32,
            })
            .await
            .context("revoking by key")?;
        serde_json::json!({ "revoked": r.revoked })
    } else {
        let (issuer, serial) = (
            a.issuer.clone().unwrap_or_default(),
            a.serial.clone().unwrap_or_default(),
        );
        let certificate = match &a.cert {
            Some(path) => {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
            }
            None => Vec::new(),
        };
        let r = client
            .revoke(pb::RevokeRequest {
                issuer: issuer.clone(),
                serial: serial.clone(),
                reason: a.reason as i32,
                idempotency_key: quorumca_client::new_idempotency_key(),
                certificate,
            })
            .await
            .context("revoking")?;
        serde_json::json!({
            "issuer": if r.issuer.is_empty() { issuer } else { r.issuer },
            "serial": if r.serial.is_empty() { serial } else { r.serial },
            "revoked_at_ms": r.revoked_at_ms, "log_index": r.log_index,
        })
    };
    match a.conn.output {
        CertOutput::Json => crate::out!("{}", json(&summary)),
        _ => match summary.get("revoked") {
            Some(n) => crate::out!("revoked {n} certificate(s) for that key"),
            None => crate::out!(
                "revoked {} of issuer {} (committed at log index {}); CRLs and OCSP reflect it within a second",
                summary["serial"].as_str().unwrap_or_default(),
                summary["issuer"].as_str().unwrap_or_default(),
                summary["log_index"]
            ),
        },
    }
    Ok(())
}

/// `quorumca crl`.
pub async fn crl(cmd: CrlCmd) -> anyhow::Result<()> {
    let CrlCmd::Get {
        conn,
        issuer,
        shard,
        delta,
        out,
    } = cmd;
    let r = ca_client(&conn)?
        .crl(GetCrlRequest {
            issuer: issuer.clone(),
            shard,
            delta,
        })
        .await?;
    if let Some(path) = &out {
        std::fs::write(path, &r.crl).with_context(|| format!("writing {}", path.display()))?;
    }
    match conn.output {
        CertOutput::Pem => {
            crate::out!("{}", quorumca_ca::pem_encode("X509 CRL", &r.crl).trim_end())
        }
        CertOutput::Json => crate::out!(
            "{}",
            json(&serde_json::json!({
                "issuer": issuer, "shard": shard, "delta": delta, "crl_number": r.crl_number,
                "this_update": r.this_update, "next_update": r.next_update, "bytes": r.crl.len(),
            }))
        ),
        CertOutput::Table => crate::out!(
            "{}",
            table(
                &[
                    "ISSUER",
                    "SHARD",
                    "KIND",
                    "NUMBER",
                    "THIS UPDATE",
                    "NEXT UPDATE",
                    "BYTES"
                ],
                &[vec![
                    issuer,
                    shard.to_string(),
                    if delta { "delta" } else { "full" }.into(),
                    r.crl_number.to_string(),
                    time_str(r.this_update),
                    time_str(r.next_update),
                    r.crl.len().to_string(),
                ]]
            )
        ),
    }
    Ok(())
}

/// `quorumca bundle`.
pub async fn bundle(cmd: BundleCmd) -> anyhow::Result<()> {
    let BundleCmd::Get(conn) = cmd;
    let b = ca_client(&conn)?.trust_bundle().await?;
    match conn.output {
        CertOutput::Pem => crate::out!("{}", b.roots_pem.trim_end()),
        CertOutput::Json => {
            let issuers: Vec<_> = b
                .issuers
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "id": i.id, "region": i.region, "parent": i.parent,
                        "crl_shards": i.crl_shards, "certificate_pem": i.certificate_pem,
                        "phase": i.phase,
                    })
                })
                .collect();
            let cross: Vec<_> = b
                .cross_certificates
                .iter()
                .map(|c| serde_json::json!({"subject": c.subject, "signer": c.signer, "certificate_pem": c.certificate_pem}))
                .collect();
            crate::out!(
                "{}",
                json(
                    &serde_json::json!({"roots_pem": b.roots_pem, "issuers": issuers,
                    "cross_certificates": cross, "version": b.version})
                )
            )
        }
        CertOutput::Table => {
            let rows: Vec<Vec<String>> = b
                .issuers
                .iter()
                .map(|i| {
                    vec![
                        i.id.clone(),
                        if i.parent.is_empty() {
                            "root".into()
                        } else {
                            "intermediate".into()
                        },
                        if i.region.is_empty() {
                            "-".into()
                        } else {
                            i.region.clone()
                        },
                        if i.parent.is_empty() {
                            "-".into()
                        } else {
                            i.parent.clone()
                        },
                        i.crl_shards.to_string(),
                        i.phase.clone(),
                    ]
                })
                .collect();
            crate::out!(
                "{}",
                table(
                    &["ISSUER", "KIND", "REGION", "PARENT", "CRL SHARDS", "PHASE"],
                    &rows
                )
            );
            for c in &b.cross_certificates {
                crate::out!("cross certificate: {} signed by {}", c.subject, c.signer);
            }
            crate::out!("\n(-o pem prints the roots to trust)");
        }
    }
    Ok(())
}

fn cert_row(c: &pb::CertificateInfo) -> Vec<String> {
    vec![
        c.issuer.clone(),
        c.serial.clone(),
        c.namespace.clone(),
        c.profile.clone(),
        time_str(c.not_after),
        if c.revoked {
            format!("revoked ({})", reason_name(c.revocation_reason))
        } else if c.archived {
            "expired".into()
        } else {
            "good".into()
        },
        c.actor.clone(),
    ]
}

fn reason_name(code: i32) -> String {
    pb::RevocationReason::try_from(code)
        .map(|r| {
            r.as_str_name()
                .trim_start_matches("REVOCATION_REASON_")
                .to_lowercase()
                .replace('_', "-")
        })
        .unwrap_or_else(|_| code.to_string())
}

fn cert_json(c: &pb::CertificateInfo) -> serde_json::Value {
    serde_json::json!({
        "issuer": c.issuer, "serial": c.serial, "namespace": c.namespace,
        "profile": c.profile, "actor": c.actor,
        "not_before": c.not_before, "not_after": c.not_after,
        "spki_sha256": c.spki_sha256, "revoked": c.revoked,
        "revoked_at_ms": c.revoked_at_ms,
        "revocation_reason": if c.revoked { reason_name(c.revocation_reason) } else { String::new() },
        "archived": c.archived, "certificate_pem": c.certificate_pem,
    })
}

const CERT_HEADERS: [&str; 7] = [
    "ISSUER",
    "SERIAL",
    "NAMESPACE",
    "PROFILE",
    "NOT AFTER",
    "STATUS",
    "ACTOR",
];

/// `quorumca cert`.
pub async fn cert(cmd: CertCmd) -> anyhow::Result<()> {
    match cmd {
        CertCmd::Get {
            conn,
            issuer,
            serial,
        } => {
            let c = ca_client(&conn)?
                .get_certificate(pb::GetCertificateRequest { issuer, serial })
                .await?;
            match conn.output {
                CertOutput::Json => crate::out!("{}", json(&cert_json(&c))),
                CertOutput::Pem if c.certificate_pem.is_empty() => anyhow::bail!(
                    "the cluster keeps only the compact record of this certificate (its profile does not say store = \"full\")"
                ),
                CertOutput::Pem => crate::out!("{}", c.certificate_pem.trim_end()),
                CertOutput::Table => crate::out!("{}", table(&CERT_HEADERS, &[cert_row(&c)])),
            }
        }
        CertCmd::List {
            conn,
            namespace,
            issuer,
            actor,
            revoked,
            limit,
        } => {
            let client = ca_client(&conn)?;
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_certificates(pb::ListCertificatesRequest {
                        namespace: namespace.clone(),
                        issuer: issuer.clone(),
                        actor: actor.clone(),
                        revoked_only: revoked,
                        page_size: (limit - all.len()).clamp(1, 1000) as u32,
                        page_token: token,
                    })
                    .await?;
                all.extend(page.certificates);
                token = page.next_page_token;
                if token.is_empty() || all.len() >= limit {
                    break;
                }
            }
            all.truncate(limit);
            match conn.output {
                CertOutput::Json => {
                    crate::out!("{}", json(&all.iter().map(cert_json).collect::<Vec<_>>()))
                }
                CertOutput::Pem => {
                    for c in all.iter().filter(|c| !c.certificate_pem.is_empty()) {
                        crate::out!("{}", c.certificate_pem.trim_end());
                    }
                }
                CertOutput::Table => {
                    let rows: Vec<_> = all.iter().map(cert_row).collect();
                    crate::out!("{}", table(&CERT_HEADERS, &rows));
                    if !token.is_empty() {
                        crate::out!("(more than {limit}; raise --limit or narrow the filters)");
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// `--reason` spells each reason as listings print it.
    #[test]
    fn reason_names_are_the_printed_ones() {
        for (name, r) in REVOKE_REASONS {
            assert_eq!(reason_name(r as i32), name);
        }
    }

    /// Security hardening 8: a key file that already existed with a wider
    /// mode is 0600 after it is written again.
    #[test]
    fn replaced_key_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace_file(&key, b"new key", 0o600).unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "new key");

        // A leftover temporary file with a wide mode must not pass it on.
        let renewed = dir.path().join("renewed.pem");
        let tmp = dir.path().join(".renewed.pem.tmp");
        std::fs::write(&tmp, "left over").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
        replace_file(&renewed, b"renewed key", 0o600).unwrap();
        assert_eq!(mode(&renewed), 0o600);
        assert!(!tmp.exists());
    }
}
