//! The one batching mechanism behind the forwarder, the leader's group
//! commit and the API's issuance-record batcher: a task that takes
//! whatever has queued (up to `max_batch`) as one batch, with at most
//! `max_in_flight` batches being handled at once. While every slot is busy,
//! items queue up and form the next batch, so an idle system handles each
//! item at once (no added latency) and a busy one fewer, larger batches.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

/// Starts the batching task and returns its queue. `handle` gets each
/// batch (never empty) on a task of its own. The task ends when every
/// sender is dropped.
pub fn spawn_batching<T, F, Fut>(
    max_batch: usize,
    max_in_flight: usize,
    handle: F,
) -> mpsc::UnboundedSender<T>
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<T>();
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(max_in_flight));
        while let Some(first) = rx.recv().await {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let work = handle(batch);
            tokio::spawn(async move {
                work.await;
                drop(permit);
            });
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn batches_form_while_slots_are_busy_and_are_bounded() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let busy = Arc::new(AtomicUsize::new(0));
        let most_busy = Arc::new(AtomicUsize::new(0));
        let (s, b, m) = (sizes.clone(), busy.clone(), most_busy.clone());
        let tx = spawn_batching(4, 1, move |batch: Vec<oneshot::Sender<()>>| {
            let (s, b, m) = (s.clone(), b.clone(), m.clone());
            async move {
                let now = b.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                s.lock().unwrap().push(batch.len());
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                b.fetch_sub(1, Ordering::SeqCst);
                for r in batch {
                    let _ = r.send(());
                }
            }
        });
        let mut waits = Vec::new();
        for _ in 0..10 {
            let (r, w) = oneshot::channel();
            tx.send(r).unwrap();
            waits.push(w);
        }
        for w in waits {
            w.await.unwrap();
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 10, "{sizes:?}");
        assert!(sizes.iter().all(|&n| (1..=4).contains(&n)), "{sizes:?}");
        assert!(sizes.len() < 10, "queued items were batched: {sizes:?}");
        assert_eq!(most_busy.load(Ordering::SeqCst), 1, "one batch in flight");
    }
}
