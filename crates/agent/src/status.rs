//! What the agent reports: per intent, the certificate in force, when it
//! renews, and how renewal is going. Written to `<state_dir>/status.json`
//! after every change (what `quorumca agent status` reads) and served as
//! Prometheus metrics.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::AgentError;

/// Where one intent's certificate stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RenewalState {
    /// No certificate yet.
    #[default]
    Missing,
    /// A valid certificate, renewal not due yet.
    Valid,
    /// Renewal is due and under way.
    Renewing,
    /// The last attempt failed; the current certificate stays in place.
    Retrying,
    /// The certificate in place has expired: the cluster was unreachable
    /// for its whole remaining lifetime.
    Expired,
}

/// One intent's state, as `status.json` and `quorumca agent status` show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntentStatus {
    /// Where its certificate stands.
    pub state: RenewalState,
    /// The serial of the certificate in place, hex.
    pub serial: Option<String>,
    /// Its issuer.
    pub issuer: Option<String>,
    /// Unix seconds.
    pub not_before: Option<i64>,
    /// notAfter, Unix seconds.
    pub not_after: Option<i64>,
    /// When renewal is due, Unix seconds.
    pub renew_after: Option<i64>,
    /// Certificates installed, counted over every run on this state directory.
    pub renewals: u64,
    /// Attempts that failed, counted the same way.
    pub failures: u64,
    /// Failures since the last success; the backoff grows with it.
    pub consecutive_failures: u32,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// When the last renewal was installed, Unix seconds.
    pub last_renewal_at: Option<i64>,
    /// When the next attempt is due, Unix seconds.
    pub next_attempt_at: Option<i64>,
    /// Times the reload command or signal failed.
    pub reload_failures: u64,
}

/// The agent's state, written to `status.json` after every change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Each intent's state, by name.
    pub intents: BTreeMap<String, IntentStatus>,
    /// Version of the trust bundle last written (0: none yet).
    pub bundle_version: u64,
    /// When the bundle was last written, Unix seconds.
    pub bundle_updated_at: Option<i64>,
    /// When this status was written, Unix seconds.
    pub updated_at: i64,
}

/// The file under the state directory the status is kept in.
pub const STATUS_FILE: &str = "status.json";

impl Status {
    /// Reads `status.json` from `state_dir`.
    pub fn read(state_dir: &Path) -> Result<Self, AgentError> {
        let p = state_dir.join(STATUS_FILE);
        let text = std::fs::read(&p).map_err(|e| {
            AgentError::Files(format!(
                "{}: {e} (is an agent running with this state_dir?)",
                p.display()
            ))
        })?;
        serde_json::from_slice(&text)
            .map_err(|e| AgentError::Files(format!("{}: {e}", p.display())))
    }

    /// Writes `status.json` to `state_dir`, atomically.
    pub fn write(&self, state_dir: &Path) -> Result<(), AgentError> {
        let text = serde_json::to_vec_pretty(self).expect("plain struct");
        crate::store::replace_file(&state_dir.join(STATUS_FILE), &text, 0o644, None)
    }

    /// Prometheus text format, with time-to-expiry computed at `now`.
    pub fn metrics(&self, now: i64) -> String {
        let mut out = String::new();
        let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in rows {
                out.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        let per = |f: &dyn Fn(&IntentStatus) -> Option<f64>| {
            self.intents
                .iter()
                .filter_map(|(n, s)| Some((format!("{{intent=\"{n}\"}}"), f(s)?)))
                .collect::<Vec<_>>()
        };
        family(
            "quorumca_agent_certificate_expiry_seconds",
            "Seconds until the certificate in place expires (negative: expired).",
            "gauge",
            per(&|s| s.not_after.map(|t| (t - now) as f64)),
        );
        family(
            "quorumca_agent_renewal_due_seconds",
            "Seconds until renewal is due (negative: overdue).",
            "gauge",
            per(&|s| s.renew_after.map(|t| (t - now) as f64)),
        );
        family(
            "quorumca_agent_renewals_total",
            "Certificates obtained.",
            "counter",
            per(&|s| Some(s.renewals as f64)),
        );
        family(
            "quorumca_agent_renewal_failures_total",
            "Failed attempts to obtain a certificate.",
            "counter",
            per(&|s| Some(s.failures as f64)),
        );
        family(
            "quorumca_agent_consecutive_failures",
            "Failed attempts since the last success.",
            "gauge",
            per(&|s| Some(s.consecutive_failures as f64)),
        );
        family(
            "quorumca_agent_reload_failures_total",
            "Reload actions that failed.",
            "counter",
            per(&|s| Some(s.reload_failures as f64)),
        );
        family(
            "quorumca_agent_trust_bundle_version",
            "Version of the trust bundle last written.",
            "gauge",
            vec![(String::new(), self.bundle_version as f64)],
        );
        out
    }
}

/// When a certificate valid from `not_before` to `not_after` is renewed:
/// at `renew_at` of its lifetime, minus `jitter * u` of it (`u` uniform in
/// [0, 1), drawn once per certificate).
pub fn renew_point(not_before: i64, not_after: i64, renew_at: f64, jitter: f64, u: f64) -> i64 {
    let life = (not_after - not_before).max(0) as f64;
    not_before + (life * (renew_at - jitter * u.clamp(0.0, 1.0))).round() as i64
}

/// Wait before attempt `failures + 1`: one second doubled per failure, at
/// most `max`, then scaled into [1/2, 1] by `u` so that a fleet cut off
/// together does not come back in lock-step.
pub fn backoff(failures: u32, max: Duration, u: f64) -> Duration {
    let full = Duration::from_secs(1)
        .saturating_mul(1u32 << failures.min(20))
        .min(max);
    full.mul_f64(0.5 + 0.5 * u.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_points_spread_below_the_fraction() {
        assert_eq!(renew_point(0, 300, 2.0 / 3.0, 0.0, 0.5), 200);
        assert_eq!(renew_point(0, 300, 2.0 / 3.0, 0.1, 0.0), 200);
        assert_eq!(renew_point(0, 300, 2.0 / 3.0, 0.1, 1.0), 170);
        assert_eq!(renew_point(1000, 1000, 0.5, 0.1, 0.3), 1000);
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let max = Duration::from_secs(30);
        assert_eq!(backoff(0, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(10, max, 1.0), max);
        assert_eq!(backoff(40, max, 0.0), max / 2);
        assert_eq!(
            backoff(2, Duration::from_millis(500), 1.0),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let mut s = Status::default();
        s.intents.insert(
            "web".into(),
            IntentStatus {
                not_after: Some(1_100),
                renew_after: Some(1_050),
                renewals: 3,
                ..Default::default()
            },
        );
        let m = s.metrics(1_000);
        assert!(
            m.contains("quorumca_agent_certificate_expiry_seconds{intent=\"web\"} 100\n"),
            "{m}"
        );
        assert!(
            m.contains("quorumca_agent_renewals_total{intent=\"web\"} 3\n"),
            "{m}"
        );
        assert!(
            m.contains("# TYPE quorumca_agent_renewal_failures_total counter\n"),
            "{m}"
        );
        let d = tempfile::tempdir().unwrap();
        s.write(d.path()).unwrap();
        assert_eq!(Status::read(d.path()).unwrap(), s);
    }
}
