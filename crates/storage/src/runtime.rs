//! The async runtime openraft runs on: tokio, except that the randomness
//! openraft asks for (election timeouts, tick jitter) can be drawn from a
//! seed. A simulation then replays a seed exactly; a production node, which
//! never sets a seed, draws from the OS-seeded thread RNG as before.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::rt::{AsyncRuntime, OptionalSend};
use openraft_rt_tokio::TokioRuntime;
use rand010::rngs::SmallRng;
use rand010::{Rng, SeedableRng};

tokio::task_local! {
    /// The current task's seeded stream; absent outside [`with_seed`].
    static RNG: RefCell<SmallRng>;
}

/// The next seed from the current task's stream; None when no seed is set.
fn next_seed() -> Option<u64> {
    RNG.try_with(|r| r.borrow_mut().next_u64()).ok()
}

fn seeded(seed: u64) -> RefCell<SmallRng> {
    RefCell::new(SmallRng::seed_from_u64(seed))
}

/// Runs `f` with openraft's randomness drawn from `seed`: every draw in
/// it, and in every task openraft spawns from it, follows from the seed
/// and the order of the draws.
pub fn with_seed<F: Future>(seed: u64, f: F) -> impl Future<Output = F::Output> {
    RNG.scope(seeded(seed), f)
}

/// Tokio, with seedable randomness (see the module doc).
#[derive(Debug)]
pub struct Runtime(TokioRuntime);

impl AsyncRuntime for Runtime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        // A child gets its own stream, derived from the parent's, so the
        // parent's later draws do not depend on what the child draws.
        match next_seed() {
            Some(s) => TokioRuntime::spawn(RNG.scope(seeded(s), future)),
            None => TokioRuntime::spawn(future),
        }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        match next_seed() {
            Some(s) => SmallRng::seed_from_u64(s),
            None => rand010::make_rng(),
        }
    }

    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        Self(TokioRuntime::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand010::RngExt;

    fn draws() -> Vec<u64> {
        (0..4).map(|_| Runtime::thread_rng().random()).collect()
    }

    #[tokio::test]
    async fn a_seed_replays_and_its_absence_does_not() {
        let a = with_seed(7, async { draws() }).await;
        let b = with_seed(7, async { draws() }).await;
        let c = with_seed(8, async { draws() }).await;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(draws(), draws());
        // Spawned tasks inherit a derived stream, the same on every replay.
        let spawned = || {
            with_seed(7, async {
                Runtime::spawn(async { draws() }).await.unwrap()
            })
        };
        let (x, y) = (spawned().await, spawned().await);
        assert_eq!(x, y);
        assert_ne!(x, a);
        // Unseeded spawns still work.
        assert_eq!(Runtime::spawn(async { 1 }).await.unwrap(), 1);
    }
}
