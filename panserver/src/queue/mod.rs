//! Transfer jobs: "move this staged chunk to the object store". In-process in
//! the embedded profile; RabbitMQ in the full stack.

mod amqp;
mod local;

use async_trait::async_trait;

pub use amqp::AmqpQueue;
pub use local::LocalQueue;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("transfer queue unavailable: {0}")]
    Unavailable(String),
}

/// A received job. Settle it with `ack` once the chunk is safely in the store,
/// or `retry` to have it delivered again later.
#[async_trait]
pub trait Delivery: Send {
    fn chunk(&self) -> &str;
    async fn ack(self: Box<Self>);
    async fn retry(self: Box<Self>);
}

#[async_trait]
pub trait TransferQueue: Send + Sync {
    async fn publish(&self, chunk: &str) -> Result<(), QueueError>;
    /// Waits for the next job.
    async fn receive(&self) -> Result<Box<dyn Delivery>, QueueError>;
}
