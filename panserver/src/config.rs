//! Settings from flags, `PAN_*` environment variables and an optional TOML file,
//! in that order of precedence, over built-in defaults (the embedded profile).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::service::Limits;

/// Options shared by every subcommand that opens the server's data. Each
/// setting is defined once, here: its flag, its environment variable, its
/// default, and (its name) its key in the config file.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
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
    #[arg(long, env = "PAN_NAMESPACE", global = true, default_value = "pan")]
    pub namespace: String,
    /// Failed attempts after which a transfer job goes to the dead-letter queue
    #[arg(
        long,
        env = "PAN_TRANSFER_ATTEMPTS",
        global = true,
        default_value_t = 5
    )]
    pub transfer_attempts: u32,
    /// Staging directory for uploaded chunks [default: DATA/staging]
    #[arg(long, env = "PAN_STAGING_DIR", global = true)]
    pub staging_dir: Option<PathBuf>,
    /// Database connection pool size
    #[arg(long, env = "PAN_DB_POOL", global = true, default_value_t = 8)]
    pub db_pool: u32,
    /// TOML file with any of these settings (keys as the long flags, with '_');
    /// flags and environment variables override it
    #[arg(long, env = "PAN_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "PAN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key)
    #[arg(long, env = "PAN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "PAN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Allow anyone to sign up over HTTP (true/false)
    #[arg(long, env = "PAN_SIGNUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub signup: bool,
    /// Days a sign-in token stays valid
    #[arg(long, env = "PAN_TOKEN_TTL_DAYS", default_value_t = 30)]
    pub token_ttl_days: i64,
    /// Hours an idle upload session is kept
    #[arg(long, env = "PAN_SESSION_TTL_HOURS", default_value_t = 24)]
    pub session_ttl_hours: i64,
    /// Largest one-request upload, in bytes
    #[arg(long, env = "PAN_MAX_UPLOAD_BYTES", default_value_t = 1 << 40)]
    pub max_upload_bytes: u64,
    /// Most chunks one upload session may list
    #[arg(long, env = "PAN_MAX_SESSION_CHUNKS", default_value_t = 1 << 20)]
    pub max_session_chunks: usize,
    /// Seconds unreferenced data is kept before garbage collection removes it
    #[arg(long, env = "PAN_GC_GRACE_SECS", default_value_t = 3600)]
    pub gc_grace_secs: i64,
    /// Seconds the change feed keeps a change; a client further behind starts over
    #[arg(long, env = "PAN_CHANGE_RETENTION_SECS", default_value_t = 7 * 86400)]
    pub change_retention_secs: i64,
    /// Most changes the feed keeps per user; older ones go at the next maintenance pass
    #[arg(long, env = "PAN_CHANGE_RETENTION_COUNT", default_value_t = 100_000)]
    pub change_retention_count: i64,
    /// Seconds between maintenance passes (garbage collection, content hashing)
    #[arg(long, env = "PAN_MAINTENANCE_SECS", default_value_t = 60)]
    pub maintenance_secs: u64,
    /// Transfer workers run inside this process (0 disables)
    #[arg(long, env = "PAN_TRANSFER_WORKERS", default_value_t = 2)]
    pub transfer_workers: usize,
    /// Byte quota for new users (0 = unlimited)
    #[arg(long, env = "PAN_QUOTA_BYTES", default_value_t = 0)]
    pub quota_bytes: i64,
    /// File-count quota for new users (0 = unlimited)
    #[arg(long, env = "PAN_QUOTA_FILES", default_value_t = 0)]
    pub quota_files: i64,
}

impl ServeArgs {
    /// The serve settings from the environment and the defaults, for the
    /// commands that open the server's data without serving it.
    pub fn from_env() -> anyhow::Result<(Self, ArgMatches)> {
        let matches = Self::augment_args(clap::Command::new("panserver"))
            .try_get_matches_from(["panserver"])?;
        Ok((Self::from_arg_matches(&matches)?, matches))
    }
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

/// Whether a setting was given by flag or environment (which beat the file).
fn given(matches: &[&ArgMatches], id: &str) -> bool {
    matches.iter().any(|m| {
        m.try_contains_id(id).is_ok()
            && matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
    })
}

/// `args` with every setting the file has and no flag or variable gave.
fn with_file<T: Serialize + DeserializeOwned>(
    args: &T,
    file: &toml::Table,
    matches: &[&ArgMatches],
) -> anyhow::Result<T> {
    let mut value = serde_json::to_value(args)?;
    if let Some(fields) = value.as_object_mut() {
        for (key, setting) in file {
            if fields.contains_key(key) && !given(matches, key) {
                fields.insert(key.clone(), serde_json::to_value(setting)?);
            }
        }
    }
    serde_json::from_value(value).context("a setting in the config file has the wrong type")
}

/// The ids of a group's settings, which are also its config-file keys.
fn keys<T: Args>() -> Vec<String> {
    T::augment_args(clap::Command::new("panserver"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

impl Settings {
    /// Settings from flags and environment (in `data` and `serve`, parsed into
    /// `matches`), then the config file, then the defaults.
    pub fn resolve(
        data: &DataArgs,
        serve: &ServeArgs,
        matches: &[&ArgMatches],
    ) -> anyhow::Result<Self> {
        let file = match &data.config {
            Some(path) => load_file(path)?,
            None => toml::Table::new(),
        };
        let known: Vec<String> = keys::<DataArgs>()
            .into_iter()
            .chain(keys::<ServeArgs>())
            .collect();
        if let Some(unknown) = file.keys().find(|k| !known.contains(k) || *k == "config") {
            anyhow::bail!("unknown setting `{unknown}` in the config file");
        }
        let data = with_file(data, &file, matches)?;
        let serve = with_file(serve, &file, matches)?;
        let tls = match (serve.tls_cert, serve.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!("tls_cert and tls_key go together"),
        };
        let limits = Limits {
            secure_cookies: tls.is_some(),
            signup: serve.signup,
            token_ttl_secs: serve.token_ttl_days * 86400,
            session_ttl_secs: serve.session_ttl_hours * 3600,
            max_upload_bytes: serve.max_upload_bytes,
            max_session_chunks: serve.max_session_chunks,
            gc_grace_secs: serve.gc_grace_secs,
            default_quota_bytes: serve.quota_bytes,
            default_quota_files: serve.quota_files,
            change_retention_secs: serve.change_retention_secs.max(1),
            change_retention_count: serve.change_retention_count.max(1),
        };
        Ok(Self {
            data: data.data.unwrap_or_else(default_data_dir),
            database_url: data.database_url,
            store: data.store,
            redis_url: data.redis_url,
            amqp_url: data.amqp_url,
            namespace: data.namespace,
            transfer_attempts: data.transfer_attempts,
            staging_dir: data.staging_dir,
            db_pool_size: data.db_pool,
            listen: serve.listen,
            tls,
            limits,
            maintenance_secs: serve.maintenance_secs.max(1),
            transfer_workers: serve.transfer_workers,
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

fn load_file(path: &Path) -> anyhow::Result<toml::Table> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str], file: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pan.toml");
        std::fs::write(&path, file)?;
        let command = ServeArgs::augment_args(DataArgs::augment_args(clap::Command::new("t")));
        let mut argv = vec!["t", "--config", path.to_str().unwrap_or_default()];
        argv.extend_from_slice(args);
        let matches = command.try_get_matches_from(argv)?;
        let data = DataArgs::from_arg_matches(&matches)?;
        let serve = ServeArgs::from_arg_matches(&matches)?;
        Settings::resolve(&data, &serve, &[&matches])
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let file = "listen = \"127.0.0.1:9999\"\nsignup = false\nnamespace = \"blue\"\n";
        let s = resolve(&["--signup", "true"], file).expect("resolve");
        assert!(s.limits.signup, "the flag wins over the file");
        assert_eq!(s.listen.port(), 9999, "the file wins over the default");
        assert_eq!(s.namespace, "blue");
        assert_eq!(
            s.db_pool_size, 8,
            "the default stands where nothing else speaks"
        );
        assert_eq!(s.limits.token_ttl_secs, 30 * 86400);
    }

    #[test]
    fn an_unknown_or_mistyped_key_is_refused() {
        let err = resolve(&[], "lisen = \"127.0.0.1:1\"\n").expect_err("a typo");
        assert!(err.to_string().contains("lisen"), "{err}");
        assert!(resolve(&[], "db_pool = \"many\"\n").is_err());
    }
}
