//! Checks on an intermediate signed outside the cluster (by an offline
//! root) before the cluster starts issuing under it.
//!
//! The flow: a node generates the intermediate's key and a CSR
//! ([`intermediate_csr`]); the operator signs it on the offline machine
//! (`quorumca ca sign-intermediate`); the node then checks the result with
//! [`check_intermediate`] and registers it. The private key never leaves
//! the cluster unsealed.

use const_oid::AssociatedOid;
use der::{Decode, Encode};
use ring::signature::UnparsedPublicKey;
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

use crate::csr::{classify_key, verification_alg};
use crate::sign::SignError;

/// What the cluster records about an intermediate it accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntermediateInfo {
    /// Unix seconds.
    pub not_after: i64,
}

fn bad(msg: impl Into<String>) -> SignError {
    SignError::Lint(msg.into())
}

/// A CSR for an intermediate CA key (PKCS#8 DER), named after its region.
pub fn intermediate_csr(key_pkcs8: &[u8], region: &str) -> Result<String, SignError> {
    let key = rcgen::KeyPair::try_from(key_pkcs8).map_err(|e| SignError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "QuorumCA");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("QuorumCA {region}"));
    let csr = params
        .serialize_request(&key)
        .map_err(|e| SignError::Build(e.to_string()))?;
    csr.pem().map_err(|e| SignError::Build(e.to_string()))
}

/// The DER of the first certificate in a PEM text (a file may hold a
/// chain).
pub fn first_certificate_der(pem: &[u8]) -> Result<Vec<u8>, SignError> {
    // x509-cert 0.2.5's load_pem_chain underflows (panics) on input that
    // is empty once trailing newlines are stripped.
    if pem.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(bad("no certificate in the PEM text (it is empty)"));
    }
    let certs =
        Certificate::load_pem_chain(pem).map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    certs
        .first()
        .ok_or_else(|| bad("no certificate in the PEM text"))?
        .to_der()
        .map_err(|e| SignError::Build(e.to_string()))
}

/// notAfter of any certificate, Unix seconds.
pub fn certificate_not_after(der: &[u8]) -> Result<i64, SignError> {
    let c = Certificate::from_der(der)
        .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
    Ok(c.tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs() as i64)
}

/// Checks that `int_der` is a CA certificate with pathLen 0, issued and
/// signed by `root_der`, valid at `now`, for the key `key_pkcs8`.
pub fn check_intermediate(
    root_der: &[u8],
    int_der: &[u8],
    key_pkcs8: &[u8],
    now: i64,
) -> Result<IntermediateInfo, SignError> {
    let root = Certificate::from_der(root_der)
        .map_err(|e| bad(format!("the root certificate does not parse: {e}")))?;
    let int = Certificate::from_der(int_der)
        .map_err(|e| bad(format!("the intermediate certificate does not parse: {e}")))?;
    verify_issued_by(&root, &int, "intermediate", "root")?;

    let bc = int
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.extn_id == BasicConstraints::OID)
        .ok_or_else(|| bad("the intermediate has no basicConstraints"))?;
    let bc = BasicConstraints::from_der(bc.extn_value.as_bytes())
        .map_err(|e| bad(format!("basicConstraints: {e}")))?;
    if !bc.ca || bc.path_len_constraint != Some(0) {
        return Err(bad(
            "the intermediate must be a CA with pathLen 0 (sign it with `quorumca ca sign-intermediate`)",
        ));
    }

    let key = rcgen::KeyPair::try_from(key_pkcs8).map_err(|e| SignError::Key(e.to_string()))?;
    let spki = int
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| SignError::Build(e.to_string()))?;
    if rcgen::PublicKeyData::subject_public_key_info(&key) != spki {
        return Err(bad(
            "the intermediate certificate is for another key than the one this cluster prepared; sign the CSR from `quorumca ca prepare-intermediate`",
        ));
    }

    let validity = &int.tbs_certificate.validity;
    let not_before = validity.not_before.to_unix_duration().as_secs() as i64;
    let not_after = validity.not_after.to_unix_duration().as_secs() as i64;
    if now < not_before || now >= not_after {
        return Err(bad(format!(
            "the intermediate is not valid now (valid {not_before} to {not_after}, now {now})"
        )));
    }
    Ok(IntermediateInfo { not_after })
}

/// Checks that `issuer` issued and signed `cert`.
fn verify_issued_by(
    issuer: &Certificate,
    cert: &Certificate,
    what: &str,
    by: &str,
) -> Result<(), SignError> {
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(bad(format!(
            "the {what} was issued by {}, not by this {by} ({})",
            cert.tbs_certificate.issuer, issuer.tbs_certificate.subject
        )));
    }
    let key = classify_key(&issuer.tbs_certificate.subject_public_key_info)
        .map_err(|e| bad(format!("{by} key: {e}")))?;
    let alg = verification_alg(key, cert.signature_algorithm.oid)
        .map_err(|e| bad(format!("{what} signature: {e}")))?;
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|e| SignError::Build(e.to_string()))?;
    let sig = cert
        .signature
        .as_bytes()
        .ok_or_else(|| bad(format!("the {what}'s signature has unused bits")))?;
    UnparsedPublicKey::new(
        alg,
        issuer
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .verify(&tbs, sig)
    .map_err(|_| {
        bad(format!(
            "the {what}'s signature does not verify with the {by}'s key"
        ))
    })
}

/// An end-entity certificate an issuer of the cluster signed, as checked
/// by [`signed_leaf`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedLeaf {
    /// DER INTEGER content, as the ledger keys serials.
    pub serial: Vec<u8>,
    /// Unix seconds.
    pub not_after: i64,
}

/// Checks that `issuer_der` signed `cert_der` and that it is not a CA: how
/// a node accepts the revocation of a certificate it has no record of (a
/// bootstrap identity the root signed before the cluster ran).
pub fn signed_leaf(issuer_der: &[u8], cert_der: &[u8]) -> Result<SignedLeaf, SignError> {
    let issuer = Certificate::from_der(issuer_der)
        .map_err(|e| bad(format!("the issuer certificate does not parse: {e}")))?;
    let cert = Certificate::from_der(cert_der)
        .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
    verify_issued_by(&issuer, &cert, "certificate", "issuer")?;
    let is_ca = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == BasicConstraints::OID)
        .any(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).is_ok_and(|bc| bc.ca));
    if is_ca {
        return Err(bad(
            "the certificate is a CA's; issuers leave the hierarchy by retirement, not revocation",
        ));
    }
    Ok(SignedLeaf {
        serial: cert.tbs_certificate.serial_number.as_bytes().to_vec(),
        not_after: cert
            .tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs() as i64,
    })
}

/// What a bootstrap identity certificate (a node's, or the first admin's)
/// says about its holder.
#[derive(Clone, Debug)]
pub struct IdentitySpec {
    /// The holder's SPIFFE ID, the certificate's only URI name.
    pub spiffe_id: String,
    /// Names a TLS client dials (nodes only).
    pub dns: Vec<String>,
    /// Addresses a TLS client dials (nodes only).
    pub ips: Vec<std::net::IpAddr>,
    /// Nodes serve TLS as well as dial it; admins only dial.
    pub server: bool,
    /// When it is valid.
    pub validity: crate::sign::Validity,
    /// Its serial, chosen by the caller (bootstrap identities are not in the ledger).
    pub serial: Vec<u8>,
}

/// Signs an identity certificate for `key` with `issuer`: made before the
/// cluster runs, by whoever holds the root (`quorumca dev`, or an operator
/// with the offline root), so nodes can speak mTLS from their first start.
/// Later identities come from the cluster itself (join tokens, Issue).
pub fn sign_identity(
    issuer: &crate::sign::CaSigner,
    key: &rcgen::KeyPair,
    spec: &IdentitySpec,
) -> Result<Vec<u8>, SignError> {
    let params = rcgen::CertificateParams::default();
    let csr = params
        .serialize_request(key)
        .map_err(|e| SignError::Build(e.to_string()))?;
    let csr = crate::csr::parse_csr(csr.der()).map_err(|e| SignError::Key(e.to_string()))?;
    let mut usages = vec![crate::sign::Usage::ClientAuth];
    if spec.server {
        usages.insert(0, crate::sign::Usage::ServerAuth);
    }
    crate::sign::sign_leaf(
        issuer,
        &csr,
        &crate::sign::LeafSpec {
            serial: spec.serial.clone(),
            validity: spec.validity,
            dns: spec.dns.clone(),
            ips: spec.ips.clone(),
            uris: vec![spec.spiffe_id.clone()],
            usages,
            crl_url: None,
            ocsp_url: None,
        },
    )
}

/// A certificate's serial (the DER INTEGER content, as the ledger keys
/// records) and its SubjectPublicKeyInfo DER: how a presented certificate
/// is matched to its issuance record.
pub fn certificate_serial_and_spki(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SignError> {
    let cert =
        Certificate::from_der(der).map_err(|e| bad(format!("certificate does not parse: {e}")))?;
    let tbs = cert.tbs_certificate;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| SignError::Build(e.to_string()))?;
    Ok((tbs.serial_number.as_bytes().to_vec(), spki))
}

/// The DNS, IP and URI subjectAltNames of a certificate: what a renewal
/// asks for again.
pub fn certificate_names(der: &[u8]) -> Result<crate::csr::RequestedNames, SignError> {
    let cert =
        Certificate::from_der(der).map_err(|e| bad(format!("certificate does not parse: {e}")))?;
    names_of(&cert)
}

pub(crate) fn names_of(cert: &Certificate) -> Result<crate::csr::RequestedNames, SignError> {
    use x509_cert::ext::pkix::{name::GeneralName, SubjectAltName};
    let mut out = crate::csr::RequestedNames::default();
    for e in cert.tbs_certificate.extensions.iter().flatten() {
        if e.extn_id != const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
            continue;
        }
        let san = SubjectAltName::from_der(e.extn_value.as_bytes())
            .map_err(|e| bad(format!("subjectAltName does not parse: {e}")))?;
        for n in san.0 {
            match n {
                GeneralName::DnsName(d) => out.dns.push(d.as_str().to_string()),
                GeneralName::UniformResourceIdentifier(u) => out.uris.push(u.as_str().to_string()),
                GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                    4 => out.ips.push(std::net::IpAddr::from(
                        <[u8; 4]>::try_from(ip.as_bytes()).expect("4 bytes"),
                    )),
                    16 => out.ips.push(std::net::IpAddr::from(
                        <[u8; 16]>::try_from(ip.as_bytes()).expect("16 bytes"),
                    )),
                    _ => return Err(bad("an IP subjectAltName is neither 4 nor 16 bytes")),
                },
                _ => {}
            }
        }
    }
    Ok(out)
}
