//! Running a mount: the daemon that serves it, its record (for `status` and
//! `umount`), going to the background once ready, and unmounting.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fuser::{Config, MountOption, SessionACL};
use serde::{Deserialize, Serialize};

use crate::backing::Backings;
use crate::config::{Login, cache_root, state_root};
use crate::fs::{FeedStatus, FsOptions, PanFs};
use crate::fuse::{FuseAdapter, Notifications};
use crate::remote::{HttpRemote, Remote};
use crate::sync::SyncStatus;
use panproto::wire::UserInfo;

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    pub cache_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub cache_size: u64,
    pub memory_cache: u64,
    pub allow_other: bool,
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    pub fallback_ttl: Duration,
    pub writeback: bool,
    /// Journal namespace changes and sync them in batches (else strict).
    pub local_first: bool,
    pub passthrough: bool,
    pub timeout: Duration,
    pub threads: usize,
}

/// The widest readahead window of one sequential reader.
pub const READAHEAD_MAX: u64 = 32 << 20;
/// How often the mount looks whether its session ended or a signal came.
const SESSION_POLL: Duration = Duration::from_millis(100);
/// How often the status record is written.
const RECORD_EVERY: Duration = Duration::from_secs(1);
/// How long a stop waits for the kernel to end the session after unmounting.
const UNMOUNT_WAIT: Duration = Duration::from_secs(30);

/// What a running mount publishes about itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MountRecord {
    pub pid: u32,
    /// The daemon's start time, in clock ticks after boot (see `daemon_alive`).
    #[serde(default)]
    pub started: u64,
    pub mountpoint: PathBuf,
    pub server: String,
    pub user: String,
    pub cache_dir: PathBuf,
    #[serde(default)]
    pub state_dir: PathBuf,
    pub pending_files: usize,
    pub pending_bytes: u64,
    pub memory_cache_bytes: u64,
    pub disk_cache_bytes: u64,
    pub bytes_sent: u64,
    #[serde(default)]
    pub conflict_copies: u64,
    #[serde(default)]
    pub bytes_copied_on_server: u64,
    /// Of `bytes_sent`, those sent while their file was still being written.
    #[serde(default)]
    pub bytes_sent_ahead: u64,
    #[serde(default)]
    pub bytes_fetched: u64,
    /// The bounds of the memory and disk caches, in bytes.
    #[serde(default)]
    pub memory_cache_limit: u64,
    #[serde(default)]
    pub disk_cache_limit: u64,
    /// The change feed: followed or not (and why), the replica's size.
    #[serde(default)]
    pub feed: FeedStatus,
    /// The syncer, in local-first mode.
    #[serde(default)]
    pub sync: Option<SyncStatus>,
    /// FUSE passthrough: on, or off and why; and the handles opened with it.
    #[serde(default)]
    pub passthrough: String,
    #[serde(default)]
    pub passthrough_opens: u64,
    /// When the daemon wrote this record (ns since the epoch).
    #[serde(default)]
    pub written_at: i64,
    /// The daemon writes the record anew on SIGUSR1 (`refresh_records`). One
    /// without this would die of the signal, and is not sent it.
    #[serde(default)]
    pub refreshes_on_usr1: bool,
}

fn records_dir() -> PathBuf {
    cache_root().join("mounts")
}

fn record_path(mountpoint: &Path) -> PathBuf {
    let key: String = mountpoint
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    records_dir().join(format!("{key}.json"))
}

pub fn records() -> Vec<MountRecord> {
    let Ok(entries) = std::fs::read_dir(records_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect()
}

/// The mount point of the running mount that holds `path`, if one does.
pub fn root_of(path: &Path) -> Option<PathBuf> {
    let path = canonical(path);
    records()
        .into_iter()
        .filter(|r| r.daemon_alive() && path.starts_with(&r.mountpoint))
        .map(|r| r.mountpoint)
        .max_by_key(|m| m.components().count())
}

pub fn record_for(mountpoint: &Path) -> Option<MountRecord> {
    serde_json::from_slice(&std::fs::read(record_path(mountpoint)).ok()?).ok()
}

/// How long `refresh_records` waits for the daemons to write their records.
const REFRESH_WAIT: Duration = Duration::from_secs(1);

/// Asks each running daemon to write its record now and waits for them (up
/// to `REFRESH_WAIT`), so that `panfs status` shows figures as they are,
/// not as the last periodic write left them (up to `RECORD_EVERY` old).
pub fn refresh_records() {
    let asked = crate::fs::now_ns();
    let mut waiting: Vec<PathBuf> = records()
        .into_iter()
        .filter(|r| r.refreshes_on_usr1 && r.daemon_alive())
        // SAFETY: kill(2) with a pid whose start time matched just now.
        .filter(|r| unsafe { libc::kill(r.pid as libc::pid_t, libc::SIGUSR1) } == 0)
        .map(|r| r.mountpoint)
        .collect();
    let deadline = Instant::now() + REFRESH_WAIT;
    while !waiting.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        waiting.retain(|m| record_for(m).is_some_and(|r| r.written_at < asked));
    }
}

fn write_record(record: &mut MountRecord) {
    record.written_at = crate::fs::now_ns();
    let path = record_path(&record.mountpoint);
    let tmp = path.with_extension("tmp");
    let written = std::fs::create_dir_all(records_dir())
        .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(record).unwrap_or_default()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(error = %e, "could not write the mount record");
    }
}

/// A process's start time in clock ticks after boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may itself hold spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

impl MountRecord {
    /// Whether the daemon that wrote this record still runs. Its pid alone could
    /// name an unrelated process that was given the pid after the daemon died,
    /// and `umount` would signal that one.
    pub fn daemon_alive(&self) -> bool {
        start_time(self.pid) == Some(self.started)
    }
}

pub fn canonical(mountpoint: &Path) -> PathBuf {
    std::fs::canonicalize(mountpoint).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(mountpoint))
            .unwrap_or_else(|_| mountpoint.to_path_buf())
    })
}

/// Tells the parent that launched this daemon that the mount is ready.
fn signal_ready() {
    if let Ok(fd) = std::env::var("PANFS_READY_FD")
        && let Ok(fd) = fd.parse::<i32>()
    {
        // SAFETY: the parent passed this descriptor to us for exactly this message.
        let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
        let _ = pipe.write_all(b"ok\n");
    }
}

/// Serves the mount in this process until it is unmounted or told to stop.
pub fn run(login: Login, opts: MountOptions) -> anyhow::Result<()> {
    let mountpoint = canonical(&opts.mountpoint);
    anyhow::ensure!(
        mountpoint.is_dir(),
        "{} is not a directory",
        mountpoint.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let remote: Arc<dyn Remote> =
        Arc::new(HttpRemote::new(&login.server, &login.token, opts.timeout)?);
    let cache_dir = opts
        .cache_dir
        .clone()
        .unwrap_or_else(|| cache_root().join(&login.user));
    let state_dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| state_root().join(&login.user));
    for dir in [&cache_dir, &state_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    move_old_journal(&cache_dir, &state_dir)?;
    let (info, online) = account(&rt, remote.as_ref(), &login, &state_dir, opts.local_first)?;
    let fs = PanFs::new(
        rt.handle().clone(),
        remote,
        info.root_ino,
        FsOptions {
            attr_ttl: opts.attr_ttl,
            entry_ttl: opts.entry_ttl,
            fallback_ttl: opts.fallback_ttl,
            // Local-first, close never waits for the server.
            writeback: opts.writeback || opts.local_first,
            local_first: opts.local_first,
            sync_timeout: opts.timeout,
            cache_dir: cache_dir.clone(),
            state_dir: state_dir.clone(),
            memory_cache_bytes: opts.memory_cache,
            disk_cache_bytes: opts.cache_size,
            // Blocks fetched ahead wait in the memory cache: a window wider
            // than half of it would evict them before the reader gets there.
            readahead_max: READAHEAD_MAX.min(opts.memory_cache / 2),
            passthrough: opts.passthrough,
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
        },
    )
    .with_context(|| format!("opening the cache in {}", cache_dir.display()))?;
    let recovered = fs.recover_journal();
    if recovered > 0 {
        tracing::info!(recovered, "resuming journaled uploads");
    }
    // Offline, the follower takes it once the server answers.
    if online {
        fs.take_feed_position();
        fs.reserve_first_inos();
    }
    fs.start_writeback();
    fs.start_syncer();
    fs.start_streamer();

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("pan:{}", login.user)),
        // The kernel's own `subtype=` option: the mount shows as `fuse.pan` whether
        // root mounts directly (fuser passes only kernel options to mount(2)) or
        // fusermount3 does (it reads the same option).
        MountOption::CUSTOM("subtype=pan".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    let adapter = FuseAdapter {
        fs: fs.clone(),
        backings: Backings::default(),
    };
    let session = fuser::Session::new(adapter, &mountpoint, &config)
        .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    fs.set_kernel(Arc::new(Notifications(session.notifier())));
    let background = session.spawn()?;
    fs.start_follower();
    tracing::info!(mountpoint = %mountpoint.display(), server = login.server, "mounted");

    let mut record = MountRecord {
        pid: std::process::id(),
        started: start_time(std::process::id()).unwrap_or_default(),
        mountpoint: mountpoint.clone(),
        server: login.server.clone(),
        user: login.user.clone(),
        cache_dir,
        state_dir,
        memory_cache_limit: opts.memory_cache,
        disk_cache_limit: opts.cache_size,
        ..Default::default()
    };
    let (signal_rx, refreshes) = watch_signals(&rt);
    record.refreshes_on_usr1 = refreshes;
    write_record(&mut record);
    signal_ready();

    let mut recorded = Instant::now();
    // Until the session ends: unmounted from outside, or by this process on a signal.
    while !background.guard.is_finished() {
        let record_now = match signal_rx.recv_timeout(SESSION_POLL) {
            Ok(Signal::Record) => true,
            Ok(Signal::Stop) => {
                tracing::info!("stopping: sending pending writes, then unmounting");
                let failed = fs.flush_all();
                if failed > 0 {
                    tracing::error!(failed, "unsent writes stay journaled for the next mount");
                }
                unmount(&mountpoint)?;
                let waited = Instant::now();
                while !background.guard.is_finished() && waited.elapsed() < UNMOUNT_WAIT {
                    std::thread::sleep(SESSION_POLL);
                }
                break;
            }
            Err(no_signal) => {
                // Disconnected: no signal can come (its handler could not be
                // installed), and the mount goes on until it is unmounted.
                if no_signal == std::sync::mpsc::RecvTimeoutError::Disconnected {
                    std::thread::sleep(SESSION_POLL);
                }
                recorded.elapsed() >= RECORD_EVERY
            }
        };
        if record_now {
            update_record(&fs, &mut record);
            recorded = Instant::now();
        }
    }
    let _ = std::fs::remove_file(record_path(&mountpoint));
    // fuser unmounts as its session ends. A detached mount still looks
    // mounted to it, so once the mount is gone (the usual case) its unmount
    // fails with EINVAL, which is no news.
    match background.umount_and_join() {
        Err(e) if is_mounted(&mountpoint) => {
            tracing::warn!(error = %e, "unmounting at the end of the session failed")
        }
        _ => tracing::info!("unmounted"),
    }
    Ok(())
}

/// What a signal asks of the mount's main loop.
enum Signal {
    /// SIGTERM or SIGINT: send what is pending, then unmount.
    Stop,
    /// SIGUSR1 (`panfs status`): write the status record now.
    Record,
}

/// Installs the mount's signal handlers: the channel they speak on (closed
/// when SIGTERM and SIGINT cannot be watched: the mount then ends only when
/// it is unmounted), and whether SIGUSR1 is watched (if not, the record says
/// it must not be sent: it would kill the daemon).
fn watch_signals(rt: &tokio::runtime::Runtime) -> (std::sync::mpsc::Receiver<Signal>, bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let _entered = rt.enter();
    let (tx, rx) = std::sync::mpsc::channel();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("could not watch SIGTERM and SIGINT: stop the mount with umount");
        return (rx, false);
    };
    let mut usr1 = signal(SignalKind::user_defined1()).ok();
    let refreshes = usr1.is_some();
    rt.spawn(async move {
        loop {
            let record_asked = async {
                match usr1.as_mut() {
                    Some(usr1) => usr1.recv().await,
                    None => std::future::pending().await,
                }
            };
            let signal = tokio::select! {
                _ = term.recv() => Signal::Stop,
                _ = int.recv() => Signal::Stop,
                _ = record_asked => Signal::Record,
            };
            let stop = matches!(signal, Signal::Stop);
            if tx.send(signal).is_err() || stop {
                return;
            }
        }
    });
    (rx, refreshes)
}

/// Brings the status record (`panfs status`) up to date.
fn update_record(fs: &PanFs, record: &mut MountRecord) {
    let (files, bytes) = fs.pending();
    record.pending_files = files;
    record.pending_bytes = bytes;
    (record.memory_cache_bytes, record.disk_cache_bytes) = fs.cache_bytes();
    record.bytes_sent = fs.stats.bytes_sent.load(Ordering::Relaxed);
    record.conflict_copies = fs.stats.conflict_copies.load(Ordering::Relaxed);
    record.bytes_copied_on_server = fs.stats.bytes_copied_on_server.load(Ordering::Relaxed);
    record.bytes_sent_ahead = fs.stats.bytes_sent_ahead.load(Ordering::Relaxed);
    record.bytes_fetched = fs.stats.bytes_fetched.load(Ordering::Relaxed);
    record.feed = fs.feed_status();
    record.sync = fs.sync_status();
    record.passthrough = fs.passthrough.describe();
    record.passthrough_opens = fs.passthrough.opens.load(Ordering::Relaxed);
    write_record(record);
}

/// Earlier versions kept the journal in the cache directory: unsent writes
/// found there move to the state directory before anything else looks.
fn move_old_journal(cache_dir: &Path, state_dir: &Path) -> anyhow::Result<()> {
    let (old, new) = (cache_dir.join("journal"), state_dir.join("journal"));
    let Ok(entries) = std::fs::read_dir(&old) else {
        return Ok(());
    };
    std::fs::create_dir_all(&new).with_context(|| format!("creating {}", new.display()))?;
    for entry in entries.flatten() {
        let to = new.join(entry.file_name());
        if std::fs::rename(entry.path(), &to).is_err() {
            // Another file system: copy, then remove.
            std::fs::copy(entry.path(), &to).with_context(|| {
                format!("moving {} to {}", entry.path().display(), to.display())
            })?;
            std::fs::remove_file(entry.path())?;
        }
    }
    let _ = std::fs::remove_dir(&old);
    tracing::info!(from = %old.display(), to = %new.display(), "moved unsent writes to the state directory");
    Ok(())
}

/// The account's details, and whether they came from the server. They are kept in the state
/// directory, so that a local-first mount can start while the server is
/// unreachable (a laptop with no network): it then works from the replica,
/// the caches and the journal, and syncs once the server answers. A server
/// that answers with a refusal (a revoked token) still stops the mount.
fn account(
    rt: &tokio::runtime::Runtime,
    remote: &dyn Remote,
    login: &Login,
    state_dir: &Path,
    local_first: bool,
) -> anyhow::Result<(UserInfo, bool)> {
    let path = state_dir.join("account.json");
    let reaching = || format!("reaching {} as {}", login.server, login.user);
    match rt.block_on(remote.user_info()) {
        Ok(info) => {
            let line = serde_json::to_string(&info)?;
            if let Err(e) = crate::journal::lines::replace(&path, [line]) {
                tracing::warn!(path = %path.display(), error = %e, "could not keep the account's details for an offline start");
            }
            Ok((info, true))
        }
        Err(e) if e.code().is_none() && local_first => {
            let saved = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<UserInfo>(&bytes).ok())
                .filter(|info| info.username == login.user);
            let Some(info) = saved else {
                return Err(e).with_context(|| {
                    format!(
                        "{}; no earlier mount of this account to start offline from",
                        reaching()
                    )
                });
            };
            tracing::warn!(error = %e, server = login.server, "the server is unreachable: starting offline, with what the last mount saw; changes sync once it answers");
            Ok((info, false))
        }
        Err(e) => Err(e).with_context(reaching),
    }
}

/// Detaches a FUSE mount: the direct syscall as root, fusermount3 otherwise.
pub fn unmount(mountpoint: &Path) -> anyhow::Result<()> {
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path; MNT_DETACH also clears a dead mount.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let status = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(mountpoint)
        .status()
        .context("running fusermount3")?;
    if !status.success() {
        bail!("could not unmount {}", mountpoint.display());
    }
    Ok(())
}

/// True when `path` is a mount point in /proc/mounts.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return false;
    };
    let target = path.to_string_lossy().replace(' ', "\\040");
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(target.as_str()))
}

/// Starts the daemon in the background and returns once its mount is ready.
pub fn spawn_daemon(args: &[std::ffi::OsString], log: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(args)
        .arg("--foreground")
        .env("PANFS_READY_FD", "3")
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(write_fd, 3) < 0 || libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the panfs daemon")?;
    // SAFETY: both descriptors came from pipe2 above and are owned here.
    unsafe { libc::close(write_fd) };
    let mut pipe = unsafe { std::fs::File::from_raw_fd(read_fd) };
    let mut answer = String::new();
    let _ = pipe.read_to_string(&mut answer);
    if answer.starts_with("ok") {
        return Ok(());
    }
    let _ = child.wait();
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
    bail!(
        "the mount failed; see {}:\n{}",
        log.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_alive_only_for_the_process_that_wrote_it() {
        let me = std::process::id();
        let started = start_time(me).expect("own start time");
        let record = |pid, started| MountRecord {
            pid,
            started,
            ..Default::default()
        };
        assert!(record(me, started).daemon_alive());
        // Same pid, other start time: a later process that reused the pid.
        assert!(!record(me, started + 1).daemon_alive());
        // A record from before start times were kept.
        assert!(!record(me, 0).daemon_alive());
        assert!(!record(u32::MAX, started).daemon_alive());
    }
}
