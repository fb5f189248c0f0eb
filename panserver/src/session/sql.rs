//! Upload sessions kept in the metadata database (`tbl_upload_session`), so they
//! survive a restart of the embedded server.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::{AnyPool, Row};

use super::{SessionError, SessionResult, SessionStore, UploadSession};

pub struct SqlSessions {
    pool: AnyPool,
}

impl SqlSessions {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }
}

fn db_error(e: sqlx::Error) -> SessionError {
    SessionError::Unavailable(e.to_string())
}

#[async_trait]
impl SessionStore for SqlSessions {
    async fn save(&self, session: &UploadSession) -> SessionResult<()> {
        let body =
            serde_json::to_string(session).map_err(|e| SessionError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM tbl_upload_session WHERE id = ?")
            .bind(&session.id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO tbl_upload_session (id, user_id, body, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&session.id)
        .bind(session.user)
        .bind(body)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn load(&self, user: i64, id: &str, now: i64) -> SessionResult<Option<UploadSession>> {
        let row = sqlx::query(
            "SELECT body FROM tbl_upload_session WHERE id = ? AND user_id = ? AND expires_at > ?",
        )
        .bind(id)
        .bind(user)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        match row {
            Some(row) => {
                let body: String = row.try_get(0).map_err(db_error)?;
                serde_json::from_str(&body)
                    .map(Some)
                    .map_err(|e| SessionError::Corrupt(e.to_string()))
            }
            None => Ok(None),
        }
    }

    async fn touch(&self, id: &str, expires_at: i64, now: i64) -> SessionResult<bool> {
        // The body keeps the expiry it was saved with; the column is the one
        // `load` and garbage collection go by.
        let done = sqlx::query(
            "UPDATE tbl_upload_session SET expires_at = ? WHERE id = ? AND expires_at > ?",
        )
        .bind(expires_at)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove(&self, id: &str) -> SessionResult<()> {
        sqlx::query("DELETE FROM tbl_upload_session WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn pinned_chunks(&self, now: i64) -> SessionResult<HashSet<String>> {
        sqlx::query("DELETE FROM tbl_upload_session WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        let rows = sqlx::query("SELECT body FROM tbl_upload_session")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let mut pinned = HashSet::new();
        for row in rows {
            let body: String = row.try_get(0).map_err(db_error)?;
            let session: UploadSession =
                serde_json::from_str(&body).map_err(|e| SessionError::Corrupt(e.to_string()))?;
            pinned.extend(session.chunks.into_iter().filter_map(|c| c.sha256));
        }
        Ok(pinned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::SqlMeta;
    use crate::service::NS;

    #[tokio::test]
    async fn a_touch_keeps_a_live_session_and_finds_a_gone_one_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let meta = SqlMeta::connect(&url, 2).await.expect("connect");
        meta.migrate().await.expect("migrate");
        let sessions = SqlSessions::new(meta.pool());
        let now = 1_000 * NS;
        let session = UploadSession {
            id: "a".repeat(32),
            user: 7,
            ino: 1,
            new_file: None,
            chunks: Vec::new(),
            unproven: Vec::new(),
            challenge: None,
            expires_at: now + 10 * NS,
        };
        sessions.save(&session).await.expect("save");
        assert!(
            sessions
                .touch(&session.id, now + 100 * NS, now)
                .await
                .expect("touch")
        );
        // Past the expiry it was saved with, within the one it was touched to.
        let later = now + 50 * NS;
        let loaded = sessions.load(7, &session.id, later).await.expect("load");
        assert!(loaded.is_some(), "a touched session lives on");
        assert!(
            sessions
                .load(8, &session.id, later)
                .await
                .expect("load")
                .is_none()
        );
        // Expired, or never there: a touch brings nothing back.
        let gone = now + 101 * NS;
        assert!(
            !sessions
                .touch(&session.id, gone + 10 * NS, gone)
                .await
                .expect("touch")
        );
        assert!(
            sessions
                .load(7, &session.id, gone)
                .await
                .expect("load")
                .is_none()
        );
        assert!(
            !sessions
                .touch(&"b".repeat(32), gone, now)
                .await
                .expect("touch")
        );
    }
}
