//! Background maintenance: garbage collection of unreferenced data, and the
//! whole-file hashes of new contents (computed here, from verified chunks).

use std::sync::Arc;
use std::time::Duration;

use panproto::ContentHasher;

use crate::meta::ChunkLocation;
use crate::service::ServiceResult;
use crate::service::{App, NS, now_ns};
use crate::store::chunk_key;

/// Removes contents and chunks that nothing has used for the grace period.
pub async fn collect_garbage(app: &App) -> ServiceResult<usize> {
    let now = now_ns();
    let pinned = app.sessions.pinned_chunks(now).await?;
    let report = app
        .meta
        .collect_garbage(now - app.limits.gc_grace_secs * NS, &pinned)
        .await?;
    let _gate = app.chunk_gate.write().await;
    for (sha, location) in &report.chunks_removed {
        app.meta.forget_chunk(sha).await?;
        // Only once the row is gone can no commit reference the chunk; then drop the bytes.
        if app.meta.chunk_location(sha).await?.is_some() {
            continue;
        }
        app.staging.remove(sha).await?;
        if *location == ChunkLocation::Store {
            app.store.delete(&chunk_key(sha)).await?;
        }
    }
    Ok(report.chunks_removed.len())
}

/// Computes and records the SHA-256 and SHA-1 of contents committed without them.
pub async fn hash_new_contents(app: &App) -> ServiceResult<usize> {
    let pending = app.meta.unhashed_contents(100).await?;
    for manifest in &pending {
        let mut hasher = ContentHasher::default();
        for extent in app.meta.extents_in(manifest, 0, i64::MAX).await? {
            hasher.update(&app.read_extent(&extent, 0, extent.size as u64).await?);
        }
        let (sha256, sha1) = hasher.finish();
        app.meta
            .set_content_hashes(manifest, &sha256, &sha1)
            .await?;
    }
    Ok(pending.len())
}

/// Every `every`: hashes new contents, sweeps part uploads, prunes the feed
/// and collects garbage. Failures are logged with `?` (Debug): an internal
/// error's message hides its cause from clients, and only this log shows it.
pub async fn run_maintenance(app: Arc<App>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        if let Err(e) = hash_new_contents(&app).await {
            tracing::warn!(error = ?e, "hashing new contents failed");
        }
        let parts = crate::parts::PartStore::new(app.staging.root());
        match parts.sweep(crate::service::now_ns()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "expired part uploads removed"),
            Err(e) => tracing::warn!(error = ?e, "sweeping part uploads failed"),
        }
        match app.prune_changes().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(changes = n, "old changes pruned from the feed"),
            Err(e) => tracing::warn!(error = ?e, "pruning the change feed failed"),
        }
        match collect_garbage(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(chunks = n, "garbage collected"),
            Err(e) => tracing::warn!(error = ?e, "garbage collection failed"),
        }
    }
}
