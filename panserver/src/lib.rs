//! panserver: accounts, per-user file trees and deduplicated, resumable uploads
//! over four seams (metadata, upload sessions, transfer queue, object store).

pub mod api;
pub mod auth;
pub mod bus;
pub mod check;
pub mod config;
pub mod gc;
pub mod meta;
pub mod parts;
pub mod queue;
pub mod service;
pub mod session;
pub mod staging;
pub mod store;
pub mod sums;
pub mod transfer;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::bus::{ChangeBus, NoBus, RedisBus};
use crate::config::Settings;
use crate::meta::{Dialect, SqlMeta};
use crate::queue::{AmqpQueue, LocalQueue, TransferQueue};
use crate::service::App;
use crate::session::{RedisSessions, SessionStore, SqlSessions};
use crate::staging::Staging;

/// Opens the metadata database; the embedded SQLite database is migrated on the
/// spot, a shared MySQL one must have been migrated with `panserver migrate`.
pub async fn open_meta(settings: &Settings) -> anyhow::Result<SqlMeta> {
    let url = settings.database_url();
    let meta = SqlMeta::connect(&url, settings.db_pool_size)
        .await
        .with_context(|| format!("opening the database {}", config::redact(&url)))?;
    if meta.dialect() == Dialect::Sqlite {
        meta.migrate()
            .await
            .context("migrating the SQLite database")?;
    }
    meta.check_schema().await.map_err(anyhow::Error::msg)?;
    Ok(meta)
}

pub async fn build_app(settings: &Settings) -> anyhow::Result<Arc<App>> {
    std::fs::create_dir_all(&settings.data)
        .with_context(|| format!("creating the data directory {}", settings.data.display()))?;
    let meta = open_meta(settings).await?;
    let ns = &settings.namespace;
    let sessions: Arc<dyn SessionStore> = match &settings.redis_url {
        Some(url) => Arc::new(
            RedisSessions::connect(url, &format!("{ns}:"))
                .await
                .with_context(|| format!("connecting to Redis at {}", config::redact(url)))?,
        ),
        None => Arc::new(SqlSessions::new(meta.pool())),
    };
    let queue: Arc<dyn TransferQueue> = match &settings.amqp_url {
        Some(url) => Arc::new(
            AmqpQueue::connect(url, &format!("{ns}.transfer"), settings.transfer_attempts)
                .await
                .with_context(|| format!("connecting to RabbitMQ at {}", config::redact(url)))?,
        ),
        None => Arc::new(LocalQueue::default()),
    };
    let bus: Arc<dyn ChangeBus> = match &settings.redis_url {
        Some(url) => Arc::new(
            RedisBus::connect(url, &format!("{ns}:changes"))
                .await
                .with_context(|| format!("connecting to Redis at {}", config::redact(url)))?,
        ),
        None => Arc::new(NoBus),
    };
    let store = store::open(&settings.store_url())
        .await
        .with_context(|| format!("opening the object store {}", settings.store_url()))?;
    let staging = Staging::new(settings.staging_dir()).context("creating the staging directory")?;
    Ok(Arc::new(App {
        meta: Arc::new(meta),
        sessions,
        queue,
        store,
        staging,
        limits: settings.limits(),
        chunk_gate: Default::default(),
        feed: Default::default(),
        bus,
        tokens: Default::default(),
        session_chunks: Default::default(),
        extents: Default::default(),
        version_reads: Default::default(),
    }))
}

/// Runs the server until Ctrl-C or SIGTERM: API, transfer workers and maintenance.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let tls = match &settings.tls {
        Some((cert, key)) => Some(api::load_tls(cert, key)?),
        None => None,
    };
    let app = build_app(&settings).await?;
    let requeued = transfer::requeue_staged(&app, i64::MAX).await?;
    let leftovers = transfer::drop_transferred_leftovers(&app).await?;
    if leftovers > 0 {
        tracing::info!(
            leftovers,
            "removed staging files of chunks already in the store"
        );
    }
    // Bound last: a client that can connect finds the server ready.
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    for id in 0..settings.transfer_workers {
        tokio::spawn(transfer::run_worker(app.clone(), id));
    }
    tokio::spawn(service::feed::relay_commits(app.clone()));
    tokio::spawn(service::feed::follow_bus(app.clone()));
    let every = Duration::from_secs(settings.maintenance_secs);
    tokio::spawn(gc::run_maintenance(app.clone(), every));
    tokio::spawn(transfer::run_reconciler(
        app.clone(),
        every.max(Duration::from_secs(30)),
    ));
    tracing::info!(
        listen = %listener.local_addr()?,
        data = %settings.data.display(),
        https = tls.is_some(),
        requeued,
        "panserver ready"
    );
    api::serve(app, listener, tls, shutdown_signal()).await;
    Ok(())
}

/// Runs transfer workers (no API) until Ctrl-C or SIGTERM.
pub async fn run_transfer_workers(settings: Settings, workers: usize) -> anyhow::Result<()> {
    let app = build_app(&settings).await?;
    for id in 0..workers.max(1) {
        tokio::spawn(transfer::run_worker(app.clone(), id));
    }
    let every = Duration::from_secs(settings.maintenance_secs).max(Duration::from_secs(30));
    tokio::spawn(transfer::run_reconciler(app.clone(), every));
    tracing::info!(workers, "transfer workers ready");
    shutdown_signal().await;
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
