//! Certificate signing requests: decode (PEM or DER), verify the
//! proof-of-possession signature, classify the key, extract requested names.

use std::net::IpAddr;

use const_oid::db::{rfc4519, rfc5280, rfc5912};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::request::CertReq;

/// Largest CSR accepted, PEM or DER. Real CSRs are a few KiB even with RSA
/// 4096 and many names; anything bigger is a mistake or an attack.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_EXTENSION_REQUEST: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");

/// The public key types QuorumCA can certify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA over P-256.
    EcdsaP256,
    /// ECDSA over P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA with this modulus size.
    Rsa {
        /// The modulus size in bits.
        bits: u32,
    },
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ECDSA P-256"),
            Self::EcdsaP384 => f.write_str("ECDSA P-384"),
            Self::Ed25519 => f.write_str("Ed25519"),
            Self::Rsa { bits } => write!(f, "RSA {bits}"),
        }
    }
}

/// Names the requester asked for in the CSR's subjectAltName extension
/// request. Whether they are allowed is policy, decided elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestedNames {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
    /// URIs (SPIFFE IDs among them).
    pub uris: Vec<String>,
}

/// A CSR whose signature has been checked and whose key is acceptable.
#[derive(Clone, Debug)]
pub struct VerifiedCsr {
    /// The DER of the whole request.
    pub der: Vec<u8>,
    /// DER of the SubjectPublicKeyInfo, as it will go into the certificate.
    pub spki_der: Vec<u8>,
    /// The key's type, checked against the profile's `key_algorithms`.
    pub key: KeyAlgorithm,
    /// Subject common name, if present. Informational: identity is carried
    /// in subjectAltName.
    pub common_name: Option<String>,
    /// The subjectAltName names it asks for.
    pub names: RequestedNames,
}

/// Why a CSR was refused. Each message says what the requester must fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    /// The CSR exceeds [`MAX_CSR_BYTES`].
    #[error("the CSR is {size} bytes; the limit is {MAX_CSR_BYTES}")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
    },
    /// The input is not PEM of a certificate request.
    #[error("the CSR is not valid PEM: {0}. Expected -----BEGIN CERTIFICATE REQUEST-----")]
    MalformedPem(String),
    /// The PEM holds something that is not a PKCS#10 request.
    #[error("the CSR is not valid DER (PKCS#10): {0}")]
    MalformedDer(String),
    /// The request's signature does not verify with its own key.
    #[error("the CSR signature does not verify with its own public key; it was altered or signed with another key")]
    BadSignature,
    /// The request is signed with an algorithm this CA does not verify.
    #[error("the CSR is signed with {0}, which is not supported; use ECDSA with SHA-256/384, Ed25519, or RSA PKCS#1 v1.5 with SHA-256/384/512")]
    UnsupportedSignature(String),
    #[error(
        "the key type {0} is not supported; use ECDSA P-256 or P-384, Ed25519, or RSA 2048-4096"
    )]
    /// The key type is not one QuorumCA certifies.
    UnsupportedKey(String),
    /// An RSA key of a size other than 2048, 3072 or 4096 bits.
    #[error("RSA keys must be 2048, 3072 or 4096 bits; this one has {bits}")]
    WeakKey {
        /// Its modulus size.
        bits: u32,
    },
    /// The extension request's subjectAltName does not decode.
    #[error("the CSR's subjectAltName extension request is malformed: {0}")]
    MalformedNames(String),
    /// No SubjectPublicKeyInfo could be found in the input.
    #[error("no public key found: {0}. Give a PUBLIC KEY, CERTIFICATE or CERTIFICATE REQUEST, as PEM or DER")]
    NoPublicKey(String),
}

/// The SubjectPublicKeyInfo (DER) inside a public key, certificate or CSR,
/// PEM or DER: what revocation by key hashes. A CSR's signature is not
/// checked here; only its key matters.
pub fn public_key_of(input: &[u8]) -> Result<Vec<u8>, CsrError> {
    use spki::SubjectPublicKeyInfoOwned;
    if input.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge { size: input.len() });
    }
    let bad = |e: der::Error| CsrError::NoPublicKey(e.to_string());
    let (label, der) = if input.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (label, der) = pem_rfc7468_decode(input).map_err(bad)?;
        (Some(label), der)
    } else {
        (None, input.to_vec())
    };
    let spki = match label.as_deref() {
        Some("PUBLIC KEY") => SubjectPublicKeyInfoOwned::from_der(&der).map_err(bad)?,
        Some("CERTIFICATE") => {
            x509_cert::Certificate::from_der(&der)
                .map_err(bad)?
                .tbs_certificate
                .subject_public_key_info
        }
        Some("CERTIFICATE REQUEST") | Some("NEW CERTIFICATE REQUEST") => {
            CertReq::from_der(&der).map_err(bad)?.info.public_key
        }
        Some(other) => {
            return Err(CsrError::NoPublicKey(format!(
                "a {other:?} PEM block holds no public key"
            )))
        }
        None => SubjectPublicKeyInfoOwned::from_der(&der)
            .or_else(|_| {
                x509_cert::Certificate::from_der(&der)
                    .map(|c| c.tbs_certificate.subject_public_key_info)
            })
            .or_else(|_| CertReq::from_der(&der).map(|r| r.info.public_key))
            .map_err(bad)?,
    };
    spki.to_der().map_err(bad)
}

/// Decodes a CSR given as PEM or DER (detected by the PEM header), checks
/// its size, its signature and its key.
pub fn parse_csr(input: &[u8]) -> Result<VerifiedCsr, CsrError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge { size: input.len() });
    }
    let der = if input.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (label, der) =
            pem_rfc7468_decode(input).map_err(|e| CsrError::MalformedPem(e.to_string()))?;
        if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
            return Err(CsrError::MalformedPem(format!(
                "found a {label:?} block, not a CERTIFICATE REQUEST"
            )));
        }
        der
    } else {
        input.to_vec()
    };
    let req = CertReq::from_der(&der).map_err(|e| CsrError::MalformedDer(e.to_string()))?;
    let spki_der = req
        .info
        .public_key
        .to_der()
        .map_err(|e| CsrError::MalformedDer(e.to_string()))?;
    let key = classify_key(&req.info.public_key)?;
    let tbs = signed_info(&der).map_err(|e| CsrError::MalformedDer(e.to_string()))?;
    verify_signature(&req, key, tbs)?;
    Ok(VerifiedCsr {
        der,
        spki_der,
        key,
        common_name: common_name(&req),
        names: requested_names(&req)?,
    })
}

/// The CertificationRequestInfo as the requester's bytes carry it, which
/// is what they signed: `CertReq::from_der` accepted only DER, so these
/// are the bytes re-encoding the parsed info would give, without the cost.
fn signed_info(der: &[u8]) -> der::Result<&[u8]> {
    use der::Reader;
    let mut r = der::SliceReader::new(der)?;
    der::Header::decode(&mut r)?;
    r.tlv_bytes()
}

fn pem_rfc7468_decode(input: &[u8]) -> Result<(String, Vec<u8>), der::Error> {
    let text = std::str::from_utf8(input).map_err(|_| der::Error::from(der::ErrorKind::Failed))?;
    let (label, der) = der::Document::from_pem(text.trim())?;
    Ok((label.to_string(), der.as_bytes().to_vec()))
}

pub(crate) fn classify_key(
    spki: &spki::SubjectPublicKeyInfoOwned,
) -> Result<KeyAlgorithm, CsrError> {
    let alg = spki.algorithm.oid;
    if alg == rfc5912::ID_EC_PUBLIC_KEY {
        let curve: ObjectIdentifier = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as().ok())
            .ok_or_else(|| CsrError::UnsupportedKey("EC key without a named curve".into()))?;
        return match curve {
            c if c == rfc5912::SECP_256_R_1 => Ok(KeyAlgorithm::EcdsaP256),
            c if c == rfc5912::SECP_384_R_1 => Ok(KeyAlgorithm::EcdsaP384),
            c => Err(CsrError::UnsupportedKey(format!("EC curve {c}"))),
        };
    }
    if alg == OID_ED25519 {
        return Ok(KeyAlgorithm::Ed25519);
    }
    if alg == rfc5912::RSA_ENCRYPTION {
        let key = pkcs1::RsaPublicKey::from_der(spki.subject_public_key.raw_bytes())
            .map_err(|e| CsrError::MalformedDer(format!("RSA public key: {e}")))?;
        let n = key.modulus.as_bytes();
        let lead = n.first().copied().unwrap_or(0);
        let bits = (n.len() as u32) * 8 - lead.leading_zeros();
        return match bits {
            2048 | 3072 | 4096 => Ok(KeyAlgorithm::Rsa { bits }),
            b if b < 2048 => Err(CsrError::WeakKey { bits: b }),
            b => Err(CsrError::UnsupportedKey(format!("RSA {b}"))),
        };
    }
    Err(CsrError::UnsupportedKey(
        const_oid::db::DB
            .by_oid(&alg)
            .map(str::to_string)
            .unwrap_or_else(|| alg.to_string()),
    ))
}

fn verify_signature(req: &CertReq, key: KeyAlgorithm, tbs: &[u8]) -> Result<(), CsrError> {
    let alg = verification_alg(key, req.algorithm.oid)?;
    let public_key = req.info.public_key.subject_public_key.raw_bytes();
    let sig = req
        .signature
        .as_bytes()
        .ok_or_else(|| CsrError::MalformedDer("signature has unused bits".into()))?;
    UnparsedPublicKey::new(alg, public_key)
        .verify(tbs, sig)
        .map_err(|_| CsrError::BadSignature)
}

/// The ring verifier for a signature made with `sig_oid` by a `key`.
pub(crate) fn verification_alg(
    key: KeyAlgorithm,
    sig_oid: ObjectIdentifier,
) -> Result<&'static dyn VerificationAlgorithm, CsrError> {
    let unsupported = || {
        CsrError::UnsupportedSignature(
            const_oid::db::DB
                .by_oid(&sig_oid)
                .map(str::to_string)
                .unwrap_or_else(|| sig_oid.to_string()),
        )
    };
    let alg: &'static dyn VerificationAlgorithm = match (key, sig_oid) {
        (KeyAlgorithm::EcdsaP256, o) if o == rfc5912::ECDSA_WITH_SHA_256 => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        (KeyAlgorithm::EcdsaP256, o) if o == rfc5912::ECDSA_WITH_SHA_384 => {
            &signature::ECDSA_P256_SHA384_ASN1
        }
        (KeyAlgorithm::EcdsaP384, o) if o == rfc5912::ECDSA_WITH_SHA_384 => {
            &signature::ECDSA_P384_SHA384_ASN1
        }
        (KeyAlgorithm::EcdsaP384, o) if o == rfc5912::ECDSA_WITH_SHA_256 => {
            &signature::ECDSA_P384_SHA256_ASN1
        }
        (KeyAlgorithm::Ed25519, o) if o == OID_ED25519 => &signature::ED25519,
        (KeyAlgorithm::Rsa { .. }, o) if o == rfc5912::SHA_256_WITH_RSA_ENCRYPTION => {
            &signature::RSA_PKCS1_2048_8192_SHA256
        }
        (KeyAlgorithm::Rsa { .. }, o) if o == rfc5912::SHA_384_WITH_RSA_ENCRYPTION => {
            &signature::RSA_PKCS1_2048_8192_SHA384
        }
        (KeyAlgorithm::Rsa { .. }, o) if o == rfc5912::SHA_512_WITH_RSA_ENCRYPTION => {
            &signature::RSA_PKCS1_2048_8192_SHA512
        }
        _ => return Err(unsupported()),
    };
    Ok(alg)
}

fn common_name(req: &CertReq) -> Option<String> {
    req.info
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find_map(|atv| {
            if atv.oid != rfc4519::COMMON_NAME {
                return None;
            }
            atv.value
                .decode_as::<der::asn1::Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_string())
                .or_else(|_| {
                    atv.value
                        .decode_as::<der::asn1::PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_string())
                })
                .ok()
        })
}

fn requested_names(req: &CertReq) -> Result<RequestedNames, CsrError> {
    let mut names = RequestedNames::default();
    for attr in req.info.attributes.iter() {
        if attr.oid != OID_EXTENSION_REQUEST {
            continue;
        }
        for value in attr.values.iter() {
            let exts: x509_cert::ext::Extensions = value
                .decode_as()
                .map_err(|e| CsrError::MalformedNames(e.to_string()))?;
            for ext in exts {
                if ext.extn_id != rfc5280::ID_CE_SUBJECT_ALT_NAME {
                    continue;
                }
                let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                    .map_err(|e| CsrError::MalformedNames(e.to_string()))?;
                for gn in san.0 {
                    match gn {
                        GeneralName::DnsName(d) => names.dns.push(d.as_str().to_string()),
                        GeneralName::UniformResourceIdentifier(u) => {
                            names.uris.push(u.as_str().to_string())
                        }
                        GeneralName::IpAddress(ip) => {
                            let b = ip.as_bytes();
                            let addr = match b.len() {
                                4 => IpAddr::from(<[u8; 4]>::try_from(b).expect("len 4")),
                                16 => IpAddr::from(<[u8; 16]>::try_from(b).expect("len 16")),
                                n => {
                                    return Err(CsrError::MalformedNames(format!(
                                        "an IP address of {n} bytes"
                                    )))
                                }
                            };
                            names.ips.push(addr);
                        }
                        other => {
                            return Err(CsrError::MalformedNames(format!(
                                "unsupported name type {other:?}; use DNS, IP or URI names"
                            )))
                        }
                    }
                }
            }
        }
    }
    Ok(names)
}
