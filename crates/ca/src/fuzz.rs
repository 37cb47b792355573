//! Property tests on every decoder that sees caller input: CSRs (PEM and
//! DER), public keys, OCSP requests, policy files. Arbitrary or mutated
//! input must come back as a typed error (or, for a harmless mutation, a
//! valid result), never a panic.

use proptest::prelude::*;

use crate::{
    ocsp_respond, parse_csr, public_key_of, self_signed_root, CsrError, OcspStatus, Policy,
    Validity,
};

fn valid_csr_der() -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    rcgen::CertificateParams::new(vec!["fuzz.example".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

fn pem(label: &str, body: &[u8]) -> Vec<u8> {
    crate::pem_encode(label, body).into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn csr_decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(parse_csr(&bytes).is_err());
        let _ = parse_csr(&pem("CERTIFICATE REQUEST", &bytes));
        let _ = public_key_of(&bytes);
        let _ = public_key_of(&pem("PUBLIC KEY", &bytes));
    }

    #[test]
    fn a_mutated_csr_is_refused_or_still_verifies(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut der = valid_csr_der();
        let i = pos.index(der.len());
        der[i] ^= 1 << bit;
        match parse_csr(&der) {
            // The signature covers everything that matters; the only
            // survivable flips are in encodings the parser normalises.
            Ok(v) => prop_assert!(!v.spki_der.is_empty()),
            Err(e) => prop_assert!(matches!(
                e,
                CsrError::MalformedDer(_)
                    | CsrError::BadSignature
                    | CsrError::UnsupportedKey(_)
                    | CsrError::UnsupportedSignature(_)
                    | CsrError::MalformedNames(_)
                    | CsrError::WeakKey { .. }
            ), "unexpected error kind: {e:?}"),
        }
    }

    #[test]
    fn a_truncated_csr_is_refused(cut in 0usize..400) {
        let der = valid_csr_der();
        let cut = cut.min(der.len() - 1);
        prop_assert!(parse_csr(&der[..cut]).is_err());
    }

    #[test]
    fn policy_parser_never_panics(text in "\\PC{0,400}") {
        let _ = Policy::from_toml(&text);
    }

    #[test]
    fn policy_parser_never_panics_on_tomlish_input(
        name in "[a-z]{1,8}",
        lifetime in "[0-9a-z ]{0,8}",
        algs in proptest::collection::vec("[a-z0-9-]{0,12}", 0..4),
        renew in any::<f64>(),
    ) {
        let text = format!(
            "[profiles.{name}]\nkey_algorithms = {algs:?}\ndefault_lifetime = \"{lifetime}\"\nmax_lifetime = \"{lifetime}\"\nusages = [\"server\"]\nrenew_at = {renew:?}\n"
        );
        let _ = Policy::from_toml(&text);
    }
}

#[test]
fn ocsp_responder_never_panics_on_arbitrary_or_mutated_requests() {
    use proptest::test_runner::{Config, TestRunner};
    let root = self_signed_root(
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        "Fuzz Root",
        Validity {
            not_before: 0,
            not_after: 4_000_000_000,
        },
        &[1],
    )
    .unwrap();
    let mut runner = TestRunner::new(Config::with_cases(256));
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..600), |bytes| {
            let _ = ocsp_respond(&root, &bytes, 1_800_000_000, 3600, |_| OcspStatus::Good);
            Ok(())
        })
        .unwrap();
}
