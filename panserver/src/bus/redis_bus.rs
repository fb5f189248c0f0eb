//! The change bus over Redis pub/sub: one channel per deployment, each message
//! a user id. A lost connection is re-established, and every waiter is woken
//! then, since reports may have been missed in between.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{ChangeBus, Wake, Wakeup};

pub struct RedisBus {
    client: redis::Client,
    conn: ConnectionManager,
    channel: String,
}

impl RedisBus {
    /// Connects; `channel` names the deployment's channel.
    pub async fn connect(url: &str, channel: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            client,
            conn,
            channel: channel.to_string(),
        })
    }

    async fn listen_once(&self, wake: &Wake) -> redis::RedisResult<()> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(&self.channel).await?;
        // Subscribed: anything published while disconnected is covered by this.
        wake(Wakeup::All);
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            match msg.get_payload::<i64>() {
                Ok(user) => wake(Wakeup::User(user)),
                Err(e) => tracing::debug!(error = %e, "ignoring a malformed change report"),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ChangeBus for RedisBus {
    async fn publish(&self, user: i64) {
        let mut conn = self.conn.clone();
        let sent: redis::RedisResult<i64> = conn.publish(&self.channel, user).await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not report a change to the other servers");
        }
    }

    async fn listen(&self, wake: Wake) {
        loop {
            if let Err(e) = self.listen_once(&wake).await {
                tracing::warn!(error = %e, "change bus: Redis subscription lost");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
