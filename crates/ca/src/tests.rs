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

mod signing {
    use std::path::Path;
    use std::time::Duration;

    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;
    use quorumca_testkit::openssl;

    const NOW: i64 = 1_790_000_000; // 2026-09

    fn validity(days: i64) -> Validity {
        Validity {
            not_before: NOW - 60,
            not_after: NOW + days * 86_400,
        }
    }

    struct Hierarchy {
        root: CaSigner,
        int: CaSigner,
    }

    fn hierarchy(
        root_alg: &'static rcgen::SignatureAlgorithm,
        int_alg: &'static rcgen::SignatureAlgorithm,
    ) -> Hierarchy {
        let root = self_signed_root(
            KeyPair::generate_for(root_alg).unwrap(),
            "QuorumCA Test Root",
            validity(3650),
            &[0x01],
        )
        .unwrap();
        let int = sign_intermediate(
            &root,
            KeyPair::generate_for(int_alg).unwrap(),
            "QuorumCA eu-west",
            validity(365),
            &[0x02],
        )
        .unwrap();
        Hierarchy { root, int }
    }

    fn spec(serial: &[u8]) -> LeafSpec {
        LeafSpec {
            serial: serial.to_vec(),
            validity: validity(1),
            dns: vec!["svc.payments.example".into()],
            ips: vec!["10.1.2.3".parse().unwrap()],
            uris: vec!["spiffe://example.org/ns/payments/sa/api".into()],
            usages: vec![Usage::ServerAuth, Usage::ClientAuth],
            crl_url: Some("http://127.0.0.1:7101/crl/eu-west/7.crl".into()),
            ocsp_url: Some("http://127.0.0.1:7101/ocsp/eu-west".into()),
        }
    }

    fn write(dir: &Path, name: &str, der: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, pem_encode("CERTIFICATE", der)).unwrap();
        p
    }

    /// openssl verify at a fixed time inside the validity window.
    fn openssl_verify(dir: &Path, h: &Hierarchy, leaf: &[u8]) -> (bool, String) {
        let root = write(dir, "root.pem", &h.root.cert_der);
        let int = write(dir, "int.pem", &h.int.cert_der);
        let leaf = write(dir, "leaf.pem", leaf);
        let at = NOW.to_string();
        openssl(&[
            "verify",
            "-attime",
            &at,
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            root.to_str().unwrap(),
            "-untrusted",
            int.to_str().unwrap(),
            leaf.to_str().unwrap(),
        ])
    }

    fn webpki_verify(h: &Hierarchy, leaf: &[u8], name: &str) -> Result<(), String> {
        let root = CertificateDer::from(h.root.cert_der.clone());
        let anchor = webpki::anchor_from_trusted_cert(&root).map_err(|e| e.to_string())?;
        let leaf = CertificateDer::from(leaf.to_vec());
        let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| e.to_string())?;
        let ints = [CertificateDer::from(h.int.cert_der.clone())];
        let time = UnixTime::since_unix_epoch(Duration::from_secs(NOW as u64));
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &ints,
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| format!("{e:?}"))?;
        ee.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap())
            .map_err(|e| format!("{e:?}"))
    }

    /// A root rollover: old and new roots cross-signed both ways. A relying
    /// party that trusts either root validates leaves of either generation
    /// when the chain carries the cross certificate, in OpenSSL and webpki;
    /// without it, it does not (so the test can fail).
    #[test]
    fn cross_signed_roots_let_either_root_validate_either_generation() {
        let dir = tempfile::tempdir().unwrap();
        let old = hierarchy(
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let root2 = self_signed_root(
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
            "QuorumCA Test Root G2",
            validity(3650),
            &[0x21],
        )
        .unwrap();
        let int2 = sign_intermediate(
            &root2,
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            "QuorumCA eu-west G2",
            validity(365),
            &[0x22],
        )
        .unwrap();
        let new_by_old = cross_sign(&old.root, &root2.cert_der, validity(3650), &[0x23]).unwrap();
        let old_by_new = cross_sign(&root2, &old.root.cert_der, validity(3650), &[0x24]).unwrap();
        let csr = parse_csr(&csr_for(&rcgen::PKCS_ECDSA_P256_SHA256).1).unwrap();
        let leaf1 = sign_leaf(&old.int, &csr, &spec(&[0x31])).unwrap();
        let leaf2 = sign_leaf(&int2, &csr, &spec(&[0x32])).unwrap();
        let w = |name: &str, der: &[u8]| write(dir.path(), name, der).to_str().unwrap().to_string();
        let (r1, r2) = (
            w("r1.pem", &old.root.cert_der),
            w("r2.pem", &root2.cert_der),
        );
        let (l1, l2) = (w("l1.pem", &leaf1), w("l2.pem", &leaf2));
        let chain = |name: &str, certs: &[&[u8]]| {
            let text: String = certs.iter().map(|c| pem_encode("CERTIFICATE", c)).collect();
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_string()
        };
        let c1 = chain("c1.pem", &[&old.int.cert_der, &old_by_new]);
        let c2 = chain("c2.pem", &[&int2.cert_der, &new_by_old]);
        let bare2 = chain("b2.pem", &[&int2.cert_der]);
        let at = NOW.to_string();
        let verify = |root: &str, untrusted: &str, leaf: &str| {
            openssl(&[
                "verify",
                "-attime",
                &at,
                "-CAfile",
                root,
                "-untrusted",
                untrusted,
                leaf,
            ])
        };
        for (root, untrusted, leaf, what) in [
            (&r1, &c2, &l2, "old root, new leaf"),
            (&r2, &c2, &l2, "new root, new leaf"),
            (&r2, &c1, &l1, "new root, old leaf"),
            (&r1, &c1, &l1, "old root, old leaf"),
        ] {
            let (ok, out) = verify(root, untrusted, leaf);
            assert!(ok, "{what}: {out}");
        }
        let (ok, _) = verify(&r1, &bare2, &l2);
        assert!(
            !ok,
            "without the cross certificate the old root cannot reach new leaves"
        );

        let time = UnixTime::since_unix_epoch(Duration::from_secs(NOW as u64));
        let webpki_ok = |root: &[u8], ints: &[&[u8]], leaf: &[u8]| {
            let root = CertificateDer::from(root.to_vec());
            let anchor = webpki::anchor_from_trusted_cert(&root).unwrap();
            let leaf = CertificateDer::from(leaf.to_vec());
            let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
            let ints: Vec<_> = ints
                .iter()
                .map(|c| CertificateDer::from(c.to_vec()))
                .collect();
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &[anchor],
                &ints,
                time,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .is_ok()
        };
        assert!(webpki_ok(
            &old.root.cert_der,
            &[&int2.cert_der, &new_by_old],
            &leaf2
        ));
        assert!(webpki_ok(
            &root2.cert_der,
            &[&int2.cert_der, &new_by_old],
            &leaf2
        ));
        assert!(webpki_ok(
            &root2.cert_der,
            &[&old.int.cert_der, &old_by_new],
            &leaf1
        ));
        assert!(!webpki_ok(&old.root.cert_der, &[&int2.cert_der], &leaf2));
    }

    #[test]
    fn leaves_of_every_key_type_chain_to_the_root_in_openssl_and_webpki() {
        let dir = tempfile::tempdir().unwrap();
        for (root_alg, int_alg) in [
            (
                &rcgen::PKCS_ECDSA_P384_SHA384,
                &rcgen::PKCS_ECDSA_P256_SHA256,
            ),
            (
                &rcgen::PKCS_ECDSA_P256_SHA256,
                &rcgen::PKCS_ECDSA_P384_SHA384,
            ),
            (&rcgen::PKCS_ED25519, &rcgen::PKCS_ED25519),
        ] {
            let h = hierarchy(root_alg, int_alg);
            let mut csrs: Vec<Vec<u8>> = [
                &rcgen::PKCS_ECDSA_P256_SHA256,
                &rcgen::PKCS_ECDSA_P384_SHA384,
                &rcgen::PKCS_ED25519,
            ]
            .into_iter()
            .map(|a| csr_for(a).1)
            .collect();
            csrs.push(openssl_rsa_csr(2048));
            for (i, csr) in csrs.iter().enumerate() {
                let csr = parse_csr(csr).unwrap();
                let mut s = spec(&[0x10, i as u8 + 1]);
                if matches!(csr.key, KeyAlgorithm::Rsa { .. }) {
                    s.dns = vec!["rsa.example".into()];
                }
                let leaf = sign_leaf(&h.int, &csr, &s).unwrap();
                let (ok, out) = openssl_verify(dir.path(), &h, &leaf);
                assert!(
                    ok,
                    "openssl verify failed for {} under {root_alg:?}/{int_alg:?}: {out}",
                    csr.key
                );
                webpki_verify(&h, &leaf, &s.dns[0])
                    .unwrap_or_else(|e| panic!("webpki: {} {e}", csr.key));
            }
        }
    }

    #[test]
    fn leaf_carries_aki_crl_dp_aia_and_is_not_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let h = hierarchy(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let csr = parse_csr(&csr_for(&rcgen::PKCS_ECDSA_P256_SHA256).1).unwrap();
        let leaf = sign_leaf(&h.int, &csr, &spec(&[0x42])).unwrap();
        let path = write(dir.path(), "leaf.pem", &leaf);
        let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", path.to_str().unwrap()]);
        assert!(ok, "{text}");
        for needle in [
            "X509v3 Authority Key Identifier",
            "X509v3 Subject Key Identifier",
            "CA:FALSE",
            "URI:http://127.0.0.1:7101/crl/eu-west/7.crl",
            "OCSP - URI:http://127.0.0.1:7101/ocsp/eu-west",
            "DNS:svc.payments.example",
            "IP Address:10.1.2.3",
            "URI:spiffe://example.org/ns/payments/sa/api",
            "TLS Web Server Authentication, TLS Web Client Authentication",
            "Serial Number: 66 (0x42)",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        // The intermediate may sign leaves only.
        let ipath = write(dir.path(), "int.pem", &h.int.cert_der);
        let (_, itext) = openssl(&["x509", "-noout", "-text", "-in", ipath.to_str().unwrap()]);
        assert!(itext.contains("CA:TRUE, pathlen:0"), "{itext}");
    }

    #[test]
    fn lints_refuse_bad_leaves_and_nothing_is_signed() {
        let h = hierarchy(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let csr = parse_csr(&csr_for(&rcgen::PKCS_ECDSA_P256_SHA256).1).unwrap();
        let cases: Vec<(LeafSpec, &str)> = vec![
            (
                LeafSpec {
                    dns: vec![],
                    ips: vec![],
                    uris: vec![],
                    ..spec(&[1])
                },
                "at least one subjectAltName",
            ),
            (
                LeafSpec {
                    dns: vec!["bad name.example".into()],
                    ..spec(&[1])
                },
                "not a valid DNS name",
            ),
            (
                LeafSpec {
                    dns: vec!["".into()],
                    ..spec(&[1])
                },
                "not a valid DNS name",
            ),
            (
                LeafSpec {
                    uris: vec!["no scheme".into()],
                    ..spec(&[1])
                },
                "not a valid URI",
            ),
            (spec(&[0x80, 1]), "positive"),
            (spec(&[0; 21]), "20 octets"),
            (spec(&[0]), "zero"),
            (spec(&[0, 1]), "redundant leading zero"),
            (
                LeafSpec {
                    validity: Validity {
                        not_before: NOW,
                        not_after: NOW,
                    },
                    ..spec(&[1])
                },
                "notAfter",
            ),
            (
                LeafSpec {
                    usages: vec![],
                    ..spec(&[1])
                },
                "usage",
            ),
        ];
        for (s, needle) in cases {
            let e = sign_leaf(&h.int, &csr, &s).unwrap_err();
            assert!(
                matches!(e, SignError::Lint(ref m) if m.contains(needle)),
                "expected {needle:?}, got {e}"
            );
        }
    }

    #[test]
    fn signer_round_trips_through_pkcs8_and_refuses_a_mismatched_key() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pkcs8 = key.serialize_der();
        let root = self_signed_root(key, "Root", validity(10), &[7]).unwrap();
        let again = CaSigner::from_parts(&root.cert_der, &pkcs8).unwrap();
        let int = sign_intermediate(
            &again,
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            "I",
            validity(5),
            &[8],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = write(dir.path(), "r.pem", &root.cert_der);
        let i = write(dir.path(), "i.pem", &int.cert_der);
        let (ok, out) = openssl(&[
            "verify",
            "-attime",
            &NOW.to_string(),
            "-CAfile",
            r.to_str().unwrap(),
            i.to_str().unwrap(),
        ]);
        assert!(ok, "{out}");
        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_der();
        let e = CaSigner::from_parts(&root.cert_der, &other).err().unwrap();
        assert!(e.to_string().contains("does not match"), "{e}");
    }

    fn crl_pem(der: &[u8]) -> String {
        pem_encode("X509 CRL", der)
    }

    #[test]
    fn crls_verify_in_openssl_and_revoked_leaves_fail_crl_check() {
        let dir = tempfile::tempdir().unwrap();
        let h = hierarchy(
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let csr = parse_csr(&csr_for(&rcgen::PKCS_ECDSA_P256_SHA256).1).unwrap();
        let good = sign_leaf(&h.int, &csr, &spec(&[0x11])).unwrap();
        let bad = sign_leaf(&h.int, &csr, &spec(&[0x12])).unwrap();
        let crl = sign_crl(
            &h.int,
            &CrlSpec {
                number: 7,
                this_update: NOW - 30,
                next_update: NOW + 3600,
                distribution_point: Some("http://127.0.0.1:7101/crl/eu-west/7.crl".into()),
                delta_base: None,
                freshest: None,
                entries: vec![
                    CrlEntry {
                        serial: vec![0x12],
                        revoked_at: NOW - 40,
                        reason: 1,
                    },
                    CrlEntry {
                        serial: vec![0x05, 0x55],
                        revoked_at: NOW - 50,
                        reason: 0,
                    },
                ],
            },
        )
        .unwrap();
        let crl_path = dir.path().join("crl.pem");
        std::fs::write(&crl_path, crl_pem(&crl)).unwrap();
        let chain = dir.path().join("chain.pem");
        std::fs::write(&chain, format!("{}{}", h.int.cert_pem(), h.root.cert_pem())).unwrap();
        let (ok, out) = openssl(&[
            "crl",
            "-in",
            crl_path.to_str().unwrap(),
            "-CAfile",
            chain.to_str().unwrap(),
            "-noout",
        ]);
        assert!(ok && out.contains("verify OK"), "{out}");
        let (ok, text) = openssl(&["crl", "-in", crl_path.to_str().unwrap(), "-noout", "-text"]);
        assert!(ok, "{text}");
        for needle in [
            "X509v3 CRL Number",
            "7",
            "Key Compromise",
            "Issuing Distribution Point",
            "Only User Certificates",
            "Serial Number: 12",
            "Serial Number: 0555",
            "X509v3 Authority Key Identifier",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }

        let root = write(dir.path(), "root.pem", &h.root.cert_der);
        let int = write(dir.path(), "int.pem", &h.int.cert_der);
        let check = |leaf: &[u8]| {
            let leaf = write(dir.path(), "leaf.pem", leaf);
            openssl(&[
                "verify",
                "-attime",
                &NOW.to_string(),
                "-crl_check",
                "-CRLfile",
                crl_path.to_str().unwrap(),
                "-CAfile",
                root.to_str().unwrap(),
                "-untrusted",
                int.to_str().unwrap(),
                leaf.to_str().unwrap(),
            ])
        };
        let (ok, out) = check(&good);
        assert!(ok, "an unrevoked leaf must pass crl_check: {out}");
        let (ok, out) = check(&bad);
        assert!(!ok && out.contains("certificate revoked"), "{out}");
    }

    #[test]
    fn delta_crls_carry_a_critical_indicator_and_parse_in_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let h = hierarchy(&rcgen::PKCS_ED25519, &rcgen::PKCS_ED25519);
        let crl = sign_crl(
            &h.int,
            &CrlSpec {
                number: 9,
                this_update: NOW,
                next_update: NOW + 600,
                distribution_point: None,
                delta_base: Some(8),
                freshest: None,
                entries: vec![CrlEntry {
                    serial: vec![0x33],
                    revoked_at: NOW - 5,
                    reason: 4,
                }],
            },
        )
        .unwrap();
        let p = dir.path().join("delta.pem");
        std::fs::write(&p, crl_pem(&crl)).unwrap();
        let chain = dir.path().join("chain.pem");
        std::fs::write(&chain, format!("{}{}", h.int.cert_pem(), h.root.cert_pem())).unwrap();
        let (ok, out) = openssl(&[
            "crl",
            "-in",
            p.to_str().unwrap(),
            "-CAfile",
            chain.to_str().unwrap(),
            "-noout",
            "-text",
        ]);
        assert!(ok && out.contains("verify OK"), "{out}");
        assert!(out.contains("Delta CRL Indicator: critical"), "{out}");
        assert!(out.contains("Superseded"), "{out}");
    }

    #[test]
    fn crl_lints() {
        let h = hierarchy(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let base = CrlSpec {
            number: 2,
            this_update: NOW,
            next_update: NOW + 60,
            distribution_point: None,
            delta_base: None,
            freshest: None,
            entries: vec![],
        };
        for (s, needle) in [
            (
                CrlSpec {
                    number: 0,
                    ..base.clone()
                },
                "start at 1",
            ),
            (
                CrlSpec {
                    next_update: NOW,
                    ..base.clone()
                },
                "after thisUpdate",
            ),
            (
                CrlSpec {
                    next_update: NOW + 11 * 86_400,
                    ..base.clone()
                },
                "10 days",
            ),
            (
                CrlSpec {
                    delta_base: Some(2),
                    freshest: None,
                    ..base.clone()
                },
                "base number",
            ),
            (
                CrlSpec {
                    entries: vec![CrlEntry {
                        serial: vec![1],
                        revoked_at: NOW,
                        reason: 7,
                    }],
                    ..base.clone()
                },
                "reason code",
            ),
        ] {
            let e = sign_crl(&h.int, &s).unwrap_err();
            assert!(e.to_string().contains(needle), "expected {needle:?}: {e}");
        }
        // An empty CRL is fine.
        sign_crl(&h.int, &base).unwrap();
    }

    #[test]
    fn ocsp_answers_verify_in_openssl_with_nonce_for_good_revoked_and_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        let h = hierarchy(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        );
        let csr = parse_csr(&csr_for(&rcgen::PKCS_ECDSA_P256_SHA256).1).unwrap();
        let int = write(dir.path(), "int.pem", &h.int.cert_der);
        let chain = dir.path().join("chain.pem");
        std::fs::write(&chain, format!("{}{}", h.int.cert_pem(), h.root.cert_pem())).unwrap();
        let lookup = |serial: &[u8]| match serial {
            [0x11] => OcspStatus::Good,
            [0x12] => OcspStatus::Revoked {
                at: NOW - 100,
                reason: 1,
            },
            _ => OcspStatus::Unknown,
        };
        for (serial, hash, expect) in [
            (0x11u8, "-sha1", "good"),
            (0x12, "-sha1", "revoked"),
            (0x13, "-sha256", "unknown"),
            (0x11, "-sha256", "good"),
        ] {
            let leaf = sign_leaf(&h.int, &csr, &spec(&[serial])).unwrap();
            let leaf_path = write(dir.path(), "leaf.pem", &leaf);
            let (ok, out) = openssl(&[
                "ocsp",
                hash,
                "-issuer",
                int.to_str().unwrap(),
                "-cert",
                leaf_path.to_str().unwrap(),
                "-reqout",
                &d("req.der"),
            ]);
            assert!(ok, "{out}");
            let req = std::fs::read(d("req.der")).unwrap();
            // NOW is in the past relative to the machine clock, so answer "now"
            // by the wall clock for openssl's freshness check.
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let resp = crate::ocsp_respond(&h.int, &req, wall, 3600, lookup).unwrap();
            std::fs::write(d("resp.der"), &resp).unwrap();
            let (ok, out) = openssl(&[
                "ocsp",
                "-reqin",
                &d("req.der"),
                "-respin",
                &d("resp.der"),
                "-issuer",
                int.to_str().unwrap(),
                "-CAfile",
                chain.to_str().unwrap(),
                "-resp_text",
            ]);
            assert!(ok, "{out}");
            assert!(out.contains("Response verify OK"), "{out}");
            assert!(
                out.contains(&format!("Cert Status: {expect}")),
                "expected {expect}: {out}"
            );
            assert!(out.contains("OCSP Nonce"), "nonce not echoed: {out}");
            if expect == "revoked" {
                assert!(out.contains("Revocation Reason: keyCompromise"), "{out}");
            }
        }
    }

    #[test]
    fn client_side_ocsp_request_is_answered_and_read_back() {
        let h = hierarchy(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let csr = parse_csr(&csr_for(&rcgen::PKCS_ECDSA_P256_SHA256).1).unwrap();
        let lookup = |serial: &[u8]| match serial {
            [0x21] => OcspStatus::Good,
            [0x22] => OcspStatus::Revoked {
                at: NOW - 100,
                reason: 1,
            },
            _ => OcspStatus::Unknown,
        };
        for (serial, expect) in [
            (0x21u8, OcspStatus::Good),
            (
                0x22,
                OcspStatus::Revoked {
                    at: NOW - 100,
                    reason: 1,
                },
            ),
            (0x23, OcspStatus::Unknown),
        ] {
            let leaf = sign_leaf(&h.int, &csr, &spec(&[serial])).unwrap();
            let req = crate::ocsp_request_for(&leaf, &h.int.cert_der).unwrap();
            let resp = crate::ocsp_respond(&h.int, &req, NOW, 60, lookup).unwrap();
            assert_eq!(crate::ocsp_answered_status(&resp).unwrap(), expect);
        }
        // An error response is not read as a status.
        let refused = OcspError::Malformed("x".into()).response_der();
        assert!(crate::ocsp_answered_status(&refused).is_err());
        assert!(crate::ocsp_answered_status(b"junk").is_err());
    }

    #[test]
    fn bad_ocsp_requests_get_rfc6960_error_responses() {
        let dir = tempfile::tempdir().unwrap();
        let h = hierarchy(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let other = hierarchy(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let never = |_: &[u8]| -> OcspStatus { panic!("no lookup for a refused request") };
        let e = crate::ocsp_respond(&h.int, b"garbage", NOW, 60, never).unwrap_err();
        assert!(matches!(e, OcspError::Malformed(_)));
        let e2 = crate::ocsp_respond(
            &h.int,
            &vec![0u8; MAX_OCSP_REQUEST_BYTES + 1],
            NOW,
            60,
            never,
        )
        .unwrap_err();
        assert_eq!(e2, OcspError::TooLarge(MAX_OCSP_REQUEST_BYTES + 1));

        // A request about a certificate of another issuer.
        let csr = parse_csr(&csr_for(&rcgen::PKCS_ECDSA_P256_SHA256).1).unwrap();
        let leaf = sign_leaf(&other.int, &csr, &spec(&[5])).unwrap();
        let leaf = write(dir.path(), "leaf.pem", &leaf);
        let oint = write(dir.path(), "oint.pem", &other.int.cert_der);
        let req = dir.path().join("req.der");
        let (ok, out) = openssl(&[
            "ocsp",
            "-issuer",
            oint.to_str().unwrap(),
            "-cert",
            leaf.to_str().unwrap(),
            "-reqout",
            req.to_str().unwrap(),
        ]);
        assert!(ok, "{out}");
        let e3 =
            crate::ocsp_respond(&h.int, &std::fs::read(&req).unwrap(), NOW, 60, never).unwrap_err();
        assert_eq!(e3, OcspError::NotOurIssuer);

        for (err, status) in [(e, "malformedrequest"), (e3, "unauthorized")] {
            let p = dir.path().join("err.der");
            std::fs::write(&p, err.response_der()).unwrap();
            let (_, out) = openssl(&[
                "ocsp",
                "-respin",
                p.to_str().unwrap(),
                "-resp_text",
                "-noverify",
            ]);
            assert!(
                out.to_lowercase().contains(status),
                "expected {status}: {out}"
            );
        }
    }
}

#[test]
fn public_key_of_finds_the_same_key_in_a_key_a_csr_and_a_certificate() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["k.example".to_string()]).unwrap();
    let csr = params.serialize_request(&key).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let from_key = crate::public_key_of(key.public_key_pem().as_bytes()).unwrap();
    assert_eq!(
        from_key,
        rcgen::PublicKeyData::subject_public_key_info(&key)
    );
    assert_eq!(
        crate::public_key_of(csr.pem().unwrap().as_bytes()).unwrap(),
        from_key
    );
    assert_eq!(crate::public_key_of(csr.der()).unwrap(), from_key);
    assert_eq!(
        crate::public_key_of(cert.pem().as_bytes()).unwrap(),
        from_key
    );
    assert_eq!(crate::public_key_of(cert.der()).unwrap(), from_key);
    for bad in [
        key.serialize_pem().into_bytes(),
        b"not a key".to_vec(),
        vec![0x30, 0x03, 0x02, 0x01, 0x01],
    ] {
        let e = crate::public_key_of(&bad).unwrap_err();
        assert!(matches!(e, crate::CsrError::NoPublicKey(_)), "{e}");
    }
}

#[test]
fn an_offline_signed_intermediate_is_checked_against_root_key_and_constraints() {
    let v = Validity {
        not_before: 1_700_000_000,
        not_after: 2_000_000_000,
    };
    let now = 1_800_000_000;
    let root = self_signed_root(
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        "Offline Root",
        v,
        &[1],
    )
    .unwrap();
    let other_root = self_signed_root(
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        "Offline Root",
        v,
        &[1],
    )
    .unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pkcs8 = key.serialize_der();
    let csr = parse_csr(intermediate_csr(&pkcs8, "eu-west").unwrap().as_bytes()).unwrap();
    let int = sign_intermediate_csr(&root, &csr, "QuorumCA eu-west", v, &[2]).unwrap();

    let info = check_intermediate(&root.cert_der, &int, &pkcs8, now).unwrap();
    // As install-intermediate receives it: PEM, possibly a chain.
    let chain = format!("{}{}", pem_encode("CERTIFICATE", &int), root.cert_pem());
    assert_eq!(first_certificate_der(chain.as_bytes()).unwrap(), int);
    assert!(first_certificate_der(b"not pem").is_err());
    assert_eq!(info.not_after, 2_000_000_000);

    // Same subject, different root key: the signature gives it away.
    let e = check_intermediate(&other_root.cert_der, &int, &pkcs8, now).unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    // A certificate for another key than the prepared one.
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let e = check_intermediate(&root.cert_der, &int, &other_key.serialize_der(), now).unwrap_err();
    assert!(e.to_string().contains("another key"), "{e}");
    // Outside its validity.
    let e = check_intermediate(&root.cert_der, &int, &pkcs8, 2_100_000_000).unwrap_err();
    assert!(e.to_string().contains("not valid now"), "{e}");
    // The root itself is no intermediate (no pathLen 0).
    let root_key_pkcs8 = root.key().serialize_der();
    let e = check_intermediate(&root.cert_der, &root.cert_der, &root_key_pkcs8, now).unwrap_err();
    assert!(e.to_string().contains("pathLen 0"), "{e}");
    // Garbage.
    assert!(check_intermediate(&root.cert_der, b"junk", &pkcs8, now).is_err());
}

#[test]
fn empty_or_blank_pem_is_an_error_not_a_panic() {
    for pem in [&b""[..], b"\n", b"\r\n\r\n", b"   "] {
        let e = first_certificate_der(pem).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
    }
    assert!(first_certificate_der(b"-----BEGIN CERTIFICATE-----\nAAAA\n").is_err());
}
