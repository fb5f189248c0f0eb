//! The change bus: how one API server tells the others that a user's tree
//! changed, so that their change-feed waiters wake at once. The embedded
//! profile is one process and needs none; the full stack uses Redis pub/sub.

mod redis_bus;

use std::sync::Arc;

use async_trait::async_trait;

pub use redis_bus::RedisBus;

/// Called with each user another server reported.
pub type Wake = Arc<dyn Fn(Wakeup) + Send + Sync>;

/// What a listener learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// This user's tree changed on some server.
    User(i64),
    /// Reports may have been missed (the bus reconnected): wake every waiter.
    All,
}

#[async_trait]
pub trait ChangeBus: Send + Sync {
    /// Tells every server that `user`'s tree changed. Best effort: a waiter that
    /// misses it still finds the change on its next periodic look.
    async fn publish(&self, user: i64);
    /// Runs for the life of the process, calling `wake` for every report.
    async fn listen(&self, wake: Wake);
}

/// One process: nobody else to tell.
pub struct NoBus;

#[async_trait]
impl ChangeBus for NoBus {
    async fn publish(&self, _user: i64) {}

    async fn listen(&self, _wake: Wake) {
        std::future::pending::<()>().await
    }
}
