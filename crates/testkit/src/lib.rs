//! # quorumca-testkit: helpers for tests, in one place
//!
//! Owns the test-side plumbing several crates need, so no test file carries
//! its own copy and no production crate exports any of it:
//!
//! - [`cluster`]: in-process clusters of real nodes (sled in a temporary
//!   directory, gRPC on loopback or on [`cluster::MemNet`], whose links
//!   can be cut), with fast Raft settings;
//! - [`authority`]: authorities on such a cluster with a test hierarchy,
//!   policy and unseal secret, and CSRs to issue;
//! - [`sim`]: the turmoil network, clock and seeds both simulations share;
//! - [`openssl`] and [`write_file`]: the independent verifier;
//! - [`require_packages`]: the Debian tools a test needs, installed when
//!   missing (as root) or named in a failure.
//!
//! ## What it must never do
//!
//! Be a normal dependency of anything shipped: only tests, `chaos/` and
//! `benches/` use it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authority;
pub mod cluster;
pub mod sim;

use std::path::Path;
use std::process::Command;

/// Makes sure the Debian packages a test needs are there. Each need is a
/// command on the PATH or an absolute file path, with the package that
/// provides it. What is missing is installed with apt-get when the test
/// runs as root (CI, and a fresh machine of the kind the README targets),
/// so `cargo test --workspace` works as written; otherwise the test panics
/// naming the packages. A test never passes without its tool.
pub fn require_packages(needs: &[(&str, &str)]) {
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let present = |what: &str| {
        if what.starts_with('/') {
            Path::new(what).exists()
        } else {
            Command::new("sh")
                .args(["-c", &format!("command -v {what}")])
                .output()
                .is_ok_and(|o| o.status.success())
        }
    };
    // One installer at a time: dpkg holds a lock, and a second test may
    // need the same package.
    let _apt = APT.lock().unwrap_or_else(|e| e.into_inner());
    let mut missing: Vec<&str> = needs
        .iter()
        .filter(|(what, _)| !present(what))
        .map(|(_, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return;
    }
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    let list = missing.join(" ");
    assert!(
        root,
        "this test needs the Debian packages {list}: apt-get install {list} (or run as root, and the test installs them)"
    );
    eprintln!("installing {list} for this test (apt-get update && apt-get install -y {list})");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed = apt(&["update", "-qq"])
        && apt(&[
            &["install", "-y", "-qq", "--no-install-recommends"][..],
            &missing,
        ]
        .concat());
    assert!(
        installed,
        "apt-get install {list} failed; install it by hand"
    );
    let still: Vec<_> = needs.iter().filter(|(what, _)| !present(what)).collect();
    assert!(
        still.is_empty(),
        "still missing after installing {list}: {still:?}"
    );
}

/// Runs `openssl` with `args`; returns whether it succeeded and its stdout
/// and stderr together. OpenSSL is installed first if missing (see
/// [`require_packages`]): a test that needs it never passes without it.
pub fn openssl(args: &[&str]) -> (bool, String) {
    static PRESENT: std::sync::Once = std::sync::Once::new();
    PRESENT.call_once(|| require_packages(&[("openssl", "openssl")]));
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Writes `text` to `dir/name` and returns the path as a string for
/// command lines.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p.to_str().expect("utf-8 temp path").to_string()
}
