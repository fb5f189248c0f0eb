//! The in-process queue. Jobs are not persisted: at start the server re-derives
//! them from the chunks still in staging (see `transfer::requeue_staged`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Delivery, QueueError, TransferQueue};

pub struct LocalQueue {
    tx: mpsc::UnboundedSender<String>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    /// Chunks queued or in progress: publishing one twice is a no-op.
    queued: Arc<Mutex<HashSet<String>>>,
}

impl Default for LocalQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            queued: Arc::default(),
        }
    }
}

struct LocalDelivery {
    chunk: String,
    tx: mpsc::UnboundedSender<String>,
    queued: Arc<Mutex<HashSet<String>>>,
}

#[async_trait]
impl Delivery for LocalDelivery {
    fn chunk(&self) -> &str {
        &self.chunk
    }

    async fn ack(self: Box<Self>) {
        if let Ok(mut q) = self.queued.lock() {
            q.remove(&self.chunk);
        }
    }

    async fn retry(self: Box<Self>) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = tx.send(self.chunk);
        });
    }
}

#[async_trait]
impl TransferQueue for LocalQueue {
    async fn publish(&self, chunk: &str) -> Result<(), QueueError> {
        let fresh = self
            .queued
            .lock()
            .map_err(|_| QueueError::Unavailable("queue lock poisoned".into()))?
            .insert(chunk.to_string());
        if fresh {
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
        Ok(Box::new(LocalDelivery {
            chunk,
            tx: self.tx.clone(),
            queued: self.queued.clone(),
        }))
    }
}
