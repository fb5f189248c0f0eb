//! Passwords (Argon2id) and bearer tokens (random, stored only as a SHA-256).

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use rand::RngCore;

use crate::service::{ServiceError, ServiceResult};

pub fn hash_password(password: &str) -> ServiceResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(e.to_string()))
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new token (what the client keeps) and its hash (what the server keeps).
pub fn new_token() -> (String, String) {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> String {
    panproto::sha256_hex(token.as_bytes())
}

pub fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

pub fn validate_username(name: &str) -> ServiceResult<()> {
    let ok = (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::BadRequest(
            "a username is 3 to 64 characters of letters, digits, '_', '.' and '-'".into(),
        ))
    }
}

pub fn validate_password(password: &str) -> ServiceResult<()> {
    if password.len() < 8 || password.len() > 1024 {
        return Err(ServiceError::BadRequest(
            "a password is 8 to 1024 bytes".into(),
        ));
    }
    Ok(())
}

/// How long sign-in stays refused after `failures` wrong passwords in a row.
pub fn lockout_secs(failures: i64) -> i64 {
    const FREE_TRIES: i64 = 5;
    if failures < FREE_TRIES {
        0
    } else {
        (1i64 << (failures - FREE_TRIES).min(8)).min(300)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(ha, token_hash(&a));
        assert_ne!(ha, a);
    }

    #[test]
    fn lockout_grows() {
        assert_eq!(lockout_secs(4), 0);
        assert!(lockout_secs(5) > 0);
        assert!(lockout_secs(9) > lockout_secs(6));
        assert_eq!(lockout_secs(100), 256);
    }
}
