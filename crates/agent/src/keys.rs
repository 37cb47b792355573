//! Host-side keys and CSRs. Private keys are generated here and never
//! sent anywhere: the cluster only ever sees a CSR.

use std::net::IpAddr;

use der::Decode;
use serde::Deserialize;

use crate::AgentError;

/// The key types the agent generates, as configurations spell them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA over P-256 (`ecdsa-p256`), the default: small, fast, and accepted everywhere.
    #[default]
    EcdsaP256,
    /// ECDSA over P-384 (`ecdsa-p384`).
    EcdsaP384,
    /// Ed25519 (`ed25519`).
    Ed25519,
}

impl KeyAlgorithm {
    /// A fresh key pair of this type, from the OS's random generator.
    pub fn generate(self) -> Result<rcgen::KeyPair, AgentError> {
        let alg = match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        };
        rcgen::KeyPair::generate_for(alg).map_err(|e| AgentError::Key(e.to_string()))
    }
}

/// A CSR (DER) for `key` asking for exactly these names.
pub fn csr_for(
    key: &rcgen::KeyPair,
    dns: &[String],
    ips: &[IpAddr],
    uris: &[String],
) -> Result<Vec<u8>, AgentError> {
    let mut params = rcgen::CertificateParams::default();
    for d in dns {
        params.subject_alt_names.push(rcgen::SanType::DnsName(
            d.clone()
                .try_into()
                .map_err(|e| AgentError::Key(format!("DNS name {d:?}: {e}")))?,
        ));
    }
    for ip in ips {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    for u in uris {
        params.subject_alt_names.push(rcgen::SanType::URI(
            u.clone()
                .try_into()
                .map_err(|e| AgentError::Key(format!("URI {u:?}: {e}")))?,
        ));
    }
    Ok(params
        .serialize_request(key)
        .map_err(|e| AgentError::Key(e.to_string()))?
        .der()
        .to_vec())
}

/// What the agent needs to know about a certificate it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Lowercase hex, as the cluster reports it.
    pub serial: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The raw public key (the SubjectPublicKeyInfo's bit string).
    pub public_key: Vec<u8>,
}

/// Reads the first certificate of a PEM text.
pub fn cert_info(pem: &str) -> Result<CertInfo, AgentError> {
    let der = quorumca_ca::first_certificate_der(pem.as_bytes())
        .map_err(|e| AgentError::Files(format!("certificate: {e}")))?;
    let cert = x509_cert::Certificate::from_der(&der)
        .map_err(|e| AgentError::Files(format!("certificate: {e}")))?;
    let tbs = &cert.tbs_certificate;
    let time = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
    Ok(CertInfo {
        serial: hex::encode(tbs.serial_number.as_bytes())
            .trim_start_matches("00")
            .to_string(),
        not_before: time(&tbs.validity.not_before),
        not_after: time(&tbs.validity.not_after),
        public_key: tbs
            .subject_public_key_info
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| AgentError::Files("certificate key: not whole bytes".into()))?
            .to_vec(),
    })
}

/// True when `key_pem` is the private key of the certificate.
pub fn key_matches(key_pem: &str, cert: &CertInfo) -> bool {
    use rcgen::PublicKeyData;
    rcgen::KeyPair::from_pem(key_pem).is_ok_and(|k| k.der_bytes() == cert.public_key.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_carries_the_names_and_a_cert_is_matched_to_its_key() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
        ] {
            let key = alg.generate().unwrap();
            let csr = csr_for(
                &key,
                &["a.example".into()],
                &["127.0.0.1".parse().unwrap()],
                &["spiffe://td/x".into()],
            )
            .unwrap();
            assert!(!csr.is_empty());
            let params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
            let cert = params.self_signed(&key).unwrap();
            let info = cert_info(&cert.pem()).unwrap();
            assert!(key_matches(&key.serialize_pem(), &info), "{alg:?}");
            let other = alg.generate().unwrap();
            assert!(!key_matches(&other.serialize_pem(), &info), "{alg:?}");
            assert!(info.not_after > info.not_before);
        }
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        assert!(cert_info("").is_err());
        assert!(cert_info("-----BEGIN CERTIFICATE-----\nAAAA\n").is_err());
        assert!(
            cert_info("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }
}
