//! # quorumca-testkit: helpers for tests, in one place
//!
//! Owns the test-side plumbing several crates need, so no test file carries
//! its own copy: running the `openssl` command (our independent verifier)
//! and writing PEM files for it. Used only as a dev-dependency.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;

/// Runs `openssl` with `args`; returns whether it succeeded and its stdout
/// and stderr together. Panics, loudly, if OpenSSL is not installed: a test
/// that needs it must never pass without it (`.ci/run` installs it).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed for these tests (.ci/run installs it)");
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
