//! `copy_file_range` inside the mount. A whole file copied onto an empty one
//! (what `cp` does) is a server-side operation: the copy takes the source's
//! chunk list, and no byte is read or sent. Anything else (a range, a source
//! with unsent writes, a small file, the server away) is copied here from
//! handle to handle, a piece per call: `copy_file_range` may copy less than
//! asked, and its callers loop.

use std::sync::atomic::Ordering;

use panproto::wire::{CommitRequest, Node, UploadInit};

use super::attr::now_ns;
use super::files::{Body, FileState, Life, Upload};
use super::write::upload_ended;
use super::{FsResult, PanFs, lock};
use crate::remote::RemoteResult;

/// Files smaller than this are copied here: a local copy costs less than
/// the round trips of a server-side one, and needs no server.
const SERVER_COPY_MIN: u64 = 1 << 20;
/// What one call copies here at most, through a buffer of `COPY_PIECE`.
const LOCAL_COPY_MAX: u64 = 16 << 20;
const COPY_PIECE: u32 = 1 << 20;
/// The most one answer to the kernel can report copied (a u32): a larger
/// file is copied here, a piece per call.
const SERVER_COPY_MAX: u64 = u32::MAX as u64;

/// What a server-side copy needs to know of the source: its content, whole
/// on the server.
struct Source {
    content: String,
    size: u64,
}

impl PanFs {
    /// Copies up to `len` bytes from `fh_in` at `off_in` to `fh_out` at
    /// `off_out`; returns how many were copied (0 at the source's end).
    pub fn copy_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> FsResult<u64> {
        if off_in == 0
            && off_out == 0
            && let Some(copied) = self.server_copy(fh_in, fh_out, len)?
        {
            return Ok(copied);
        }
        // Here, through the two handles, a piece at a time.
        let mut copied = 0;
        while copied < len.min(LOCAL_COPY_MAX) {
            let want = (len - copied).min(u64::from(COPY_PIECE)) as u32;
            let bytes = self.read(fh_in, off_in + copied, want)?;
            if bytes.is_empty() {
                break;
            }
            self.write(fh_out, off_out + copied, &bytes)?;
            copied += bytes.len() as u64;
        }
        Ok(copied)
    }

    /// The whole source onto an empty destination, on the server. `None`
    /// when the case is not one for it, or the server did not take it: the
    /// caller copies here instead, and the usual sends and conflict rules
    /// take it from there.
    fn server_copy(&self, fh_in: u64, fh_out: u64, len: u64) -> FsResult<Option<u64>> {
        let src = self.handle(fh_in)?;
        let dst = self.handle(fh_out)?;
        let Some(source) = whole_on_server(&lock(&src.file.state)) else {
            return Ok(None);
        };
        let offline = self.sync.as_ref().is_some_and(|s| !s.is_online());
        let fits = (SERVER_COPY_MIN..=SERVER_COPY_MAX).contains(&source.size);
        if !fits || len < source.size || src.ino == dst.ino || offline {
            return Ok(None);
        }
        // Local-first, the destination may be new here: the server has it first.
        if self.settle_node(dst.ino).is_err() {
            return Ok(None);
        }
        let ticket = self.ticket();
        let replaces = {
            let mut f = lock(&dst.file.state);
            let Some(replaces) = empty_destination(&f) else {
                return Ok(None);
            };
            // Sends of the destination wait until the copy is in.
            f.upload = Upload::Running;
            replaces
        };
        let committed =
            self.block_on(self.commit_copy(src.ino, dst.ino, &source, replaces.clone()));
        let mut f = lock(&dst.file.state);
        upload_ended(&mut f, &dst.file);
        let node = match committed {
            Ok(Some(node)) => node,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::info!(from = src.ino, to = dst.ino, error = %e, "a server-side copy failed; copying here");
                return Ok(None);
            }
        };
        // Written meanwhile, the destination keeps those writes, and their
        // send meets the conflict rules against the copy.
        if empty_destination(&f) == Some(replaces) {
            let copy = Body::Remote {
                content: node.content.clone(),
                size: node.size as u64,
            };
            if let Body::Local { shadow, .. } = std::mem::replace(&mut f.body, copy) {
                shadow.retire(&self.fetcher.disk);
            }
        }
        drop(f);
        lock(&self.tables).replica.set_node(&node, ticket);
        tracing::debug!(
            from = src.ino,
            to = dst.ino,
            size = source.size,
            "copied on the server"
        );
        Ok(Some(source.size))
    }

    /// Commits the source's chunk list as the destination's content, if the
    /// destination still holds `replaces`. `None` when the source changed
    /// meanwhile or the server asks for data (then it is not a copy of what
    /// the server holds).
    async fn commit_copy(
        &self,
        from: i64,
        to: i64,
        source: &Source,
        replaces: Option<String>,
    ) -> RemoteResult<Option<Node>> {
        let manifest = self.remote.manifest(from).await?;
        if manifest.content.as_deref() != Some(source.content.as_str()) {
            return Ok(None);
        }
        let state = self
            .remote
            .begin_upload(&UploadInit {
                ino: to,
                chunks: manifest.chunks,
                sha256: None,
                sha1: None,
            })
            .await?;
        if !state.missing.is_empty() || state.challenge.is_some() {
            return Ok(None);
        }
        let commit = CommitRequest {
            if_content: Some(replaces),
            mtime: Some(now_ns()),
        };
        let node = self.remote.commit(&state.id, &commit).await?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_copied_on_server
            .fetch_add(source.size, Ordering::Relaxed);
        Ok(Some(node))
    }
}

/// The source's content, when the server holds all of it: no unsent writes,
/// no send running, still linked.
fn whole_on_server(f: &FileState) -> Option<Source> {
    if f.life != Life::Linked || f.upload != Upload::Idle {
        return None;
    }
    let (content, size) = match &f.body {
        Body::Remote { content, size } => (content.clone(), *size),
        Body::Local { shadow, .. } if !shadow.is_dirty() => {
            (shadow.record.base.clone(), shadow.size())
        }
        Body::Local { .. } => return None,
    };
    Some(Source {
        content: content?,
        size,
    })
}

/// The server content an empty destination replaces (`Some(None)`: none),
/// or `None` when the destination is not empty, or is being sent. A working
/// copy truncated to nothing and not yet sent counts as empty: the copy
/// replaces what the server holds.
fn empty_destination(f: &FileState) -> Option<Option<String>> {
    if f.life != Life::Linked || f.upload != Upload::Idle || f.body.size() != 0 {
        return None;
    }
    Some(match &f.body {
        Body::Remote { content, .. } => content.clone(),
        Body::Local { shadow, .. } => shadow.record.base.clone(),
    })
}
