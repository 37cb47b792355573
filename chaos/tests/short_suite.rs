//! The short chaos suite, as CI runs it: seven drills against a real 5-node
//! cluster in network namespaces. Needs root, iproute2, iptables and
//! faketime (`.ci/run` installs them); without them it fails, saying what
//! is missing.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn short_chaos_suite_keeps_every_invariant_and_the_majority_available() {
    // The drill runs the real `quorumca` binary; build it in this profile so
    // it is never a stale one.
    let built = Command::new(env!("CARGO"))
        .args(["build", "-p", "quorumca-cli", "--bin", "quorumca"])
        .status()
        .expect("running cargo");
    assert!(built.success(), "building quorumca failed");
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
