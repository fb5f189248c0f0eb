//! The HTTP API under `/api/v1`, one file per resource. Every handler answers
//! JSON or bytes; every error is `{"code", "message"}` with its status.

mod download;
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

pub use panproto::{RangeRequest, parse_range};
pub use server::serve;
pub use tls::load as load_tls;

use crate::app::{App, now_ns};
use crate::auth::token_hash;
use crate::error::{ApiError, ApiResult};

/// Largest JSON body accepted (a chunk list for about 1 TiB).
const JSON_LIMIT: u64 = 64 << 20;

/// The user a request acts for, from its bearer token or the web page's cookie.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user: i64,
    pub token_id: i64,
}

/// What a request presents to prove who it is.
#[derive(Debug, Clone, Default)]
pub struct Credential {
    bearer: Option<String>,
    cookie: Option<String>,
    csrf: Option<String>,
    safe_method: bool,
}

/// The cookie the web page signs in with: HttpOnly, so scripts never see the token.
pub const TOKEN_COOKIE: &str = "pan_token";
/// The header a page must echo on state-changing requests made with the cookie.
pub const CSRF_HEADER: &str = "x-pan-csrf";

/// The CSRF value bound to a token: a cross-site page cannot read or forge it.
pub fn csrf_for(token: &str) -> String {
    token_hash(&format!("csrf:{token}"))
}

pub fn credential() -> impl Filter<Extract = (Credential,), Error = Rejection> + Clone {
    warp::method()
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::cookie::optional::<String>(TOKEN_COOKIE))
        .and(warp::header::optional::<String>(CSRF_HEADER))
        .map(|method: http::Method, bearer, cookie, csrf| Credential {
            bearer,
            cookie,
            csrf,
            safe_method: method == http::Method::GET || method == http::Method::HEAD,
        })
}

fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

impl App {
    pub async fn authenticate(&self, cred: &Credential) -> ApiResult<Caller> {
        let token = match (&cred.bearer, &cred.cookie) {
            (Some(header), _) => header
                .strip_prefix("Bearer ")
                .map(str::trim)
                .ok_or(ApiError::Unauthorized)?,
            (None, Some(cookie)) => {
                let cookie = cookie.trim();
                if !cred.safe_method
                    && cred.csrf.as_deref().map(str::trim) != Some(csrf_for(cookie).as_str())
                {
                    return Err(ApiError::NotPermitted("missing or wrong CSRF token"));
                }
                cookie
            }
            (None, None) => return Err(ApiError::Unauthorized),
        };
        self.authenticate_token(token).await
    }

    /// The caller a raw token stands for.
    pub async fn authenticate_token(&self, token: &str) -> ApiResult<Caller> {
        if !well_formed(token) {
            return Err(ApiError::Unauthorized);
        }
        let (user, token_id) = self
            .meta
            .token_owner(&token_hash(token), now_ns())
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller { user, token_id })
    }
}

pub fn error_reply(err: &ApiError) -> Response {
    match err {
        ApiError::Internal(detail) => tracing::error!(detail, "internal error"),
        ApiError::Corrupt | ApiError::Unavailable(_) => {
            tracing::warn!(error = %err, "request failed")
        }
        _ => tracing::debug!(error = %err, "request refused"),
    }
    let body = ErrorBody {
        code: err.code(),
        message: err.to_string(),
    };
    let mut resp = warp::reply::with_status(warp::reply::json(&body), err.status()).into_response();
    if let ApiError::Throttled(secs) = err
        && let Ok(v) = http::HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    if let ApiError::RangeNotSatisfiable(size) = err
        && let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{size}"))
    {
        resp.headers_mut().insert(http::header::CONTENT_RANGE, v);
    }
    resp
}

/// Turns a handler's result into a response: JSON with `status`, or the error.
pub fn json_reply<T: Serialize>(result: ApiResult<T>, status: StatusCode) -> Response {
    match result {
        Ok(value) => warp::reply::with_status(warp::reply::json(&value), status).into_response(),
        Err(e) => error_reply(&e),
    }
}

pub fn empty_reply(result: ApiResult<()>) -> Response {
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
    warp::body::content_length_limit(JSON_LIMIT)
        .and(warp::body::bytes())
        .and_then(|body: bytes::Bytes| async move {
            serde_json::from_slice(&body).map_err(|e| warp::reject::custom(BadJson(e.to_string())))
        })
}

/// Decodes one percent-encoded path segment into a name.
pub fn decode_segment(segment: &str) -> ApiResult<String> {
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
    let err = if rejection.is_not_found() {
        ApiError::NotFound
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::TooLarge
    } else if let Some(BadJson(e)) = rejection.find::<BadJson>() {
        ApiError::BadRequest(format!("invalid JSON: {e}"))
    } else if rejection.find::<pango::FormTooLarge>().is_some() {
        ApiError::TooLarge
    } else if rejection.find::<web::CrossOrigin>().is_some() {
        ApiError::NotPermitted("cross-origin request refused")
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
        ApiError::BadRequest(e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::BadRequest(e.to_string())
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::BadRequest("unsupported media type".into())
    } else {
        ApiError::BadRequest(format!("{rejection:?}"))
    };
    Ok(error_reply(&err))
}

fn error_reply_with(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = ErrorBody {
        code,
        message: message.into(),
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}
