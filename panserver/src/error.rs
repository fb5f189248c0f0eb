//! The errors the API answers with: a stable code, a message and an HTTP status.

use http::StatusCode;
use panproto::wire::{ErrorCode, NodeKind};
use panproto::{NameError, XattrNameError};

use crate::meta::MetaError;
use crate::queue::QueueError;
use crate::session::SessionError;
use crate::staging::StagingError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
}

impl ApiError {
    /// The refusal of a content operation (read, write, truncate) on a node that is
    /// not a regular file.
    pub fn not_a_file(kind: NodeKind) -> Self {
        if kind == NodeKind::Dir {
            ApiError::IsDir
        } else {
            ApiError::NotRegularFile
        }
    }

    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            BadRequest(_) | BadName(_) | BadXattrName(_) | HashMismatch | BadProof => {
                StatusCode::BAD_REQUEST
            }
            Unauthorized | BadCredentials => StatusCode::UNAUTHORIZED,
            SignupDisabled | NotPermitted(_) => StatusCode::FORBIDDEN,
            Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            NotFound | NoAttribute => StatusCode::NOT_FOUND,
            Exists | NotEmpty | NotDir | IsDir | NotRegularFile | Conflict | Incomplete(_) => {
                StatusCode::CONFLICT
            }
            TooLarge | XattrFull => StatusCode::PAYLOAD_TOO_LARGE,
            Quota | NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Changed => StatusCode::PRECONDITION_FAILED,
            Corrupt | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable code; clients map these to errno.
    pub fn code(&self) -> ErrorCode {
        use ApiError::*;
        use ErrorCode as C;
        match self {
            BadRequest(_) => C::BadRequest,
            Unauthorized => C::Unauthorized,
            BadCredentials => C::BadCredentials,
            SignupDisabled => C::SignupDisabled,
            Throttled(_) => C::Throttled,
            NotFound => C::NotFound,
            Exists => C::Exists,
            NotEmpty => C::NotEmpty,
            NotDir => C::NotDir,
            IsDir => C::IsDir,
            NotPermitted(_) => C::NotPermitted,
            BadName(NameError::TooLong) => C::NameTooLong,
            BadName(_) => C::BadName,
            HashMismatch => C::HashMismatch,
            TooLarge => C::TooLarge,
            Conflict => C::Conflict,
            Changed => C::Changed,
            Incomplete(_) => C::Incomplete,
            BadProof => C::BadProof,
            Quota => C::QuotaExceeded,
            NotRegularFile => C::NotRegularFile,
            NoAttribute => C::NoAttribute,
            BadXattrName(XattrNameError::Unsupported) => C::XattrNotSupported,
            BadXattrName(_) => C::BadXattrName,
            XattrFull => C::XattrFull,
            NoSpace => C::NoSpace,
            RangeNotSatisfiable(_) => C::RangeNotSatisfiable,
            Corrupt => C::Corrupt,
            Unavailable(_) => C::Unavailable,
            Internal(_) => C::Internal,
        }
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotFound => ApiError::NotFound,
            MetaError::Exists => ApiError::Exists,
            MetaError::NotEmpty => ApiError::NotEmpty,
            MetaError::NotDir => ApiError::NotDir,
            MetaError::IsDir => ApiError::IsDir,
            MetaError::NotRegularFile => ApiError::NotRegularFile,
            MetaError::Invalid(m) => ApiError::BadRequest(m.to_string()),
            MetaError::NotPermitted(m) => ApiError::NotPermitted(m),
            MetaError::Conflict => ApiError::Conflict,
            MetaError::Quota => ApiError::Quota,
            MetaError::NoAttribute => ApiError::NoAttribute,
            MetaError::XattrFull => ApiError::XattrFull,
            MetaError::Unavailable(m) => ApiError::Unavailable(m),
            MetaError::Db(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::BadName(e)
    }
}

impl From<XattrNameError> for ApiError {
    fn from(e: XattrNameError) -> Self {
        ApiError::BadXattrName(e)
    }
}

impl From<panproto::PathError> for ApiError {
    fn from(e: panproto::PathError) -> Self {
        match e {
            panproto::PathError::Name(name) => ApiError::BadName(name),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<StagingError> for ApiError {
    fn from(e: StagingError) -> Self {
        match e {
            StagingError::HashMismatch => ApiError::HashMismatch,
            StagingError::TooLarge => ApiError::TooLarge,
            StagingError::NoSpace => ApiError::NoSpace,
            StagingError::Io(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Unavailable(m) => ApiError::Unavailable(m),
            SessionError::Corrupt(m) => ApiError::Internal(m),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        StagingError::from(e).into()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
