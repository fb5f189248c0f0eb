//! The domain's errors. `api/` gives each its HTTP status and wire code.

use panproto::wire::NodeKind;
use panproto::{NameError, XattrNameError};

use crate::meta::MetaError;
use crate::queue::QueueError;
use crate::session::SessionError;
use crate::staging::StagingError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing, invalid or expired token")]
    Unauthorized,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("signup is disabled on this server")]
    SignupDisabled,
    #[error("too many failed sign-ins; retry in {0} s")]
    Throttled(i64),
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("{0}")]
    NotPermitted(&'static str),
    #[error("invalid name: {0}")]
    BadName(NameError),
    #[error("the chunk's bytes do not match its SHA-256")]
    HashMismatch,
    #[error("request body too large")]
    TooLarge,
    #[error("the file changed since it was read")]
    Conflict,
    #[error("the file no longer has the requested version")]
    Changed,
    #[error("the upload is incomplete: {0}")]
    Incomplete(String),
    #[error("the proof of possession is wrong")]
    BadProof,
    #[error("quota exceeded")]
    Quota,
    #[error("not a regular file: it has no content")]
    NotRegularFile,
    #[error("no such extended attribute")]
    NoAttribute,
    #[error("invalid attribute name: {0}")]
    BadXattrName(XattrNameError),
    #[error(
        "the node's extended attributes would exceed {} bytes",
        panproto::XATTR_NODE_MAX
    )]
    XattrFull,
    #[error("no space left on the server")]
    NoSpace,
    #[error("range not satisfiable")]
    RangeNotSatisfiable(i64),
    #[error("stored data is corrupt")]
    Corrupt,
    #[error("a backing service is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
    #[error("no such upload session: it expired or its server lost it; open a new one")]
    UploadGone,
    #[error("the change feed no longer holds changes from that cursor; start over at {0}")]
    CursorExpired(i64),
}

impl ServiceError {
    /// The refusal of a content operation (read, write, truncate) on a node that is
    /// not a regular file.
    pub fn not_a_file(kind: NodeKind) -> Self {
        if kind == NodeKind::Dir {
            ServiceError::IsDir
        } else {
            ServiceError::NotRegularFile
        }
    }
}

impl From<MetaError> for ServiceError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotFound => ServiceError::NotFound,
            MetaError::Exists => ServiceError::Exists,
            MetaError::NotEmpty => ServiceError::NotEmpty,
            MetaError::NotDir => ServiceError::NotDir,
            MetaError::IsDir => ServiceError::IsDir,
            MetaError::NotRegularFile => ServiceError::NotRegularFile,
            MetaError::Invalid(m) => ServiceError::BadRequest(m.to_string()),
            MetaError::NotPermitted(m) => ServiceError::NotPermitted(m),
            MetaError::Conflict => ServiceError::Conflict,
            MetaError::Quota => ServiceError::Quota,
            MetaError::NoAttribute => ServiceError::NoAttribute,
            MetaError::XattrFull => ServiceError::XattrFull,
            MetaError::Unavailable(m) => ServiceError::Unavailable(m),
            MetaError::Db(e) => ServiceError::Internal(e.to_string()),
        }
    }
}

impl From<NameError> for ServiceError {
    fn from(e: NameError) -> Self {
        ServiceError::BadName(e)
    }
}

impl From<XattrNameError> for ServiceError {
    fn from(e: XattrNameError) -> Self {
        ServiceError::BadXattrName(e)
    }
}

impl From<panproto::PathError> for ServiceError {
    fn from(e: panproto::PathError) -> Self {
        match e {
            panproto::PathError::Name(name) => ServiceError::BadName(name),
            other => ServiceError::BadRequest(other.to_string()),
        }
    }
}

impl From<StagingError> for ServiceError {
    fn from(e: StagingError) -> Self {
        match e {
            StagingError::HashMismatch => ServiceError::HashMismatch,
            StagingError::TooLarge => ServiceError::TooLarge,
            StagingError::NoSpace => ServiceError::NoSpace,
            StagingError::Io(e) => ServiceError::Internal(e.to_string()),
        }
    }
}

impl From<SessionError> for ServiceError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Unavailable(m) => ServiceError::Unavailable(m),
            SessionError::Corrupt(m) => ServiceError::Internal(m),
        }
    }
}

impl From<QueueError> for ServiceError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Unavailable(m) => ServiceError::Unavailable(m),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Unavailable(e.to_string())
    }
}

impl From<std::io::Error> for ServiceError {
    fn from(e: std::io::Error) -> Self {
        StagingError::from(e).into()
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
