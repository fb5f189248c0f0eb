//! How the API answers a domain error: an HTTP status and a stable code.

use http::StatusCode;
use panproto::wire::ErrorCode;
use panproto::{NameError, XattrNameError};

use crate::service::ServiceError;

impl ServiceError {
    pub fn status(&self) -> StatusCode {
        use ServiceError::*;
        match self {
            BadRequest(_) | BadName(_) | BadXattrName(_) | HashMismatch | BadProof => {
                StatusCode::BAD_REQUEST
            }
            Unauthorized | BadCredentials => StatusCode::UNAUTHORIZED,
            SignupDisabled | NotPermitted(_) => StatusCode::FORBIDDEN,
            Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            NotFound | NoAttribute | UploadGone => StatusCode::NOT_FOUND,
            Exists | NotEmpty | NotDir | IsDir | NotRegularFile | Conflict | Incomplete(_) => {
                StatusCode::CONFLICT
            }
            TooLarge | XattrFull => StatusCode::PAYLOAD_TOO_LARGE,
            Quota | NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Changed => StatusCode::PRECONDITION_FAILED,
            Corrupt | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            CursorExpired(_) => StatusCode::GONE,
        }
    }

    /// The stable, machine-readable code; clients map these to errno.
    pub fn code(&self) -> ErrorCode {
        use ErrorCode as C;
        use ServiceError::*;
        match self {
            BadRequest(_) => C::BadRequest,
            Unauthorized => C::Unauthorized,
            BadCredentials => C::BadCredentials,
            SignupDisabled => C::SignupDisabled,
            Throttled(_) => C::Throttled,
            NotFound => C::NotFound,
            UploadGone => C::UploadGone,
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
            CursorExpired(_) => C::CursorExpired,
        }
    }
}
