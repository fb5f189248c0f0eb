//! The client's view of the server: one trait, implemented over HTTP and, for
//! tests without a server, in memory. The file-system logic only sees the trait.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use panproto::batch::{BatchRequest, BatchResponse, Reserved};
use panproto::wire::{
    ChangesResponse, CommitRequest, CreateRequest, DirEntry, ErrorCode, Manifest, Node,
    RenameRequest, SetAttrRequest, UploadInit, UploadState, UserInfo, XattrMode,
};

use crate::cache::bufs::{self, BLOCKS};

mod clients;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod faults;
mod http;
pub mod memory;

pub use http::HttpRemote;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server answered with an error code.
    #[error("server refused ({status}): {code}: {message}")]
    Refused {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    /// The server could not be reached, timed out, or lost a backing service:
    /// what was asked may have been done or not.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// No connection to the server could be made: nothing was asked of it.
    #[error("server unreachable (not connected): {0}")]
    NotSent(String),
}

impl RemoteError {
    /// The server's code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RemoteError::Refused { code, .. } => Some(*code),
            RemoteError::Unreachable(_) | RemoteError::NotSent(_) => None,
        }
    }

    /// Whether the server may have done what was asked although no answer came.
    pub fn maybe_done(&self) -> bool {
        matches!(self, RemoteError::Unreachable(_))
    }

    pub fn is(&self, code: ErrorCode) -> bool {
        self.code() == Some(code)
    }

    /// The errno a local file system would give for this failure.
    pub fn errno(&self) -> i32 {
        self.code().map_or(libc::EIO, errno_of)
    }
}

/// Every code the server answers with, as the errno a local file system gives.
fn errno_of(code: ErrorCode) -> i32 {
    use ErrorCode as C;
    match code {
        C::NotFound => libc::ENOENT,
        C::Exists => libc::EEXIST,
        C::NotEmpty => libc::ENOTEMPTY,
        C::NotDir => libc::ENOTDIR,
        C::IsDir => libc::EISDIR,
        C::NameTooLong => libc::ENAMETOOLONG,
        C::BadName | C::BadRequest | C::RangeNotSatisfiable | C::NotRegularFile => libc::EINVAL,
        C::NotPermitted => libc::EPERM,
        C::QuotaExceeded | C::NoSpace | C::XattrFull => libc::ENOSPC,
        C::NoAttribute => libc::ENODATA,
        C::XattrNotSupported => libc::ENOTSUP,
        C::BadXattrName => libc::ERANGE,
        C::TooLarge => libc::EFBIG,
        // The version an open handle reads was replaced on the server (as NFS does).
        C::Changed => libc::ESTALE,
        C::Unauthorized | C::BadCredentials | C::SignupDisabled => libc::EACCES,
        C::Throttled => libc::EAGAIN,
        C::Conflict
        | C::HashMismatch
        | C::Incomplete
        | C::BadProof
        | C::MethodNotAllowed
        | C::LengthRequired
        | C::Corrupt
        | C::Unavailable
        | C::Internal
        | C::CursorExpired
        | C::UploadGone
        | C::Unknown => libc::EIO,
    }
}

pub type RemoteResult<T> = Result<T, RemoteError>;

/// An answer of the change feed.
#[derive(Debug, Clone)]
pub enum FeedPage {
    Changes(ChangesResponse),
    /// The feed no longer covers the cursor: start over at `current`, after
    /// forgetting everything learnt before.
    Expired {
        current: i64,
    },
}

/// The content a write is based on: it is stored only while the file still holds
/// it, so a version another client stored meanwhile is never overwritten.
pub type IfContent<'a> = Option<Option<&'a str>>;

#[async_trait]
pub trait Remote: Send + Sync {
    /// The number this client's changes carry in the change feed.
    fn origin(&self) -> u64;
    /// The changes after `since`, waiting up to `wait` for one; without
    /// `since`, none and the cursor to start from.
    async fn changes(&self, since: Option<i64>, wait: Duration) -> RemoteResult<FeedPage>;
    async fn user_info(&self) -> RemoteResult<UserInfo>;
    async fn node(&self, ino: i64) -> RemoteResult<Node>;
    async fn lookup(&self, parent: i64, name: &str) -> RemoteResult<Node>;
    async fn list(&self, dir: i64) -> RemoteResult<Vec<DirEntry>>;
    async fn create(&self, parent: i64, req: &CreateRequest) -> RemoteResult<Node>;
    async fn link(&self, ino: i64, parent: i64, name: &str) -> RemoteResult<Node>;
    async fn remove(&self, parent: i64, name: &str, dir: bool) -> RemoteResult<()>;
    async fn rename(&self, req: &RenameRequest) -> RemoteResult<()>;
    async fn set_attr(&self, ino: i64, req: &SetAttrRequest) -> RemoteResult<Node>;
    async fn manifest(&self, ino: i64) -> RemoteResult<Manifest>;
    /// Bytes [start, end) of the file as it is at `content`; `changed` when it moved on.
    async fn read(&self, ino: i64, content: &str, start: u64, end: u64) -> RemoteResult<Bytes>;
    /// As `read`, cut into blocks of `bufs::SIZE` bytes from `start` (the last
    /// may be shorter), each in a recycled buffer: the block caches keep them
    /// as they are.
    async fn read_blocks(
        &self,
        ino: i64,
        content: &str,
        start: u64,
        end: u64,
    ) -> RemoteResult<Vec<Bytes>> {
        let bytes = self.read(ino, content, start, end).await?;
        Ok(bytes.chunks(bufs::SIZE).map(|b| BLOCKS.copy(b)).collect())
    }
    /// Replaces a file's content with `body` in one request, stamping `mtime`.
    async fn put_content(
        &self,
        ino: i64,
        body: Bytes,
        mtime: i64,
        if_content: IfContent<'_>,
    ) -> RemoteResult<Node>;
    async fn begin_upload(&self, init: &UploadInit) -> RemoteResult<UploadState>;
    async fn put_chunk(&self, session: &str, sha256: &str, body: Bytes) -> RemoteResult<()>;
    async fn prove(&self, session: &str, proof: &str) -> RemoteResult<UploadState>;
    async fn commit(&self, session: &str, req: &CommitRequest) -> RemoteResult<Node>;
    /// Ends a session that will not be committed (see `upload::ahead`).
    async fn end_upload(&self, session: &str) -> RemoteResult<()>;
    async fn xattr_names(&self, ino: i64) -> RemoteResult<Vec<String>>;
    async fn xattr(&self, ino: i64, name: &str) -> RemoteResult<Bytes>;
    /// Sets an extended attribute; the node comes back with its new ctime.
    async fn set_xattr(
        &self,
        ino: i64,
        name: &str,
        value: &[u8],
        mode: XattrMode,
    ) -> RemoteResult<Node>;
    async fn remove_xattr(&self, ino: i64, name: &str) -> RemoteResult<Node>;
    /// Applies journaled changes in one server transaction; each operation
    /// answers on its own.
    async fn batch(&self, req: &BatchRequest) -> RemoteResult<BatchResponse>;
    /// Inode numbers the server keeps for this client's new nodes.
    async fn reserve_inos(&self, count: i64) -> RemoteResult<Reserved>;
}
