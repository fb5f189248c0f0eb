//! Transfer jobs in RabbitMQ: a durable queue, persistent messages, publisher
//! confirms, manual acks after the work has committed, and a dead-letter queue
//! for jobs that failed `max_attempts` times. The connection is re-established
//! with backoff when the broker goes away.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::Mutex;

use super::{Delivery, QueueError, TransferQueue};

const ATTEMPTS_HEADER: &str = "x-pan-attempts";

struct Link {
    _connection: Connection,
    channel: Channel,
}

/// Publishing and consuming use separate connections, so that a worker waiting
/// for a job never holds up a publisher.
pub struct AmqpQueue(Arc<Inner>);

struct Inner {
    url: String,
    queue: String,
    dead: String,
    max_attempts: u32,
    publisher: Mutex<Option<Link>>,
    consumer: Mutex<Option<(Link, Consumer)>>,
}

fn unavailable(e: lapin::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

impl AmqpQueue {
    /// Connects and declares `queue` and its dead-letter queue `queue.dead`.
    pub async fn connect(url: &str, queue: &str, max_attempts: u32) -> Result<Self, QueueError> {
        let inner = Inner {
            url: url.to_string(),
            queue: queue.to_string(),
            dead: format!("{queue}.dead"),
            max_attempts: max_attempts.max(1),
            publisher: Mutex::new(None),
            consumer: Mutex::new(None),
        };
        inner.channel().await?;
        Ok(Self(Arc::new(inner)))
    }

    /// Moves every dead-lettered job back to the work queue; returns how many.
    pub async fn requeue_dead(&self) -> Result<usize, QueueError> {
        self.0.requeue_dead().await
    }
}

impl Inner {
    async fn open(&self) -> Result<Link, QueueError> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(unavailable)?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        channel
            .basic_qos(4, BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for name in [&self.queue, &self.dead] {
            channel
                .queue_declare(
                    ShortString::from(name.as_str()),
                    durable,
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
        }
        Ok(Link {
            _connection: connection,
            channel,
        })
    }

    /// A new link, retried with backoff while the broker is away.
    async fn open_with_backoff(&self) -> Result<Link, QueueError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            match self.open().await {
                Ok(l) => return Ok(l),
                Err(e) if attempt < 6 => {
                    tracing::warn!(error = %e, "broker unreachable, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The publishing channel, reconnected when the broker dropped it.
    async fn channel(&self) -> Result<Channel, QueueError> {
        let mut link = self.publisher.lock().await;
        if let Some(l) = link.as_ref()
            && l.channel.status().connected()
        {
            return Ok(l.channel.clone());
        }
        let l = self.open_with_backoff().await?;
        let channel = l.channel.clone();
        *link = Some(l);
        Ok(channel)
    }

    async fn publish_to(&self, queue: &str, chunk: &str, attempts: u32) -> Result<(), QueueError> {
        let channel = self.channel().await?;
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from(ATTEMPTS_HEADER),
            AMQPValue::LongUInt(attempts),
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                BasicPublishOptions::default(),
                chunk.as_bytes(),
                props,
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        if !confirm.is_ack() {
            return Err(QueueError::Unavailable("the broker refused the job".into()));
        }
        Ok(())
    }

    async fn requeue_dead(&self) -> Result<usize, QueueError> {
        let channel = self.channel().await?;
        let mut moved = 0;
        while let Some(msg) = channel
            .basic_get(
                ShortString::from(self.dead.as_str()),
                BasicGetOptions::default(),
            )
            .await
            .map_err(unavailable)?
        {
            let chunk = String::from_utf8_lossy(&msg.delivery.data).into_owned();
            self.publish_to(&self.queue, &chunk, 0).await?;
            msg.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(unavailable)?;
            moved += 1;
        }
        Ok(moved)
    }
}

struct AmqpDelivery {
    queue: Arc<Inner>,
    chunk: String,
    attempts: u32,
    delivery: lapin::message::Delivery,
}

#[async_trait]
impl Delivery for AmqpDelivery {
    fn chunk(&self) -> &str {
        &self.chunk
    }

    async fn ack(self: Box<Self>) {
        if let Err(e) = self.delivery.acker.ack(BasicAckOptions::default()).await {
            // Unacked, the job is delivered again; jobs are idempotent.
            tracing::warn!(error = %e, "could not ack a transfer job");
        }
    }

    async fn retry(self: Box<Self>) {
        let attempts = self.attempts + 1;
        let target = if attempts >= self.queue.max_attempts {
            &self.queue.dead
        } else {
            &self.queue.queue
        };
        if attempts >= self.queue.max_attempts {
            tracing::error!(chunk = self.chunk, attempts, "transfer job dead-lettered");
        }
        // Publish the next attempt first, then ack this one: a crash in between
        // leaves a duplicate, never a lost job.
        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempts.min(10)))).await;
        match self.queue.publish_to(target, &self.chunk, attempts).await {
            Ok(()) => {
                let _ = self.delivery.acker.ack(BasicAckOptions::default()).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not requeue a transfer job; the broker redelivers it")
            }
        }
    }
}

#[async_trait]
impl TransferQueue for AmqpQueue {
    async fn publish(&self, chunk: &str) -> Result<(), QueueError> {
        self.0.publish_to(&self.0.queue, chunk, 0).await
    }

    async fn receive(&self) -> Result<Box<dyn Delivery>, QueueError> {
        let inner = &self.0;
        let mut consumer = inner.consumer.lock().await;
        loop {
            if consumer.is_none() {
                let link = inner.open_with_backoff().await?;
                let stream = link
                    .channel
                    .basic_consume(
                        ShortString::from(inner.queue.as_str()),
                        ShortString::from(""),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(unavailable)?;
                *consumer = Some((link, stream));
            }
            let Some((_, stream)) = consumer.as_mut() else {
                continue;
            };
            match stream.next().await {
                Some(Ok(delivery)) => {
                    let attempts = delivery
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| h.inner().get(ATTEMPTS_HEADER).cloned())
                        .and_then(|v| match v {
                            AMQPValue::LongUInt(n) => Some(n),
                            _ => None,
                        })
                        .unwrap_or(0);
                    let chunk = String::from_utf8_lossy(&delivery.data).into_owned();
                    return Ok(Box::new(AmqpDelivery {
                        queue: inner.clone(),
                        chunk,
                        attempts,
                        delivery,
                    }));
                }
                // The consumer ended (a broker restart): connect and consume again.
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "transfer consumer failed; reconnecting");
                    *consumer = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => {
                    *consumer = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
