//! `quorumca ca ...`: offline root CA operations.
//!
//! The root key can live outside the cluster: `init-root` writes the root
//! certificate and the root key sealed under a passphrase (PBKDF2 +
//! AES-256-GCM), and `sign-intermediate` unseals it only for the moment it
//! signs an intermediate CSR. Run these on an offline machine.
//!
//! Between them, `prepare-intermediate` and `install-intermediate` talk to
//! the cluster: a node generates the intermediate's key (it never leaves the
//! cluster unsealed) and a CSR; after the offline signing, the certificate
//! is checked and registered.
//!
//! `rotate-intermediate`, `rotate-root` and `force-renew` change the
//! hierarchy of a running cluster whose root key it holds.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use quorumca_ca::{Kek, SealedKey, Validity, DEFAULT_KDF_ITERATIONS};
use quorumca_client::Retry;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Key types for CA keys made offline.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CaAlgorithm {
    /// ECDSA over P-256.
    EcdsaP256,
    /// ECDSA over P-384 (the root's default).
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl CaAlgorithm {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// `quorumca ca`: the CA hierarchy, online and offline.
#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// Create a root CA: writes root.pem and root.key.json (the key sealed
    /// under a passphrase) to --out-dir. Refuses to overwrite.
    ///
    /// Example: quorumca ca init-root --out-dir ./root --passphrase-file pass.txt
    InitRoot {
        /// Directory for root.pem and root.key.json (created; must not hold them already).
        #[arg(long)]
        out_dir: PathBuf,
        /// File holding the passphrase (at least 16 bytes; trailing newline ignored).
        #[arg(long, env = "QUORUMCA_ROOT_PASSPHRASE_FILE")]
        passphrase_file: PathBuf,
        /// The root's common name.
        #[arg(long, default_value = "QuorumCA Root")]
        common_name: String,
        /// The root's key type.
        #[arg(long, value_enum, default_value = "ecdsa-p384")]
        algorithm: CaAlgorithm,
        /// Validity, e.g. 10y, 5y.
        #[arg(long, default_value = "10y")]
        validity: humantime::Duration,
    },
    /// Ask the cluster for a region's intermediate key: writes <region>.csr
    /// (for sign-intermediate) and <region>.sealed-key (the key sealed
    /// under the cluster's unseal secret) to --out-dir.
    ///
    /// Example: quorumca ca prepare-intermediate --region eu-west --out-dir ./eu-west
    PrepareIntermediate {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: crate::cluster::Conn,
        /// The region whose intermediate key to prepare.
        #[arg(long)]
        region: String,
        /// Directory for <region>.csr and <region>.sealed-key.
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Register an intermediate signed by the offline root with the cluster.
    ///
    /// Example: quorumca ca install-intermediate --region eu-west --cert eu-west.pem \
    ///            --root root/root.pem --sealed-key eu-west/eu-west.sealed-key
    InstallIntermediate {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: crate::cluster::Conn,
        /// The region the intermediate serves.
        #[arg(long)]
        region: String,
        /// The intermediate certificate from sign-intermediate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The offline root's certificate (PEM).
        #[arg(long)]
        root: PathBuf,
        /// The <region>.sealed-key written by prepare-intermediate.
        #[arg(long)]
        sealed_key: PathBuf,
    },
    /// Rotate a region's intermediate: a new key and certificate under the
    /// current root sign the region's new leaves from now on. The old one
    /// stays in the bundle, and its CRLs and OCSP stay served, until its
    /// last leaf expires; then the cluster retires it and destroys its key.
    ///
    /// Example: quorumca ca rotate-intermediate --region dev-a
    RotateIntermediate {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: crate::cluster::Conn,
        /// The region whose intermediate to rotate.
        #[arg(long)]
        region: String,
    },
    /// Roll the root over: a new root, cross-signed with the current one
    /// both ways, and a new intermediate under it for every region. Both
    /// roots stay in the trust bundle for the grace window (clients holding
    /// either validate every chain); then the old root is withdrawn once
    /// its intermediates are retired.
    ///
    /// Example: quorumca ca rotate-root --grace 30d
    RotateRoot {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: crate::cluster::Conn,
        /// How long both roots stay in the bundle at least.
        #[arg(long, default_value = "30d")]
        grace: humantime::Duration,
    },
    /// Make every agent holding a certificate of an issuer (or namespace)
    /// renew now: the response to a compromised key.
    ///
    /// Example: quorumca ca force-renew --issuer dev-a
    #[command(group = clap::ArgGroup::new("scope").required(true).multiple(true))]
    ForceRenew {
        /// Cluster connection and output options.
        #[command(flatten)]
        conn: crate::cluster::Conn,
        /// Every certificate of this issuer (e.g. dev-a).
        #[arg(long, group = "scope")]
        issuer: Option<String>,
        /// Every certificate of this namespace.
        #[arg(long, group = "scope")]
        namespace: Option<String>,
    },
    /// Sign an intermediate CA (pathLen 0) for a CSR with the offline root.
    ///
    /// Example: quorumca ca sign-intermediate --root-dir ./root --passphrase-file pass.txt \
    ///            --csr eu-west.csr --region eu-west --out eu-west.pem
    SignIntermediate {
        /// Directory holding root.pem and root.key.json (from init-root).
        #[arg(long)]
        root_dir: PathBuf,
        /// File holding the root's passphrase.
        #[arg(long, env = "QUORUMCA_ROOT_PASSPHRASE_FILE")]
        passphrase_file: PathBuf,
        /// The intermediate's CSR (PEM or DER); its key never leaves where it was made.
        #[arg(long)]
        csr: PathBuf,
        /// Region the intermediate serves; becomes part of its name.
        #[arg(long)]
        region: String,
        /// Validity of the intermediate, e.g. 1y.
        #[arg(long, default_value = "1y")]
        validity: humantime::Duration,
        /// Where to write the intermediate certificate (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a TLS identity with the offline root: a node's certificate
    /// (--server, spiffe://<domain>/node/<id>, its addresses as --ip/--dns)
    /// or the first admin's. Writes cert.pem, key.pem (0600) and ca.pem to
    /// --out-dir: the node's [tls] files, or a credential bundle.
    #[command(after_help = "Examples:
  quorumca ca issue-identity --root-dir ./root --passphrase-file pass.txt \\
      --spiffe-id spiffe://example.org/node/1 --server --ip 10.0.0.1 --out-dir node1-tls
  quorumca ca issue-identity --root-dir ./root --passphrase-file pass.txt \\
      --spiffe-id spiffe://example.org/admin/alice --out-dir alice")]
    IssueIdentity {
        /// Directory holding root.pem and root.key.json (from init-root).
        #[arg(long)]
        root_dir: PathBuf,
        /// File holding the root's passphrase.
        #[arg(long, env = "QUORUMCA_ROOT_PASSPHRASE_FILE")]
        passphrase_file: PathBuf,
        /// The identity, e.g. spiffe://example.org/node/1 or spiffe://example.org/admin/alice.
        #[arg(long)]
        spiffe_id: String,
        /// A node: the certificate also serves TLS.
        #[arg(long)]
        server: bool,
        /// DNS names clients dial the node by (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses clients dial the node by (repeatable).
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// Validity, e.g. 1y.
        #[arg(long, default_value = "1y")]
        validity: humantime::Duration,
        /// Directory for cert.pem, key.pem and ca.pem (created; must not hold them already).
        #[arg(long)]
        out_dir: PathBuf,
    },
}

/// Writes an identity signed by `root` to `dir`: cert.pem, key.pem (0600)
/// and the root as ca.pem. Refuses to overwrite.
pub(crate) fn write_identity(
    dir: &Path,
    root: &quorumca_ca::CaSigner,
    spiffe_id: &str,
    server: bool,
    dns: Vec<String>,
    ips: Vec<std::net::IpAddr>,
    validity: Duration,
) -> anyhow::Result<()> {
    if quorumca_ca::trust_domain(spiffe_id).is_none() {
        bail!("{spiffe_id:?} is not a SPIFFE ID (spiffe://<trust domain>/<path>)");
    }
    std::fs::create_dir_all(dir)?;
    let rng = SystemRandom::new();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let t = now();
    let der = quorumca_ca::sign_identity(
        root,
        &key,
        &quorumca_ca::IdentitySpec {
            spiffe_id: spiffe_id.into(),
            dns,
            ips,
            server,
            validity: Validity {
                not_before: t - 60,
                not_after: t + validity.as_secs() as i64,
            },
            serial: random_serial(&rng)?,
        },
    )?;
    write_new(
        &dir.join("cert.pem"),
        quorumca_ca::pem_encode("CERTIFICATE", &der).as_bytes(),
        0o644,
    )?;
    write_new(&dir.join("key.pem"), key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&dir.join("ca.pem"), root.cert_pem().as_bytes(), 0o644)?;
    Ok(())
}

/// The offline root, unsealed with its passphrase.
fn load_root(root_dir: &Path, passphrase_file: &Path) -> anyhow::Result<quorumca_ca::CaSigner> {
    let cert_der = {
        let pem = std::fs::read_to_string(root_dir.join("root.pem"))
            .with_context(|| format!("reading {}/root.pem", root_dir.display()))?;
        let (_, doc) = der_from_pem(&pem)?;
        doc
    };
    let file: RootKeyFile = serde_json::from_slice(
        &std::fs::read(root_dir.join("root.key.json"))
            .with_context(|| format!("reading {}/root.key.json", root_dir.display()))?,
    )
    .context("root.key.json is not a QuorumCA sealed key file")?;
    if file.format != KEY_FILE_FORMAT {
        bail!(
            "root.key.json has format {:?}, expected {KEY_FILE_FORMAT}",
            file.format
        );
    }
    let pass = read_passphrase(passphrase_file)?;
    let salt = hex::decode(&file.salt).context("root.key.json: bad salt")?;
    let kek = Kek::derive(&pass, &salt, file.iterations)?;
    let pkcs8 = quorumca_ca::unseal(&kek, &file.sealed, ROOT_CONTEXT).map_err(|e| match e {
        quorumca_ca::SealError::WrongSecret { .. } => {
            anyhow::anyhow!("wrong passphrase for this root key")
        }
        e => anyhow::anyhow!(e),
    })?;
    Ok(quorumca_ca::CaSigner::from_parts(&cert_der, &pkcs8)?)
}

/// root.key.json
#[derive(Serialize, Deserialize)]
struct RootKeyFile {
    format: String,
    /// Hex salt for PBKDF2.
    salt: String,
    iterations: u32,
    sealed: SealedKey,
}

const KEY_FILE_FORMAT: &str = "quorumca-sealed-key-v1";
const ROOT_CONTEXT: &[u8] = b"quorumca root key";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn read_passphrase(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut p = Zeroizing::new(
        std::fs::read(path)
            .with_context(|| format!("reading passphrase file {}", path.display()))?,
    );
    while p.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        p.pop();
    }
    Ok(p)
}

pub(crate) fn random<const N: usize>(rng: &SystemRandom) -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    rng.fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(b)
}

/// A positive 16-byte serial: 128 random bits with the top bit cleared.
pub(crate) fn random_serial(rng: &SystemRandom) -> anyhow::Result<Vec<u8>> {
    let mut s: [u8; 16] = random(rng)?;
    s[0] &= 0x7f;
    if s[0] == 0 {
        s[0] = 1;
    }
    Ok(s.to_vec())
}

fn rotated(
    output: &crate::output::Output,
    r: &quorumca_proto::RotateResponse,
    done: &str,
) -> anyhow::Result<()> {
    match output {
        crate::output::Output::Json => crate::out!(
            "{}",
            crate::output::json(&serde_json::json!({
                "bundle_version": r.bundle_version,
                "pending_change": r.pending_change,
                "new_issuers": r.new_issuers,
            }))
        ),
        crate::output::Output::Table if r.pending_change != 0 => crate::out!(
            "waiting for a second admin: quorumca approve {}",
            r.pending_change
        ),
        crate::output::Output::Table => {
            crate::out!("{done} (trust bundle version {})", r.bundle_version)
        }
    }
    Ok(())
}

pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Runs one `quorumca ca` subcommand.
pub async fn run(cmd: CaCmd) -> anyhow::Result<()> {
    use quorumca_proto::authority_service_client::AuthorityServiceClient;
    use quorumca_proto::{InstallIntermediateRequest, PrepareIntermediateRequest};
    let rng = SystemRandom::new();
    match cmd {
        CaCmd::PrepareIntermediate {
            conn,
            region,
            out_dir,
        } => {
            let r = conn
                .target
                .client()?
                .rpc(
                    Retry::UnlessSent,
                    PrepareIntermediateRequest {
                        region: region.clone(),
                    },
                    |ch, r| async move {
                        AuthorityServiceClient::new(ch)
                            .prepare_intermediate(r)
                            .await
                    },
                )
                .await
                .map_err(crate::client::client_error)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            // The region, or its next generation when it has an
            // intermediate (installing that one rotates the region).
            let id = if r.issuer_id.is_empty() {
                region.clone()
            } else {
                r.issuer_id.clone()
            };
            let csr = out_dir.join(format!("{id}.csr"));
            let sealed = out_dir.join(format!("{id}.sealed-key"));
            write_new(&csr, r.csr_pem.as_bytes(), 0o644)?;
            write_new(&sealed, &r.sealed_key, 0o600)?;
            if id != region {
                eprintln!(
                    "region {region} has an intermediate: installing this one rotates the region to {id}"
                );
            }
            crate::out!(
                "wrote {} and {}\nnext, on the offline machine: quorumca ca sign-intermediate --csr {} --region {id} ...",
                csr.display(),
                sealed.display(),
                csr.display()
            );
            Ok(())
        }
        CaCmd::InstallIntermediate {
            conn,
            region,
            cert,
            root,
            sealed_key,
        } => {
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let r = conn
                .target
                .client()?
                .rpc(
                    Retry::UnlessSent,
                    InstallIntermediateRequest {
                        region: region.clone(),
                        certificate_pem: String::from_utf8_lossy(&read(&cert)?).into_owned(),
                        root_pem: String::from_utf8_lossy(&read(&root)?).into_owned(),
                        sealed_key: read(&sealed_key)?,
                    },
                    |ch, r| async move {
                        AuthorityServiceClient::new(ch)
                            .install_intermediate(r)
                            .await
                    },
                )
                .await
                .map_err(crate::client::client_error)
                .context("installing the intermediate")?;
            if r.pending_change > 0 {
                crate::out!(
                    "checked, not installed yet: the policy requires a second admin. Pending as change {0}; another admin runs `quorumca approve {0}`",
                    r.pending_change
                );
                return Ok(());
            }
            crate::out!(
                "intermediate {region} installed; nodes of region {region} now issue under it"
            );
            Ok(())
        }
        CaCmd::RotateIntermediate { conn, region } => {
            let r =
                conn.target
                    .client()?
                    .rpc(
                        Retry::UnlessSent,
                        quorumca_proto::RotateIntermediateRequest {
                            region: region.clone(),
                        },
                        |ch, r| async move {
                            AuthorityServiceClient::new(ch).rotate_intermediate(r).await
                        },
                    )
                    .await
                    .map_err(crate::client::client_error)
                    .context("rotating the intermediate")?;
            rotated(
                &conn.output,
                &r,
                &format!("region {region} now issues under {}; the old intermediate is retired when its last leaf expires", r.new_issuers.join(", ")),
            )
        }
        CaCmd::RotateRoot { conn, grace } => {
            let r = conn
                .target
                .client()?
                .rpc(
                    Retry::UnlessSent,
                    quorumca_proto::RotateRootRequest {
                        grace_seconds: grace.as_secs().max(1),
                    },
                    |ch, r| async move { AuthorityServiceClient::new(ch).rotate_root(r).await },
                )
                .await
                .map_err(crate::client::client_error)
                .context("rotating the root")?;
            rotated(
                &conn.output,
                &r,
                &format!(
                    "new root and intermediates: {}; both roots stay in the trust bundle for at least {grace}",
                    r.new_issuers.join(", ")
                ),
            )
        }
        CaCmd::ForceRenew {
            conn,
            issuer,
            namespace,
        } => {
            let r = conn
                .target
                .client()?
                .rpc(
                    Retry::UnlessSent,
                    quorumca_proto::ForceRenewRequest {
                        issuer: issuer.unwrap_or_default(),
                        namespace: namespace.unwrap_or_default(),
                    },
                    |ch, r| async move { AuthorityServiceClient::new(ch).force_renew(r).await },
                )
                .await
                .map_err(crate::client::client_error)
                .context("requesting a forced renewal")?;
            rotated(
                &conn.output,
                &r,
                "agents following the trust bundle renew their matching certificates now",
            )
        }
        CaCmd::InitRoot {
            out_dir,
            passphrase_file,
            common_name,
            algorithm,
            validity,
        } => {
            let cert_path = out_dir.join("root.pem");
            let key_path = out_dir.join("root.key.json");
            if cert_path.exists() || key_path.exists() {
                bail!(
                    "{} already holds a root; refusing to overwrite it",
                    out_dir.display()
                );
            }
            let pass = read_passphrase(&passphrase_file)?;
            let salt: [u8; 16] = random(&rng)?;
            let kek = Kek::derive(&pass, &salt, DEFAULT_KDF_ITERATIONS)?;
            let key = rcgen::KeyPair::generate_for(algorithm.rcgen())?;
            let pkcs8 = Zeroizing::new(key.serialize_der());
            let t = now();
            let validity = Validity {
                not_before: t - 60,
                not_after: t + Duration::from(validity).as_secs() as i64,
            };
            let root =
                quorumca_ca::self_signed_root(key, &common_name, validity, &random_serial(&rng)?)?;
            let sealed = quorumca_ca::seal(&kek, &pkcs8, random(&rng)?, ROOT_CONTEXT);
            let file = RootKeyFile {
                format: KEY_FILE_FORMAT.into(),
                salt: hex::encode(salt),
                iterations: DEFAULT_KDF_ITERATIONS,
                sealed,
            };
            std::fs::create_dir_all(&out_dir)?;
            write_new(
                &key_path,
                serde_json::to_string_pretty(&file)?.as_bytes(),
                0o600,
            )?;
            write_new(&cert_path, root.cert_pem().as_bytes(), 0o644)?;
            crate::out!("root certificate: {}", cert_path.display());
            crate::out!(
                "sealed root key:  {} (keep it and the passphrase apart, offline)",
                key_path.display()
            );
            Ok(())
        }
        CaCmd::IssueIdentity {
            root_dir,
            passphrase_file,
            spiffe_id,
            server,
            dns,
            ip,
            validity,
            out_dir,
        } => {
            let root = load_root(&root_dir, &passphrase_file)?;
            write_identity(
                &out_dir,
                &root,
                &spiffe_id,
                server,
                dns,
                ip,
                validity.into(),
            )?;
            crate::out!(
                "{spiffe_id}: {0}/cert.pem, {0}/key.pem (0600), {0}/ca.pem (the root)",
                out_dir.display()
            );
            Ok(())
        }
        CaCmd::SignIntermediate {
            root_dir,
            passphrase_file,
            csr,
            region,
            validity,
            out,
        } => {
            let root = load_root(&root_dir, &passphrase_file)?;
            let csr_bytes =
                std::fs::read(&csr).with_context(|| format!("reading {}", csr.display()))?;
            let csr = quorumca_ca::parse_csr(&csr_bytes)?;
            let t = now();
            let validity = Validity {
                not_before: t - 60,
                not_after: t + Duration::from(validity).as_secs() as i64,
            };
            let cn = format!("QuorumCA {region}");
            let der = quorumca_ca::sign_intermediate_csr(
                &root,
                &csr,
                &cn,
                validity,
                &random_serial(&rng)?,
            )?;
            write_new(
                &out,
                quorumca_ca::pem_encode("CERTIFICATE", &der).as_bytes(),
                0o644,
            )?;
            crate::out!("intermediate for {region}: {}", out.display());
            Ok(())
        }
    }
}

fn der_from_pem(pem: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let (label, doc) = der::Document::from_pem(pem.trim()).context("not a PEM certificate")?;
    Ok((label.to_string(), doc.as_bytes().to_vec()))
}
