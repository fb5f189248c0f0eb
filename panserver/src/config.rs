//! Settings from flags, `PAN_*` environment variables and an optional TOML file,
//! in that order of precedence, over built-in defaults (the embedded profile).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

use crate::service::Limits;

/// Options shared by every subcommand that opens the server's data.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Directory for the embedded profile's data (database, staging, store)
    /// [default: ~/.local/share/pan]
    #[arg(long, env = "PAN_DATA", global = true)]
    pub data: Option<PathBuf>,
    /// Metadata database URL: sqlite://FILE or mysql://USER:PASS@HOST/DB
    /// [default: sqlite://DATA/pan.db]
    #[arg(long, env = "PAN_DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Object store URL: dir:///PATH or s3://BUCKET?endpoint=URL&region=R&path_style=true&prefix=P
    /// (S3 credentials from PAN_S3_ACCESS_KEY/PAN_S3_SECRET_KEY or PAN_S3_CREDENTIALS_FILE)
    /// [default: dir://DATA/store]
    #[arg(long, env = "PAN_STORE", global = true)]
    pub store: Option<String>,
    /// Redis URL for upload sessions, e.g. redis://:PASSWORD@HOST:6379/ [default: sessions in the database]
    #[arg(long, env = "PAN_REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// RabbitMQ URL for transfer jobs, e.g. amqp://USER:PASSWORD@HOST:5672/VHOST [default: in-process queue]
    #[arg(long, env = "PAN_AMQP_URL", global = true, hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// Name of this deployment in shared services: Redis key prefix and queue name
    #[arg(long, env = "PAN_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// Failed attempts after which a transfer job goes to the dead-letter queue
    #[arg(long, env = "PAN_TRANSFER_ATTEMPTS", global = true)]
    pub transfer_attempts: Option<u32>,
    /// Staging directory for uploaded chunks [default: DATA/staging]
    #[arg(long, env = "PAN_STAGING_DIR", global = true)]
    pub staging_dir: Option<PathBuf>,
    /// Database connection pool size
    #[arg(long, env = "PAN_DB_POOL", global = true)]
    pub db_pool: Option<u32>,
    /// TOML file with any of these settings (keys as the long flags, with '_')
    #[arg(long, env = "PAN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "PAN_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key)
    #[arg(long, env = "PAN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "PAN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow anyone to sign up over HTTP (true/false)
    #[arg(long, env = "PAN_SIGNUP")]
    pub signup: Option<bool>,
    /// Days a sign-in token stays valid
    #[arg(long, env = "PAN_TOKEN_TTL_DAYS")]
    pub token_ttl_days: Option<i64>,
    /// Hours an idle upload session is kept
    #[arg(long, env = "PAN_SESSION_TTL_HOURS")]
    pub session_ttl_hours: Option<i64>,
    /// Largest one-request upload, in bytes
    #[arg(long, env = "PAN_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Most chunks one upload session may list
    #[arg(long, env = "PAN_MAX_SESSION_CHUNKS")]
    pub max_session_chunks: Option<usize>,
    /// Seconds unreferenced data is kept before garbage collection removes it
    #[arg(long, env = "PAN_GC_GRACE_SECS")]
    pub gc_grace_secs: Option<i64>,
    /// Seconds between maintenance passes (garbage collection, content hashing)
    #[arg(long, env = "PAN_MAINTENANCE_SECS")]
    pub maintenance_secs: Option<u64>,
    /// Transfer workers run inside this process (0 disables)
    #[arg(long, env = "PAN_TRANSFER_WORKERS")]
    pub transfer_workers: Option<usize>,
    /// Byte quota for new users (0 = unlimited)
    #[arg(long, env = "PAN_QUOTA_BYTES")]
    pub quota_bytes: Option<i64>,
    /// File-count quota for new users (0 = unlimited)
    #[arg(long, env = "PAN_QUOTA_FILES")]
    pub quota_files: Option<i64>,
}

/// The config file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data: Option<PathBuf>,
    database_url: Option<String>,
    store: Option<String>,
    redis_url: Option<String>,
    amqp_url: Option<String>,
    namespace: Option<String>,
    transfer_attempts: Option<u32>,
    staging_dir: Option<PathBuf>,
    db_pool: Option<u32>,
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    signup: Option<bool>,
    token_ttl_days: Option<i64>,
    session_ttl_hours: Option<i64>,
    max_upload_bytes: Option<u64>,
    max_session_chunks: Option<usize>,
    gc_grace_secs: Option<i64>,
    maintenance_secs: Option<u64>,
    transfer_workers: Option<usize>,
    quota_bytes: Option<i64>,
    quota_files: Option<i64>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data: PathBuf,
    pub database_url: Option<String>,
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub amqp_url: Option<String>,
    pub namespace: String,
    pub transfer_attempts: u32,
    pub staging_dir: Option<PathBuf>,
    pub db_pool_size: u32,
    pub listen: SocketAddr,
    /// PEM certificate chain and key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
    pub maintenance_secs: u64,
    pub transfer_workers: usize,
}

fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("pan")
}

impl Settings {
    pub fn resolve(data: &DataArgs, serve: Option<&ServeArgs>) -> anyhow::Result<Self> {
        let file = match &data.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = Limits::default();
        let s = serve;
        let tls = match (
            s.and_then(|s| s.tls_cert.clone()).or(file.tls_cert),
            s.and_then(|s| s.tls_key.clone()).or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!("tls_cert and tls_key go together"),
        };
        let limits = Limits {
            secure_cookies: tls.is_some(),
            signup: s
                .and_then(|s| s.signup)
                .or(file.signup)
                .unwrap_or(defaults.signup),
            token_ttl_secs: s
                .and_then(|s| s.token_ttl_days)
                .or(file.token_ttl_days)
                .map(|d| d * 86400)
                .unwrap_or(defaults.token_ttl_secs),
            session_ttl_secs: s
                .and_then(|s| s.session_ttl_hours)
                .or(file.session_ttl_hours)
                .map(|h| h * 3600)
                .unwrap_or(defaults.session_ttl_secs),
            max_upload_bytes: s
                .and_then(|s| s.max_upload_bytes)
                .or(file.max_upload_bytes)
                .unwrap_or(defaults.max_upload_bytes),
            max_session_chunks: s
                .and_then(|s| s.max_session_chunks)
                .or(file.max_session_chunks)
                .unwrap_or(defaults.max_session_chunks),
            gc_grace_secs: s
                .and_then(|s| s.gc_grace_secs)
                .or(file.gc_grace_secs)
                .unwrap_or(defaults.gc_grace_secs),
            default_quota_bytes: s
                .and_then(|s| s.quota_bytes)
                .or(file.quota_bytes)
                .unwrap_or(defaults.default_quota_bytes),
            default_quota_files: s
                .and_then(|s| s.quota_files)
                .or(file.quota_files)
                .unwrap_or(defaults.default_quota_files),
        };
        Ok(Self {
            data: data
                .data
                .clone()
                .or(file.data)
                .unwrap_or_else(default_data_dir),
            database_url: data.database_url.clone().or(file.database_url),
            store: data.store.clone().or(file.store),
            redis_url: data.redis_url.clone().or(file.redis_url),
            amqp_url: data.amqp_url.clone().or(file.amqp_url),
            namespace: data
                .namespace
                .clone()
                .or(file.namespace)
                .unwrap_or_else(|| "pan".into()),
            transfer_attempts: data
                .transfer_attempts
                .or(file.transfer_attempts)
                .unwrap_or(5),
            staging_dir: data.staging_dir.clone().or(file.staging_dir),
            db_pool_size: data.db_pool.or(file.db_pool).unwrap_or(8),
            listen: s
                .and_then(|s| s.listen)
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            tls,
            limits,
            maintenance_secs: s
                .and_then(|s| s.maintenance_secs)
                .or(file.maintenance_secs)
                .unwrap_or(60)
                .max(1),
            transfer_workers: s
                .and_then(|s| s.transfer_workers)
                .or(file.transfer_workers)
                .unwrap_or(2),
        })
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data.join("pan.db").display()))
    }

    pub fn store_url(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("dir://{}", self.data.join("store").display()))
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.staging_dir
            .clone()
            .unwrap_or_else(|| self.data.join("staging"))
    }

    pub fn limits(&self) -> Limits {
        self.limits.clone()
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A URL with its password hidden, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
