//! Accounts: signup, signin, signout, user info and the user's tokens.

use std::sync::Arc;

use http::StatusCode;
use panproto::wire::{Credentials, SigninResponse, TokenInfo, UserInfo};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{Credential, credential, empty_reply, json_body, json_reply, with_app};
use crate::app::{App, NS, now_ns};
use crate::auth::{
    hash_password, lockout_secs, new_token, validate_password, validate_username, verify_password,
};
use crate::error::{ApiError, ApiResult};
use crate::meta::{MetaError, UserRow};

pub fn user_info(user: &UserRow) -> UserInfo {
    UserInfo {
        id: user.id,
        username: user.username.clone(),
        created_at: user.signup_at,
        root_ino: user.root_ino,
        used_bytes: user.used_bytes,
        used_files: user.used_files,
        quota_bytes: user.quota_bytes,
        quota_files: user.quota_files,
    }
}

impl App {
    /// Creates an account (used by signup and by `panserver user add`).
    pub async fn add_user(&self, username: &str, password: &str) -> ApiResult<UserRow> {
        validate_username(username)?;
        validate_password(password)?;
        let password = password.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        let quota = (
            self.limits.default_quota_bytes,
            self.limits.default_quota_files,
        );
        match self
            .meta
            .create_user(username, &hash, quota, now_ns())
            .await
        {
            Err(MetaError::Exists) => Err(ApiError::Exists),
            other => Ok(other?),
        }
    }

    pub async fn signin(&self, creds: &Credentials) -> ApiResult<SigninResponse> {
        let now = now_ns();
        let user = self.meta.user_by_name(&creds.username).await?;
        let Some(user) = user else {
            // Same cost as a real check, so timing does not reveal which names exist.
            let password = creds.password.clone();
            let _ = tokio::task::spawn_blocking(move || hash_password(&password)).await;
            return Err(ApiError::BadCredentials);
        };
        if user.locked_until > now {
            return Err(ApiError::Throttled((user.locked_until - now) / NS + 1));
        }
        let (password, stored) = (creds.password.clone(), user.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &stored))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !ok {
            let failures = user.failed_logins + 1;
            let locked_until = now + lockout_secs(failures) * NS;
            self.meta
                .record_login_failure(user.id, failures, locked_until)
                .await?;
            tracing::info!(
                user = user.username,
                failures,
                "sign-in refused: wrong password"
            );
            return Err(ApiError::BadCredentials);
        }
        if user.failed_logins > 0 {
            self.meta.record_login_failure(user.id, 0, 0).await?;
        }
        let (token, hash) = new_token();
        let expires_at = now + self.limits.token_ttl_secs * NS;
        let token_id = self
            .meta
            .insert_token(user.id, &hash, now, expires_at)
            .await?;
        Ok(SigninResponse {
            token,
            token_id,
            expires_at,
        })
    }

    async fn tokens(&self, auth: Credential) -> ApiResult<Vec<TokenInfo>> {
        let caller = self.authenticate(&auth).await?;
        let mut tokens = self.meta.list_tokens(caller.user, now_ns()).await?;
        for t in &mut tokens {
            t.current = t.id == caller.token_id;
        }
        Ok(tokens)
    }
}

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
                Err(ApiError::SignupDisabled)
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
        .and(with_app(app.clone()))
        .and(credential())
        .then(|app: Arc<App>, auth: Credential| async move {
            empty_reply(
                async {
                    let caller = app.authenticate(&auth).await?;
                    Ok(app.meta.delete_token(caller.user, caller.token_id).await?)
                }
                .await,
            )
        });
    let info = warp::path!("user")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(credential())
        .then(|app: Arc<App>, auth: Credential| async move {
            let result = async {
                let caller = app.authenticate(&auth).await?;
                Ok(user_info(&app.meta.user_by_id(caller.user).await?))
            }
            .await;
            json_reply(result, StatusCode::OK)
        });
    let tokens = warp::path!("tokens")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(credential())
        .then(|app: Arc<App>, auth: Credential| async move {
            json_reply(app.tokens(auth).await, StatusCode::OK)
        });
    let revoke = warp::path!("tokens" / i64)
        .and(warp::delete())
        .and(with_app(app))
        .and(credential())
        .then(|id: i64, app: Arc<App>, auth: Credential| async move {
            empty_reply(
                async {
                    let caller = app.authenticate(&auth).await?;
                    Ok(app.meta.delete_token(caller.user, id).await?)
                }
                .await,
            )
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
