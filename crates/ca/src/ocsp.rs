//! RFC 6960 OCSP: decode a request, answer good / revoked / unknown for each
//! certificate it asks about, sign the answer with the issuer's key, echo
//! the nonce.
//!
//! The status itself comes from the caller (the ledger), through a lookup
//! function: this module decides nothing about revocation.

use const_oid::ObjectIdentifier;
use der::asn1::{BitString, GeneralizedTime, Null, OctetString};
use der::{Decode, Encode};
use rcgen::SigningKey;
use x509_cert::ext::Extension;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, ResponderId, ResponseBytes, ResponseData, RevokedInfo, SingleResponse,
    Version,
};

use crate::crl::signature_algorithm;
use crate::sign::{CaSigner, SignError};

/// Largest OCSP request accepted; real ones are under 200 bytes.
pub const MAX_OCSP_REQUEST_BYTES: usize = 16 * 1024;
/// Most certificates one request may ask about.
pub const MAX_OCSP_CERTS: usize = 16;

const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const OID_OCSP_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");

/// What the ledger says about one serial of this issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OcspStatus {
    /// Issued by us, unexpired and not revoked.
    Good,
    /// Revoked at Unix seconds `at` with an RFC 5280 reason code.
    Revoked {
        /// When it was revoked, Unix seconds.
        at: i64,
        /// The RFC 5280 CRLReason code.
        reason: u8,
    },
    /// Not issued by us, or expired and pruned.
    Unknown,
}

/// A request we cannot answer with certificate statuses. Each becomes an
/// unsigned OCSP error response ([`OcspError::response_der`]), as RFC 6960
/// prescribes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OcspError {
    /// The request exceeds [`MAX_OCSP_REQUEST_BYTES`]; the value is its size.
    #[error("OCSP request is {0} bytes; the limit is {MAX_OCSP_REQUEST_BYTES}")]
    TooLarge(usize),
    /// The request is not a DER OCSPRequest.
    #[error("OCSP request does not decode: {0}")]
    Malformed(String),
    /// The request names more than [`MAX_OCSP_CERTS`] certificates; the value is how many.
    #[error("OCSP request asks about {0} certificates; the limit is {MAX_OCSP_CERTS}")]
    TooMany(usize),
    /// The CertID hash algorithm is neither SHA-1 nor SHA-256.
    #[error("OCSP request uses hash algorithm {0}; use SHA-1 or SHA-256")]
    UnsupportedHash(String),
    /// The CertID's issuer hashes are not this issuer's.
    #[error("OCSP request asks about a certificate of another issuer")]
    NotOurIssuer,
    /// Signing the response failed.
    #[error("signing the OCSP response failed: {0}")]
    Sign(String),
}

impl OcspError {
    /// The unsigned error response to send for this failure.
    pub fn response_der(&self) -> Vec<u8> {
        let status = match self {
            Self::TooLarge(_)
            | Self::Malformed(_)
            | Self::TooMany(_)
            | Self::UnsupportedHash(_) => OcspResponseStatus::MalformedRequest,
            Self::NotOurIssuer => OcspResponseStatus::Unauthorized,
            Self::Sign(_) => OcspResponseStatus::InternalError,
        };
        OcspResponse {
            response_status: status,
            response_bytes: None,
        }
        .to_der()
        .expect("an error response always encodes")
    }
}

fn gtime(unix: i64) -> Result<OcspGeneralizedTime, SignError> {
    let secs =
        u64::try_from(unix).map_err(|_| SignError::Lint(format!("time {unix} is before 1970")))?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map(OcspGeneralizedTime)
        .map_err(|e| SignError::Lint(e.to_string()))
}

struct IssuerHashes {
    name_sha1: Vec<u8>,
    key_sha1: Vec<u8>,
    name_sha256: Vec<u8>,
    key_sha256: Vec<u8>,
}

fn issuer_hashes(issuer: &CaSigner) -> Result<IssuerHashes, SignError> {
    let cert = x509_cert::Certificate::from_der(&issuer.cert_der)
        .map_err(|e| SignError::Key(e.to_string()))?;
    let name = cert
        .tbs_certificate
        .subject
        .to_der()
        .map_err(|e| SignError::Key(e.to_string()))?;
    let key = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    let h = |alg: &'static ring::digest::Algorithm, b: &[u8]| {
        ring::digest::digest(alg, b).as_ref().to_vec()
    };
    Ok(IssuerHashes {
        name_sha1: h(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &name),
        key_sha1: h(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &key),
        name_sha256: h(&ring::digest::SHA256, &name),
        key_sha256: h(&ring::digest::SHA256, &key),
    })
}

/// Answers an OCSP request (DER, as POSTed or base64-decoded from a GET).
///
/// `lookup` receives each requested serial (big-endian bytes as in the
/// certificate) and says what the ledger knows. Responses are valid from
/// `now` for `validity_secs`.
pub fn respond(
    issuer: &CaSigner,
    request_der: &[u8],
    now: i64,
    validity_secs: i64,
    lookup: impl Fn(&[u8]) -> OcspStatus,
) -> Result<Vec<u8>, OcspError> {
    if request_der.len() > MAX_OCSP_REQUEST_BYTES {
        return Err(OcspError::TooLarge(request_der.len()));
    }
    let req =
        OcspRequest::from_der(request_der).map_err(|e| OcspError::Malformed(e.to_string()))?;
    let list = &req.tbs_request.request_list;
    if list.is_empty() {
        return Err(OcspError::Malformed(
            "the request lists no certificates".into(),
        ));
    }
    if list.len() > MAX_OCSP_CERTS {
        return Err(OcspError::TooMany(list.len()));
    }
    let sign_err = |e: SignError| OcspError::Sign(e.to_string());
    let hashes = issuer_hashes(issuer).map_err(sign_err)?;
    let this_update = gtime(now).map_err(sign_err)?;
    let next_update = gtime(now + validity_secs).map_err(sign_err)?;

    let mut responses = Vec::with_capacity(list.len());
    for r in list {
        let id: &CertId = &r.req_cert;
        let (name_hash, key_hash) = match id.hash_algorithm.oid {
            o if o == OID_SHA1 => (&hashes.name_sha1, &hashes.key_sha1),
            o if o == OID_SHA256 => (&hashes.name_sha256, &hashes.key_sha256),
            o => return Err(OcspError::UnsupportedHash(o.to_string())),
        };
        if id.issuer_name_hash.as_bytes() != name_hash.as_slice()
            || id.issuer_key_hash.as_bytes() != key_hash.as_slice()
        {
            return Err(OcspError::NotOurIssuer);
        }
        let cert_status = match lookup(id.serial_number.as_bytes()) {
            OcspStatus::Good => CertStatus::Good(Null),
            OcspStatus::Unknown => CertStatus::Unknown(Null),
            OcspStatus::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
                revocation_time: gtime(at).map_err(sign_err)?,
                revocation_reason: if reason == 0 {
                    None
                } else {
                    Some(crate::crl::reason_of(reason).map_err(sign_err)?)
                },
            }),
        };
        responses.push(SingleResponse {
            cert_id: id.clone(),
            cert_status,
            this_update,
            next_update: Some(next_update),
            single_extensions: None,
        });
    }

    // Echo the nonce, so a client that sent one can tell this answer is
    // fresh and not replayed.
    let nonce: Option<Extension> = req
        .tbs_request
        .request_extensions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.extn_id == OID_OCSP_NONCE)
        .cloned();
    if let Some(n) = &nonce {
        if n.extn_value.as_bytes().len() > 128 {
            return Err(OcspError::Malformed(
                "nonce is longer than 128 bytes".into(),
            ));
        }
    }

    let key = issuer.key();
    let alg = signature_algorithm(key).map_err(sign_err)?;
    let data = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(
            OctetString::new(hashes.key_sha1.clone())
                .map_err(|e| OcspError::Sign(e.to_string()))?,
        ),
        produced_at: this_update,
        responses,
        response_extensions: nonce.map(|n| vec![n]),
    };
    let tbs = data.to_der().map_err(|e| OcspError::Sign(e.to_string()))?;
    let sig = key.sign(&tbs).map_err(|e| OcspError::Sign(e.to_string()))?;
    let basic = BasicOcspResponse {
        tbs_response_data: data,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(|e| OcspError::Sign(e.to_string()))?,
        certs: None,
    };
    let basic_der = basic.to_der().map_err(|e| OcspError::Sign(e.to_string()))?;
    OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: OID_OCSP_BASIC,
            response: OctetString::new(basic_der).map_err(|e| OcspError::Sign(e.to_string()))?,
        }),
    }
    .to_der()
    .map_err(|e| OcspError::Sign(e.to_string()))
}

/// Client side: an unsigned OCSP request (SHA-256 CertID, no nonce) asking
/// about `leaf_der`, issued by `issuer_der`. For tools that check what a
/// responder says (load generation, the chaos checker), not for the CA.
pub fn request_for(leaf_der: &[u8], issuer_der: &[u8]) -> Result<Vec<u8>, OcspError> {
    let bad = |e: der::Error| OcspError::Malformed(e.to_string());
    let issuer = x509_cert::Certificate::from_der(issuer_der).map_err(bad)?;
    let leaf = x509_cert::Certificate::from_der(leaf_der).map_err(bad)?;
    let sha256 = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA256, b)
            .as_ref()
            .to_vec()
    };
    let name = issuer.tbs_certificate.subject.to_der().map_err(bad)?;
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let cert_id = CertId {
        hash_algorithm: spki::AlgorithmIdentifierOwned {
            oid: OID_SHA256,
            parameters: None,
        },
        issuer_name_hash: OctetString::new(sha256(&name)).map_err(bad)?,
        issuer_key_hash: OctetString::new(sha256(key)).map_err(bad)?,
        serial_number: leaf.tbs_certificate.serial_number.clone(),
    };
    OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![x509_ocsp::Request {
                req_cert: cert_id,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(bad)
}

/// Client side: the status a successful response gives for the first
/// certificate it answers about. The signature is not checked here (the
/// OpenSSL tests do that); callers use it to read what a responder says.
pub fn answered_status(response_der: &[u8]) -> Result<OcspStatus, OcspError> {
    let bad = |e: der::Error| OcspError::Malformed(e.to_string());
    let resp = OcspResponse::from_der(response_der).map_err(bad)?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(OcspError::Malformed(format!(
            "the responder answered {:?}",
            resp.response_status
        )));
    }
    let bytes = resp
        .response_bytes
        .ok_or_else(|| OcspError::Malformed("a successful response without a body".into()))?;
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).map_err(bad)?;
    let single = basic
        .tbs_response_data
        .responses
        .first()
        .ok_or_else(|| OcspError::Malformed("the response answers about nothing".into()))?;
    Ok(match &single.cert_status {
        CertStatus::Good(_) => OcspStatus::Good,
        CertStatus::Unknown(_) => OcspStatus::Unknown,
        CertStatus::Revoked(info) => OcspStatus::Revoked {
            at: info.revocation_time.0.to_unix_duration().as_secs() as i64,
            reason: info.revocation_reason.map_or(0, |r| r as u8),
        },
    })
}
