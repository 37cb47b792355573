//! The short chaos suite, as CI runs it: seven drills against a real 5-node
//! cluster in network namespaces. Needs root, iproute2, iptables and
//! faketime; run as root, it installs what is missing first (otherwise it
//! fails, saying what to install).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn short_chaos_suite_keeps_every_invariant_and_the_majority_available() {
    let _turn = crate::one_at_a_time();
    quorumca_testkit::require_packages(&[
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        (
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
            "faketime",
        ),
    ]);
    // The drill runs the real `quorumca` binary, the one `cargo test
    // --workspace` builds for the CLI's own tests. Asking for exactly that
    // build again is a no-op then (and builds it when this test runs
    // alone), whereas `cargo build -p quorumca-cli` resolves features
    // differently and compiled much of the workspace a second time.
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["test", "--workspace", "--no-run", "--quiet"]);
    // The variables cargo sets for this test describe this package, not
    // the build: ring's build script tracks CARGO_MANIFEST_DIR, and
    // inheriting it made the inner cargo rebuild ring and everything above
    // it.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                k.as_str(),
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
            )
        {
            cargo.env_remove(k);
        }
    }
    let built = cargo.status().expect("running cargo");
    assert!(built.success(), "building the workspace's tests failed");
    let drill = PathBuf::from(env!("CARGO_BIN_EXE_quorumca-chaos"));
    let quorumca = drill.with_file_name("quorumca");
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(&drill)
        .args(["run", "--short", "--output", "json", "--quorumca"])
        .arg(&quorumca)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("running quorumca-chaos");
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stderr}");
    if let Ok(summary) = std::fs::read_to_string(out.path().join("summary.txt")) {
        eprintln!("{summary}");
    }
    assert!(
        run.status.success(),
        "the short chaos suite failed: {stderr}"
    );
    let reports: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 7);
    for r in reports {
        let name = r["drill"].as_str().unwrap();
        assert_eq!(r["passed"], true, "{name}");
        assert_eq!(
            r["check"]["violations"].as_array().unwrap().len(),
            0,
            "{name}"
        );
        assert!(
            r["check"]["acknowledged_issuances"].as_u64().unwrap() > 50,
            "{name}"
        );
        assert!(
            r["check"]["acknowledged_revocations"].as_u64().unwrap() > 10,
            "{name}"
        );
        // The majority side kept serving through the fault.
        let during = &r["phases"][1];
        assert!(
            during["roaming"]["attempted"].as_u64().unwrap() > 0,
            "{name}"
        );
        assert!(
            during["roaming"]["availability"].as_f64().unwrap() >= 0.99,
            "{name}"
        );
    }
}
