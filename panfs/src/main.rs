//! The `panfs` command: login, mount, umount, status, logout.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use panfs::config::{self, Login};
use panfs::mount::{self, MountOptions};
use panproto::wire::{Credentials, SigninResponse};
use tracing_subscriber::EnvFilter;

/// Mounts a pan drive: ordinary tools work on it as on a local disk.
#[derive(Debug, Parser)]
#[command(name = "panfs", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign in and store the token (mode 0600) in $XDG_CONFIG_HOME/pan
    Login {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        #[arg(long)]
        user: String,
        /// Read the password from stdin instead of a prompt
        #[arg(long)]
        password_stdin: bool,
        /// Allow plain HTTP to a host other than this machine
        #[arg(long)]
        insecure_http: bool,
    },
    /// Revoke the stored token and forget it
    Logout,
    /// Mount the drive; returns once the mount is ready
    Mount(MountArgs),
    /// Send pending writes, then unmount (also cleans a mount left by a crash)
    Umount { mountpoint: PathBuf },
    /// Show mounts, pending uploads, cache use and whether the server answers
    Status,
    /// Wait until every change made on the mount (or on every mount) so far
    /// is on the server; fails after the mount's --timeout if it is unreachable
    Sync {
        /// A path on the mount [default: every mount]
        path: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Args)]
struct MountArgs {
    mountpoint: PathBuf,
    /// Stay in the foreground (logs to stderr)
    #[arg(long)]
    foreground: bool,
    /// Directory for cached content, safe to delete while unmounted [default: $XDG_CACHE_HOME/pan/USER]
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Directory for unsent writes (the journal and working copies); never delete it [default: $XDG_STATE_HOME/pan/USER]
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Disk space for recently read blocks, in MiB (working copies of files being written come on top)
    #[arg(long, default_value_t = 1024)]
    cache_size: u64,
    /// Memory for recently read blocks, in MiB (a sequential reader's
    /// readahead window is at most half of it)
    #[arg(long, default_value_t = 32)]
    memory_cache: u64,
    /// Let other local users use the mount (needs user_allow_other in /etc/fuse.conf for non-root)
    #[arg(long)]
    allow_other: bool,
    /// Seconds the kernel may cache attributes while the change feed is followed
    /// (a change made elsewhere reaches the kernel at once)
    #[arg(long, default_value_t = 300.0)]
    attr_ttl: f64,
    /// Seconds the kernel may cache names while the change feed is followed
    #[arg(long, default_value_t = 300.0)]
    entry_ttl: f64,
    /// Seconds the kernel and panfs cache attributes and names while the change
    /// feed cannot be followed (server unreachable, catching up)
    #[arg(long, default_value_t = 1.0)]
    fallback_ttl: f64,
    /// Return from close before the upload; fsync still waits for the server
    #[arg(long)]
    writeback: bool,
    /// How changes reach the server: `local` (the default) applies each
    /// create, rename, remove and attribute change on the mount at once,
    /// journals it on local disk and syncs in batches (fsync, `panfs sync` and
    /// umount wait for the server); `strict` waits for the server on every
    /// call and on close
    #[arg(long, value_enum, env = "PAN_SYNC_MODE", default_value_t = SyncMode::Local)]
    sync_mode: SyncMode,
    /// FUSE passthrough: `on` (the default) lets the kernel read and write a
    /// file wholly on local disk directly, where the kernel can (Linux 6.9
    /// and later, as root); `off` sends every read and write through panfs
    #[arg(long, value_enum, env = "PAN_PASSTHROUGH", default_value_t = Switch::On)]
    passthrough: Switch,
    /// Seconds to wait for the server before failing an operation with EIO
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Threads serving kernel requests
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Allow plain HTTP to a host other than this machine
    #[arg(long)]
    insecure_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SyncMode {
    Local,
    Strict,
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok(s.trim_end_matches(['\n', '\r']).to_string());
    }
    Ok(rpassword::prompt_password("Password: ")?)
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

async fn login(server: &str, user: &str, password: String) -> anyhow::Result<()> {
    let server = server.trim_end_matches('/');
    let resp = http_client()?
        .post(format!("{server}/api/v1/signin"))
        .json(&Credentials {
            username: user.to_string(),
            password,
        })
        .send()
        .await
        .with_context(|| format!("reaching {server}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!("sign-in refused ({status}): {body}");
    }
    let signed: SigninResponse = resp.json().await?;
    config::save_login(&Login {
        server: server.to_string(),
        user: user.to_string(),
        token: signed.token,
        token_id: signed.token_id,
    })?;
    println!("logged in to {server} as {user}");
    Ok(())
}

async fn logout() -> anyhow::Result<()> {
    let Ok(login) = config::load_login() else {
        println!("not logged in");
        return Ok(());
    };
    let revoked = http_client()?
        .post(format!("{}/api/v1/signout", login.server))
        .bearer_auth(&login.token)
        .send()
        .await;
    if let Err(e) = revoked {
        eprintln!("warning: could not revoke the token on the server: {e}");
    }
    config::remove_login()?;
    println!("logged out");
    Ok(())
}

async fn status() -> anyhow::Result<()> {
    // A reader that stops early (`panfs status | head -1`) ends this command
    // as it ends any other; Rust's default would panic on the broken pipe.
    // Only here: the daemon must outlive a peer that closed its socket.
    // SAFETY: setting a signal's disposition to the default is always sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match config::load_login() {
        Ok(login) => {
            let reachable = http_client()?
                .get(format!("{}/api/v1/user", login.server))
                .bearer_auth(&login.token)
                .send()
                .await;
            let state = match reachable {
                Ok(r) if r.status().is_success() => "reachable".to_string(),
                Ok(r) => format!("answers {}", r.status()),
                Err(_) => "unreachable".to_string(),
            };
            println!("server: {} as {} ({state})", login.server, login.user);
        }
        Err(_) => println!("not logged in"),
    }
    mount::refresh_records();
    let records = mount::records();
    if records.is_empty() {
        println!("no mounts");
    }
    for r in records {
        let alive = if r.daemon_alive() {
            "running"
        } else {
            "stale (daemon gone)"
        };
        println!(
            "{}: {alive}, pid {}, {} files / {} bytes pending upload, cache {} of {} MiB in memory + {} of {} MiB on disk, {} bytes sent ({} of them while their files were written), {} bytes fetched, {} bytes copied on the server, {} conflict copies",
            r.mountpoint.display(),
            r.pid,
            r.pending_files,
            r.pending_bytes,
            r.memory_cache_bytes >> 20,
            r.memory_cache_limit >> 20,
            r.disk_cache_bytes >> 20,
            r.disk_cache_limit >> 20,
            r.bytes_sent,
            r.bytes_sent_ahead,
            r.bytes_fetched,
            r.bytes_copied_on_server,
            r.conflict_copies,
        );
        println!(
            "  unsent writes in {}, cache in {}",
            r.state_dir.display(),
            r.cache_dir.display()
        );
        let (nodes, names, dirs) = r.feed.replica;
        let feed = match (&r.feed.problem, r.feed.following) {
            (_, true) => format!(
                "following at change {} (long cache times)",
                r.feed.cursor.unwrap_or_default()
            ),
            (Some(why), false) => format!("not followed: {why} (short cache times)"),
            (None, false) => "catching up (short cache times)".to_string(),
        };
        println!(
            "  change feed: {feed}; {} changes from elsewhere applied, {} restarts; \
             replica: {nodes} nodes, {names} names, {dirs} complete directories",
            r.feed.applied, r.feed.restarts,
        );
        if !r.passthrough.is_empty() {
            println!(
                "  passthrough: {}; {} handles opened with it",
                r.passthrough, r.passthrough_opens
            );
        }
        if let Some(sync) = &r.sync {
            let when = sync
                .last_sync
                .map_or("never".to_string(), |t| format!("at {t} (unix time)"));
            println!(
                "  sync: {}; {} changes pending; last sync {when}; {} batches, {} changes sent; \
                 {} conflicts; {} journal syncs{}{}",
                if sync.online { "online" } else { "offline" },
                sync.pending_ops,
                sync.batches,
                sync.ops_sent,
                sync.conflicts,
                sync.journal_syncs,
                match sync.provisional_inos {
                    0 => String::new(),
                    n => format!(
                        "; {n} new nodes hold provisional inode numbers (made offline past the \
                         reserved ones) until the server takes them"
                    ),
                },
                sync.problem
                    .as_ref()
                    .map_or(String::new(), |p| format!(" (last problem: {p})")),
            );
        }
    }
    Ok(())
}

/// An fsync of the mount's root waits for every change and upload.
fn sync(path: Option<PathBuf>) -> anyhow::Result<()> {
    let paths = match path {
        Some(p) => vec![p],
        None => mount::records().into_iter().map(|r| r.mountpoint).collect(),
    };
    for path in paths {
        // An fsync of the mount's root waits for everything on the mount;
        // one of another directory only for that directory's entries.
        let dir = mount::root_of(&path).unwrap_or_else(|| {
            if path.is_dir() {
                path.clone()
            } else {
                path.parent().map(PathBuf::from).unwrap_or_default()
            }
        });
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    Ok(())
}

fn umount(mountpoint: &std::path::Path) -> anyhow::Result<()> {
    let mountpoint = mount::canonical(mountpoint);
    let record = mount::record_for(&mountpoint);
    if let Some(r) = record.as_ref().filter(|r| r.daemon_alive()) {
        // SAFETY: sending SIGTERM to the daemon that serves this mount.
        unsafe { libc::kill(r.pid as i32, libc::SIGTERM) };
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(r.pending_bytes.max(1));
            bar.set_message("sending pending writes");
            bar
        });
        while r.daemon_alive() {
            if let (Some(bar), Some(now)) = (&bar, mount::record_for(&mountpoint)) {
                bar.set_position(r.pending_bytes.saturating_sub(now.pending_bytes));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
    if mount::is_mounted(&mountpoint) {
        mount::unmount(&mountpoint)?;
    }
    println!("unmounted {}", mountpoint.display());
    Ok(())
}

/// glibc gives threads that allocate their own malloc arenas (up to eight per
/// core), and a freed block stays in the arena that held it: with a dozen
/// threads passing 256 KiB blocks around, a 1 GiB read through panfs peaked
/// at 275 MiB of RSS. Two arenas kept it at 92 MiB, reading no slower
/// (measured on this machine).
///
/// glibc also raises its mmap threshold each time a mapped block is freed, so
/// after the first 4 MiB readahead run every block and run came from the
/// arenas, which fragment: eight readers of cold 1 GiB files peaked at 122 MiB
/// of RSS for 32 MiB of cached blocks. The threshold is therefore fixed. It
/// was first fixed below the block size, which mapped every block and
/// unmapped it when freed; but then each response buffer of the HTTP client
/// (about 400 KiB) was mapped, faulted in and unmapped too, for every block
/// fetched. Readahead runs now go straight into block buffers, which are
/// recycled (`cache::bufs`), so nothing of megabytes is allocated per read,
/// and the threshold sits above those buffers: eight readers of cold 512 MiB
/// files took 4.0-4.3 s and peaked at 77-81 MiB, against 5.1-8.1 s and 62-64
/// MiB below the block size (release build, by hand). The chunks an upload
/// sends (up to 4 MiB) are still mapped, and recycled too.
/// `MALLOC_ARENA_MAX` and `MALLOC_MMAP_THRESHOLD_` in the environment win.
fn tune_malloc() {
    // SAFETY (both calls): first thing in main, before any other thread exists.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 10) };
    }
}

fn main() -> anyhow::Result<()> {
    tune_malloc();
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PAN_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Login {
            server,
            user,
            password_stdin,
            insecure_http,
        } => {
            config::check_transport(&server, insecure_http)?;
            let password = read_password(password_stdin)?;
            rt()?.block_on(login(&server, &user, password))
        }
        Command::Logout => rt()?.block_on(logout()),
        Command::Status => rt()?.block_on(status()),
        Command::Umount { mountpoint } => umount(&mountpoint),
        Command::Sync { path } => sync(path),
        Command::Mount(args) => {
            let login = config::load_login()?;
            config::check_transport(&login.server, args.insecure_http)?;
            if !args.foreground {
                let log = config::cache_root().join(format!("{}.log", login.user));
                let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
                return mount::spawn_daemon(&argv, &log);
            }
            let opts = MountOptions {
                mountpoint: args.mountpoint,
                cache_dir: args.cache_dir,
                state_dir: args.state_dir,
                cache_size: args.cache_size << 20,
                memory_cache: args.memory_cache << 20,
                allow_other: args.allow_other,
                attr_ttl: Duration::from_secs_f64(args.attr_ttl.max(0.0)),
                entry_ttl: Duration::from_secs_f64(args.entry_ttl.max(0.0)),
                fallback_ttl: Duration::from_secs_f64(args.fallback_ttl.max(0.0)),
                writeback: args.writeback,
                local_first: args.sync_mode == SyncMode::Local,
                passthrough: args.passthrough == Switch::On,
                timeout: Duration::from_secs(args.timeout.max(1)),
                threads: args.threads,
            };
            mount::run(login, opts)
        }
    }
}
