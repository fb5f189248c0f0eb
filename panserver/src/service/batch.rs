//! Batches: a client's journal of changes sent as one request and applied in
//! one transaction (`meta::BatchStore`). Each operation is checked as its own
//! request would be, and answers with its own outcome. Small contents travel
//! inline; their chunks are staged together with one flush for the batch.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use panproto::batch::{
    BATCH_OPS_MAX, BatchOp, BatchRequest, BatchResponse, OpResult, RESERVE_MAX, Reserved,
};
use panproto::wire::{ChunkRef, ErrorBody, RenameRequest};
use panproto::{XATTR_VALUE_MAX, validate_name, validate_xattr_name};

use crate::meta::{Actor, INLINE_MAX, TreeOp};
use crate::service::record::kept_inline;
use crate::service::uploads::validate_chunks;
use crate::service::{App, ServiceError, ServiceResult, now_ns};

/// An operation ready for the metadata layer, or why it was refused here.
type Checked = ServiceResult<TreeOp>;

fn decode(field: &str, b64: &str) -> ServiceResult<Vec<u8>> {
    BASE64
        .decode(b64)
        .map_err(|_| ServiceError::BadRequest(format!("{field} is not base64")))
}

/// The checks each operation's own route makes, and its metadata form.
/// Inline contents are left as data for `stage_inline`.
fn check(op: BatchOp) -> ServiceResult<(TreeOp, Option<Vec<u8>>)> {
    let op = match op {
        create @ BatchOp::Create { .. } => {
            let (parent, req, ino) = create
                .as_create()
                .ok_or(ServiceError::BadRequest("not a creation".into()))?;
            super::tree::check_create(&req)?;
            TreeOp::Create { parent, req, ino }
        }
        BatchOp::Link { ino, parent, name } => {
            validate_name(&name)?;
            TreeOp::Link { ino, parent, name }
        }
        BatchOp::Remove {
            parent,
            name,
            dir,
            if_ino,
        } => {
            validate_name(&name)?;
            TreeOp::Remove {
                parent,
                name,
                dir,
                if_ino,
            }
        }
        BatchOp::Rename {
            parent,
            name,
            new_parent,
            new_name,
            mode,
            if_ino,
            if_target,
        } => {
            validate_name(&name)?;
            validate_name(&new_name)?;
            let req = RenameRequest {
                parent,
                name,
                new_parent,
                new_name,
                mode,
            };
            TreeOp::Rename {
                req,
                if_ino,
                if_target,
            }
        }
        set @ BatchOp::SetAttr { .. } => {
            let (ino, req) = set
                .as_set_attr()
                .ok_or(ServiceError::BadRequest("not an attribute change".into()))?;
            TreeOp::SetAttr { ino, req }
        }
        BatchOp::SetXattr {
            ino,
            name,
            value,
            mode,
        } => {
            validate_xattr_name(&name)?;
            let value = decode("value", &value)?;
            if value.len() > XATTR_VALUE_MAX {
                return Err(ServiceError::TooLarge);
            }
            TreeOp::SetXattr {
                ino,
                name,
                value,
                mode,
            }
        }
        BatchOp::RemoveXattr { ino, name } => {
            validate_xattr_name(&name)?;
            TreeOp::RemoveXattr { ino, name }
        }
        BatchOp::SetContent {
            ino,
            data,
            chunks,
            mtime,
            if_content,
        } => {
            let (chunks, data) = match (data, chunks) {
                (Some(data), None) => (Vec::new(), Some(decode("data", &data)?)),
                (None, Some(chunks)) => (chunks, None),
                _ => {
                    return Err(ServiceError::BadRequest(
                        "set_content takes either data or chunks".into(),
                    ));
                }
            };
            let op = TreeOp::SetContent {
                ino,
                chunks,
                if_content,
                mtime: mtime.unwrap_or_else(now_ns),
            };
            return Ok((op, data));
        }
    };
    Ok((op, None))
}

impl App {
    /// Reserves inode numbers for the caller's client.
    pub async fn reserve_inos(&self, user: i64, count: i64) -> ServiceResult<Reserved> {
        if !(1..=RESERVE_MAX).contains(&count) {
            return Err(ServiceError::BadRequest(format!(
                "count must be 1 to {RESERVE_MAX}"
            )));
        }
        let first = self.meta.reserve_inos(user, count, now_ns()).await?;
        Ok(Reserved { first, count })
    }

    /// Applies a batch in one transaction: one outcome per operation, in order.
    pub async fn batch(&self, by: Actor, req: BatchRequest) -> ServiceResult<BatchResponse> {
        if req.ops.len() > BATCH_OPS_MAX {
            return Err(ServiceError::TooLarge);
        }
        if !req.at.is_empty() && req.at.len() != req.ops.len() {
            return Err(ServiceError::BadRequest(
                "`at` needs one time per operation".into(),
            ));
        }
        let now = now_ns();
        let times: Vec<i64> = (0..req.ops.len())
            .map(|i| req.at.get(i).map_or(now, |&at| at.min(now)))
            .collect();
        let (checked, inline): (Vec<Checked>, Vec<Option<Vec<u8>>>) = req
            .ops
            .into_iter()
            .map(|op| match check(op) {
                Ok((op, data)) => (Ok(op), data),
                Err(e) => (Err(e), None),
            })
            .unzip();
        let checked = self.stage_inline(by.user, checked, inline).await?;
        let checked = self.check_chunks(by.user, checked).await?;
        let (ops, times): (Vec<TreeOp>, Vec<i64>) = checked
            .iter()
            .zip(times)
            .filter_map(|(c, at)| c.as_ref().ok().map(|op| (op.clone(), at)))
            .unzip();
        let mut applied = self.meta.apply_batch(by, &ops, &times).await?.into_iter();
        let results = checked
            .into_iter()
            .map(|c| {
                match c.and_then(|_| {
                    applied.next().map_or_else(
                        || {
                            Err(ServiceError::Internal(
                                "an operation without an outcome".into(),
                            ))
                        },
                        |r| r.map_err(ServiceError::from),
                    )
                }) {
                    Ok(node) => OpResult { node, error: None },
                    Err(e) => OpResult {
                        node: None,
                        error: Some(ErrorBody {
                            code: e.code(),
                            message: e.to_string(),
                            seq: None,
                        }),
                    },
                }
            })
            .collect();
        Ok(BatchResponse {
            seq: self.meta.change_seq(by.user).await?,
            results,
        })
    }

    /// Stores the inline contents, each as one chunk: a small one in its row
    /// (`INLINE_MAX`), the others staged with one flush for all; their
    /// operations then point at those chunks.
    async fn stage_inline(
        &self,
        user: i64,
        mut checked: Vec<Checked>,
        inline: Vec<Option<Vec<u8>>>,
    ) -> ServiceResult<Vec<Checked>> {
        let datas: Vec<(usize, Vec<u8>)> = inline
            .into_iter()
            .enumerate()
            .filter_map(|(i, d)| d.filter(|d| !d.is_empty()).map(|d| (i, d)))
            .filter(|(i, _)| checked[*i].is_ok())
            .collect();
        if let Some((_, big)) = datas
            .iter()
            .find(|(_, d)| d.len() > panproto::CHUNK_MAX as usize)
        {
            return Err(ServiceError::BadRequest(format!(
                "inline data is at most {} bytes ({} sent); send larger files as chunks",
                panproto::CHUNK_MAX,
                big.len()
            )));
        }
        let names = self
            .stage_and_record(user, move |staging| {
                let (small, large): (Vec<_>, Vec<_>) =
                    datas.into_iter().partition(|(_, d)| d.len() <= INLINE_MAX);
                let slices: Vec<&[u8]> = large.iter().map(|(_, d)| d.as_slice()).collect();
                let mut chunks = staging.put_all(&slices)?;
                let mut placed: Vec<(usize, String, u64)> = large
                    .iter()
                    .zip(&chunks)
                    .map(|((i, d), c)| (*i, c.sha256.clone(), d.len() as u64))
                    .collect();
                for (i, data) in small {
                    let chunk = kept_inline(data);
                    placed.push((i, chunk.sha256.clone(), chunk.size as u64));
                    chunks.push(chunk);
                }
                Ok((chunks, placed))
            })
            .await?;
        for (i, sha, size) in names {
            if let Ok(TreeOp::SetContent { chunks, .. }) = &mut checked[i] {
                *chunks = vec![ChunkRef {
                    sha256: Some(sha),
                    size,
                }];
            }
        }
        Ok(checked)
    }

    /// Refuses a content whose chunks are not all present and the caller's: a
    /// chunk list alone proves nothing (an upload session proves possession).
    async fn check_chunks(
        &self,
        user: i64,
        mut checked: Vec<Checked>,
    ) -> ServiceResult<Vec<Checked>> {
        let mut wanted = Vec::new();
        for c in &mut checked {
            if let Ok(TreeOp::SetContent { chunks, .. }) = c {
                match validate_chunks(self, chunks) {
                    Ok(()) => wanted.extend(chunks.iter().filter_map(|c| c.sha256.clone())),
                    Err(e) => *c = Err(e),
                }
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        let owned = self.meta.owned_chunks(user, &wanted).await?;
        for c in &mut checked {
            if let Ok(TreeOp::SetContent { chunks, .. }) = c
                && let Some(missing) = chunks
                    .iter()
                    .filter_map(|c| c.sha256.as_ref())
                    .find(|h| !owned.contains(*h))
            {
                *c = Err(ServiceError::Incomplete(format!(
                    "chunk {missing} is not on the server as yours: send it in an upload session"
                )));
            }
        }
        Ok(checked)
    }
}
