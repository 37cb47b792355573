//! Building and signing certificates: the root, regional intermediates
//! (pathLen 0) and leaves from verified CSRs, with pre-issuance lints.
//!
//! Keys and time come in as arguments: this module neither generates keys
//! nor reads the clock.

use std::net::IpAddr;

use der::asn1::Ia5String;
use der::Encode;
use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};

use crate::csr::VerifiedCsr;

const OID_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
const OID_AD_OCSP: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");

/// A validity window in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// What a leaf certificate may be used for (its extended key usages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication.
    ServerAuth,
    /// TLS client authentication.
    ClientAuth,
}

/// A certificate authority: its certificate and the key that signs for it.
/// The private key lives only as long as this value: build one when a
/// signature is needed from the unsealed key, and drop it after.
pub struct CaSigner {
    /// DER of this CA's certificate.
    pub cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl CaSigner {
    /// Reassembles a signer from its certificate and PKCS#8 private key,
    /// checking that they belong together.
    pub fn from_parts(cert_der: &[u8], pkcs8_der: &[u8]) -> Result<Self, SignError> {
        let key = KeyPair::try_from(pkcs8_der).map_err(|e| SignError::Key(e.to_string()))?;
        if spki_of(cert_der)? != key.subject_public_key_info() {
            return Err(SignError::Key(
                "the private key does not match the CA certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(cert_der), key)
            .map_err(|e| SignError::Key(format!("CA certificate does not parse: {e}")))?;
        Ok(Self {
            cert_der: cert_der.to_vec(),
            issuer,
        })
    }

    pub(crate) fn key(&self) -> &KeyPair {
        self.issuer.key()
    }

    /// The CA's certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }
}

fn spki_of(cert_der: &[u8]) -> Result<Vec<u8>, SignError> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| SignError::Key(format!("CA certificate does not parse: {e}")))?;
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| SignError::Key(e.to_string()))
}

/// PEM of `der` under `label` (`CERTIFICATE`, `X509 CRL`, ...), LF line endings.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).expect("PEM encoding of bytes")
}

/// Why nothing was signed. Lint failures name the rule that was broken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// The certificate or CRL would break a rule this CA keeps; the message names it.
    #[error("lint: {0}")]
    Lint(String),
    /// The CA key is unusable or does not match its certificate.
    #[error("CA key: {0}")]
    Key(String),
    /// The encoder refused what was built.
    #[error("building the certificate failed: {0}")]
    Build(String),
}

fn lint(cond: bool, msg: impl Into<String>) -> Result<(), SignError> {
    if cond {
        Ok(())
    } else {
        Err(SignError::Lint(msg.into()))
    }
}

/// [`lint`] whose message is only formatted when the check fails: these
/// run on every issuance, and formatting an OID or a name each time cost
/// more than the checks themselves.
fn lint_with(cond: bool, msg: impl FnOnce() -> String) -> Result<(), SignError> {
    if cond {
        Ok(())
    } else {
        Err(SignError::Lint(msg()))
    }
}

fn to_time(unix: i64) -> Result<time::OffsetDateTime, SignError> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| SignError::Lint(format!("time {unix} is out of range: {e}")))
}

fn check_serial(serial: &[u8]) -> Result<(), SignError> {
    // RFC 5280 4.1.2.2: positive, at most 20 octets, minimally encoded.
    lint(!serial.is_empty(), "serial is empty")?;
    lint(serial.len() <= 20, "serial is longer than 20 octets")?;
    lint(
        serial[0] & 0x80 == 0,
        "serial must be positive (high bit of the first octet clear)",
    )?;
    lint(
        !(serial.len() > 1 && serial[0] == 0 && serial[1] & 0x80 == 0),
        "serial has a redundant leading zero octet",
    )?;
    lint(serial.iter().any(|b| *b != 0), "serial must not be zero")
}

fn check_validity(v: Validity) -> Result<(), SignError> {
    lint(
        v.not_after > v.not_before,
        "notAfter must be after notBefore",
    )
}

fn dn(cn: &str, org: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    dn
}

/// Parameters shared by every CA certificate we make.
fn ca_params(
    cn: &str,
    validity: Validity,
    serial: &[u8],
    path_len: Option<u8>,
) -> Result<CertificateParams, SignError> {
    check_serial(serial)?;
    check_validity(validity)?;
    lint(!cn.trim().is_empty(), "CA common name is empty")?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn, "QuorumCA");
    p.not_before = to_time(validity.not_before)?;
    p.not_after = to_time(validity.not_after)?;
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.key_identifier_method = KeyIdMethod::Sha256;
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// Makes a self-signed root CA certificate for `key`.
pub fn self_signed_root(
    key: KeyPair,
    cn: &str,
    validity: Validity,
    serial: &[u8],
) -> Result<CaSigner, SignError> {
    let mut params = ca_params(cn, validity, serial, None)?;
    // A self-signed root carries no AKI pointing elsewhere.
    params.use_authority_key_identifier_extension = false;
    let cert = params
        .self_signed(&key)
        .map_err(|e| SignError::Build(e.to_string()))?;
    Ok(CaSigner {
        cert_der: cert.der().to_vec(),
        issuer: Issuer::new(params, key),
    })
}

/// Signs an intermediate CA (pathLen 0: it may sign leaves only) for
/// `intermediate_key` with `root`.
pub fn sign_intermediate(
    root: &CaSigner,
    intermediate_key: KeyPair,
    cn: &str,
    validity: Validity,
    serial: &[u8],
) -> Result<CaSigner, SignError> {
    let params = ca_params(cn, validity, serial, Some(0))?;
    let cert = params
        .signed_by(&intermediate_key, &root.issuer)
        .map_err(|e| SignError::Build(e.to_string()))?;
    Ok(CaSigner {
        cert_der: cert.der().to_vec(),
        issuer: Issuer::new(params, intermediate_key),
    })
}

/// Signs an intermediate CA (pathLen 0) for the public key in `csr`, whose
/// private key stays wherever it was generated (the cluster, an HSM). This
/// is how an offline root signs: it never sees the intermediate's key.
pub fn sign_intermediate_csr(
    root: &CaSigner,
    csr: &VerifiedCsr,
    cn: &str,
    validity: Validity,
    serial: &[u8],
) -> Result<Vec<u8>, SignError> {
    if matches!(csr.key, crate::KeyAlgorithm::Rsa { .. }) {
        return Err(SignError::Lint(
            "CA keys must be ECDSA P-256/P-384 or Ed25519".into(),
        ));
    }
    let params = ca_params(cn, validity, serial, Some(0))?;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)
        .map_err(|e| SignError::Build(format!("CSR public key: {e}")))?;
    let cert = params
        .signed_by(&public_key, &root.issuer)
        .map_err(|e| SignError::Build(e.to_string()))?;
    Ok(cert.der().to_vec())
}

/// Cross-signs a root for a rollover: a CA certificate with the name and
/// key of `subject_cert_der` (another root), signed by `signer`. Handed out
/// beside the intermediates, it lets a relying party that trusts only the
/// signer build a path through the subject's intermediates. No path
/// length limit: the intermediates sit below it.
pub fn cross_sign(
    signer: &CaSigner,
    subject_cert_der: &[u8],
    validity: Validity,
    serial: &[u8],
) -> Result<Vec<u8>, SignError> {
    use der::{Decode, Encode};
    let parse = |der: &[u8]| {
        x509_cert::Certificate::from_der(der)
            .map_err(|e| SignError::Key(format!("cross-signed root does not parse: {e}")))
    };
    let subject = parse(subject_cert_der)?.tbs_certificate.subject;
    let cn = subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|a| a.oid == const_oid::db::rfc4519::CN)
        .and_then(|a| {
            a.value
                .decode_as::<der::asn1::Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_string())
                .or_else(|_| {
                    a.value
                        .decode_as::<der::asn1::PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_string())
                })
                .ok()
        })
        .ok_or_else(|| SignError::Key("the root to cross-sign has no common name".into()))?;
    let params = ca_params(&cn, validity, serial, None)?;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(&spki_of(subject_cert_der)?)
        .map_err(|e| SignError::Build(format!("cross-signed root key: {e}")))?;
    let cert = params
        .signed_by(&public_key, &signer.issuer)
        .map_err(|e| SignError::Build(e.to_string()))?;
    // Path building (webpki compares names byte for byte) needs exactly
    // the subject's name: true for roots QuorumCA made, checked for all.
    let same = |n: &x509_cert::name::Name| n.to_der().ok();
    if same(&parse(cert.der())?.tbs_certificate.subject) != same(&subject) {
        return Err(SignError::Lint(
            "the root's name is not one QuorumCA makes (CN and O=QuorumCA); cross-sign it with the tool that made it".into(),
        ));
    }
    Ok(cert.der().to_vec())
}

/// Everything decided about a leaf before signing. The names are the ones
/// policy approved, not blindly the CSR's.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// Its serial, as the ledger leased it.
    pub serial: Vec<u8>,
    /// Its validity window.
    pub validity: Validity,
    /// DNS names, as policy approved them.
    pub dns: Vec<String>,
    /// IP addresses, as policy approved them.
    pub ips: Vec<IpAddr>,
    /// URIs, as policy approved them.
    pub uris: Vec<String>,
    /// Its extended key usages.
    pub usages: Vec<Usage>,
    /// Where this leaf's CRL shard is served.
    pub crl_url: Option<String>,
    /// The issuer's OCSP responder.
    pub ocsp_url: Option<String>,
}

fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn lint_leaf(spec: &LeafSpec) -> Result<(), SignError> {
    check_serial(&spec.serial)?;
    check_validity(spec.validity)?;
    lint(
        !(spec.dns.is_empty() && spec.ips.is_empty() && spec.uris.is_empty()),
        "a leaf needs at least one subjectAltName (DNS, IP or URI)",
    )?;
    for d in &spec.dns {
        lint_with(valid_dns_name(d), || {
            format!("{d:?} is not a valid DNS name")
        })?;
    }
    for u in &spec.uris {
        lint_with(
            u.contains(':') && !u.contains(char::is_whitespace) && u.is_ascii(),
            || format!("{u:?} is not a valid URI"),
        )?;
    }
    lint(
        !spec.usages.is_empty(),
        "a leaf needs at least one usage (server or client)",
    )?;
    for (i, u) in spec.usages.iter().enumerate() {
        lint(!spec.usages[..i].contains(u), "duplicate usage")?;
    }
    Ok(())
}

fn aia_extension(ocsp_url: &str) -> Result<CustomExtension, SignError> {
    let uri = Ia5String::new(ocsp_url)
        .map_err(|_| SignError::Lint(format!("OCSP URL {ocsp_url:?} is not ASCII")))?;
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: OID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(uri),
    }]);
    let der = aia.to_der().map_err(|e| SignError::Build(e.to_string()))?;
    Ok(CustomExtension::from_oid_content(OID_AIA, der))
}

/// Signs a leaf certificate for the CSR's key with `issuer`, after linting
/// the decision; then lints the result as an outside parser sees it.
pub fn sign_leaf(
    issuer: &CaSigner,
    csr: &VerifiedCsr,
    spec: &LeafSpec,
) -> Result<Vec<u8>, SignError> {
    lint_leaf(spec)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    if let Some(first) = spec.dns.first() {
        p.distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    p.not_before = to_time(spec.validity.not_before)?;
    p.not_after = to_time(spec.validity.not_after)?;
    p.serial_number = Some(SerialNumber::from_slice(&spec.serial));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if matches!(csr.key, crate::KeyAlgorithm::Rsa { .. }) {
        // RSA key exchange in TLS 1.2 needs it; harmless otherwise.
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    p.extended_key_usages = spec
        .usages
        .iter()
        .map(|u| match u {
            Usage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    let mut sans = Vec::new();
    for d in &spec.dns {
        sans.push(SanType::DnsName(d.clone().try_into().map_err(|_| {
            SignError::Lint(format!("{d:?} is not a valid DNS name"))
        })?));
    }
    for ip in &spec.ips {
        sans.push(SanType::IpAddress(*ip));
    }
    for u in &spec.uris {
        sans.push(SanType::URI(u.clone().try_into().map_err(|_| {
            SignError::Lint(format!("{u:?} is not a valid URI"))
        })?));
    }
    p.subject_alt_names = sans;
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    if let Some(url) = &spec.crl_url {
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.clone()],
        }];
    }
    if let Some(url) = &spec.ocsp_url {
        p.custom_extensions.push(aia_extension(url)?);
    }
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)
        .map_err(|e| SignError::Build(format!("CSR public key: {e}")))?;
    let cert = p
        .signed_by(&public_key, &issuer.issuer)
        .map_err(|e| SignError::Build(e.to_string()))?;
    let der = cert.der().to_vec();
    lint_signed_leaf(&der)?;
    Ok(der)
}

/// Post-signing lints on the bytes as any relying party will parse them.
fn lint_signed_leaf(der_bytes: &[u8]) -> Result<(), SignError> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der_bytes)
        .map_err(|e| SignError::Lint(format!("the signed certificate does not parse: {e}")))?;
    let exts = cert.tbs_certificate.extensions.unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    for e in &exts {
        lint_with(seen.insert(e.extn_id), || {
            format!("duplicate extension {}", e.extn_id)
        })?;
    }
    let bc = exts
        .iter()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS);
    if let Some(bc) = bc {
        let v = x509_cert::ext::pkix::BasicConstraints::from_der(bc.extn_value.as_bytes())
            .map_err(|e| SignError::Lint(e.to_string()))?;
        lint(!v.ca, "a leaf must not be a CA")?;
    }
    lint(
        exts.iter()
            .any(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME),
        "a leaf needs a subjectAltName extension",
    )
}
