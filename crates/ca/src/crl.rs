//! RFC 5280 v2 CRLs, full and delta, one per (issuer, shard).
//!
//! rcgen's CRL builder cannot add a delta CRL indicator, so the TBS is built
//! with x509-cert's types and signed with the CA key directly. The same
//! "build a TBS, sign it" path serves OCSP responses.

use std::time::Duration;

use const_oid::AssociatedOid;
use der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, UtcTime};
use der::{Decode, Encode};
use rcgen::SigningKey;
use spki::AlgorithmIdentifierOwned;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::crl::{BaseCrlNumber, CrlNumber, FreshestCrl};
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, CrlReason, IssuingDistributionPoint, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;
use x509_cert::Version;

use crate::sign::{CaSigner, SignError};

/// RFC 5280 does not bound nextUpdate; we do, so a relying party that
/// caches a CRL never trusts it for longer than this.
pub const MAX_CRL_VALIDITY_SECS: i64 = 10 * 86_400;

/// One revoked certificate as it appears in a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlEntry {
    /// Big-endian serial, as in the certificate.
    pub serial: Vec<u8>,
    /// Unix seconds.
    pub revoked_at: i64,
    /// RFC 5280 CRLReason code; 0 (unspecified) is omitted from the CRL as
    /// the RFC recommends.
    pub reason: u8,
}

/// Everything decided about one CRL before signing.
#[derive(Clone, Debug)]
pub struct CrlSpec {
    /// The CRL number from the ledger: monotonic per (issuer, shard).
    pub number: u64,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds: relying parties fetch a new CRL by then.
    pub next_update: i64,
    /// The URL this shard is served at; goes into the issuing distribution
    /// point so a relying party can tell shards apart.
    pub distribution_point: Option<String>,
    /// For a delta CRL: the number of the full CRL it builds on.
    pub delta_base: Option<u64>,
    /// For a full CRL: where its delta CRLs are served (FreshestCRL, RFC
    /// 5280 5.2.6). Relying parties such as OpenSSL look for deltas only
    /// when the full CRL or the certificate points at them.
    pub freshest: Option<String>,
    /// The revoked certificates it lists.
    pub entries: Vec<CrlEntry>,
}

pub(crate) fn time_of(unix: i64) -> Result<Time, SignError> {
    let secs =
        u64::try_from(unix).map_err(|_| SignError::Lint(format!("time {unix} is before 1970")))?;
    let d = Duration::from_secs(secs);
    // RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime after.
    if unix < 2_524_608_000 {
        UtcTime::from_unix_duration(d).map(Time::UtcTime)
    } else {
        GeneralizedTime::from_unix_duration(d).map(Time::GeneralTime)
    }
    .map_err(|e| SignError::Lint(format!("time {unix} cannot be encoded: {e}")))
}

fn ext<T: AssociatedOid + Encode>(value: &T, critical: bool) -> Result<Extension, SignError> {
    let der = value
        .to_der()
        .map_err(|e| SignError::Build(e.to_string()))?;
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(der).map_err(|e| SignError::Build(e.to_string()))?,
    })
}

fn uint(n: u64) -> Result<der::asn1::Uint, SignError> {
    der::asn1::Uint::new(&n.to_be_bytes()).map_err(|e| SignError::Build(e.to_string()))
}

pub(crate) fn reason_of(code: u8) -> Result<CrlReason, SignError> {
    Ok(match code {
        0 => CrlReason::Unspecified,
        1 => CrlReason::KeyCompromise,
        2 => CrlReason::CaCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        6 => CrlReason::CertificateHold,
        8 => CrlReason::RemoveFromCRL,
        9 => CrlReason::PrivilegeWithdrawn,
        10 => CrlReason::AaCompromise,
        c => {
            return Err(SignError::Lint(format!(
                "{c} is not an RFC 5280 reason code"
            )))
        }
    })
}

/// The signature AlgorithmIdentifier for a CA key.
pub(crate) fn signature_algorithm(
    key: &rcgen::KeyPair,
) -> Result<AlgorithmIdentifierOwned, SignError> {
    use const_oid::db::rfc5912;
    let oid = if key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
        rfc5912::ECDSA_WITH_SHA_256
    } else if key.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 {
        rfc5912::ECDSA_WITH_SHA_384
    } else if key.algorithm() == &rcgen::PKCS_ED25519 {
        const_oid::ObjectIdentifier::new_unwrap("1.3.101.112")
    } else {
        return Err(SignError::Key(
            "CA keys must be ECDSA P-256/P-384 or Ed25519".into(),
        ));
    };
    Ok(AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    })
}

/// Subject name and subject key identifier of the issuer's certificate.
pub(crate) fn issuer_identity(
    issuer: &CaSigner,
) -> Result<(x509_cert::name::Name, Option<OctetString>), SignError> {
    let cert = x509_cert::Certificate::from_der(&issuer.cert_der)
        .map_err(|e| SignError::Key(format!("CA certificate does not parse: {e}")))?;
    let ski = cert
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.extn_id == SubjectKeyIdentifier::OID)
        .map(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).map(|s| s.0))
        .transpose()
        .map_err(|e| SignError::Key(e.to_string()))?;
    Ok((cert.tbs_certificate.subject, ski))
}

/// Builds and signs a CRL. Entries are written in serial order, so the same
/// inputs always give the same TBS bytes.
pub fn sign_crl(issuer: &CaSigner, spec: &CrlSpec) -> Result<Vec<u8>, SignError> {
    if spec.number == 0 {
        return Err(SignError::Lint("CRL numbers start at 1".into()));
    }
    if spec.next_update <= spec.this_update {
        return Err(SignError::Lint(
            "nextUpdate must be after thisUpdate".into(),
        ));
    }
    if spec.next_update - spec.this_update > MAX_CRL_VALIDITY_SECS {
        return Err(SignError::Lint(format!(
            "nextUpdate is more than {} days after thisUpdate",
            MAX_CRL_VALIDITY_SECS / 86_400
        )));
    }
    if let Some(base) = spec.delta_base {
        if base >= spec.number {
            return Err(SignError::Lint(
                "a delta CRL's base number must be lower than its own".into(),
            ));
        }
    }
    if spec.delta_base.is_some() && spec.freshest.is_some() {
        return Err(SignError::Lint(
            "a delta CRL must not carry a FreshestCRL extension (RFC 5280 5.2.6)".into(),
        ));
    }
    let key = issuer.key();
    let alg = signature_algorithm(key)?;
    let (name, ski) = issuer_identity(issuer)?;

    let mut entries = spec.entries.clone();
    entries.sort_by(|a, b| a.serial.cmp(&b.serial));
    let mut revoked = Vec::with_capacity(entries.len());
    for e in &entries {
        let exts = if e.reason == 0 {
            None
        } else {
            Some(vec![ext(&reason_of(e.reason)?, false)?])
        };
        revoked.push(RevokedCert {
            serial_number: SerialNumber::new(&e.serial)
                .map_err(|x| SignError::Lint(format!("serial: {x}")))?,
            revocation_date: time_of(e.revoked_at)?,
            crl_entry_extensions: exts,
        });
    }

    let mut exts = vec![
        ext(
            &AuthorityKeyIdentifier {
                key_identifier: ski,
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
            false,
        )?,
        ext(&CrlNumber(uint(spec.number)?), false)?,
    ];
    if let Some(base) = spec.delta_base {
        // RFC 5280 5.2.4: the delta CRL indicator is critical.
        exts.push(ext(&BaseCrlNumber(uint(base)?), true)?);
    }
    if let Some(url) = &spec.distribution_point {
        let uri = Ia5String::new(url)
            .map_err(|_| SignError::Lint(format!("distribution point {url:?} is not ASCII")))?;
        let idp = IssuingDistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(vec![
                GeneralName::UniformResourceIdentifier(uri),
            ])),
            only_contains_user_certs: true,
            only_contains_ca_certs: false,
            only_some_reasons: None,
            indirect_crl: false,
            only_contains_attribute_certs: false,
        };
        // RFC 5280 5.2.5: critical. The OID is set by hand: x509-cert 0.2.5
        // associates IssuingDistributionPoint with the subjectInfoAccess OID.
        let mut idp_ext = ext(&idp, true)?;
        idp_ext.extn_id = const_oid::db::rfc5280::ID_CE_ISSUING_DISTRIBUTION_POINT;
        exts.push(idp_ext);
    }

    if let Some(url) = &spec.freshest {
        let uri = Ia5String::new(url)
            .map_err(|_| SignError::Lint(format!("freshest CRL URL {url:?} is not ASCII")))?;
        exts.push(ext(
            &FreshestCrl(vec![DistributionPoint {
                distribution_point: Some(DistributionPointName::FullName(vec![
                    GeneralName::UniformResourceIdentifier(uri),
                ])),
                reasons: None,
                crl_issuer: None,
            }]),
            false,
        )?);
    }

    let tbs = TbsCertList {
        version: Version::V2,
        signature: alg.clone(),
        issuer: name,
        this_update: time_of(spec.this_update)?,
        next_update: Some(time_of(spec.next_update)?),
        revoked_certificates: if revoked.is_empty() {
            None
        } else {
            Some(revoked)
        },
        crl_extensions: Some(exts),
    };
    let tbs_der = tbs.to_der().map_err(|e| SignError::Build(e.to_string()))?;
    let sig = key
        .sign(&tbs_der)
        .map_err(|e| SignError::Build(e.to_string()))?;
    let crl = CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(|e| SignError::Build(e.to_string()))?,
    };
    crl.to_der().map_err(|e| SignError::Build(e.to_string()))
}
