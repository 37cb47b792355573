//! The CA end to end through real processes, the way a user meets it:
//! `quorumca dev`, then `quorumca issue | revoke | bundle | policy` against
//! it, and OpenSSL fetching CRLs and asking OCSP over HTTP from nodes other
//! than the one that took the revocation.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{start_dev, BIN};
use base64::Engine;
use quorumca_testkit::{openssl, write_file};

struct Cli {
    endpoints: String,
    credentials: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("QUORUMCA_ENDPOINTS", &self.endpoints)
            .env("QUORUMCA_CREDENTIALS", &self.credentials)
            .env("USER", "tester")
            .stdin(Stdio::null())
            .output()
            .expect("run quorumca")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "quorumca {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "quorumca {args:?} should have failed"
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

fn http_get(url: &str) -> (u16, Vec<u8>) {
    match ureq::get(url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => {
            let status = r.status();
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut body).unwrap();
            (status, body)
        }
        Err(ureq::Error::Status(code, r)) => {
            (code, r.into_string().unwrap_or_default().into_bytes())
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

fn pem_blocks(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----\n")
        .map(|b| b.trim_start().to_string())
        .filter(|b| b.contains("BEGIN"))
        .collect()
}

/// Polls until `f` holds, for at most `timeout`.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_issues_revokes_and_serves_crl_and_ocsp_from_every_node() {
    let _turn = crate::support::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let (_dev, base, env) = start_dev(&dir.path().join("dev")).await;
    let cli = Cli {
        endpoints: crate::support::env_value(&env, "QUORUMCA_ENDPOINTS"),
        credentials: crate::support::env_value(&env, "QUORUMCA_CREDENTIALS"),
    };
    let http = |node: u16| format!("http://127.0.0.1:{}", base + 200 + node - 1);
    let d = dir.path();

    // Issue with a key generated locally; the chain verifies to the root
    // from the trust bundle.
    let certs = d.join("certs");
    let out = cli.ok(&[
        "issue",
        "--dns",
        "web.default.svc.dev.internal",
        "--ip",
        "127.0.0.1",
        "--out-dir",
        certs.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let issued: serde_json::Value = serde_json::from_str(&out).unwrap();
    let issuer = issued["issuer"].as_str().unwrap().to_string();
    let serial = issued["serial"].as_str().unwrap().to_string();
    assert_eq!(issuer, "dev-a", "node 1 signs for its region");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(certs.join("key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "private key must be owner-only");
    let root = write_file(d, "root.pem", &cli.ok(&["bundle", "get", "-o", "pem"]));
    let chain = std::fs::read_to_string(certs.join("chain.pem")).unwrap();
    let blocks = pem_blocks(&chain);
    assert_eq!(blocks.len(), 2, "leaf + intermediate");
    let int = write_file(d, "int.pem", &blocks[1]);
    let leaf = certs.join("cert.pem");
    let leaf = leaf.to_str().unwrap();
    let (ok, msg) = openssl(&[
        "verify",
        "-x509_strict",
        "-purpose",
        "sslserver",
        "-CAfile",
        &root,
        "-untrusted",
        &int,
        leaf,
    ]);
    assert!(ok, "{msg}");

    // A CSR made elsewhere works too; a name outside the namespace does not,
    // and says why.
    let (ok, msg) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-keyout",
        d.join("k2.pem").to_str().unwrap(),
        "-out",
        d.join("r2.pem").to_str().unwrap(),
        "-subj",
        "/CN=api.svc.dev.internal",
        "-addext",
        "subjectAltName=DNS:api.svc.dev.internal",
    ]);
    assert!(ok, "{msg}");
    let pem = cli.ok(&[
        "issue",
        "--csr",
        d.join("r2.pem").to_str().unwrap(),
        "-o",
        "pem",
    ]);
    assert_eq!(pem_blocks(&format!("{pem}\n")).len(), 2, "{pem}");
    let err = cli.fails(&["issue", "--dns", "www.example.com"]);
    assert!(
        err.contains("outside namespace") && err.contains("PermissionDenied"),
        "{err}"
    );

    // Every node serves every shard's CRL: before the revocation the leaf's
    // shard lists nothing.
    let crl_url = {
        let (ok, text) = openssl(&[
            "x509",
            "-in",
            leaf,
            "-noout",
            "-ext",
            "crlDistributionPoints",
        ]);
        assert!(ok, "{text}");
        text.lines()
            .find_map(|l| l.trim().strip_prefix("URI:"))
            .expect("a CRL URL")
            .to_string()
    };
    let path = crl_url.split_once("/crl/").unwrap().1.to_string();
    eventually(Duration::from_secs(20), "CRLs built on node 3", || {
        http_get(&format!("{}/crl/{path}", http(3))).0 == 200
    });

    // The record is visible from every node; issued with an idempotency key
    // (the CLI always sends one), so the PEM is kept and served.
    let got = cli.ok(&[
        "cert", "get", "--issuer", &issuer, "--serial", &serial, "-o", "json",
    ]);
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["namespace"], "default");
    assert_eq!(got["revoked"], false);
    let stored = cli.ok(&[
        "cert", "get", "--issuer", &issuer, "--serial", &serial, "-o", "pem",
    ]);
    assert_eq!(
        stored.trim(),
        std::fs::read_to_string(leaf).unwrap().trim(),
        "the stored PEM is the issued certificate"
    );
    let unknown = cli.fails(&["cert", "get", "--issuer", &issuer, "--serial", "0badc0ffee"]);
    assert!(unknown.contains("NotFound"), "{unknown}");

    // Revoke through node 1's API ...
    let out = cli.ok(&[
        "revoke",
        "--issuer",
        &issuer,
        "--serial",
        &serial,
        "--reason",
        "key-compromise",
    ]);
    assert!(out.contains("revoked"), "{out}");
    let again = cli.fails(&["revoke", "--issuer", &issuer, "--serial", &serial]);
    assert!(again.contains("already revoked"), "{again}");
    let unknown = cli.fails(&["revoke", "--issuer", &issuer, "--serial", "0badc0ffee"]);
    assert!(unknown.contains("NotFound"), "{unknown}");

    // ... and node 3's CRL lists it (rebuilt when the revocation applied),
    // verifies under the intermediate, and makes OpenSSL refuse the leaf.
    let crl_file = d.join("crl.der");
    eventually(
        Duration::from_secs(10),
        "revocation in node 3's CRL",
        || {
            let (status, body) = http_get(&format!("{}/crl/{path}", http(3)));
            std::fs::write(&crl_file, &body).unwrap();
            let (_, text) = openssl(&[
                "crl",
                "-inform",
                "DER",
                "-in",
                crl_file.to_str().unwrap(),
                "-noout",
                "-text",
            ]);
            let want = serial.trim_start_matches("00").to_uppercase();
            let found = status == 200 && text.to_uppercase().contains(&want);
            if !found {
                eprintln!("waiting for {want} in node 3's CRL ({status}): {text}");
            }
            found
        },
    );
    let crl = crl_file.to_str().unwrap();
    let (ok, msg) = openssl(&[
        "crl", "-inform", "DER", "-in", crl, "-CAfile", &int, "-noout",
    ]);
    assert!(ok && msg.contains("verify OK"), "{msg}");
    let crl_pem = d.join("crl.pem");
    let (ok, msg) = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        crl,
        "-out",
        crl_pem.to_str().unwrap(),
    ]);
    assert!(ok, "{msg}");
    let (ok, msg) = openssl(&[
        "verify",
        "-crl_check",
        "-CRLfile",
        crl_pem.to_str().unwrap(),
        "-CAfile",
        &root,
        "-untrusted",
        &int,
        leaf,
    ]);
    assert!(!ok && msg.contains("certificate revoked"), "{msg}");

    // Listing: both certificates, one revoked; paging by one still finds
    // them all.
    let list = cli.ok(&["cert", "list", "-o", "json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let revoked = cli.ok(&["cert", "list", "--revoked", "-o", "json"]);
    let revoked: Vec<serde_json::Value> = serde_json::from_str(&revoked).unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["serial"], serial.as_str());
    assert_eq!(revoked[0]["revocation_reason"], "key-compromise");
    let table = cli.ok(&["cert", "list", "--limit", "1"]);
    assert!(table.contains("more than 1"), "{table}");

    // OCSP over HTTP POST from node 2, signed by the issuer, with a nonce.
    let ca_chain = write_file(
        d,
        "ca-chain.pem",
        &format!("{}{}", blocks[1], std::fs::read_to_string(&root).unwrap()),
    );
    let ocsp_url = format!("{}/ocsp/{issuer}", http(2));
    let (ok, msg) = openssl(&[
        "ocsp",
        "-issuer",
        &int,
        "-cert",
        leaf,
        "-url",
        &ocsp_url,
        "-CAfile",
        &ca_chain,
        "-resp_text",
    ]);
    assert!(ok && msg.contains("Response verify OK"), "{msg}");
    assert!(
        msg.contains(": revoked") && msg.contains("keyCompromise"),
        "{msg}"
    );
    // The other certificate is good, asked over GET this time.
    let other = write_file(d, "other.pem", &pem_blocks(&format!("{pem}\n"))[0]);
    let (ok, msg) = openssl(&[
        "ocsp",
        "-issuer",
        &int,
        "-cert",
        &other,
        "-url",
        &ocsp_url,
        "-CAfile",
        &ca_chain,
        "-reqout",
        d.join("req.der").to_str().unwrap(),
    ]);
    assert!(ok && msg.contains(": good"), "{msg}");
    let req = std::fs::read(d.join("req.der")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&req);
    let (status, body) = http_get(&format!(
        "{ocsp_url}/{}",
        b64.replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D")
    ));
    assert_eq!(status, 200);
    std::fs::write(d.join("resp.der"), body).unwrap();
    let (ok, msg) = openssl(&[
        "ocsp",
        "-respin",
        d.join("resp.der").to_str().unwrap(),
        "-reqin",
        d.join("req.der").to_str().unwrap(),
        "-issuer",
        &int,
        "-CAfile",
        &ca_chain,
        "-resp_text",
    ]);
    assert!(
        ok && msg.contains("Response verify OK") && msg.contains("Cert Status: good"),
        "{msg}"
    );

    // Unknown shard or issuer: a 404 that says what exists.
    let (status, body) = http_get(&format!("{}/crl/{issuer}/999.crl", http(2)));
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("shards 0 to 15"));
    assert_eq!(http_get(&format!("{}/healthz", http(3))).0, 200);

    // Operators move leadership; the cluster keeps working.
    let members = cli.ok(&["cluster", "members", "-o", "json"]);
    let members: Vec<serde_json::Value> = serde_json::from_str(&members).unwrap();
    assert_eq!(members.len(), 3);
    let moved = cli.ok(&["cluster", "transfer-leader", "--to", "2"]);
    assert!(moved.contains("node 2 leads"), "{moved}");
    let err = cli.fails(&["cluster", "transfer-leader", "--to", "9"]);
    assert!(err.contains("not a voter"), "{err}");

    // Policy: a broken file is refused and changes nothing; a dry run shows
    // a diff; apply, history and rollback.
    let bad = write_file(
        d,
        "bad.toml",
        "[profiles.x]\nkey_algorithms = [\"rsa-1024\"]\n",
    );
    let err = cli.fails(&["policy", "apply", "-f", &bad]);
    assert!(err.contains("InvalidArgument"), "{err}");
    let current = cli.ok(&["policy", "show", "-o", "json"]);
    let current: serde_json::Value = serde_json::from_str(&current).unwrap();
    assert_eq!(current["version"], 1);
    let text = current["text"].as_str().unwrap().replace("168h", "72h");
    let newer = write_file(d, "newer.toml", &text);
    let dry = cli.ok(&["policy", "apply", "-f", &newer, "--dry-run"]);
    assert!(
        dry.contains("-max_lifetime = \"168h\"") && dry.contains("+max_lifetime = \"72h\""),
        "{dry}"
    );
    assert!(dry.contains("dry run"), "{dry}");
    let stale = cli.fails(&["policy", "apply", "-f", &newer, "--expect-version", "7"]);
    assert!(stale.contains("version 1"), "{stale}");
    let applied = cli.ok(&["policy", "apply", "-f", &newer, "--expect-version", "1"]);
    assert!(applied.contains("applied as version 2"), "{applied}");
    let rolled = cli.ok(&["policy", "rollback", "--to", "1"]);
    assert!(rolled.contains("restored as version 3"), "{rolled}");
    let history = cli.ok(&["policy", "history"]);
    assert!(
        history.contains("rollback to 1") && history.contains("tester"),
        "{history}"
    );
    assert!(cli.ok(&["policy", "show"]).contains("168h"));
}
