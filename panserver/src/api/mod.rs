//! The HTTP API under `/api/v1`, one file per resource. Every handler answers
//! JSON or bytes; every error is `{"code", "message"}` with its status.

mod auth;
mod batch;
mod changes;
mod download;
mod error;
mod files;
mod nodes;
mod pango;
mod server;
mod tls;
mod uploads;
mod user;
mod web;
mod xattrs;

use std::convert::Infallible;
use std::sync::Arc;

use http::StatusCode;
use panproto::wire::{ErrorBody, ErrorCode};
use serde::Serialize;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

pub use crate::service::Caller;
pub use auth::{Credential, TOKEN_COOKIE, credential, csrf_for, signed_in};
pub use panproto::{RangeRequest, parse_range};
pub use server::serve;
pub use tls::load as load_tls;

use crate::service::App;
use crate::service::{ServiceError, ServiceResult};

/// Largest JSON body accepted (a chunk list for about 1 TiB).
const JSON_LIMIT: u64 = 64 << 20;

pub fn error_reply(err: &ServiceError) -> Response {
    match err {
        ServiceError::Internal(detail) => tracing::error!(detail, "internal error"),
        ServiceError::Corrupt | ServiceError::Unavailable(_) => {
            tracing::warn!(error = %err, "request failed")
        }
        _ => tracing::debug!(error = %err, "request refused"),
    }
    let body = ErrorBody {
        code: err.code(),
        message: err.to_string(),
        seq: match err {
            ServiceError::CursorExpired(current) => Some(*current),
            _ => None,
        },
    };
    let mut resp = warp::reply::with_status(warp::reply::json(&body), err.status()).into_response();
    if let ServiceError::Throttled(secs) = err
        && let Ok(v) = http::HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    if let ServiceError::RangeNotSatisfiable(size) = err
        && let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{size}"))
    {
        resp.headers_mut().insert(http::header::CONTENT_RANGE, v);
    }
    resp
}

/// Turns a handler's result into a response: JSON with `status`, or the error.
pub fn json_reply<T: Serialize>(result: ServiceResult<T>, status: StatusCode) -> Response {
    match result {
        Ok(value) => warp::reply::with_status(warp::reply::json(&value), status).into_response(),
        Err(e) => error_reply(&e),
    }
}

pub fn empty_reply(result: ServiceResult<()>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error_reply(&e),
    }
}

pub fn with_app(app: Arc<App>) -> impl Filter<Extract = (Arc<App>,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// A JSON body that failed to parse.
#[derive(Debug)]
struct BadJson(String);

impl warp::reject::Reject for BadJson {}

/// A JSON request body, whatever its Content-Type says (curl's `-d` sends a form type).
pub fn json_body<T: serde::de::DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    json_body_within(JSON_LIMIT)
}

/// A JSON request body of at most `limit` bytes (413 beyond).
pub fn json_body_within<T: serde::de::DeserializeOwned + Send>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(limit)
        .and(warp::body::bytes())
        .and_then(|body: bytes::Bytes| async move {
            serde_json::from_slice(&body).map_err(|e| warp::reject::custom(BadJson(e.to_string())))
        })
}

/// Decodes one percent-encoded path segment into a name.
pub fn decode_segment(segment: &str) -> ServiceResult<String> {
    Ok(panproto::decode_name(segment)?)
}

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let api = warp::path("api").and(warp::path("v1")).and(
        user::routes(app.clone())
            .or(nodes::routes(app.clone()))
            .unify()
            .or(uploads::routes(app.clone()))
            .unify()
            .or(files::routes(app.clone()))
            .unify()
            .or(xattrs::routes(app.clone()))
            .unify()
            .or(changes::routes(app.clone()))
            .unify()
            .or(batch::routes(app.clone()))
            .unify(),
    );
    web::routes(app.clone())
        .or(api)
        .unify()
        .or(pango::routes(app))
        .unify()
        .recover(recover)
        .unify()
}

/// Rejections (no route, wrong method, bad JSON, body too large) as JSON errors.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    if let Some(auth::Refused(e)) = rejection.find::<auth::Refused>() {
        return Ok(error_reply(e));
    }
    let err = if rejection.is_not_found() {
        ServiceError::NotFound
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ServiceError::TooLarge
    } else if let Some(BadJson(e)) = rejection.find::<BadJson>() {
        ServiceError::BadRequest(format!("invalid JSON: {e}"))
    } else if rejection.find::<pango::FormTooLarge>().is_some() {
        ServiceError::TooLarge
    } else if rejection.find::<web::CrossOrigin>().is_some() {
        ServiceError::NotPermitted("cross-origin request refused")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(error_reply_with(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "method not allowed",
        ));
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        return Ok(error_reply_with(
            StatusCode::LENGTH_REQUIRED,
            ErrorCode::LengthRequired,
            "Content-Length required",
        ));
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ServiceError::BadRequest(e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ServiceError::BadRequest(e.to_string())
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ServiceError::BadRequest("unsupported media type".into())
    } else {
        ServiceError::BadRequest(format!("{rejection:?}"))
    };
    Ok(error_reply(&err))
}

fn error_reply_with(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = ErrorBody {
        code,
        message: message.into(),
        seq: None,
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}
