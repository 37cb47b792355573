//! The API from outside Rust: Python stubs generated from `proto/` with
//! grpcio-tools issue, retry, revoke and fetch a CRL from a `quorumca dev`
//! cluster; OpenSSL then checks what Python got.
//!
//! The Python side connects over mTLS with the admin bundle `quorumca dev`
//! wrote, using nothing but grpcio's standard TLS credentials.
//!
//! Needs CPython 3 with pip (present on this kind of machine). grpcio and
//! grpcio-tools are installed from PyPI into `target/py-venv` on first run;
//! if that cannot be done the test fails and says why.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{start_dev, BIN};
use quorumca_testkit::{openssl, write_file};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python with grpcio, grpcio-tools and grpcio-reflection, installing
/// them if needed.
fn python_with_grpc() -> PathBuf {
    // The tests that need it run at the same time: one of them creates
    // the virtualenv and installs into it while the other waits (two pip
    // runs into one fresh venv crash each other).
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = repo().join("target/py-venv");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import grpc, grpc_tools, grpc_reflection"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&py) {
        return py;
    }
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
        assert!(
            out.status.success(),
            "{what} failed (this test needs CPython 3 with venv and pip, and PyPI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv target/py-venv",
    );
    run(
        Command::new(&py).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "grpcio",
            "grpcio-tools",
            "grpcio-reflection",
        ]),
        "pip install grpcio grpcio-tools grpcio-reflection",
    );
    assert!(
        ready(&py),
        "grpcio-tools and grpcio-reflection installed but not importable"
    );
    py
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_stubs_from_the_proto_issue_revoke_and_fetch_the_crl() {
    let _turn = crate::support::shared().await;
    let py = python_with_grpc();
    let dir = tempfile::tempdir().unwrap();
    let stubs = dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let proto = repo().join("proto");
    let out = Command::new(&py)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg(proto.join("quorumca/v1/ca.proto"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "protoc for Python: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (_dev, base, env) = start_dev(&dir.path().join("dev")).await;
    let creds = crate::support::env_value(&env, "QUORUMCA_CREDENTIALS");

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(vec!["py.svc.dev.internal".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let csr_path = dir.path().join("req.pem");
    std::fs::write(&csr_path, csr.pem().unwrap()).unwrap();

    let script = repo().join("crates/cli/tests/python/issue_revoke_crl.py");
    // Node 2: any node serves the API.
    let endpoint = format!("127.0.0.1:{}", base + 100 + 1);
    let out = Command::new(&py)
        .arg(&script)
        .arg(&stubs)
        .arg(&endpoint)
        .arg(&csr_path)
        .arg(&creds)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["bad_csr_code"], "INVALID_ARGUMENT");

    // What Python got is real: the chain verifies, the CRL is signed by the
    // intermediate and lists the revoked serial.
    let chain = r["chain_pem"].as_str().unwrap();
    let d = dir.path();
    let blocks: Vec<&str> = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    let leaf = write_file(d, "leaf.pem", blocks[0]);
    let int = write_file(d, "int.pem", blocks[1]);
    let bundle = Command::new(BIN)
        .args(["bundle", "get", "-o", "pem", "--endpoints", &endpoint])
        .args(["--credentials", &creds])
        .output()
        .unwrap();
    assert!(bundle.status.success());
    let root = write_file(d, "root.pem", &String::from_utf8(bundle.stdout).unwrap());
    let crl = d.join("crl.der");
    std::fs::write(
        &crl,
        hex::decode(r["crl_der_hex"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let (ok, msg) = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        crl.to_str().unwrap(),
        "-CAfile",
        &int,
        "-noout",
        "-text",
    ]);
    assert!(ok && msg.contains("verify OK"), "{msg}");
    let serial = r["serial"]
        .as_str()
        .unwrap()
        .trim_start_matches("00")
        .to_uppercase();
    assert!(
        msg.to_uppercase().contains(&serial),
        "CRL lacks {serial}: {msg}"
    );
    let (ok, msg) = openssl(&["verify", "-CAfile", &root, "-untrusted", &int, &leaf]);
    assert!(ok, "{msg}");
}

/// Python's grpcio-reflection speaks only the v1alpha reflection protocol
/// (as do older grpcurl and Postman): every API port must answer it with
/// the quorumca services, not UNIMPLEMENTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_reflection_lists_the_services_on_every_api_port() {
    let _turn = crate::support::shared().await;
    let py = python_with_grpc();
    let dir = tempfile::tempdir().unwrap();
    let (_dev, base, env) = start_dev(&dir.path().join("dev")).await;
    let creds = crate::support::env_value(&env, "QUORUMCA_CREDENTIALS");
    let script = repo().join("crates/cli/tests/python/list_services.py");
    for node in 0..3 {
        let endpoint = format!("127.0.0.1:{}", base + 100 + node);
        let out = Command::new(&py)
            .arg(&script)
            .arg(&endpoint)
            .arg(&creds)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "grpcio-reflection against {endpoint}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let services: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        for want in [
            "quorumca.v1.CertificateService",
            "quorumca.v1.AuthorityService",
            "quorumca.v1.PolicyService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == want),
                "{endpoint} lists {services:?}, not {want}"
            );
        }
    }
}
