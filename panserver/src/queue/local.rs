//! The in-process queue. Jobs are not persisted: at start the server re-derives
//! them from the chunks still in staging (see `transfer::requeue_staged`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Delivery, QueueError, TransferQueue};

/// Where a chunk's job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// In the channel: publishing the chunk again adds nothing.
    Waiting,
    /// Taken by a worker. A publish meanwhile may mean the chunk was staged
    /// again after the worker looked, so `again` sends it once more at the
    /// ack: otherwise the newly staged file would stay behind.
    Running { again: bool },
}

type Jobs = Arc<Mutex<HashMap<String, Job>>>;

pub struct LocalQueue {
    tx: mpsc::UnboundedSender<String>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    jobs: Jobs,
}

impl Default for LocalQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            jobs: Arc::default(),
        }
    }
}

fn lock(jobs: &Jobs) -> Result<std::sync::MutexGuard<'_, HashMap<String, Job>>, QueueError> {
    jobs.lock()
        .map_err(|_| QueueError::Unavailable("queue lock poisoned".into()))
}

/// Puts the chunk's job back in the channel.
fn requeue(jobs: &Jobs, tx: &mpsc::UnboundedSender<String>, chunk: String) {
    if let Ok(mut jobs) = lock(jobs) {
        jobs.insert(chunk.clone(), Job::Waiting);
    }
    let _ = tx.send(chunk);
}

struct LocalDelivery {
    chunk: String,
    tx: mpsc::UnboundedSender<String>,
    jobs: Jobs,
}

#[async_trait]
impl Delivery for LocalDelivery {
    fn chunk(&self) -> &str {
        &self.chunk
    }

    async fn ack(self: Box<Self>) {
        let again = lock(&self.jobs)
            .is_ok_and(|mut jobs| jobs.remove(&self.chunk) == Some(Job::Running { again: true }));
        if again {
            requeue(&self.jobs, &self.tx, self.chunk);
        }
    }

    async fn retry(self: Box<Self>) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            requeue(&self.jobs, &self.tx, self.chunk);
        });
    }
}

#[async_trait]
impl TransferQueue for LocalQueue {
    async fn publish(&self, chunk: &str) -> Result<(), QueueError> {
        let send = match lock(&self.jobs)?.entry(chunk.to_string()) {
            Entry::Vacant(e) => {
                e.insert(Job::Waiting);
                true
            }
            Entry::Occupied(mut e) => {
                if let Job::Running { again } = e.get_mut() {
                    *again = true;
                }
                false
            }
        };
        if send {
            self.tx
                .send(chunk.to_string())
                .map_err(|_| QueueError::Unavailable("queue closed".into()))?;
        }
        Ok(())
    }

    async fn receive(&self) -> Result<Box<dyn Delivery>, QueueError> {
        let chunk = self
            .rx
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| QueueError::Unavailable("queue closed".into()))?;
        lock(&self.jobs)?.insert(chunk.clone(), Job::Running { again: false });
        Ok(Box::new(LocalDelivery {
            chunk,
            tx: self.tx.clone(),
            jobs: self.jobs.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next job, or None if none comes within a moment.
    async fn next(queue: &LocalQueue) -> Option<Box<dyn Delivery>> {
        tokio::time::timeout(Duration::from_millis(200), queue.receive())
            .await
            .ok()
            .and_then(Result::ok)
    }

    #[tokio::test]
    async fn a_chunk_published_twice_while_waiting_is_one_job() {
        let queue = LocalQueue::default();
        queue.publish("a").await.expect("publish");
        queue.publish("a").await.expect("publish");
        let job = next(&queue).await.expect("a job");
        assert_eq!(job.chunk(), "a");
        job.ack().await;
        assert!(next(&queue).await.is_none(), "a second job for one publish");
    }

    #[tokio::test]
    async fn a_chunk_published_while_its_job_runs_is_sent_again_after_the_ack() {
        let queue = LocalQueue::default();
        queue.publish("a").await.expect("publish");
        let running = next(&queue).await.expect("a job");
        // Staged again while the worker moves it: the worker may already have
        // removed the staging file it knew, so the new one needs a job.
        queue.publish("a").await.expect("publish");
        assert!(
            next(&queue).await.is_none(),
            "two jobs for one chunk at once"
        );
        running.ack().await;
        let again = next(&queue).await.expect("the job sent again");
        assert_eq!(again.chunk(), "a");
        again.ack().await;
        assert!(next(&queue).await.is_none());
    }
}
