use std::net::IpAddr;
use std::process::Command;

use rcgen::{CertificateParams, KeyPair, SanType};

use super::*;

fn csr_for(alg: &'static rcgen::SignatureAlgorithm) -> (String, Vec<u8>) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(vec!["svc.payments.example".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("10.1.2.3".parse().unwrap()));
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/ns/payments/sa/api"
            .try_into()
            .unwrap(),
    ));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "svc.payments.example");
    let csr = params.serialize_request(&key).unwrap();
    (csr.pem().unwrap(), csr.der().to_vec())
}

/// RSA CSRs come from OpenSSL: ring cannot generate RSA keys, and an
/// independent implementation is the better witness anyway.
fn openssl_rsa_csr(bits: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("req.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            &format!("rsa:{bits}"),
            "-nodes",
            "-subj",
            "/CN=rsa.example",
        ])
        .args(["-addext", "subjectAltName=DNS:rsa.example", "-keyout"])
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(&out)
        .output()
        .expect("openssl must be installed for these tests (.ci/run installs it)");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::read(out).unwrap()
}

#[test]
fn accepts_ecdsa_and_ed25519_csrs_in_pem_and_der() {
    for (alg, want) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, KeyAlgorithm::EcdsaP256),
        (&rcgen::PKCS_ECDSA_P384_SHA384, KeyAlgorithm::EcdsaP384),
        (&rcgen::PKCS_ED25519, KeyAlgorithm::Ed25519),
    ] {
        let (pem, der) = csr_for(alg);
        for input in [pem.as_bytes(), der.as_slice()] {
            let csr = parse_csr(input).unwrap();
            assert_eq!(csr.key, want);
            assert_eq!(csr.der, der);
            assert_eq!(csr.common_name.as_deref(), Some("svc.payments.example"));
            assert_eq!(csr.names.dns, vec!["svc.payments.example"]);
            assert_eq!(csr.names.ips, vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
            assert_eq!(
                csr.names.uris,
                vec!["spiffe://example.org/ns/payments/sa/api"]
            );
        }
    }
}

#[test]
fn accepts_rsa_2048_to_4096_and_refuses_weak_rsa() {
    for bits in [2048, 3072, 4096] {
        let csr = parse_csr(&openssl_rsa_csr(bits)).unwrap();
        assert_eq!(csr.key, KeyAlgorithm::Rsa { bits });
        assert_eq!(csr.names.dns, vec!["rsa.example"]);
    }
    let e = parse_csr(&openssl_rsa_csr(1024)).unwrap_err();
    assert_eq!(e, CsrError::WeakKey { bits: 1024 });
    assert!(e.to_string().contains("2048"));
}

#[test]
fn refuses_a_tampered_signature() {
    let (_, mut der) = csr_for(&rcgen::PKCS_ECDSA_P256_SHA256);
    let n = der.len();
    der[n - 3] ^= 0x01;
    assert_eq!(parse_csr(&der).unwrap_err(), CsrError::BadSignature);
}

#[test]
fn refuses_a_csr_whose_body_was_altered() {
    let (_, der) = csr_for(&rcgen::PKCS_ED25519);
    // Change one letter of the requested DNS name; the DER stays valid but
    // the signature no longer covers it.
    let pos = der
        .windows(b"svc.payments".len())
        .position(|w| w == b"svc.payments")
        .unwrap();
    let mut evil = der.clone();
    evil[pos] = b'x';
    assert_eq!(parse_csr(&evil).unwrap_err(), CsrError::BadSignature);
}

#[test]
fn malformed_input_gets_a_typed_error() {
    assert!(matches!(
        parse_csr(b"hello").unwrap_err(),
        CsrError::MalformedDer(_)
    ));
    assert!(matches!(
        parse_csr(b"").unwrap_err(),
        CsrError::MalformedDer(_)
    ));
    assert!(matches!(
        parse_csr(b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n")
            .unwrap_err(),
        CsrError::MalformedPem(_)
    ));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(vec!["a.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let e = parse_csr(cert.pem().as_bytes()).unwrap_err();
    assert!(e.to_string().contains("not a CERTIFICATE REQUEST"), "{e}");
    let big = vec![b'A'; MAX_CSR_BYTES + 1];
    assert_eq!(
        parse_csr(&big).unwrap_err(),
        CsrError::TooLarge {
            size: MAX_CSR_BYTES + 1
        }
    );
}

#[test]
fn refuses_unsupported_curves() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("req.pem");
    let o = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:secp256k1",
            "-nodes",
            "-subj",
            "/CN=k1",
        ])
        .arg("-keyout")
        .arg(dir.path().join("k.pem"))
        .arg("-out")
        .arg(&out)
        .output()
        .expect("openssl must be installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = parse_csr(&std::fs::read(out).unwrap()).unwrap_err();
    assert!(
        matches!(e, CsrError::UnsupportedKey(ref s) if s.contains("1.3.132.0.10")),
        "{e}"
    );
}

/// Fuzz-style robustness: truncations and single-byte corruptions of a good
/// CSR never panic and never verify.
#[test]
fn corruptions_never_panic_or_verify() {
    let (_, der) = csr_for(&rcgen::PKCS_ECDSA_P256_SHA256);
    for cut in 0..der.len() {
        assert!(parse_csr(&der[..cut]).is_err());
    }
    for i in 0..der.len() {
        let mut d = der.clone();
        d[i] ^= 0x80;
        if let Ok(csr) = parse_csr(&d) {
            // A flip inside an unsigned, ignorable part would be the only way
            // to stay valid; none exists in a CSR, so this must not happen.
            panic!("corrupted byte {i} still verified: {csr:?}");
        }
    }
}
