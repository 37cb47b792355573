//! Random and mutated requests through the public gRPC services of a real
//! 3-node cluster: every one gets a status a caller can act on (never
//! INTERNAL, never a panic), nothing malformed is recorded, and the cluster
//! still issues afterwards.

use std::time::Duration;

use quorumca_api::grpc::Services;
use quorumca_proto as pb;
use quorumca_proto::audit_service_server::AuditService;
use quorumca_proto::authority_service_server::AuthorityService;
use quorumca_proto::certificate_service_server::CertificateService;
use quorumca_proto::enrollment_service_server::EnrollmentService;
use quorumca_proto::policy_service_server::PolicyService;
use quorumca_proto::token_service_server::TokenService;
use quorumca_testkit::authority::{authorities, test_csr};
use quorumca_testkit::cluster::{fast_settings, TestCluster};
use rand::{Rng, SeedableRng};
use tonic::{Code, Request};

fn random_string(rng: &mut impl Rng, max: usize) -> String {
    let len = rng.gen_range(0..max);
    (0..len)
        .map(|_| match rng.gen_range(0..4) {
            0 => rng.gen_range(b'a'..=b'z') as char,
            1 => rng.gen_range(0x20u8..0x7f) as char,
            2 => char::from_u32(rng.gen_range(0x80..0x2000)).unwrap_or('x'),
            _ => ['.', '*', '/', ':', '\0', '\n'][rng.gen_range(0..6)],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_get_actionable_statuses_and_change_nothing() {
    let mut c = TestCluster::start(3, fast_settings()).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let auths = authorities(&mut c).await.unwrap();
    let svc = Services(auths[1].clone());
    let valid = test_csr("ok.payments.svc.cluster.local");
    let before = auths[0]
        .node()
        .read_linearizable(|s| s.record_count())
        .await
        .unwrap();
    // Seeded, so a failure reproduces.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let acceptable = [
        Code::InvalidArgument,
        Code::PermissionDenied,
        Code::NotFound,
        Code::FailedPrecondition,
    ];
    // Extreme lifetimes on an otherwise valid request.
    for lifetime_seconds in [1, 59, u32::MAX as u64, i64::MAX as u64, u64::MAX] {
        let r = svc
            .issue(Request::new(pb::IssueRequest {
                csr: valid.clone(),
                namespace: "payments".into(),
                profile: "web".into(),
                lifetime_seconds,
                idempotency_key: String::new(),
            }))
            .await;
        match r {
            Ok(_) => assert!(lifetime_seconds < 72 * 3600),
            Err(s) => assert_eq!(s.code(), Code::InvalidArgument, "{lifetime_seconds}: {s:?}"),
        }
    }
    for case in 0..300 {
        let csr = match case % 4 {
            0 => (0..rng.gen_range(0..3000)).map(|_| rng.gen()).collect(),
            1 => {
                let mut v = valid.clone();
                let i = rng.gen_range(0..v.len());
                v[i] ^= 1 << rng.gen_range(0..8);
                v
            }
            2 => valid[..rng.gen_range(0..valid.len())].to_vec(),
            _ => format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
                random_string(&mut rng, 200)
            )
            .into_bytes(),
        };
        let req = pb::IssueRequest {
            csr,
            namespace: if rng.gen_bool(0.5) {
                "payments".into()
            } else {
                random_string(&mut rng, 20)
            },
            profile: if rng.gen_bool(0.5) {
                "web".into()
            } else {
                random_string(&mut rng, 20)
            },
            lifetime_seconds: rng.gen(),
            idempotency_key: random_string(&mut rng, 40),
        };
        match svc.issue(Request::new(req)).await {
            // A mutation in an unsigned, normalised spot can still verify;
            // then it is a real certificate and must chain like any other.
            Ok(r) => assert!(!r.get_ref().certificate_pem.is_empty()),
            Err(s) => assert!(
                acceptable.contains(&s.code()),
                "case {case}: {:?} {}",
                s.code(),
                s.message()
            ),
        }
        let revoke = pb::RevokeRequest {
            issuer: random_string(&mut rng, 10),
            serial: random_string(&mut rng, 50),
            reason: rng.gen_range(-3..14),
            idempotency_key: String::new(),
            certificate: if rng.gen_bool(0.3) {
                random_string(&mut rng, 80).into_bytes()
            } else {
                Vec::new()
            },
        };
        if let Err(s) = svc.revoke(Request::new(revoke)).await {
            assert!(acceptable.contains(&s.code()), "revoke {case}: {s:?}");
        }
        let key = pb::RevokeByKeyRequest {
            public_key: (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
            reason: rng.gen_range(-3..14),
        };
        let s = svc.revoke_by_key(Request::new(key)).await.unwrap_err();
        assert!(
            acceptable.contains(&s.code()),
            "revoke_by_key {case}: {s:?}"
        );
        let crl = pb::GetCrlRequest {
            issuer: random_string(&mut rng, 10),
            shard: rng.gen(),
            delta: rng.gen(),
        };
        if let Err(s) = svc.get_crl(Request::new(crl)).await {
            assert!(
                acceptable.contains(&s.code()) || s.code() == Code::Unavailable,
                "get_crl {case}: {s:?}"
            );
        }
        // Enrolment with a made-up token and CSR: refused, never used.
        let enroll = pb::EnrollRequest {
            token: random_string(&mut rng, 80),
            csr: (0..rng.gen_range(0..500)).map(|_| rng.gen()).collect(),
            lifetime_seconds: rng.gen(),
        };
        let s = svc.enroll(Request::new(enroll)).await.unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "enroll {case}: {s:?}");
        // Renew without mTLS has no certificate to renew.
        let renew = pb::RenewRequest {
            csr: valid.clone(),
            lifetime_seconds: rng.gen(),
            idempotency_key: random_string(&mut rng, 10),
        };
        let s = svc.renew(Request::new(renew)).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "renew {case}: {s:?}");
        let token = pb::CreateTokenRequest {
            namespace: if rng.gen_bool(0.3) {
                "payments".into()
            } else {
                random_string(&mut rng, 20)
            },
            profile: random_string(&mut rng, 8),
            role: random_string(&mut rng, 8),
            ttl_seconds: rng.gen(),
        };
        if let Err(s) = svc.create_token(Request::new(token)).await {
            assert!(acceptable.contains(&s.code()), "create_token {case}: {s:?}");
        }
        let audit = pb::QueryAuditRequest {
            after_seq: rng.gen(),
            limit: rng.gen(),
            actor: random_string(&mut rng, 30),
            denied_only: rng.gen(),
        };
        if let Err(s) = svc.query_audit(Request::new(audit)).await {
            assert!(acceptable.contains(&s.code()), "query_audit {case}: {s:?}");
        }
        let approve = pb::ApproveChangeRequest { id: rng.gen() };
        let s = svc.approve_change(Request::new(approve)).await.unwrap_err();
        assert_eq!(s.code(), Code::NotFound, "approve {case}: {s:?}");
        let text = random_string(&mut rng, 300);
        // An empty or comment-only text is a valid (empty) policy; only
        // invalid ones are the point here.
        if case % 10 == 0 && quorumca_ca::Policy::from_toml(&text).is_err() {
            let p = pb::ApplyPolicyRequest {
                text,
                expected_version: 0,
                dry_run: rng.gen(),
                note: random_string(&mut rng, 10),
            };
            let s = svc.apply_policy(Request::new(p)).await.unwrap_err();
            assert_eq!(s.code(), Code::InvalidArgument, "policy {case}: {s:?}");
        }
    }
    let after = auths[0]
        .node()
        .read_linearizable(|s| s.record_count())
        .await
        .unwrap();
    let issued_ok = after - before;
    assert!(
        issued_ok <= 20,
        "{issued_ok} malformed requests were recorded"
    );
    // Still healthy.
    let ok = svc
        .issue(Request::new(pb::IssueRequest {
            csr: valid,
            namespace: "payments".into(),
            profile: "web".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(ok.get_ref().chain_pem.contains("BEGIN CERTIFICATE"));
}
