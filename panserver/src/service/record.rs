//! Recording staged chunks: a verified chunk in staging becomes the user's in
//! the metadata, and its transfer is queued.
//!
//! Both steps run to their end even if the request that staged the chunk is
//! dropped meanwhile, as when its client goes away mid-request (a killed
//! panfs): a staged file whose row or job is never written stays in staging
//! for good. So they run in a task of their own, which holds the caller's
//! share of the chunk gate until the chunks are recorded.

use tokio::sync::OwnedRwLockReadGuard;

use crate::meta::{MetaStore, NewChunk};
use crate::queue::TransferQueue;
use crate::service::{App, ServiceError, ServiceResult, now_ns};
use crate::staging::Staging;

/// A writer's share of the chunk gate: garbage collection waits for it.
pub type GateShare = OwnedRwLockReadGuard<()>;

/// Chunks staged (or kept in their rows).
pub type Staged = Vec<NewChunk>;

/// A chunk of at most `INLINE_MAX` bytes, to keep in its row.
pub fn kept_inline(data: Vec<u8>) -> NewChunk {
    NewChunk {
        sha256: panproto::sha256_hex(&data),
        size: data.len() as i64,
        block_sums: crate::sums::block_sums(&data),
        inline: Some(data),
    }
}

impl App {
    /// Takes a share of the chunk gate, held while chunks are staged and recorded.
    pub async fn share_gate(&self) -> GateShare {
        self.chunk_gate.clone().read_owned().await
    }

    /// Records staged chunks as the user's and queues their transfers (two
    /// statements, not two per chunk), to the end even if the caller is dropped.
    pub async fn record_chunks(
        &self,
        user: i64,
        chunks: Staged,
        gate: GateShare,
    ) -> ServiceResult<()> {
        let (meta, queue) = (self.meta.clone(), self.queue.clone());
        detached(async move {
            let _gate = gate;
            record(&*meta, &*queue, user, &chunks).await
        })
        .await
    }

    /// Runs `stage` on a blocking thread and records the chunks it staged, to
    /// the end even if the caller is dropped. A `stage` that fails records
    /// nothing: what it staged stays unrecorded (`check` reports it) until the
    /// same bytes come again.
    pub async fn stage_and_record<T: Send + 'static>(
        &self,
        user: i64,
        stage: impl FnOnce(&Staging) -> ServiceResult<(Staged, T)> + Send + 'static,
    ) -> ServiceResult<T> {
        let gate = self.share_gate().await;
        let staging = self.staging.clone();
        let (meta, queue) = (self.meta.clone(), self.queue.clone());
        detached(async move {
            let _gate = gate;
            let (staged, value) = tokio::task::spawn_blocking(move || stage(&staging))
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))??;
            record(&*meta, &*queue, user, &staged).await?;
            Ok(value)
        })
        .await
    }
}

/// Runs `work` in a task of its own and waits for it.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = ServiceResult<T>> + Send + 'static,
) -> ServiceResult<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
}

async fn record(
    meta: &dyn MetaStore,
    queue: &dyn TransferQueue,
    user: i64,
    chunks: &[NewChunk],
) -> ServiceResult<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    meta.add_chunks(chunks, now_ns()).await?;
    let hashes: Vec<String> = chunks.iter().map(|c| c.sha256.clone()).collect();
    meta.grant_chunks(user, &hashes).await?;
    // A chunk kept in its row has nothing to move.
    for sha256 in chunks
        .iter()
        .filter(|c| c.inline.is_none())
        .map(|c| &c.sha256)
    {
        if let Err(e) = queue.publish(sha256).await {
            // The chunk is safe in staging; the reconciler queues it again later.
            tracing::warn!(chunk = sha256, error = %e, "could not queue transfer");
        }
    }
    Ok(())
}
