//! Idempotency keys: a retried request with the same key gets the first
//! outcome, the same key on a different request is refused, and keys are
//! forgotten after [`IDEMPOTENCY_WINDOW_MS`]. One function, [`idempotent`],
//! is the only place a key is looked up or remembered, whether it came on a
//! whole proposal or on one record of a batch, so a retry may come either
//! way and is answered the same.

use ring::digest::SHA256;
use serde::{Deserialize, Serialize};

use super::State;
use crate::command::{Command, Outcome, Rejection};

/// How long an idempotency key is remembered after first use. Long enough
/// for any client retry loop; short enough that the map tracks recent
/// traffic, not history.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// What a key was first used for, and what it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Remembered {
    pub(super) digest: [u8; 32],
    pub(super) outcome: Outcome,
    pub(super) at_ms: u64,
}

/// The digest that says "same request": the command, not its label, so the
/// key itself is excluded.
pub(super) fn command_digest(c: &Command) -> [u8; 32] {
    let bytes = postcard::to_stdvec(c).expect("command serialises");
    ring::digest::digest(&SHA256, &bytes)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

/// Runs `run` under `key`: without a key, always; with a key seen before,
/// not at all (the first outcome again, or a conflict when the request
/// differs); otherwise once, remembering its outcome. `digest` is only
/// computed when there is a key.
pub(super) fn idempotent(
    state: &mut State,
    key: Option<&str>,
    digest: impl FnOnce() -> [u8; 32],
    at_ms: u64,
    run: impl FnOnce(&mut State) -> Outcome,
) -> Outcome {
    let Some(key) = key else {
        return run(state);
    };
    let digest = digest();
    if let Some(seen) = state.idempotency.get(key) {
        if seen.digest == digest {
            return seen.outcome.clone();
        }
        return Outcome::Rejected(Rejection::IdempotencyKeyConflict {
            key: key.to_string(),
        });
    }
    let outcome = run(state);
    state.idempotency.insert(
        key.to_string(),
        Remembered {
            digest,
            outcome: outcome.clone(),
            at_ms,
        },
    );
    state.idempotency_expiry.insert((at_ms, key.to_string()));
    outcome
}

/// Forgets keys older than the window at `now_ms`.
pub(super) fn expire(state: &mut State, now_ms: u64) {
    let cutoff = now_ms.saturating_sub(IDEMPOTENCY_WINDOW_MS);
    while let Some((at, key)) = state.idempotency_expiry.first().cloned() {
        if at >= cutoff {
            break;
        }
        state.idempotency_expiry.pop_first();
        // Only drop the entry if it is still the one this expiry slot was for.
        if state.idempotency.get(&key).is_some_and(|r| r.at_ms == at) {
            let gone = state.idempotency.remove(&key).expect("checked");
            // No retry can ask for the certificate any more: a record that
            // kept its DER only for retries becomes compact.
            if let Outcome::IssuanceRecorded { issuer, serial } = gone.outcome {
                let key = state.key_of(&issuer, &serial);
                if let Some(rec) = key.and_then(|k| state.records.get_mut(&k)) {
                    if rec.der_for_replay_only {
                        rec.full_der = None;
                        rec.der_for_replay_only = false;
                    }
                }
            }
        }
    }
}
