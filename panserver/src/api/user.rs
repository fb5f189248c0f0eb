//! Accounts: signup, signin, signout, user info and the user's tokens.

use std::sync::Arc;

use http::StatusCode;
use panproto::wire::Credentials;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{Caller, empty_reply, json_body, json_reply, signed_in, with_app};
use crate::service::ServiceError;
use crate::service::{App, user_info};

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let signup = warp::path!("signup")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(json_body())
        .then(|app: Arc<App>, creds: Credentials| async move {
            let result = if app.limits.signup {
                app.add_user(&creds.username, &creds.password)
                    .await
                    .map(|u| user_info(&u))
            } else {
                Err(ServiceError::SignupDisabled)
            };
            json_reply(result, StatusCode::CREATED)
        });
    let signin = warp::path!("signin")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(json_body())
        .then(|app: Arc<App>, creds: Credentials| async move {
            json_reply(app.signin(&creds).await, StatusCode::OK)
        });
    let signout = warp::path!("signout")
        .and(warp::post())
        .and(signed_in(app.clone()))
        .then(|app: Arc<App>, c: Caller| async move {
            empty_reply(async { app.delete_token(c.user, c.token_id).await }.await)
        });
    let info = warp::path!("user")
        .and(warp::get())
        .and(signed_in(app.clone()))
        .then(|app: Arc<App>, c: Caller| async move {
            let result = async { Ok(user_info(&app.meta.user_by_id(c.user).await?)) }.await;
            json_reply(result, StatusCode::OK)
        });
    let tokens =
        warp::path!("tokens")
            .and(warp::get())
            .and(signed_in(app.clone()))
            .then(|app: Arc<App>, c: Caller| async move {
                json_reply(app.tokens(c).await, StatusCode::OK)
            });
    let revoke = warp::path!("tokens" / i64)
        .and(warp::delete())
        .and(signed_in(app))
        .then(|id: i64, app: Arc<App>, c: Caller| async move {
            empty_reply(async { app.delete_token(c.user, id).await }.await)
        });
    signup
        .or(signin)
        .unify()
        .or(signout)
        .unify()
        .or(info)
        .unify()
        .or(tokens)
        .unify()
        .or(revoke)
        .unify()
}
