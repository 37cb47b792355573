//! A root kept offline: the cluster prepares an intermediate key and CSR,
//! the root signs it outside the cluster, the cluster checks and installs
//! it, and leaves chain to the offline root. The root's key never enters
//! the ledger.

use std::sync::Arc;
use std::time::Duration;

use quorumca_api::{Authority, AuthorityError, IssueRequest, ROOT_ID};
use quorumca_ca::{parse_csr, pem_encode, self_signed_root, sign_intermediate_csr, Validity};
use quorumca_consensus::now_ms;
use quorumca_testkit::authority::{test_config, test_csr, test_kek, TEST_POLICY, TEST_SECRET};
use quorumca_testkit::cluster::{fast_settings, TestCluster};
use quorumca_testkit::{openssl, write_file};

/// OpenSSL verifies `chain_pem` (leaf first) against the root file.
fn verifies(dir: &std::path::Path, root_pem: &str, chain_pem: &str, name: &str) {
    let chain = write_file(dir, name, chain_pem);
    let (ok, out) = openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        root_pem,
        "-untrusted",
        &chain,
        &chain,
    ]);
    assert!(ok, "{out}");
}

fn offline_root(name: &str) -> quorumca_ca::CaSigner {
    let now = now_ms() as i64 / 1000;
    self_signed_root(
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        name,
        Validity {
            not_before: now - 60,
            not_after: now + 86_400 * 365,
        },
        &[0x01, 0x02],
    )
    .unwrap()
}

/// A 3-node cluster with an authority per node and no hierarchy yet.
async fn empty_cluster() -> (TestCluster, Vec<Arc<Authority>>) {
    let mut c = TestCluster::start(3, fast_settings()).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let auths: Vec<Arc<Authority>> = c
        .nodes
        .iter_mut()
        .enumerate()
        .map(|(i, slot)| {
            Arc::new(Authority::new(
                Arc::new(slot.take().unwrap()),
                Some(test_kek(TEST_SECRET)),
                test_config(i as u64 + 1),
            ))
        })
        .collect();
    (c, auths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_intermediate_signed_by_an_offline_root_is_checked_installed_and_issues() {
    let (_c, auths) = empty_cluster().await;
    let root = offline_root("Offline Root");
    let now = now_ms() as i64 / 1000;
    let validity = Validity {
        not_before: now - 60,
        not_after: now + 86_400 * 30,
    };

    // Node 2 prepares; the root signs offline; node 1 installs (any node
    // with the unseal secret can).
    let (csr_pem, sealed, _) = auths[1].prepare_intermediate("eu").unwrap();
    let csr = parse_csr(csr_pem.as_bytes()).unwrap();
    let int = sign_intermediate_csr(&root, &csr, "QuorumCA eu", validity, &[0x10]).unwrap();

    // Refusals first, each changing nothing.
    let other = offline_root("Offline Root");
    let e = auths[0]
        .install_intermediate("eu", &int, &other.cert_der, &sealed)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    let e = auths[0]
        .install_intermediate("us", &int, &root.cert_der, &sealed)
        .await
        .unwrap_err();
    assert!(
        matches!(e, AuthorityError::Seal(_)),
        "sealed for eu, not us: {e}"
    );
    let e = auths[0]
        .install_intermediate("../eu", &int, &root.cert_der, &sealed)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("a-z, 0-9"), "{e}");
    assert!(auths[0]
        .node()
        .read_linearizable(|s| s.issuers().count() == 0)
        .await
        .unwrap());

    auths[0]
        .install_intermediate("eu", &int, &root.cert_der, &sealed)
        .await
        .unwrap();
    let e = auths[0]
        .install_intermediate("eu", &int, &root.cert_der, &sealed)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already registered"), "{e}");
    let (root_key, int_key) = auths[0]
        .node()
        .read_linearizable(|s| {
            (
                s.issuer(ROOT_ID).unwrap().sealed_key.clone(),
                s.issuer("eu").unwrap().sealed_key.clone(),
            )
        })
        .await
        .unwrap();
    assert!(
        root_key.is_none(),
        "the offline root's key is not in the ledger"
    );
    assert!(int_key.is_some());

    // Leaves from region eu chain to the offline root.
    auths[0]
        .apply_policy(TEST_POLICY, "test", Some(0))
        .await
        .unwrap();
    let issued = auths[1]
        .issue(IssueRequest {
            csr: test_csr("a.payments.svc.cluster.local"),
            namespace: "payments".into(),
            profile: "web".into(),
            lifetime: None,
            actor: "test".into(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert_eq!(issued.issuer, "eu");
    let dir = tempfile::tempdir().unwrap();
    let root_pem = write_file(
        dir.path(),
        "root.pem",
        &pem_encode("CERTIFICATE", &root.cert_der),
    );
    verifies(dir.path(), &root_pem, &issued.chain_pem, "chain.pem");

    // CRLs are built for the intermediate; the offline root is skipped (its
    // key is not here), not an error.
    let built = auths[2].refresh_crls().await.unwrap();
    assert_eq!(built, 4, "the 4 shards of eu");

    // Rotation under the offline root: preparing again for eu gives its
    // next generation, and installing that rotates the region to it.
    let (csr_pem, sealed, id) = auths[1].prepare_intermediate("eu").unwrap();
    assert_eq!(id, "eu.g2");
    let csr = parse_csr(csr_pem.as_bytes()).unwrap();
    let int2 = sign_intermediate_csr(&root, &csr, "QuorumCA eu.g2", validity, &[0x11]).unwrap();
    auths[2]
        .install_intermediate("eu", &int2, &root.cert_der, &sealed)
        .await
        .unwrap();
    let (active, phase) = auths[0]
        .node()
        .read_linearizable(|s| {
            (
                s.active_issuer("eu").map(|i| i.id.clone()),
                s.issuer_phase("eu"),
            )
        })
        .await
        .unwrap();
    assert_eq!(active.as_deref(), Some("eu.g2"));
    assert_eq!(phase, Some(quorumca_ledger::IssuerPhase::Retiring));
    let e = auths[2]
        .install_intermediate("eu", &int2, &root.cert_der, &sealed)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already registered"), "{e}");
    let issued = auths[1]
        .issue(IssueRequest {
            csr: test_csr("b.payments.svc.cluster.local"),
            namespace: "payments".into(),
            profile: "web".into(),
            lifetime: None,
            actor: "test".into(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert_eq!(issued.issuer, "eu.g2");
    verifies(dir.path(), &root_pem, &issued.chain_pem, "chain2.pem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_ca_approvals_an_install_waits_for_a_second_admin() {
    use quorumca_ledger::{Command, Outcome, Proposal};
    use quorumca_proto as pb;
    use quorumca_proto::authority_service_server::AuthorityService;
    use quorumca_proto::policy_service_server::PolicyService;
    let (_c, auths) = empty_cluster().await;
    auths[0]
        .apply_policy(
            &format!("{TEST_POLICY}\n[approvals]\nca = true\n"),
            "test",
            Some(0),
        )
        .await
        .unwrap();
    let root = offline_root("Offline Root");
    let now = now_ms() as i64 / 1000;
    let (csr_pem, sealed, _) = auths[1].prepare_intermediate("eu").unwrap();
    let csr = parse_csr(csr_pem.as_bytes()).unwrap();
    let int = sign_intermediate_csr(
        &root,
        &csr,
        "QuorumCA eu",
        Validity {
            not_before: now - 60,
            not_after: now + 86_400 * 30,
        },
        &[0x10],
    )
    .unwrap();
    let svc = quorumca_api::grpc::Services(auths[0].clone());
    let r = svc
        .install_intermediate(tonic::Request::new(pb::InstallIntermediateRequest {
            region: "eu".into(),
            certificate_pem: pem_encode("CERTIFICATE", &int),
            root_pem: root.cert_pem(),
            sealed_key: sealed.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let id = r.pending_change;
    assert!(id > 0, "checked and filed, not installed");
    let count = |a: &Authority| a.node().read_local(|s| s.issuers().count());
    assert_eq!(count(&auths[0]), 0);
    // The same caller cannot approve its own change.
    let e = svc
        .approve_change(tonic::Request::new(pb::ApproveChangeRequest { id }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert_eq!(count(&auths[0]), 0);
    // A second admin's approval registers root and intermediate together.
    let p = Proposal::new(
        now_ms(),
        Command::ApproveChange {
            id,
            actor: "second admin".into(),
        },
    );
    let done = auths[2].node().propose(p).await.unwrap();
    assert_eq!(done.outcome, Outcome::IssuerRegistered { id: "eu".into() });
    auths[2].node().read_linearizable(|_| ()).await.unwrap();
    assert_eq!(count(&auths[2]), 2);
    // Node 1 signs for region eu: it issues under the approved intermediate.
    let eu = auths[0]
        .issue(IssueRequest {
            csr: test_csr("b.payments.svc.cluster.local"),
            namespace: "payments".into(),
            profile: "web".into(),
            lifetime: None,
            actor: "t".into(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert_eq!(eu.issuer, "eu");
}
