//! Zero-downtime rotation, end to end: a real mutual-TLS server
//! (tokio-rustls) serves with certificate files the agent manages and
//! reloads on the agent's reload action, while a client makes handshakes
//! the whole time with its own agent-managed certificate. Through many
//! short-lived leaf renewals, an intermediate rotation and a root rollover
//! (the client trusts only the old root at the start and only the new one
//! at the end), not one handshake may fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::support::{env_value, quorumca, start_dev, Procs, BIN};
use quorumca_agent::status::Status;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Stdout of a command that must succeed.
fn cli(env: &str, args: &[&str]) -> String {
    let out = quorumca(env, args);
    assert!(
        out.status.success(),
        "quorumca {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the CLI and returns (success, stdout then stderr).
fn try_cli(env: &str, args: &[&str]) -> (bool, String) {
    let out = quorumca(env, args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn roots(pem: &[u8]) -> rustls::RootCertStore {
    let mut store = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        store.add(c.unwrap()).unwrap();
    }
    store
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The server's TLS config from the agent's files: its chain and key, and
/// the trust bundle for client certificates.
fn server_config(out: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(
            &std::fs::read(out.join("roots.pem")).map_err(|e| e.to_string())?,
        )),
        provider(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(out.join("key.pem")).map_err(|e| e.to_string())?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&out.join("chain.pem")), key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

fn client_config(out: &Path, trust: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let key = PrivateKeyDer::from_pem_file(out.join("key.pem")).map_err(|e| e.to_string())?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(trust))
        .with_client_auth_cert(certs(&out.join("chain.pem")), key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

/// Reloads `cfg` from `build` whenever one of `watch` changes (the agent's
/// reload action touches a file; the bundle file changes on its own).
fn follow<T: Send + Sync + 'static>(
    cfg: Arc<RwLock<Arc<T>>>,
    watch: Vec<PathBuf>,
    build: impl Fn() -> Result<Arc<T>, String> + Send + 'static,
    reloads: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        let mut seen: Vec<_> = watch.iter().map(|p| mtime(p)).collect();
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now: Vec<_> = watch.iter().map(|p| mtime(p)).collect();
            if now != seen {
                match build() {
                    Ok(c) => {
                        *cfg.write().unwrap() = c;
                        reloads.fetch_add(1, Ordering::Relaxed);
                        seen = now;
                    }
                    // Keep serving with what works; try again next tick.
                    Err(e) => eprintln!("reload deferred: {e}"),
                }
            }
        }
    });
}

fn agent_config(d: &Path, env: &str, tokens: &[(String, PathBuf)]) -> PathBuf {
    let creds = PathBuf::from(env_value(env, "QUORUMCA_CREDENTIALS"));
    let list = |v: &str| {
        env_value(env, v)
            .split(',')
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "state_dir = {:?}\n[cluster]\nendpoints = [{}]\nenroll_endpoints = [{}]\nca_file = {:?}\nretry_max = \"1s\"\ncall_timeout = \"5s\"\n",
        d.join("state"),
        list("QUORUMCA_ENDPOINTS"),
        list("QUORUMCA_ENROLL_ENDPOINTS"),
        creds.join("ca.pem"),
    );
    for (name, token) in tokens {
        let out = d.join(name);
        text.push_str(&format!(
            r#"
[[intent]]
name = "{name}"
dns = ["localhost", "{name}.default.svc.dev.internal"]
ips = ["127.0.0.1"]
spiffe_id = "spiffe://dev.internal/ns/default/{name}"
lifetime = "10s"
renew_at = 0.5
jitter = 0.1
key_file = {key:?}
cert_file = {cert:?}
chain_file = {chain:?}
bundle_file = {bundle:?}
join_token_file = {token:?}
reload = {{ command = ["touch", {reload:?}] }}
"#,
            key = out.join("key.pem"),
            cert = out.join("cert.pem"),
            chain = out.join("chain.pem"),
            bundle = out.join("roots.pem"),
            reload = out.join("reload"),
        ));
    }
    let p = d.join("agent.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// CN of the certificate's issuer, e.g. "QuorumCA dev-a G2".
fn issuer_cn(pem_path: &Path) -> String {
    let pem = std::fs::read_to_string(pem_path).unwrap();
    let der = quorumca_ca::first_certificate_der(pem.as_bytes()).unwrap();
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    cert.tbs_certificate.issuer.to_string()
}

async fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_traffic_never_fails_through_renewals_and_intermediate_and_root_rotation() {
    let _turn = crate::support::shared().await;
    let d = tempfile::tempdir().unwrap();
    let (_dev, _base, env) = start_dev(&d.path().join("dev")).await;
    let mut tokens = Vec::new();
    for name in ["server", "client"] {
        let v: serde_json::Value = serde_json::from_str(&cli(
            &env,
            &["token", "create", "--namespace", "default", "-o", "json"],
        ))
        .unwrap();
        let p = d.path().join(format!("{name}.token"));
        std::fs::write(&p, v["token"].as_str().unwrap()).unwrap();
        tokens.push((name.to_string(), p));
    }
    let config = agent_config(d.path(), &env, &tokens);
    let _agent = Procs(vec![Command::new(BIN)
        .args(["--log", "info", "agent", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap()]);
    let (srv, cli_out) = (d.path().join("server"), d.path().join("client"));
    wait_until(Duration::from_secs(60), "both first certificates", || {
        ["server", "client"].iter().all(|n| {
            let o = d.path().join(n);
            o.join("chain.pem").exists() && o.join("roots.pem").exists()
        })
    })
    .await;
    let old_root = std::fs::read(srv.join("roots.pem")).unwrap();

    // The server: a fresh TLS config on every reload, used for every new
    // connection; it echoes one byte.
    let stop = Arc::new(AtomicBool::new(false));
    let server_reloads = Arc::new(AtomicU64::new(0));
    let server_failures = Arc::new(AtomicU64::new(0));
    let scfg = Arc::new(RwLock::new(server_config(&srv).unwrap()));
    {
        let srv = srv.clone();
        follow(
            scfg.clone(),
            vec![srv.join("reload"), srv.join("roots.pem")],
            move || server_config(&srv),
            server_reloads.clone(),
            stop.clone(),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    {
        let (scfg, failures, stop) = (scfg.clone(), server_failures.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(scfg.read().unwrap().clone());
                let failures = failures.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            let mut b = [0u8; 1];
                            if tls.read_exact(&mut b).await.is_ok() {
                                let _ = tls.write_all(&b).await;
                                let _ = tls.shutdown().await;
                            }
                        }
                        Err(e) => {
                            eprintln!("server handshake failed: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
    }

    // The client: trusts only the old root until told otherwise.
    let trust = Arc::new(RwLock::new(old_root.clone()));
    let client_reloads = Arc::new(AtomicU64::new(0));
    let ccfg = Arc::new(RwLock::new(client_config(&cli_out, &old_root).unwrap()));
    {
        let (cli_out, trust) = (cli_out.clone(), trust.clone());
        follow(
            ccfg.clone(),
            vec![
                cli_out.join("reload"),
                d.path().join("client-trust-changed"),
            ],
            move || client_config(&cli_out, &trust.read().unwrap()),
            client_reloads.clone(),
            stop.clone(),
        );
    }
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let client = {
        let (ccfg, ok, failed, stop) = (ccfg.clone(), ok.clone(), failed.clone(), stop.clone());
        tokio::spawn(async move {
            let name = ServerName::try_from("localhost").unwrap();
            while !stop.load(Ordering::Relaxed) {
                let connector = tokio_rustls::TlsConnector::from(ccfg.read().unwrap().clone());
                let round = async {
                    let tcp = tokio::net::TcpStream::connect(addr).await?;
                    let mut tls = connector.connect(name.clone(), tcp).await?;
                    tls.write_all(&[7]).await?;
                    let mut b = [0u8; 1];
                    tls.read_exact(&mut b).await?;
                    std::io::Result::Ok(b[0])
                };
                match tokio::time::timeout(Duration::from_secs(5), round).await {
                    Ok(Ok(7)) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("client handshake failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let renewals = || {
        Status::read(&d.path().join("state"))
            .map(|s| s.intents.values().map(|i| i.renewals).sum::<u64>())
            .unwrap_or(0)
    };
    let phase = |what: &str| {
        println!(
            "{what}: {} handshakes ok, {} failed, {} renewals, {} server / {} client reloads",
            ok.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
            renewals(),
            server_reloads.load(Ordering::Relaxed),
            client_reloads.load(Ordering::Relaxed)
        )
    };

    // 1. Plain renewals: every 4-5 s per certificate.
    let start = renewals();
    wait_until(Duration::from_secs(60), "six renewals", || {
        renewals() >= start + 6
    })
    .await;
    phase("renewals");

    // 2. A new intermediate in every region; both certificates move to it.
    for region in ["dev-a", "dev-b", "dev-c"] {
        cli(&env, &["ca", "rotate-intermediate", "--region", region]);
    }
    for o in [&srv, &cli_out] {
        wait_until(
            Duration::from_secs(40),
            "leaves of the new intermediates",
            || issuer_cn(&o.join("cert.pem")).contains(" G2"),
        )
        .await;
    }
    phase("intermediate rotation");

    // 3. A root rollover: both certificates move under the new root, and
    // their chains carry the cross certificate the old-root client needs.
    cli(&env, &["ca", "rotate-root", "--grace", "1h"]);
    for o in [&srv, &cli_out] {
        wait_until(Duration::from_secs(40), "leaves under the new root", || {
            issuer_cn(&o.join("cert.pem")).contains(" G3")
                && std::fs::read(o.join("roots.pem")).unwrap() != old_root
        })
        .await;
    }
    let bundle = std::fs::read(srv.join("roots.pem")).unwrap();
    let new_root: Vec<u8> = {
        let text = String::from_utf8(bundle.clone()).unwrap();
        let old = String::from_utf8(old_root.clone()).unwrap();
        let blocks: Vec<String> = text
            .split_inclusive("-----END CERTIFICATE-----\n")
            .map(String::from)
            .filter(|b| b.contains("BEGIN") && !old.contains(b.trim()))
            .collect();
        assert_eq!(blocks.len(), 1, "one new root in the bundle: {text}");
        blocks[0].clone().into_bytes()
    };
    // Some handshakes with the old root still trusted, after the rollover.
    let before = ok.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(20),
        "handshakes after the rollover",
        || ok.load(Ordering::Relaxed) > before + 50,
    )
    .await;
    phase("root rotation, client trusting the old root");

    // 4. The client now trusts only the new root.
    *trust.write().unwrap() = new_root;
    std::fs::write(d.path().join("client-trust-changed"), b"1").unwrap();
    let reloads = client_reloads.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(10), "the client's new trust", || {
        client_reloads.load(Ordering::Relaxed) > reloads
    })
    .await;
    let before = (ok.load(Ordering::Relaxed), renewals());
    wait_until(
        Duration::from_secs(40),
        "traffic and renewals on the new root",
        || ok.load(Ordering::Relaxed) > before.0 + 100 && renewals() >= before.1 + 4,
    )
    .await;
    phase("client trusting only the new root");

    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "total: {ok} mutual-TLS handshakes, {failed} failed ({} on the server side), {} renewals",
        server_failures.load(Ordering::Relaxed),
        renewals()
    );
    assert_eq!(failed, 0, "no handshake may fail");
    assert_eq!(server_failures.load(Ordering::Relaxed), 0);
    assert!(ok > 500, "enough traffic to mean something: {ok}");
    assert!(renewals() >= 16, "{}", renewals());
}

/// After a rollover the replaced issuers keep serving CRLs until their
/// last leaf expires; then the cluster retires them (audited, keys
/// dropped), and once the grace window is over the old root leaves the
/// bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_issuers_serve_until_their_last_leaf_expires_then_retire_and_the_old_root_leaves()
{
    let _turn = crate::support::shared().await;
    let d = tempfile::tempdir().unwrap();
    let (_dev, _base, env) = start_dev(&d.path().join("dev")).await;
    let bundle = || -> serde_json::Value {
        serde_json::from_str(&cli(&env, &["bundle", "get", "-o", "json"])).unwrap()
    };
    let phases = || -> std::collections::BTreeMap<String, String> {
        bundle()["issuers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_string(),
                    i["phase"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // A leaf of the first intermediate that outlives the rollover by a bit.
    let leaf = d.path().join("leaf");
    cli(
        &env,
        &[
            "issue",
            "--dns",
            "old.default.svc.dev.internal",
            "--lifetime",
            "12s",
            "--out-dir",
            leaf.to_str().unwrap(),
        ],
    );
    let issued_by = issuer_cn(&leaf.join("cert.pem"));
    assert!(issued_by.contains("QuorumCA dev-"), "{issued_by}");
    let old_int = bundle()["issuers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| issued_by.contains(&format!("QuorumCA {}", i["id"].as_str().unwrap())))
        .map(|i| i["id"].as_str().unwrap().to_string())
        .expect("the leaf's issuer is in the bundle");
    let rotated = cli(&env, &["ca", "rotate-root", "--grace", "3s", "-o", "json"]);
    let rotated: serde_json::Value = serde_json::from_str(&rotated).unwrap();
    assert_eq!(
        rotated["new_issuers"].as_array().unwrap().len(),
        4,
        "{rotated}"
    );
    let p = phases();
    assert_eq!(p["root"], "previous-root");
    assert_eq!(p["root.g2"], "current-root");
    assert_eq!(p[&old_int], "retiring");
    assert_eq!(bundle()["cross_certificates"].as_array().unwrap().len(), 2);
    assert_eq!(
        bundle()["roots_pem"]
            .as_str()
            .unwrap()
            .matches("BEGIN")
            .count(),
        2
    );
    // Still served while its leaf lives.
    let crl = |file: &str| {
        let out = d.path().join(file);
        try_cli(
            &env,
            &[
                "crl",
                "get",
                "--issuer",
                &old_int,
                "--shard",
                "0",
                "--out",
                out.to_str().unwrap(),
            ],
        )
    };
    let (ok, out) = crl("old.crl");
    assert!(ok, "{out}");

    // Retired after the leaf expires, and the old root after that.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = phases();
        if !p.contains_key("root") && !p.contains_key(&old_int) {
            assert_eq!(p["root.g2"], "current-root");
            break;
        }
        assert!(Instant::now() < deadline, "never retired: {p:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let b = bundle();
    assert_eq!(b["roots_pem"].as_str().unwrap().matches("BEGIN").count(), 1);
    assert_eq!(b["cross_certificates"].as_array().unwrap().len(), 0);
    let (ok, out) = crl("gone.crl");
    assert!(!ok, "a retired issuer's CRL is no longer served: {out}");
    let audit = cli(&env, &["audit", "query", "--limit", "1000", "-o", "json"]);
    for id in [old_int.as_str(), "root"] {
        assert!(
            audit.contains(&format!("retire issuer {id} and destroy its key")),
            "audit records the retirement of {id}: {audit}"
        );
    }
    // New issuance works under the new hierarchy and validates with only
    // the new root in OpenSSL.
    let fresh = d.path().join("fresh");
    cli(
        &env,
        &[
            "issue",
            "--dns",
            "new.default.svc.dev.internal",
            "--out-dir",
            fresh.to_str().unwrap(),
        ],
    );
    std::fs::write(d.path().join("root2.pem"), b["roots_pem"].as_str().unwrap()).unwrap();
    let v = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(d.path().join("root2.pem"))
        .arg("-untrusted")
        .arg(fresh.join("chain.pem"))
        .arg(fresh.join("cert.pem"))
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}
