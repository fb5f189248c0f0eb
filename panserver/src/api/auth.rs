//! Who a request acts for: a bearer token, or the web page's cookie with its
//! CSRF header. Routes that need a signed-in user take `signed_in`, which
//! authenticates once and yields the caller; a refusal answers 401 or 403.

use std::sync::Arc;

use panproto::wire::ORIGIN_HEADER;
use warp::{Filter, Rejection};

use super::with_app;
use crate::auth::token_hash;
use crate::service::{App, Caller};
use crate::service::{ServiceError, ServiceResult};

/// What a request presents to prove who it is.
#[derive(Debug, Clone, Default)]
pub struct Credential {
    bearer: Option<String>,
    cookie: Option<String>,
    csrf: Option<String>,
    safe_method: bool,
    origin: Option<u64>,
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
        .and(warp::header::optional::<String>(ORIGIN_HEADER))
        .map(
            |method: http::Method, bearer, cookie, csrf, origin: Option<String>| Credential {
                bearer,
                cookie,
                csrf,
                safe_method: method == http::Method::GET || method == http::Method::HEAD,
                // Only a label for the change feed: a malformed one is no origin.
                origin: origin.and_then(|o| o.trim().parse().ok()),
            },
        )
}

pub async fn authenticate(app: &App, cred: &Credential) -> ServiceResult<Caller> {
    let token = match (&cred.bearer, &cred.cookie) {
        (Some(header), _) => header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or(ServiceError::Unauthorized)?,
        (None, Some(cookie)) => {
            let cookie = cookie.trim();
            if !cred.safe_method
                && cred.csrf.as_deref().map(str::trim) != Some(csrf_for(cookie).as_str())
            {
                return Err(ServiceError::NotPermitted("missing or wrong CSRF token"));
            }
            cookie
        }
        (None, None) => return Err(ServiceError::Unauthorized),
    };
    let caller = app.authenticate_token(token).await?;
    Ok(Caller {
        origin: cred.origin,
        ..caller
    })
}

/// A request whose credentials did not hold; `recover` answers it.
#[derive(Debug)]
pub struct Refused(pub ServiceError);

impl warp::reject::Reject for Refused {}

/// The app and the signed-in caller, for every route that needs one.
pub fn signed_in(
    app: Arc<App>,
) -> impl Filter<Extract = (Arc<App>, Caller), Error = Rejection> + Clone {
    with_app(app)
        .and(credential())
        .and_then(|app: Arc<App>, cred: Credential| async move {
            match authenticate(&app, &cred).await {
                Ok(caller) => Ok((app, caller)),
                Err(e) => Err(warp::reject::custom(Refused(e))),
            }
        })
        .untuple_one()
}
