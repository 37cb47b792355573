//! A per-endpoint circuit breaker: after `threshold` consecutive failures
//! the endpoint is skipped for a cool-down, then admitted again (one
//! success closes it; one more failure reopens it).

use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub(crate) fn admits(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|t| now >= t)
    }

    /// When a closed breaker reports `None`, it sorts first.
    pub(crate) fn open_until(&self) -> Option<Instant> {
        self.open_until
    }

    pub(crate) fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
    }

    pub(crate) fn failure(&mut self, now: Instant, threshold: u32, cooldown: Duration) {
        self.failures += 1;
        if self.failures >= threshold.max(1) {
            self.open_until = Some(now + cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_recloses_on_success() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(5);
        let mut b = Breaker::default();
        b.failure(t0, 3, cool);
        b.failure(t0, 3, cool);
        assert!(b.admits(t0), "two failures keep it closed");
        b.failure(t0, 3, cool);
        assert!(!b.admits(t0), "the third opens it");
        assert!(b.admits(t0 + cool), "half-open after the cool-down");
        b.failure(t0 + cool, 3, cool);
        assert!(!b.admits(t0 + cool), "a failure while half-open reopens");
        b.success();
        assert!(b.admits(t0 + cool));
    }
}
