//! pan.go's HTTP interface (`/user/*`, `/file/*`) on the same core as the native
//! API. Parameters come as pan.go sent them (query string or urlencoded form, with
//! `username` and `token`), and answers use its envelope `{"code", "msg", "data"}`:
//! code 0 is success, -1 a failed operation, -2 an invalid token (HTTP 403, as
//! pan.go's interceptor answered). Where pan.go was unsafe, pan refuses: see the README.

mod handlers;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use http::StatusCode;
use serde::Serialize;
use serde_json::json;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::nodes::body_stream;
use super::{Caller, with_app};
use crate::meta::UserRow;
use crate::service::App;
use crate::service::uploads::BodyStream;
use crate::service::{ServiceError, ServiceResult};

/// Largest urlencoded form read into memory.
const FORM_LIMIT: usize = 64 * 1024;

/// A request's parameters: the query string, then an urlencoded body over it.
#[derive(Debug, Default, Clone)]
pub struct Params(HashMap<String, String>);

impl Params {
    fn merge(&mut self, encoded: &[u8]) {
        self.0.extend(form_urlencoded::parse(encoded).into_owned());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, key: &str) -> ServiceResult<&str> {
        self.get(key)
            .ok_or_else(|| ServiceError::BadRequest(format!("missing parameter {key}")))
    }

    pub fn number(&self, key: &str) -> ServiceResult<u64> {
        self.require(key)?
            .parse()
            .map_err(|_| ServiceError::BadRequest(format!("parameter {key} must be a number")))
    }

    /// pan.go's `filehash`: a file's SHA-1 in hex.
    pub fn sha1(&self) -> ServiceResult<String> {
        let hash = self.require("filehash")?.to_ascii_lowercase();
        if hash.len() != 40 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ServiceError::BadRequest(
                "filehash must be a SHA-1 in hex".into(),
            ));
        }
        Ok(hash)
    }
}

fn query() -> impl Filter<Extract = (Params,), Error = Rejection> + Clone {
    warp::query::raw()
        .or_else(|_| async { Ok::<_, Rejection>((String::new(),)) })
        .map(|q: String| {
            let mut params = Params::default();
            params.merge(q.as_bytes());
            params
        })
}

/// Query and urlencoded body together, as Go's `r.ParseForm()` reads them.
fn form() -> impl Filter<Extract = (Params,), Error = Rejection> + Clone {
    query()
        .and(warp::header::optional::<String>("content-type"))
        .and(body_stream())
        .and_then(
            |mut params: Params, kind: Option<String>, mut body: BodyStream| async move {
                if kind.is_some_and(|k| k.starts_with("application/x-www-form-urlencoded")) {
                    let mut encoded = Vec::new();
                    while let Some(piece) = body.next().await {
                        let piece = piece.map_err(|_| warp::reject::reject())?;
                        if encoded.len() + piece.len() > FORM_LIMIT {
                            return Err(warp::reject::custom(FormTooLarge));
                        }
                        encoded.extend_from_slice(&piece);
                    }
                    params.merge(&encoded);
                }
                Ok::<_, Rejection>(params)
            },
        )
}

#[derive(Debug)]
pub struct FormTooLarge;

impl warp::reject::Reject for FormTooLarge {}

/// The envelope around a result.
pub fn envelope<T: Serialize>(result: ServiceResult<T>, msg: &str) -> Response {
    match result {
        Ok(data) => {
            warp::reply::json(&json!({"code": 0, "msg": msg, "data": data})).into_response()
        }
        Err(e) => failure(&e),
    }
}

pub fn failure(err: &ServiceError) -> Response {
    let (status, code) = match err {
        ServiceError::Unauthorized => (StatusCode::FORBIDDEN, -2),
        other => (other.status(), -1),
    };
    if let ServiceError::Internal(detail) = err {
        tracing::error!(detail, "internal error");
    }
    let body = json!({"code": code, "msg": err.to_string(), "data": {"error": err.code()}});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// pan.go's check: `token` (or a bearer header) must be live, and `username`,
/// when given, must name the token's owner.
pub(super) async fn pango_caller(
    app: &App,
    params: &Params,
    bearer: Option<String>,
) -> ServiceResult<(Caller, UserRow)> {
    let token = match bearer.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
        Some(token) => token.trim().to_string(),
        None => params
            .get("token")
            .ok_or(ServiceError::Unauthorized)?
            .to_string(),
    };
    let caller = app.authenticate_token(&token).await?;
    let user = app.meta.user_by_id(caller.user).await?;
    if params
        .get("username")
        .is_some_and(|name| name != user.username)
    {
        return Err(ServiceError::Unauthorized);
    }
    Ok((caller, user))
}

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    use handlers as h;
    let a = move || with_app(app.clone());
    let bearer = || warp::header::optional::<String>("authorization");
    // pan.go's usual call: the app, the form parameters and an optional bearer header.
    let with_form = || a().and(form()).and(bearer());
    let page = || {
        warp::get().map(|| warp::redirect::see_other(http::Uri::from_static("/")).into_response())
    };

    let signup = warp::path!("user" / "signup").and(
        page()
            .or(warp::post().and(a()).and(form()).then(h::signup))
            .unify(),
    );
    let signin = warp::path!("user" / "signin").and(
        page()
            .or(warp::post().and(a()).and(form()).then(h::signin))
            .unify(),
    );
    let info = warp::path!("user" / "info").and(with_form()).then(h::info);
    let upload = warp::path!("file" / "upload").and(
        page()
            .or(warp::post()
                .and(a())
                .and(query())
                .and(bearer())
                .and(warp::multipart::form().max_length(None))
                .then(h::upload))
            .unify(),
    );
    let meta = warp::path!("file" / "meta").and(with_form()).then(h::meta);
    let list = warp::path!("file" / "query")
        .and(with_form())
        .then(h::query);
    let download = warp::path!("file" / "download")
        .and(with_form())
        .and(warp::header::optional::<String>("range"))
        .then(h::download_file);
    let update = warp::path!("file" / "update")
        .and(warp::post())
        .and(with_form())
        .then(h::update);
    let delete = warp::path!("file" / "delete")
        .and(with_form())
        .then(h::delete);
    let fast = warp::path!("file" / "fastupload")
        .and(with_form())
        .then(h::fastupload);
    let mp_init = warp::path!("file" / "mpupload" / "init")
        .and(with_form())
        .then(h::mp_init);
    let mp_part = warp::path!("file" / "mpupload" / "uppart")
        .and(warp::post().or(warp::put()).unify())
        .and(a())
        .and(query())
        .and(bearer())
        .and(body_stream())
        .then(h::mp_part);
    let mp_done = warp::path!("file" / "mpupload" / "complete")
        .and(with_form())
        .then(h::mp_complete);
    signup
        .or(signin)
        .unify()
        .or(info)
        .unify()
        .or(upload)
        .unify()
        .or(meta)
        .unify()
        .or(list)
        .unify()
        .or(download)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .or(fast)
        .unify()
        .or(mp_init)
        .unify()
        .or(mp_part)
        .unify()
        .or(mp_done)
        .unify()
}
