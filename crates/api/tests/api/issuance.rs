//! Issuance through a real 3-node cluster: concurrent issuance on every
//! node, unique serials with 64 random bits, records everywhere, chains,
//! CRLs and OCSP checked with OpenSSL across nodes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use quorumca_api::{Authority, AuthorityError, IssueRequest, ROOT_ID};
use quorumca_ca::pem_encode;
use quorumca_ledger::{RevocationReason, Serial};
use quorumca_testkit::authority::{authorities, test_config, test_csr, test_kek};
use quorumca_testkit::cluster::{fast_settings, TestCluster};
use quorumca_testkit::{openssl, write_file as write};

async fn setup() -> (TestCluster, Vec<Arc<Authority>>) {
    let mut c = TestCluster::start(3, fast_settings()).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let auths = authorities(&mut c).await.unwrap();
    (c, auths)
}

fn csr(name: &str) -> Vec<u8> {
    test_csr(name)
}

fn request(csr: Vec<u8>) -> IssueRequest {
    IssueRequest {
        csr,
        namespace: "payments".into(),
        profile: "web".into(),
        lifetime: None,
        actor: "test".into(),
        idempotency_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_concurrent_issuances_on_every_node_have_unique_random_serials() {
    let (_c, auths) = setup().await;
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..8)
            .map(|i| csr(&format!("api{i}.payments.svc.cluster.local")))
            .collect(),
    );
    let per_node = 1_000usize;
    let mut tasks = Vec::new();
    for a in &auths {
        for w in 0..24usize {
            let a = a.clone();
            let csrs = csrs.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in (w..per_node).step_by(24) {
                    let issued = a
                        .issue(request(csrs[i % csrs.len()].clone()))
                        .await
                        .expect("issue");
                    out.push((issued.issuer, issued.serial));
                }
                out
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), per_node * 3);
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "duplicate (issuer, serial)");

    // Every record on every node.
    let last = auths[0].node().status().commit_index;
    for a in &auths {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while a.node().status().applied_index < last {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let missing = all
            .iter()
            .filter(|(i, s)| {
                a.node()
                    .read_local(|st| st.record(i, &Serial(s.clone())).is_none())
            })
            .count();
        assert_eq!(missing, 0, "node {} lacks records", a.node().id());
    }
    let hashes: BTreeSet<_> = auths
        .iter()
        .map(|a| a.node().status().ledger_hash)
        .collect();
    assert_eq!(hashes.len(), 1, "ledgers differ");

    // 64 random bits: the last 8 bytes of every serial are CSPRNG output.
    // Over 3,000 serials the share of one bits must be near one half and no
    // two random parts may repeat.
    let rand_parts: BTreeSet<Vec<u8>> =
        all.iter().map(|(_, s)| s[s.len() - 8..].to_vec()).collect();
    assert_eq!(rand_parts.len(), all.len());
    let ones: u32 = all
        .iter()
        .map(|(_, s)| s[s.len() - 8..].iter().map(|b| b.count_ones()).sum::<u32>())
        .sum();
    let share = ones as f64 / (all.len() * 64) as f64;
    assert!(
        (0.47..0.53).contains(&share),
        "random bits are biased: {share}"
    );
    assert!(
        all.iter().all(|(_, s)| s[0] & 0x80 == 0 && s.len() <= 20),
        "serials must be positive, <= 20 octets"
    );
    // Every serial has the same length, the first lease's (sequence 0)
    // included: none lost leading octets, and so none lost random bits.
    let short: Vec<_> = all
        .iter()
        .filter(|(_, s)| s.len() != quorumca_ledger::LEAF_SERIAL_LEN)
        .collect();
    assert!(short.is_empty(), "serials of another length: {short:?}");
    assert!(all
        .iter()
        .all(|(_, s)| s[0] == quorumca_ledger::LEAF_SERIAL_PREFIX));
    eprintln!("issued {} certificates on 3 nodes, all unique", all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chains_verify_and_revocations_show_in_crl_and_ocsp_of_other_nodes() {
    let (_c, auths) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let root_der = auths[0]
        .node()
        .read_local(|s| s.issuer(ROOT_ID).unwrap().cert_der.clone());
    let root = write(
        dir.path(),
        "root.pem",
        &pem_encode("CERTIFICATE", &root_der),
    );

    let good = auths[0]
        .issue(request(csr("good.payments.svc.cluster.local")))
        .await
        .unwrap();
    let bad = auths[1]
        .issue(request(csr("bad.payments.svc.cluster.local")))
        .await
        .unwrap();
    let us = auths[2]
        .issue(request(csr("us.payments.svc.cluster.local")))
        .await
        .unwrap();
    assert_eq!((good.issuer.as_str(), us.issuer.as_str()), ("eu", "us"));
    let names = [
        "good.payments.svc.cluster.local",
        "bad.payments.svc.cluster.local",
        "us.payments.svc.cluster.local",
    ];
    for (i, issued) in [&good, &bad, &us].iter().enumerate() {
        let chain = write(dir.path(), &format!("chain{i}.pem"), &issued.chain_pem);
        // chain_pem = leaf then intermediate: verify the leaf with the
        // intermediate as untrusted and the root as the only anchor.
        let (ok, out) = openssl(&[
            "verify",
            "-x509_strict",
            "-CAfile",
            &root,
            "-untrusted",
            &chain,
            &chain,
        ]);
        assert!(ok, "{out}");
        // And with webpki (rustls' verifier), an independent implementation.
        let int_der = auths[0]
            .node()
            .read_local(|s| s.issuer(&issued.issuer).unwrap().cert_der.clone());
        webpki_verify(&root_der, &int_der, &issued.cert_der, names[i]);
    }

    // Every node publishes every shard once before any revocation; that
    // first full CRL is also the base its deltas refer to.
    let first = auths[2].refresh_crls().await.unwrap();
    assert_eq!(first, 1 + 2 * 4, "root + 2 regions x 4 shards");
    assert_eq!(auths[2].refresh_crls().await.unwrap(), 0, "nothing changed");

    // Revoke on node 1; the CRL is built by node 3 and OCSP answered by
    // node 2.
    auths[0]
        .revoke("eu", &bad.serial, RevocationReason::KeyCompromise)
        .await
        .unwrap();
    let shard = {
        let serial = Serial(bad.serial.clone());
        auths[2]
            .node()
            .read_linearizable(move |s| s.record("eu", &serial).unwrap().sequence % 4)
            .await
            .unwrap()
    };
    let base = auths[2].crl("eu", shard, false).unwrap();
    assert!(base.der.len() < 1024, "empty shard before the revocation");
    // Node 3 may not have applied the revocation yet; it rebuilds exactly
    // the one shard whose version moved once it has.
    auths[2].node().read_linearizable(|_| ()).await.unwrap();
    assert_eq!(auths[2].refresh_crls().await.unwrap(), 1);
    let crl = auths[2].crl("eu", shard, false).unwrap();
    assert!(crl.number > base.number);
    let delta = auths[2].crl("eu", shard, true).unwrap();
    assert_eq!(delta.number, crl.number, "full and delta share numbering");
    let crl_path = write(dir.path(), "crl.pem", &pem_encode("X509 CRL", &crl.der));
    let base_path = write(dir.path(), "base.pem", &pem_encode("X509 CRL", &base.der));
    let delta_path = write(dir.path(), "delta.pem", &pem_encode("X509 CRL", &delta.der));
    let int_pem = bad
        .chain_pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .nth(1)
        .unwrap()
        .to_string();
    let int = write(dir.path(), "int.pem", &int_pem);
    let bad_leaf = write(
        dir.path(),
        "bad.pem",
        &pem_encode("CERTIFICATE", &bad.cert_der),
    );
    let (ok, out) = openssl(&[
        "verify",
        "-crl_check",
        "-CRLfile",
        &crl_path,
        "-CAfile",
        &root,
        "-untrusted",
        &int,
        &bad_leaf,
    ]);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    // The old base alone does not know; base plus delta does.
    let with = |crls: &[&str]| {
        let mut args = vec!["verify", "-crl_check", "-use_deltas"];
        for c in crls {
            args.extend(["-CRLfile", c]);
        }
        args.extend(["-CAfile", &root, "-untrusted", &int, &bad_leaf]);
        openssl(&args)
    };
    let (ok, out) = with(&[&base_path]);
    assert!(ok, "the base predates the revocation: {out}");
    let (ok, out) = with(&[&base_path, &delta_path]);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = openssl(&["crl", "-in", &delta_path, "-noout", "-text"]);
    assert!(ok && out.contains("Delta CRL Indicator"), "{out}");

    for (leaf, expect) in [(&bad, "revoked"), (&good, "good")] {
        let leaf_path = write(
            dir.path(),
            "leaf.pem",
            &pem_encode("CERTIFICATE", &leaf.cert_der),
        );
        let req = dir.path().join("req.der");
        let (ok, out) = openssl(&[
            "ocsp",
            "-issuer",
            &int,
            "-cert",
            &leaf_path,
            "-reqout",
            req.to_str().unwrap(),
        ]);
        assert!(ok, "{out}");
        // Node 2 may lag the revocation by a moment; a linearizable read
        // first makes sure it has applied it.
        auths[1].node().read_linearizable(|_| ()).await.unwrap();
        let resp = auths[1].ocsp("eu", &std::fs::read(&req).unwrap());
        let resp_path = dir.path().join("resp.der");
        std::fs::write(&resp_path, resp).unwrap();
        let chain = write(
            dir.path(),
            "ca.pem",
            &format!("{int_pem}{}", pem_encode("CERTIFICATE", &root_der)),
        );
        let (ok, out) = openssl(&[
            "ocsp",
            "-reqin",
            req.to_str().unwrap(),
            "-respin",
            resp_path.to_str().unwrap(),
            "-issuer",
            &int,
            "-CAfile",
            &chain,
            "-resp_text",
        ]);
        assert!(ok && out.contains("Response verify OK"), "{out}");
        assert!(
            out.contains(&format!("Cert Status: {expect}")),
            "expected {expect}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_typed_errors_and_record_nothing() {
    let (_c, auths) = setup().await;
    let before = auths[0]
        .node()
        .read_linearizable(|s| s.record_count())
        .await
        .unwrap();
    let cases: Vec<(IssueRequest, &str)> = vec![
        (request(b"not a csr".to_vec()), "not valid DER"),
        (
            request(csr("evil.search.svc.cluster.local")),
            "outside namespace \"payments\"",
        ),
        (
            IssueRequest {
                namespace: "nope".into(),
                ..request(csr("a.payments.svc.cluster.local"))
            },
            "unknown namespace",
        ),
        (
            IssueRequest {
                lifetime: Some(Duration::from_secs(100 * 3600)),
                ..request(csr("a.payments.svc.cluster.local"))
            },
            "exceeds",
        ),
    ];
    for (req, needle) in cases {
        let e = auths[0].issue(req).await.unwrap_err();
        assert!(e.to_string().contains(needle), "expected {needle:?}: {e}");
    }
    let e = auths[0]
        .revoke("eu", &[0x01, 0x02], RevocationReason::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(e.code(), quorumca_api::StatusCode::NotFound, "{e}");
    let after = auths[0]
        .node()
        .read_linearizable(|s| s.record_count())
        .await
        .unwrap();
    assert_eq!(before, after, "a refused request recorded something");

    // A node given the wrong unseal secret cannot sign, and says so.
    let wrong = Authority::new(
        auths[2].node().clone(),
        Some(test_kek(b"some other secret of 32 bytes!!!")),
        test_config(3),
    );
    let e = wrong
        .issue(request(csr("a.payments.svc.cluster.local")))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthorityError::Seal(_)), "{e}");
    assert!(e.to_string().contains("unseal secret"), "{e}");
    // A node with no secret at all replicates but refuses to sign.
    let sealed = Authority::new(auths[2].node().clone(), None, test_config(3));
    let e = sealed
        .issue(request(csr("a.payments.svc.cluster.local")))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthorityError::Sealed), "{e}");
    assert_eq!(e.code(), quorumca_api::StatusCode::FailedPrecondition);
    assert!(e.to_string().contains("QUORUMCA_UNSEAL_SECRET"), "{e}");
    assert_eq!(sealed.refresh_crls().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_by_key_revokes_every_certificate_of_that_key_on_every_issuer() {
    let (_c, auths) = setup().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["k.payments.svc.cluster.local".to_string()]).unwrap();
    let shared = params.serialize_request(&key).unwrap().der().to_vec();
    let a = auths[0].issue(request(shared.clone())).await.unwrap();
    let b = auths[2].issue(request(shared.clone())).await.unwrap();
    let other = auths[1]
        .issue(request(csr("o.payments.svc.cluster.local")))
        .await
        .unwrap();
    assert_eq!((a.issuer.as_str(), b.issuer.as_str()), ("eu", "us"));
    let spki = quorumca_ca::parse_csr(&shared).unwrap().spki_der;
    let n = auths[1]
        .revoke_by_key(&spki, RevocationReason::KeyCompromise)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let check = |issuer: &'static str, serial: Vec<u8>| {
        auths[2]
            .node()
            .read_linearizable(move |s| s.revocation(issuer, &Serial(serial)).map(|r| r.reason))
    };
    assert_eq!(
        check("eu", a.serial.clone()).await.unwrap(),
        Some(RevocationReason::KeyCompromise)
    );
    assert_eq!(
        check("us", b.serial.clone()).await.unwrap(),
        Some(RevocationReason::KeyCompromise)
    );
    assert_eq!(
        check("eu", other.serial.clone()).await.unwrap(),
        None,
        "a different key stays valid"
    );
    // A key with no live certificate is a clear error, not a silent no-op.
    let unknown = quorumca_ca::parse_csr(&csr("u.payments.svc.cluster.local"))
        .unwrap()
        .spki_der;
    let e = auths[0]
        .revoke_by_key(&unknown, RevocationReason::KeyCompromise)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no live certificate"), "{e}");
}

/// Verifies leaf -> intermediate -> root for TLS server use with webpki.
fn webpki_verify(root: &[u8], int: &[u8], leaf: &[u8], name: &str) {
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    let root = CertificateDer::from(root.to_vec());
    let anchor = webpki::anchor_from_trusted_cert(&root).expect("root parses");
    let leaf = CertificateDer::from(leaf.to_vec());
    let ee = webpki::EndEntityCert::try_from(&leaf).expect("leaf parses");
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[CertificateDer::from(int.to_vec())],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .expect("webpki accepts the chain");
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap())
        .expect("webpki accepts the name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_records_leave_the_ledger_for_the_archive_and_their_crl_entries_go() {
    let (_c, auths) = setup().await;
    let mut short = request(csr("short.payments.svc.cluster.local"));
    short.lifetime = Some(Duration::from_secs(1));
    let short = auths[0].issue(short).await.unwrap();
    let long = auths[0]
        .issue(request(csr("long.payments.svc.cluster.local")))
        .await
        .unwrap();
    auths[0]
        .revoke("eu", &short.serial, RevocationReason::Superseded)
        .await
        .unwrap();
    let shard = auths[0]
        .node()
        .read_linearizable({
            let s = Serial(short.serial.clone());
            move |st| st.revocation("eu", &s).unwrap().shard
        })
        .await
        .unwrap();
    auths[1].refresh_crls().await.unwrap();
    let before = auths[1].crl("eu", shard, false).unwrap();

    // Only the leader prunes.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let leader = auths
        .iter()
        .find(|a| a.node().is_leader())
        .expect("a leader");
    for a in auths.iter().filter(|a| !a.node().is_leader()) {
        assert_eq!(a.prune_expired(Duration::ZERO).await.unwrap(), 0);
    }
    assert_eq!(leader.prune_expired(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(
        leader.prune_expired(Duration::ZERO).await.unwrap(),
        0,
        "nothing left"
    );

    for a in &auths {
        a.node().read_linearizable(|_| ()).await.unwrap();
        let (short_rec, long_rec, revoked) = a.node().read_local(|st| {
            (
                st.record("eu", &Serial(short.serial.clone())).is_some(),
                st.record("eu", &Serial(long.serial.clone())).is_some(),
                st.revocation("eu", &Serial(short.serial.clone())).is_some(),
            )
        });
        assert!(
            !short_rec && !revoked,
            "expired record left node {}",
            a.node().id()
        );
        assert!(long_rec, "a live record was pruned");
        let archived = a
            .node()
            .archive()
            .get("eu", &Serial(short.serial.clone()))
            .unwrap()
            .expect("archived on every node");
        assert_eq!(archived.record.serial.0, short.serial);
        assert!(
            archived.revocation.is_some(),
            "its revocation is archived with it"
        );
    }

    // Still answerable: from the archive, with its revocation.
    use quorumca_proto::certificate_service_server::CertificateService;
    let svc = quorumca_api::grpc::Services(auths[2].clone());
    let info = svc
        .get_certificate(tonic::Request::new(quorumca_proto::GetCertificateRequest {
            issuer: "eu".into(),
            serial: hex::encode(&short.serial),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(info.archived && info.revoked, "{info:?}");
    let live = svc
        .list_certificates(tonic::Request::new(
            quorumca_proto::ListCertificatesRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.certificates.len(), 1, "only the live one is listed");

    // The shard changed, so it is rebuilt, without the expired entry.
    assert!(auths[1].refresh_crls().await.unwrap() >= 1);
    let after = auths[1].crl("eu", shard, false).unwrap();
    assert!(after.number > before.number);
    assert!(
        after.der.len() < before.der.len(),
        "the entry is gone from the CRL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_with_an_idempotency_key_get_the_first_certificate_on_any_node() {
    let (_c, auths) = setup().await;
    let count = |a: &Arc<Authority>| a.node().read_local(|s| s.record_count());
    let the_csr = csr("retry.payments.svc.cluster.local");
    let keyed = |key: &str, csr: Vec<u8>| IssueRequest {
        idempotency_key: Some(key.into()),
        ..request(csr)
    };

    let first = auths[0].issue(keyed("k-1", the_csr.clone())).await.unwrap();
    assert!(!first.replayed);
    // The answer was "lost"; the client retries on another node.
    let again = auths[1].issue(keyed("k-1", the_csr.clone())).await.unwrap();
    assert!(again.replayed);
    assert_eq!(
        (again.serial.clone(), again.cert_der.clone()),
        (first.serial.clone(), first.cert_der.clone())
    );
    assert_eq!(again.chain_pem, first.chain_pem);

    // Concurrent retries racing each other on every node: one certificate.
    let before = count(&auths[0]);
    let mut tasks = Vec::new();
    let racing_csr = csr("race.payments.svc.cluster.local");
    for i in 0..9 {
        let a = auths[i % 3].clone();
        let r = keyed("k-race", racing_csr.clone());
        tasks.push(tokio::spawn(async move { a.issue(r).await.unwrap() }));
    }
    let mut serials = BTreeSet::new();
    for t in tasks {
        serials.insert(t.await.unwrap().serial);
    }
    assert_eq!(serials.len(), 1, "one key, one certificate");
    auths[0].node().read_linearizable(|_| ()).await.unwrap();
    assert_eq!(count(&auths[0]), before + 1);

    // The same key for another key pair is a client bug: refused.
    let e = auths[2]
        .issue(keyed("k-1", csr("retry.payments.svc.cluster.local")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("idempotency key"), "{e}");
    assert_eq!(e.code(), quorumca_api::StatusCode::FailedPrecondition);

    // Revocation: a keyed retry answers with the first revocation; an
    // unkeyed repeat is "already revoked".
    let (at, index) = auths[0]
        .revoke_with_key(
            "eu",
            &first.serial,
            RevocationReason::Superseded,
            Some("r-1"),
        )
        .await
        .unwrap();
    assert!(index > 0);
    let (at2, _) = auths[1]
        .revoke_with_key(
            "eu",
            &first.serial,
            RevocationReason::Superseded,
            Some("r-1"),
        )
        .await
        .unwrap();
    // The first revocation's time, whether the retry was byte-identical
    // (same millisecond: the ledger answers it directly) or not.
    assert_eq!(at2, at);
    let e = auths[1]
        .revoke("eu", &first.serial, RevocationReason::Superseded)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already revoked"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_over_its_rate_limit_is_refused_before_anything_is_spent() {
    let (_c, auths) = setup().await;
    let limited = format!(
        "{}\n[limits]\nper_identity = \"3/s\"\n",
        quorumca_testkit::authority::TEST_POLICY
    );
    auths[0]
        .apply_policy(&limited, "test", Some(1))
        .await
        .unwrap();
    auths[1].node().read_linearizable(|_| ()).await.unwrap();
    let as_who = |who: &str| IssueRequest {
        actor: who.into(),
        ..request(csr("rl.payments.svc.cluster.local"))
    };
    for _ in 0..3 {
        auths[1].issue(as_who("greedy")).await.unwrap();
    }
    // Through the leader: a follower may not have applied the last record
    // yet when its issue call returns.
    let count = || async {
        auths[1]
            .node()
            .read_linearizable(|s| s.record_count())
            .await
            .unwrap()
    };
    let before = count().await;
    let e = auths[1].issue(as_who("greedy")).await.unwrap_err();
    assert_eq!(e.code(), quorumca_api::StatusCode::ResourceExhausted, "{e}");
    assert!(
        e.to_string().contains("greedy") && e.to_string().contains("retry in"),
        "{e}"
    );
    assert_eq!(count().await, before);
    // Others are not affected; the greedy caller recovers after a moment.
    auths[1].issue(as_who("patient")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    auths[1].issue(as_who("greedy")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_trust_bundle_sends_the_bundle_then_each_change() {
    use quorumca_proto::authority_service_server::AuthorityService;
    use quorumca_proto::GetTrustBundleRequest;
    use tokio_stream::StreamExt;
    let (_c, auths) = setup().await;
    let svc = quorumca_api::grpc::Services(auths[2].clone());
    let mut stream = svc
        .watch_trust_bundle(tonic::Request::new(GetTrustBundleRequest {}))
        .await
        .unwrap()
        .into_inner();
    async fn next(
        s: &mut tokio_stream::wrappers::ReceiverStream<
            Result<quorumca_proto::TrustBundle, tonic::Status>,
        >,
    ) -> quorumca_proto::TrustBundle {
        tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("a bundle within 10 s")
            .expect("stream open")
            .expect("a bundle, not an error")
    }
    let first = next(&mut stream).await;
    assert_eq!(first.version, 3, "root + eu + us");
    assert!(first.roots_pem.contains("BEGIN CERTIFICATE"));
    // A new region's intermediate, registered through node 1, reaches the
    // watcher on node 3.
    auths[0]
        .bootstrap_hierarchy(&["eu".into(), "us".into(), "ap".into()])
        .await
        .unwrap();
    let second = next(&mut stream).await;
    assert_eq!(second.version, 4);
    assert!(second.issuers.iter().any(|i| i.id == "ap"));
    assert_eq!(second.roots_pem, first.roots_pem, "same root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_token_enrols_once_and_a_retry_gets_the_same_certificate() {
    let (_c, auths) = setup().await;
    let admin = quorumca_api::Caller {
        identity: "admin".into(),
        cert_der: None,
        spki_hash: None,
    };
    let (token, _) = auths[0]
        .create_token(&admin, "payments", "", None, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(token.starts_with("qca_jt_"));
    // A CSR the namespace refuses leaves the token usable.
    let e = auths[1]
        .enroll(&token, csr("x.search.example"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), quorumca_api::StatusCode::PermissionDenied, "{e}");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let req = rcgen::CertificateParams::new(vec!["new.payments.svc.cluster.local".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    let first = auths[1].enroll(&token, req.clone(), None).await.unwrap();
    // The answer was lost; the same request again, on another node.
    let again = auths[2].enroll(&token, req, None).await.unwrap();
    assert_eq!(again.serial, first.serial);
    assert!(again.replayed);
    // Another key with the spent token: refused.
    let e = auths[2]
        .enroll(&token, csr("other.payments.svc.cluster.local"), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already used"), "{e}");
    let e = auths[0]
        .enroll("qca_jt_guess", csr("g.payments.svc.cluster.local"), None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("unknown, already used, or expired"),
        "{e}"
    );
}

/// Security hardening 3: each malformed SPIFFE ID form that used to be
/// issued inside an allowed prefix is refused with INVALID_ARGUMENT and
/// records nothing; a well-formed one in the same namespace is issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_spiffe_ids_are_refused_and_record_nothing() {
    let (_c, auths) = setup().await;
    let uri_csr = |uri: &str| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        params.serialize_request(&key).unwrap().der().to_vec()
    };
    let records = |a: &Authority| a.node().read_local(|s| s.records().count());
    let before = records(&auths[0]);
    for uri in [
        "spiffe://example.org/ns/payments/%2e%2e/%2e%2e/node/1",
        "spiffe://example.org/ns/payments/x?y#z",
        "spiffe://example.org/ns/payments/@evil",
        "spiffe://example.org/ns/payments/../../node/1",
        "spiffe://example.org/ns/payments/a//b",
        "spiffe://example.org/ns/payments/a/",
        "SPIFFE://example.org/ns/payments/a",
    ] {
        let e = auths[0].issue(request(uri_csr(uri))).await.expect_err(uri);
        assert_eq!(
            e.code(),
            quorumca_api::StatusCode::InvalidArgument,
            "{uri}: {e}"
        );
        assert!(e.to_string().contains("SPIFFE ID"), "{uri}: {e}");
    }
    auths[0]
        .issue(request(uri_csr("spiffe://example.org/ns/payments/sa/api")))
        .await
        .expect("a valid SPIFFE ID");
    assert_eq!(records(&auths[0]), before + 1);
}
