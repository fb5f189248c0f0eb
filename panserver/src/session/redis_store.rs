//! Upload sessions in Redis: one key per session (JSON, with a TTL refreshed on
//! every save). Which chunks arrived is not kept here: the chunk table is the one
//! record of that, shared by every server. Any `panserver` of a deployment can
//! continue a session another one began.

use std::collections::HashSet;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{SessionError, SessionResult, SessionStore, UploadSession};

pub struct RedisSessions {
    conn: ConnectionManager,
    prefix: String,
}

fn unavailable(e: redis::RedisError) -> SessionError {
    SessionError::Unavailable(e.to_string())
}

impl RedisSessions {
    /// Connects; `prefix` namespaces the keys (several deployments may share one Redis).
    pub async fn connect(url: &str, prefix: &str) -> SessionResult<Self> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(10)))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }
}

fn ttl_secs(session: &UploadSession) -> u64 {
    let now = crate::service::now_ns();
    ((session.expires_at - now) / crate::service::NS).max(1) as u64
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn save(&self, session: &UploadSession) -> SessionResult<()> {
        let body =
            serde_json::to_string(session).map_err(|e| SessionError::Corrupt(e.to_string()))?;
        let ttl = ttl_secs(session);
        let mut conn = self.conn.clone();
        conn.set_ex::<_, _, ()>(self.key(&session.id), body, ttl)
            .await
            .map_err(unavailable)
    }

    async fn load(&self, user: i64, id: &str, _now: i64) -> SessionResult<Option<UploadSession>> {
        let mut conn = self.conn.clone();
        let body: Option<String> = conn.get(self.key(id)).await.map_err(unavailable)?;
        let Some(body) = body else { return Ok(None) };
        let session: UploadSession =
            serde_json::from_str(&body).map_err(|e| SessionError::Corrupt(e.to_string()))?;
        // The key's time to live is the expiry (`touch` moves it, not the body).
        Ok((session.user == user).then_some(session))
    }

    async fn touch(&self, id: &str, expires_at: i64, now: i64) -> SessionResult<bool> {
        let ttl = ((expires_at - now) / crate::service::NS).max(1);
        let mut conn = self.conn.clone();
        conn.expire(self.key(id), ttl).await.map_err(unavailable)
    }

    async fn remove(&self, id: &str) -> SessionResult<()> {
        let mut conn = self.conn.clone();
        conn.del::<_, ()>(self.key(id)).await.map_err(unavailable)
    }

    async fn pinned_chunks(&self, _now: i64) -> SessionResult<HashSet<String>> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}session:*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        {
            let mut iter = conn
                .scan_match::<_, String>(&pattern)
                .await
                .map_err(unavailable)?;
            while let Some(key) = futures::StreamExt::next(&mut iter).await {
                keys.push(key.map_err(unavailable)?);
            }
        }
        let mut pinned = HashSet::new();
        for key in keys {
            let body: Option<String> = conn.get(&key).await.map_err(unavailable)?;
            if let Some(body) = body
                && let Ok(session) = serde_json::from_str::<UploadSession>(&body)
            {
                pinned.extend(session.chunks.into_iter().filter_map(|c| c.sha256));
            }
        }
        Ok(pinned)
    }
}
