//! Accounts: signup, sign-in with lockout, tokens, and who a token stands for.

use panproto::wire::{Credentials, SigninResponse, TokenInfo, UserInfo};

use super::{App, NS, ServiceError, ServiceResult, now_ns};
use crate::auth::{
    hash_password, lockout_secs, new_token, token_hash, validate_password, validate_username,
    verify_password,
};
use crate::meta::{Actor, MetaError, UserRow};

/// The user a request acts for, from its bearer token or the web page's cookie.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user: i64,
    pub token_id: i64,
    /// The client that sent the request, if it named itself (`x-pan-origin`).
    pub origin: Option<u64>,
}

impl Caller {
    /// The caller as the author of a change.
    pub fn actor(&self) -> Actor {
        Actor {
            user: self.user,
            origin: self.origin,
        }
    }
}

fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

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
    pub async fn add_user(&self, username: &str, password: &str) -> ServiceResult<UserRow> {
        validate_username(username)?;
        validate_password(password)?;
        let password = password.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let quota = (
            self.limits.default_quota_bytes,
            self.limits.default_quota_files,
        );
        match self
            .meta
            .create_user(username, &hash, quota, now_ns())
            .await
        {
            Err(MetaError::Exists) => Err(ServiceError::Exists),
            other => Ok(other?),
        }
    }

    pub async fn signin(&self, creds: &Credentials) -> ServiceResult<SigninResponse> {
        let now = now_ns();
        let user = self.meta.user_by_name(&creds.username).await?;
        let Some(user) = user else {
            // Same cost as a real check, so timing does not reveal which names exist.
            let password = creds.password.clone();
            let _ = tokio::task::spawn_blocking(move || hash_password(&password)).await;
            return Err(ServiceError::BadCredentials);
        };
        if user.locked_until > now {
            return Err(ServiceError::Throttled((user.locked_until - now) / NS + 1));
        }
        let (password, stored) = (creds.password.clone(), user.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &stored))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
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
            return Err(ServiceError::BadCredentials);
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

    pub async fn tokens(&self, c: Caller) -> ServiceResult<Vec<TokenInfo>> {
        let mut tokens = self.meta.list_tokens(c.user, now_ns()).await?;
        for t in &mut tokens {
            t.current = t.id == c.token_id;
        }
        Ok(tokens)
    }

    /// Deletes one of the user's tokens (sign-out, or revoking another).
    pub async fn delete_token(&self, user: i64, token_id: i64) -> ServiceResult<()> {
        self.meta.delete_token(user, token_id).await?;
        self.tokens.remove(user, token_id);
        Ok(())
    }

    /// The caller a raw token stands for.
    pub async fn authenticate_token(&self, token: &str) -> ServiceResult<Caller> {
        if !well_formed(token) {
            return Err(ServiceError::Unauthorized);
        }
        let hash = token_hash(token);
        let (user, token_id) = match self.tokens.get(&hash) {
            Some(known) => known,
            None => {
                let (user, id) = self
                    .meta
                    .token_owner(&hash, now_ns())
                    .await?
                    .ok_or(ServiceError::Unauthorized)?;
                self.tokens.insert(hash, user, id);
                (user, id)
            }
        };
        Ok(Caller {
            user,
            token_id,
            origin: None,
        })
    }
}
