//! The web page: its static files, and the cookie session it signs in with.
//! The token lives in an HttpOnly, SameSite=Strict cookie that scripts cannot read;
//! requests that change state must also carry the CSRF value bound to that token.

use std::sync::Arc;

use http::{HeaderValue, StatusCode, header};
use panproto::wire::{Credentials, UserInfo};
use serde::Serialize;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{
    Caller, TOKEN_COOKIE, csrf_for, empty_reply, error_reply, json_body, signed_in, with_app,
};
use crate::service::user_info;
use crate::service::{App, NS};
use crate::service::{ServiceError, ServiceResult};

/// Scripts, styles, workers and fetches from this origin only; no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; \
                   img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
                   frame-ancestors 'none'";

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("web/app.js"),
    ),
    (
        "hash-worker.js",
        "text/javascript; charset=utf-8",
        include_str!("web/hash-worker.js"),
    ),
    (
        "hashes.js",
        "text/javascript; charset=utf-8",
        include_str!("web/hashes.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("web/app.css"),
    ),
];

/// The API's OpenAPI document, kept beside the crate and served as it is.
const OPENAPI: &str = include_str!("../../openapi.yaml");

fn asset(name: &str) -> Response {
    let Some((_, mime, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return error_reply(&ServiceError::NotFound);
    };
    let mut resp = Response::new((*body).into());
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[derive(Serialize)]
struct WebSession {
    user: UserInfo,
    /// Echo in the `X-Pan-CSRF` header on every request that changes state.
    csrf: String,
}

#[derive(Serialize)]
struct WebConfig {
    signup: bool,
}

fn cookie(value: &str, max_age_secs: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{TOKEN_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}"
    ))
    .ok()
}

async fn web_signin(app: &App, creds: &Credentials) -> ServiceResult<Response> {
    let signed = app.signin(creds).await?;
    let caller = app.authenticate_token(&signed.token).await?;
    let session = WebSession {
        user: user_info(&app.meta.user_by_id(caller.user).await?),
        csrf: csrf_for(&signed.token),
    };
    let mut resp = warp::reply::json(&session).into_response();
    let max_age = (signed.expires_at - crate::service::now_ns()) / NS;
    if let Some(c) = cookie(&signed.token, max_age, app.limits.secure_cookies) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// The page's session after a reload: only a same-origin script can read this.
async fn web_session(app: &App, token: Option<String>) -> ServiceResult<WebSession> {
    let token = token.ok_or(ServiceError::Unauthorized)?;
    let caller = app.authenticate_token(&token).await?;
    Ok(WebSession {
        user: user_info(&app.meta.user_by_id(caller.user).await?),
        csrf: csrf_for(&token),
    })
}

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let index = warp::path::end()
        .and(warp::get())
        .map(|| asset("index.html"));
    let static_file = warp::path::param::<String>()
        .and(warp::path::end())
        .and(warp::get())
        .and_then(|name: String| async move {
            if ASSETS
                .iter()
                .any(|(n, _, _)| *n == name && name != "index.html")
            {
                Ok(asset(&name))
            } else {
                Err(warp::reject::not_found())
            }
        });
    let openapi = warp::path!("api" / "v1" / "openapi.yaml")
        .and(warp::get())
        .map(|| {
            let mut resp = Response::new(OPENAPI.into());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            resp
        });
    let web = warp::path("api")
        .and(warp::path("v1"))
        .and(warp::path("web"));
    let config = web
        .and(warp::path!("config"))
        .and(warp::get())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| {
            warp::reply::json(&WebConfig {
                signup: app.limits.signup,
            })
            .into_response()
        });
    let signin = web
        .and(warp::path!("signin"))
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(same_origin())
        .and(json_body())
        .then(|app: Arc<App>, creds: Credentials| async move {
            web_signin(&app, &creds)
                .await
                .unwrap_or_else(|e| error_reply(&e))
        });
    let session = web
        .and(warp::path!("session"))
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(warp::cookie::optional::<String>(TOKEN_COOKIE))
        .then(|app: Arc<App>, token: Option<String>| async move {
            match web_session(&app, token).await {
                Ok(s) => warp::reply::json(&s).into_response(),
                Err(e) => error_reply(&e),
            }
        });
    let signout = web
        .and(warp::path!("signout"))
        .and(warp::post())
        .and(signed_in(app.clone()))
        .then(|app: Arc<App>, c: Caller| async move {
            let result = async { app.delete_token(c.user, c.token_id).await }.await;
            let mut resp = empty_reply(result);
            if resp.status() == StatusCode::NO_CONTENT
                && let Some(c) = cookie("", 0, app.limits.secure_cookies)
            {
                resp.headers_mut().insert(header::SET_COOKIE, c);
            }
            resp
        });
    index
        .or(static_file)
        .unify()
        .or(openapi)
        .unify()
        .or(config)
        .unify()
        .or(signin)
        .unify()
        .or(session)
        .unify()
        .or(signout)
        .unify()
}

/// Refuses a request whose `Origin` names another site (a cross-site form
/// signing the victim in to the attacker's account).
fn same_origin() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("origin")
        .and(warp::header::optional::<String>("host"))
        .and_then(|origin: Option<String>, host: Option<String>| async move {
            let ok = match (origin, host) {
                (None, _) => true,
                (Some(origin), Some(host)) => origin
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host),
                (Some(_), None) => false,
            };
            if ok {
                Ok(())
            } else {
                Err(warp::reject::custom(CrossOrigin))
            }
        })
        .untuple_one()
}

#[derive(Debug)]
pub struct CrossOrigin;

impl warp::reject::Reject for CrossOrigin {}
