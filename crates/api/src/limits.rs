//! Token buckets for the policy's issuance rate limits, on the node that
//! receives the request: checked before a serial is taken or anything is
//! signed or proposed, so a client stuck in a retry loop costs its own
//! budget, not the Raft log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quorumca_ca::Rate;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets keyed by "identity:<who>" and "namespace:<ns>".
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Beyond this many buckets, full (idle) ones are forgotten.
const MAX_BUCKETS: usize = 100_000;

impl Limiter {
    /// Takes one token from every bucket that applies, or none if any is
    /// empty; then says how long until that one has a token again.
    pub(crate) fn take(
        &self,
        limits: &[(String, Rate)],
        now: Instant,
    ) -> Result<(), (String, Duration)> {
        let mut map = self.buckets.lock().expect("limiter");
        if map.len() > MAX_BUCKETS {
            let rates: HashMap<&str, &Rate> = limits.iter().map(|(k, r)| (k.as_str(), r)).collect();
            map.retain(|k, b| rates.contains_key(k.as_str()) || b.tokens < 1.0);
        }
        for (key, rate) in limits {
            let b = map.entry(key.clone()).or_insert(Bucket {
                tokens: rate.burst,
                at: now,
            });
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate.per_second).min(rate.burst);
            b.at = now;
            if b.tokens < 1.0 {
                let wait = (1.0 - b.tokens) / rate.per_second;
                return Err((key.clone(), Duration::from_secs_f64(wait)));
            }
        }
        for (key, _) in limits {
            if let Some(b) = map.get_mut(key) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_the_burst_then_refill_at_the_rate() {
        let l = Limiter::default();
        let t0 = Instant::now();
        let rate = Rate::parse("2/s").unwrap();
        let keys = vec![("identity:a".to_string(), rate)];
        assert!(l.take(&keys, t0).is_ok());
        assert!(l.take(&keys, t0).is_ok());
        let (key, wait) = l.take(&keys, t0).unwrap_err();
        assert_eq!(key, "identity:a");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(l.take(&keys, t0 + Duration::from_millis(500)).is_ok());
        // Another identity has its own bucket.
        assert!(l.take(&[("identity:b".to_string(), rate)], t0).is_ok());
        // A refused request takes nothing from the buckets that had room.
        let both = vec![
            ("identity:c".to_string(), rate),
            ("namespace:x".to_string(), Rate::parse("1/s").unwrap()),
        ];
        assert!(l.take(&both, t0).is_ok());
        assert!(l.take(&both, t0).is_err(), "namespace bucket is empty");
        assert!(
            l.take(&[("identity:c".to_string(), rate)], t0).is_ok(),
            "c kept its second token"
        );
    }
}
