//! The transfer worker: takes jobs off the queue and moves chunks from staging
//! to the object store, acking only once the store and the database agree.

use std::sync::Arc;

use crate::app::App;

pub async fn run_worker(app: Arc<App>, id: usize) {
    loop {
        let delivery = match app.queue.receive().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(worker = id, error = %e, "transfer queue unavailable, retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let chunk = delivery.chunk().to_string();
        match app.transfer_chunk(&chunk).await {
            Ok(()) => {
                tracing::debug!(worker = id, chunk, "chunk moved to the store");
                delivery.ack().await;
            }
            Err(e) => {
                tracing::warn!(worker = id, chunk, error = %e, "transfer failed, will retry");
                delivery.retry().await;
            }
        }
    }
}

/// Queues every chunk still in staging: jobs lost with a crashed process are found again.
pub async fn requeue_staged(app: &App) -> anyhow::Result<usize> {
    let staged = app.meta.staged_chunks(i64::MAX).await?;
    for chunk in &staged {
        app.queue.publish(chunk).await?;
    }
    Ok(staged.len())
}
