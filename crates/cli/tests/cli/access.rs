//! Access control over mTLS against a real 3-node `quorumca dev` cluster,
//! through the `quorumca` CLI as operators and workloads would use it:
//! roles from policy grants, namespace isolation, audited denials, an
//! auditor that reads but cannot issue, a two-person policy change, renewal
//! with the presented certificate, and callers refused during the TLS
//! handshake (no client certificate, or one from another CA).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{env_value, start_dev, BIN};
use quorumca_proto::audit_service_client::AuditServiceClient;
use quorumca_proto::cluster_client::ClusterClient;
use quorumca_proto::QueryAuditRequest;
use quorumca_proto::StatusRequest;

const TD: &str = "spiffe://dev.internal";

const POLICY: &str = r#"
[profiles.service]
key_algorithms = ["ecdsa-p256"]
default_lifetime = "24h"
max_lifetime = "72h"
usages = ["server", "client"]

[namespaces.payments]
profiles = ["service"]
dns = ["*.payments.svc.dev.internal"]
uris = ["spiffe://dev.internal/ns/payments/*"]

[namespaces.search]
profiles = ["service"]
dns = ["*.search.svc.dev.internal"]
uris = ["spiffe://dev.internal/ns/search/*"]

[namespaces.people]
profiles = ["service"]
uris = ["spiffe://dev.internal/people/*"]

[[grants]]
identity = "spiffe://dev.internal/ns/payments/*"
role = "issuer"
namespaces = ["payments"]

[[grants]]
identity = "spiffe://dev.internal/people/auditor"
role = "auditor"

[[grants]]
identity = "spiffe://dev.internal/people/alice"
role = "admin"

[approvals]
policy = true
"#;

struct Cli {
    endpoints: String,
}

impl Cli {
    fn run(&self, creds: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("QUORUMCA_ENDPOINTS", &self.endpoints)
            .env("QUORUMCA_CREDENTIALS", creds)
            .env("USER", "tester")
            .stdin(Stdio::null())
            .output()
            .expect("run quorumca")
    }

    fn ok(&self, creds: &Path, args: &[&str]) -> String {
        let out = self.run(creds, args);
        assert!(
            out.status.success(),
            "quorumca {args:?} as {} failed: {}",
            creds.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Expects a refusal with this gRPC code; returns stderr.
    fn refused(&self, creds: &Path, args: &[&str], code: &str) -> String {
        let out = self.run(creds, args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "quorumca {args:?} as {} should have been refused",
            creds.display()
        );
        assert!(err.contains(code), "expected {code} from {args:?}: {err}");
        err
    }

    fn json(&self, creds: &Path, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(creds, &a)).unwrap()
    }
}

fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A CA and a client certificate that have nothing to do with the cluster,
/// claiming an admin's identity.
fn foreign_bundle(dir: &Path, cluster_roots: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![rcgen::SanType::URI(
        format!("{TD}/people/alice").try_into().unwrap(),
    )];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let d = dir.join("foreign");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("cert.pem"), cert.pem() + &ca_cert.pem()).unwrap();
    std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::copy(cluster_roots, d.join("ca.pem")).unwrap();
    d
}

/// A `quorumca dev` cluster under `dir/dev` with `policy` applied by its
/// admin (the text is also at `dir/policy.toml`).
struct Dev {
    _procs: crate::support::Procs,
    base: u16,
    cli: Cli,
    admin: PathBuf,
}

impl Dev {
    async fn start(dir: &Path, policy: &str) -> Dev {
        let (procs, base, env) = start_dev(&dir.join("dev")).await;
        let cli = Cli {
            endpoints: env_value(&env, "QUORUMCA_ENDPOINTS"),
        };
        let admin = PathBuf::from(env_value(&env, "QUORUMCA_CREDENTIALS"));
        let file = dir.join("policy.toml");
        std::fs::write(&file, policy).unwrap();
        cli.ok(&admin, &["policy", "apply", "-f", file.to_str().unwrap()]);
        Dev {
            _procs: procs,
            base,
            cli,
            admin,
        }
    }
}

/// How many refusals the audit log holds (every page of them).
async fn denials(port: u16, auditor: &Path) -> usize {
    let ch = crate::support::channel(port, Some(auditor)).await.unwrap();
    let mut client = AuditServiceClient::new(ch);
    let (mut after, mut n) = (0, 0);
    loop {
        let page = client
            .query_audit(QueryAuditRequest {
                after_seq: after,
                limit: 1000,
                actor: String::new(),
                denied_only: true,
            })
            .await
            .unwrap()
            .into_inner();
        n += page.entries.len();
        match page.next_after_seq {
            0 => return n,
            next => after = next,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_namespaces_audit_and_two_person_changes_over_mtls() {
    let _turn = crate::support::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The dev admin (break-glass in node.toml) applies a policy with grants
    // and issues identities; each --out-dir is a credential bundle.
    let Dev {
        _procs,
        base,
        cli,
        admin,
    } = Dev::start(d, POLICY).await;
    let env = std::fs::read_to_string(d.join("dev/env")).unwrap();
    let policy = d.join("policy.toml");
    let api = base + 100;
    let bundle = |name: &str, ns: &str, uri: &str, dns: Option<&str>| {
        let out = d.join(name);
        let mut args = vec![
            "issue",
            "--namespace",
            ns,
            "--uri",
            uri,
            "--out-dir",
            out.to_str().unwrap(),
        ];
        if let Some(dns) = dns {
            args.extend(["--dns", dns]);
        }
        cli.ok(&admin, &args);
        out
    };
    let payments = bundle(
        "payments",
        "payments",
        &format!("{TD}/ns/payments/api"),
        Some("api.payments.svc.dev.internal"),
    );
    let auditor = bundle("auditor", "people", &format!("{TD}/people/auditor"), None);
    let alice = bundle("alice", "people", &format!("{TD}/people/alice"), None);

    // An issuer of payments issues there, and nowhere else.
    let issued = cli.json(
        &payments,
        &[
            "issue",
            "--namespace",
            "payments",
            "--dns",
            "web.payments.svc.dev.internal",
        ],
    );
    assert_eq!(issued["issuer"], "dev-a");
    let e = cli.refused(
        &payments,
        &[
            "issue",
            "--namespace",
            "search",
            "--dns",
            "web.search.svc.dev.internal",
        ],
        "PermissionDenied",
    );
    assert!(e.contains("issuer of payments"), "{e}");
    let e = cli.refused(
        &payments,
        &[
            "issue",
            "--namespace",
            "payments",
            "--dns",
            "web.search.svc.dev.internal",
        ],
        "PermissionDenied",
    );
    assert!(e.contains("outside namespace \"payments\""), "{e}");
    cli.refused(&payments, &["audit", "query"], "PermissionDenied");
    cli.refused(
        &payments,
        &["policy", "apply", "-f", policy.to_str().unwrap()],
        "PermissionDenied",
    );

    // The auditor reads everything, changes nothing; it sees every refusal
    // of the payments identity in the audit log.
    let who = format!("{TD}/ns/payments/api");
    eventually(Duration::from_secs(10), "denials in the audit log", || {
        let a = cli.json(&auditor, &["audit", "query", "--denied", "--actor", &who]);
        a["entries"].as_array().unwrap().len() >= 4
    });
    let a = cli.json(&auditor, &["audit", "query", "--denied", "--actor", &who]);
    let details: Vec<String> = a["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["action"], e["detail"]))
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("issue in namespace \\\"search\\\"")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("web.search.svc.dev.internal")),
        "{details:?}"
    );
    let listed = cli.json(&auditor, &["cert", "list", "--namespace", "payments"]);
    assert!(listed.as_array().unwrap().len() >= 2, "{listed}");
    cli.ok(&auditor, &["policy", "show"]);
    cli.ok(&auditor, &["cluster", "status"]);
    cli.refused(
        &auditor,
        &[
            "issue",
            "--namespace",
            "people",
            "--uri",
            &format!("{TD}/people/x"),
        ],
        "PermissionDenied",
    );
    cli.refused(
        &auditor,
        &[
            "revoke",
            "--issuer",
            "dev-a",
            "--serial",
            issued["serial"].as_str().unwrap(),
        ],
        "PermissionDenied",
    );
    cli.refused(
        &auditor,
        &["cluster", "transfer-leader", "--to", "2"],
        "PermissionDenied",
    );

    // Two-person rule: alice's change waits; she cannot approve it herself;
    // the second admin's approval applies it.
    let version = |c: &Path| {
        cli.json(c, &["policy", "show"])["version"]
            .as_u64()
            .unwrap()
    };
    let v1 = version(&admin);
    let policy2 = d.join("policy2.toml");
    std::fs::write(
        &policy2,
        format!("{POLICY}\n[namespaces.billing]\nprofiles = [\"service\"]\ndns = [\"*.billing.svc.dev.internal\"]\n"),
    )
    .unwrap();
    let r = cli.json(
        &alice,
        &["policy", "apply", "-f", policy2.to_str().unwrap()],
    );
    assert_eq!(r["applied"], false, "{r}");
    let change = r["pending_change"].as_u64().unwrap();
    assert!(change > 0, "{r}");
    assert_eq!(version(&admin), v1, "a pending change changes nothing");
    let pending = cli.ok(&auditor, &["approve", "--list"]);
    assert!(pending.contains(&format!("change {change}")), "{pending}");
    assert!(pending.contains("+[namespaces.billing]"), "{pending}");
    let e = cli.refused(
        &alice,
        &["approve", &change.to_string()],
        "PermissionDenied",
    );
    assert!(e.contains("cannot also approve"), "{e}");
    cli.refused(
        &auditor,
        &["approve", &change.to_string()],
        "PermissionDenied",
    );
    assert_eq!(version(&admin), v1);
    let r = cli.json(&admin, &["approve", &change.to_string()]);
    assert_eq!(r["applied"], true, "{r}");
    assert_eq!(version(&auditor), v1 + 1);
    let shown = cli.json(&auditor, &["policy", "show"]);
    assert!(
        shown["actor"]
            .as_str()
            .unwrap()
            .contains("approved by spiffe://dev.internal/admin/dev"),
        "{shown}"
    );
    assert!(cli
        .ok(&auditor, &["approve", "--list"])
        .contains("no pending changes"));

    // Renewal with the certificate itself: same names, new key and serial;
    // a revoked certificate cannot renew.
    let before = std::fs::read_to_string(payments.join("cert.pem")).unwrap();
    let r = cli.json(&payments, &["renew", "--dir", payments.to_str().unwrap()]);
    let after = std::fs::read_to_string(payments.join("cert.pem")).unwrap();
    assert_ne!(before, after);
    let serial = r["serial"].as_str().unwrap().to_string();
    cli.ok(
        &payments,
        &[
            "revoke",
            "--issuer",
            "dev-a",
            "--serial",
            &serial,
            "--reason",
            "superseded",
        ],
    );
    // A revoked certificate authenticates nothing any more, renewal
    // included.
    let e = cli.refused(
        &payments,
        &["renew", "--dir", payments.to_str().unwrap()],
        "Unauthenticated",
    );
    assert!(e.contains("revoked"), "{e}");
    let e = cli.refused(
        &payments,
        &[
            "issue",
            "--namespace",
            "payments",
            "--dns",
            "x.payments.svc.dev.internal",
        ],
        "Unauthenticated",
    );
    assert!(e.contains("revoked"), "{e}");

    // Join tokens: a workload with no certificate enrols on the enrolment
    // port (TLS without client certificates) and gets a bundle. Without a
    // role it may renew but not issue; a token with the issuer role binds
    // it to the CSR's identity. A token works once; a CSR the namespace
    // refuses does not use it up.
    let enroll = |token: &str, uri: &str, dns: &str, out: &Path| {
        Command::new(BIN)
            .args([
                "enroll",
                "--ca-file",
                admin.join("ca.pem").to_str().unwrap(),
            ])
            .args([
                "--uri",
                uri,
                "--dns",
                dns,
                "--out-dir",
                out.to_str().unwrap(),
            ])
            .env(
                "QUORUMCA_ENROLL_ENDPOINTS",
                env_value(&env, "QUORUMCA_ENROLL_ENDPOINTS"),
            )
            .env("QUORUMCA_JOIN_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let token = |role: Option<&str>| {
        let mut args = vec!["token", "create", "--namespace", "search", "--ttl", "5m"];
        if let Some(r) = role {
            args.extend(["--role", r]);
        }
        cli.json(&admin, &args)["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    cli.refused(
        &auditor,
        &["token", "create", "--namespace", "search"],
        "PermissionDenied",
    );
    let plain = token(None);
    let out = enroll(
        &plain,
        &format!("{TD}/ns/search/indexer"),
        "indexer.payments.svc.dev.internal",
        &d.join("wrong"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside namespace \"search\""));
    let indexer = d.join("indexer");
    let out = enroll(
        &plain,
        &format!("{TD}/ns/search/indexer"),
        "indexer.search.svc.dev.internal",
        &indexer,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = enroll(
        &plain,
        &format!("{TD}/ns/search/other"),
        "other.search.svc.dev.internal",
        &d.join("again"),
    );
    assert!(!out.status.success(), "a token works once");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already used"));
    cli.refused(
        &indexer,
        &[
            "issue",
            "--namespace",
            "search",
            "--dns",
            "x.search.svc.dev.internal",
        ],
        "PermissionDenied",
    );
    cli.ok(&indexer, &["renew", "--dir", indexer.to_str().unwrap()]);
    let batch = d.join("batch");
    let out = enroll(
        &token(Some("issuer")),
        &format!("{TD}/ns/search/batch"),
        "batch.search.svc.dev.internal",
        &batch,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli.ok(
        &batch,
        &[
            "issue",
            "--namespace",
            "search",
            "--dns",
            "y.search.svc.dev.internal",
        ],
    );
    cli.refused(
        &batch,
        &[
            "issue",
            "--namespace",
            "payments",
            "--dns",
            "y.payments.svc.dev.internal",
        ],
        "PermissionDenied",
    );

    // Security hardening 1: the token's role is bound to the key of the
    // certificate it was granted to. Its identity is reserved: a role-less
    // token cannot enrol it and an admin cannot issue it; the holder keeps
    // the role through a renewal; revoking the holding certificate ends
    // the role, and a certificate minted for the identity afterwards holds
    // nothing.
    let batch_id = format!("{TD}/ns/search/batch");
    let grants = cli.json(&admin, &["token", "grants"]);
    let bound = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["identity"] == batch_id.as_str())
        .unwrap_or_else(|| panic!("no binding for {batch_id} in {grants}"));
    assert_eq!(bound["role"], "issuer");
    let squat_token = token(None);
    let out = enroll(
        &squat_token,
        &batch_id,
        "squat.search.svc.dev.internal",
        &d.join("squat"),
    );
    assert!(!out.status.success(), "a reserved identity was enrolled");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("reserved") && e.contains("PermissionDenied"),
        "{e}"
    );
    cli.refused(
        &admin,
        &[
            "issue",
            "--namespace",
            "search",
            "--uri",
            &batch_id,
            "--out-dir",
            d.join("minted").to_str().unwrap(),
        ],
        "reserved",
    );
    let renewed = cli.json(&batch, &["renew", "--dir", batch.to_str().unwrap()]);
    cli.ok(
        &batch,
        &[
            "issue",
            "--namespace",
            "search",
            "--dns",
            "z.search.svc.dev.internal",
        ],
    );
    cli.ok(
        &admin,
        &[
            "revoke",
            "--issuer",
            renewed["issuer"].as_str().unwrap(),
            "--serial",
            renewed["serial"].as_str().unwrap(),
            "--reason",
            "key-compromise",
        ],
    );
    let grants = cli.json(&admin, &["token", "grants"]);
    assert!(
        !grants.to_string().contains(&batch_id),
        "the revoked certificate's role survived: {grants}"
    );
    // The squatter's token was not used up by its refused attempt: with
    // the identity free again it enrols, and holds no role.
    let squat = d.join("squat2");
    let out = enroll(
        &squat_token,
        &batch_id,
        "squat.search.svc.dev.internal",
        &squat,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli.refused(
        &squat,
        &[
            "issue",
            "--namespace",
            "search",
            "--dns",
            "w.search.svc.dev.internal",
        ],
        "PermissionDenied",
    );
    // An admin removes a binding; removing it again is NOT_FOUND.
    let worker = d.join("worker");
    let out = enroll(
        &token(Some("issuer")),
        &format!("{TD}/ns/search/worker"),
        "worker.search.svc.dev.internal",
        &worker,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let worker_id = format!("{TD}/ns/search/worker");
    cli.refused(
        &auditor,
        &["token", "remove-grant", "--identity", &worker_id],
        "PermissionDenied",
    );
    cli.ok(&admin, &["token", "remove-grant", "--identity", &worker_id]);
    cli.refused(
        &admin,
        &["token", "remove-grant", "--identity", &worker_id],
        "NotFound",
    );
    cli.refused(
        &worker,
        &[
            "issue",
            "--namespace",
            "search",
            "--dns",
            "v.search.svc.dev.internal",
        ],
        "PermissionDenied",
    );

    // Refused during the handshake, before any service runs: no client
    // certificate, or one from another CA claiming alice's identity.
    // Nothing reaches the audit log for them.
    let denied_before = denials(api, &auditor).await;
    let roots = admin.join("ca.pem");
    let anon = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{api}"))
        .unwrap()
        .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(std::fs::read(&roots).unwrap()),
        ))
        .unwrap();
    let foreign = foreign_bundle(d, &roots);
    for (who, result) in [
        (
            "no client certificate",
            match anon.connect().await {
                Ok(ch) => ClusterClient::new(ch)
                    .status(StatusRequest {})
                    .await
                    .map(|_| ()),
                Err(e) => Err(tonic::Status::unavailable(e.to_string())),
            },
        ),
        (
            "a certificate from another CA",
            match crate::support::channel(api, Some(&foreign)).await {
                Ok(ch) => ClusterClient::new(ch)
                    .status(StatusRequest {})
                    .await
                    .map(|_| ()),
                Err(e) => Err(tonic::Status::unavailable(e.to_string())),
            },
        ),
    ] {
        let s = result.expect_err(who);
        assert!(
            !matches!(
                s.code(),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
            ),
            "{who}: refused by a service, not by TLS: {s:?}"
        );
        eprintln!("{who}: {s:?}");
    }
    let out = cli.refused(&foreign, &["policy", "show"], "error");
    assert!(!out.contains("PermissionDenied"), "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        denials(api, &auditor).await,
        denied_before,
        "TLS refusals never reach a service, so nothing is audited"
    );

    // The Raft port admits nodes only, even the admin is turned away.
    let ch = crate::support::channel(base, Some(&admin)).await.unwrap();
    let s = ClusterClient::new(ch)
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("cluster nodes only"), "{s:?}");

    // Security hardening 7: bootstrap identities (made by `quorumca dev`,
    // outside the ledger) can be revoked. Node 3's: before, a peer's Raft
    // port admits it and the API knows it as an identity without roles;
    // after, every node refuses it on both ports and the root's CRL lists
    // it. (Node 3 is then cut off; nodes 1 and 2 keep the quorum.)
    let node3 = d.join("dev/node3/tls");
    let raft_status = |creds: PathBuf| async move {
        let ch = crate::support::channel(base, Some(&creds)).await.unwrap();
        ClusterClient::new(ch).status(StatusRequest {}).await
    };
    raft_status(node3.clone())
        .await
        .expect("a node is admitted to a peer's Raft port");
    cli.refused(&node3, &["cert", "list"], "PermissionDenied");
    let by_serial = cli.refused(
        &admin,
        &[
            "revoke",
            "--issuer",
            "root",
            "--serial",
            "01",
            "--reason",
            "key-compromise",
        ],
        "NotFound",
    );
    assert!(by_serial.contains("--cert"), "{by_serial}");
    let revoked = cli.json(
        &admin,
        &[
            "revoke",
            "--cert",
            node3.join("cert.pem").to_str().unwrap(),
            "--reason",
            "key-compromise",
        ],
    );
    assert_eq!(revoked["issuer"], "root", "{revoked}");
    eventually(
        Duration::from_secs(10),
        "node 3 refused as a client",
        || {
            let out = cli.run(&node3, &["cert", "list"]);
            String::from_utf8_lossy(&out.stderr).contains("revoked")
        },
    );
    let s = raft_status(node3.clone()).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let serial = revoked["serial"].as_str().unwrap().to_ascii_uppercase();
    let crl_file = d.join("root.crl");
    eventually(
        Duration::from_secs(15),
        "the root's CRL lists node 3",
        || {
            cli.ok(
                &admin,
                &[
                    "crl",
                    "get",
                    "--issuer",
                    "root",
                    "--out",
                    crl_file.to_str().unwrap(),
                ],
            );
            let (ok, text) = quorumca_testkit::openssl(&[
                "crl",
                "-inform",
                "DER",
                "-in",
                crl_file.to_str().unwrap(),
                "-noout",
                "-text",
            ]);
            assert!(ok, "{text}");
            text.to_ascii_uppercase().contains(&serial)
        },
    );
    // Twice is "already revoked", not a second entry.
    cli.refused(
        &admin,
        &["revoke", "--cert", node3.join("cert.pem").to_str().unwrap()],
        "already revoked",
    );
}

/// The size of everything under `dir`, in bytes.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::metadata(&p).unwrap();
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            total += m.len();
        }
    }
    total
}

/// Security hardening 5: refusals cannot flood or blind the
/// audit log. Names of 200 kB are refused before anything is authorised
/// (so nothing is recorded for them); refusals of many identities share a
/// node-wide budget and the next record counts what was not recorded;
/// every field of a record is capped; `audit query --denied` pages and
/// prints in every format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_floods_stay_small_in_the_log_and_the_audit_stays_readable() {
    let _turn = crate::support::shared().await;
    const IDENTITIES: usize = 50;
    const PER_IDENTITY: usize = 200;
    use quorumca_proto::certificate_service_client::CertificateServiceClient;
    use quorumca_proto::IssueRequest;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let policy = POLICY.replace("[approvals]\npolicy = true\n", "");
    let Dev {
        _procs,
        base,
        cli,
        admin,
    } = Dev::start(d, &policy).await;
    let api = base + 100;
    // Fifty identities with no role at all (people/* holds none in
    // POLICY), issued through the admin's channel.
    let mut callers = Vec::new();
    {
        let ch = crate::support::channel(api, Some(&admin)).await.unwrap();
        let mut cs = CertificateServiceClient::new(ch);
        for i in 0..IDENTITIES {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.subject_alt_names = vec![rcgen::SanType::URI(
                format!("{TD}/people/nobody{i}").try_into().unwrap(),
            )];
            let csr = params.serialize_request(&key).unwrap().der().to_vec();
            let r = cs
                .issue(IssueRequest {
                    csr,
                    namespace: "people".into(),
                    profile: "service".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let out = d.join(format!("nobody{i}"));
            std::fs::create_dir_all(&out).unwrap();
            std::fs::copy(admin.join("ca.pem"), out.join("ca.pem")).unwrap();
            std::fs::write(out.join("chain.pem"), &r.chain_pem).unwrap();
            std::fs::write(out.join("cert.pem"), &r.certificate_pem).unwrap();
            std::fs::write(out.join("key.pem"), key.serialize_pem()).unwrap();
            callers.push(out);
        }
    }
    let logs: Vec<PathBuf> = (1..=3)
        .map(|n| d.join(format!("dev/node{n}/raft-log")))
        .collect();
    for l in &logs {
        assert!(l.exists(), "{} missing", l.display());
    }
    let before: Vec<u64> = logs.iter().map(|l| dir_bytes(l)).collect();
    let denied_before = denials(api, &admin).await;
    let huge = Arc::new("n".repeat(200_000));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in callers.iter().enumerate() {
        let ch = crate::support::channel(api + (i as u16 % 3), Some(c))
            .await
            .unwrap();
        let huge = huge.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = CertificateServiceClient::new(ch)
                .max_decoding_message_size(1 << 20)
                .max_encoding_message_size(1 << 20);
            for k in 0..PER_IDENTITY {
                // Alternately a 200 kB namespace, and a valid one the
                // caller has no role in with a 200 kB CSR.
                let (namespace, csr, want) = if k % 2 == 0 {
                    (
                        huge.to_string(),
                        vec![0x30, 0x00],
                        tonic::Code::InvalidArgument,
                    )
                } else {
                    (
                        "payments".to_string(),
                        huge.as_bytes().to_vec(),
                        tonic::Code::PermissionDenied,
                    )
                };
                let s = client
                    .issue(IssueRequest {
                        csr,
                        namespace,
                        ..Default::default()
                    })
                    .await
                    .expect_err("refused");
                assert_eq!(s.code(), want, "{s:?}");
                assert!(s.message().len() < 2_000, "{} bytes", s.message().len());
            }
            PER_IDENTITY
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    assert_eq!(refused, IDENTITIES * PER_IDENTITY);
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recorded = denials(api, &admin).await - denied_before;
    // Per identity a burst of 5 and 1/s after it; per node a burst of 50
    // and 10/s, over the three nodes.
    let window = secs + 2.0;
    let most = ((IDENTITIES as f64 * (5.0 + window)).min(3.0 * (50.0 + 10.0 * window))) as usize;
    assert!(
        recorded <= most,
        "{recorded} of {refused} refusals recorded in {secs:.1} s (at most {most})"
    );
    for (l, b) in logs.iter().zip(&before) {
        let grew = dir_bytes(l).saturating_sub(*b);
        assert!(
            grew < 1_000_000,
            "{} grew {grew} bytes for {refused} refusals",
            l.display()
        );
    }
    // Readable in every format, paged, no field of a record unbounded.
    let page = cli.json(&admin, &["audit", "query", "--denied", "--limit", "5"]);
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{page}");
    assert!(page["next_after_seq"].as_u64().unwrap() > 0, "{page}");
    for e in entries {
        assert!(e["detail"].as_str().unwrap().len() < 1_200, "{e}");
        assert!(e["actor"].as_str().unwrap().len() < 600, "{e}");
    }
    let after = entries[4]["seq"].as_u64().unwrap().to_string();
    let table = cli.ok(
        &admin,
        &[
            "audit", "query", "--denied", "--limit", "5", "--after", &after,
        ],
    );
    assert!(table.contains("DENIED"), "{table}");
    let all = cli.json(&admin, &["audit", "query", "--denied", "--limit", "1000"]);
    assert!(
        all.to_string().contains("not recorded"),
        "no record counts the refusals over the budget"
    );
}
