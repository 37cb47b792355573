//! The offline root: `quorumca ca init-root` and `sign-intermediate` as a
//! user runs them, checked with OpenSSL.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use quorumca_testkit::openssl;

const BIN: &str = env!("CARGO_BIN_EXE_quorumca");

fn quorumca(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sign_intermediate(root: &Path, pass: &Path, csr: &Path, region: &str, out: &Path) -> Output {
    quorumca(&[
        "ca",
        "sign-intermediate",
        "--root-dir",
        s(root),
        "--passphrase-file",
        s(pass),
        "--csr",
        s(csr),
        "--region",
        region,
        "--out",
        s(out),
    ])
}

/// Stderr of a command that must have failed, for message checks.
fn failure(o: &Output) -> String {
    assert!(!o.status.success(), "the command should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `ca init-root` into `dir/root` under a passphrase in `dir/pass.txt`.
fn init_root(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = dir.join("root");
    let pass = dir.join("pass.txt");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let o = quorumca(&[
        "ca",
        "init-root",
        "--out-dir",
        s(&root),
        "--passphrase-file",
        s(&pass),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (root, pass)
}

#[test]
fn offline_root_signs_an_intermediate_that_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (root, pass) = init_root(dir.path());

    let key_mode = std::fs::metadata(root.join("root.key.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600, "the sealed key file must be private");
    let key_text = std::fs::read_to_string(root.join("root.key.json")).unwrap();
    assert!(!key_text.contains("PRIVATE KEY"), "the key must be sealed");
    let (ok, text) = openssl(&["x509", "-in", s(&root.join("root.pem")), "-noout", "-text"]);
    assert!(ok && text.contains("CA:TRUE"), "{text}");

    let again = quorumca(&[
        "ca",
        "init-root",
        "--out-dir",
        s(&root),
        "--passphrase-file",
        s(&pass),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    // The intermediate's key is made elsewhere; only its CSR travels.
    let csr = dir.path().join("eu.csr");
    let (ok, out) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=eu-west",
        "-keyout",
        s(&dir.path().join("eu.key")),
        "-out",
        s(&csr),
    ]);
    assert!(ok, "{out}");
    let int = dir.path().join("eu.pem");
    let o = sign_intermediate(&root, &pass, &csr, "eu-west", &int);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ok, out) = openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        s(&root.join("root.pem")),
        s(&int),
    ]);
    assert!(ok, "{out}");
    let (_, text) = openssl(&["x509", "-in", s(&int), "-noout", "-text"]);
    assert!(
        text.contains("CA:TRUE, pathlen:0") && text.contains("QuorumCA eu-west"),
        "{text}"
    );

    // A wrong passphrase unseals nothing.
    let wrong = dir.path().join("wrong.txt");
    std::fs::write(&wrong, "not the passphrase at all").unwrap();
    let o = sign_intermediate(&root, &wrong, &csr, "eu-west", &dir.path().join("x.pem"));
    assert!(failure(&o).contains("wrong passphrase"), "{}", failure(&o));
    assert!(!dir.path().join("x.pem").exists());

    // CA keys must not be RSA.
    let rsa = dir.path().join("rsa.csr");
    let (ok, out) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=r",
        "-keyout",
        s(&dir.path().join("r.key")),
        "-out",
        s(&rsa),
    ]);
    assert!(ok, "{out}");
    let o = sign_intermediate(&root, &pass, &rsa, "us", &dir.path().join("us.pem"));
    assert!(failure(&o).contains("CA keys must be"), "{}", failure(&o));
}

#[test]
fn a_short_passphrase_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("p");
    std::fs::write(&pass, "short").unwrap();
    let o = quorumca(&[
        "ca",
        "init-root",
        "--out-dir",
        s(&dir.path().join("r")),
        "--passphrase-file",
        s(&pass),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("at least 16"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !dir.path().join("r").exists(),
        "nothing is written for a refused passphrase"
    );
}

#[test]
fn offline_root_issues_node_and_admin_identities_that_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (root, pass) = init_root(dir.path());
    let node = dir.path().join("node1");
    let o = quorumca(&[
        "ca",
        "issue-identity",
        "--root-dir",
        s(&root),
        "--passphrase-file",
        s(&pass),
        "--spiffe-id",
        "spiffe://example.org/node/1",
        "--server",
        "--ip",
        "10.0.0.1",
        "--out-dir",
        s(&node),
    ]);
    assert!(o.status.success(), "{}", failure(&o));
    let mode = std::fs::metadata(node.join("key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    for purpose in ["sslserver", "sslclient"] {
        let (ok, out) = openssl(&[
            "verify",
            "-x509_strict",
            "-purpose",
            purpose,
            "-CAfile",
            s(&node.join("ca.pem")),
            s(&node.join("cert.pem")),
        ]);
        assert!(ok, "{purpose}: {out}");
    }
    let (_, text) = openssl(&["x509", "-in", s(&node.join("cert.pem")), "-noout", "-text"]);
    assert!(text.contains("URI:spiffe://example.org/node/1"), "{text}");
    assert!(text.contains("IP Address:10.0.0.1"), "{text}");

    // An admin identity is a client certificate only.
    let admin = dir.path().join("alice");
    let o = quorumca(&[
        "ca",
        "issue-identity",
        "--root-dir",
        s(&root),
        "--passphrase-file",
        s(&pass),
        "--spiffe-id",
        "spiffe://example.org/admin/alice",
        "--out-dir",
        s(&admin),
    ]);
    assert!(o.status.success(), "{}", failure(&o));
    let cert = s(&admin.join("cert.pem")).to_string();
    let ca = s(&admin.join("ca.pem")).to_string();
    let (ok, out) = openssl(&["verify", "-purpose", "sslclient", "-CAfile", &ca, &cert]);
    assert!(ok, "{out}");
    let (ok, _) = openssl(&["verify", "-purpose", "sslserver", "-CAfile", &ca, &cert]);
    assert!(!ok, "an admin certificate must not serve TLS");

    // Not a SPIFFE ID, or the wrong passphrase: refused, nothing written.
    let o = quorumca(&[
        "ca",
        "issue-identity",
        "--root-dir",
        s(&root),
        "--passphrase-file",
        s(&pass),
        "--spiffe-id",
        "alice",
        "--out-dir",
        s(&dir.path().join("x")),
    ]);
    assert!(failure(&o).contains("not a SPIFFE ID"), "{}", failure(&o));
    let wrong = dir.path().join("wrong.txt");
    std::fs::write(&wrong, "not the right passphrase at all").unwrap();
    let o = quorumca(&[
        "ca",
        "issue-identity",
        "--root-dir",
        s(&root),
        "--passphrase-file",
        s(&wrong),
        "--spiffe-id",
        "spiffe://example.org/admin/eve",
        "--out-dir",
        s(&dir.path().join("y")),
    ]);
    assert!(failure(&o).contains("wrong passphrase"), "{}", failure(&o));
    assert!(!dir.path().join("x").exists() && !dir.path().join("y").exists());
}
