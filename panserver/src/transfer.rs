//! The transfer worker: takes jobs off the queue and moves chunks from staging
//! to the object store, acking only once the store and the database agree.

use std::sync::Arc;

use crate::service::App;

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

/// Queues chunks still in staging whose change is older than `before`: jobs lost
/// with a crashed process or broker are found again. A duplicate job is harmless.
pub async fn requeue_staged(app: &App, before: i64) -> anyhow::Result<usize> {
    let staged = app.meta.staged_chunks(before, 100_000).await?;
    for chunk in &staged {
        app.queue.publish(chunk).await?;
    }
    Ok(staged.len())
}

/// Removes staging files of chunks already in the object store: a process killed
/// between recording a transfer and removing its staging file leaves one.
pub async fn drop_transferred_leftovers(app: &App) -> anyhow::Result<usize> {
    let names: Vec<String> = app
        .staging
        .names()
        .await?
        .into_iter()
        .filter(|n| panproto::is_sha256_hex(n))
        .collect();
    let stored = app.meta.stored_chunks(&names).await?;
    for name in &stored {
        app.staging.remove(name).await?;
    }
    Ok(stored.len())
}

/// The reconciler: every `every`, requeues chunks staged for longer than `every`.
pub async fn run_reconciler(app: Arc<App>, every: std::time::Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let before = crate::service::now_ns() - every.as_nanos() as i64;
        match requeue_staged(&app, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                chunks = n,
                "requeued staged chunks whose transfer had not happened"
            ),
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed"),
        }
    }
}
