//! Test harness: starts real `panserver` processes (and, for mount tests, real
//! `panfs` mounts) and talks to them over HTTP like any client.
//!
//! The binaries are the ones `cargo test` builds next to this test executable.

pub mod api;
pub mod mount;
pub mod posix;
pub mod profile;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use api::Api;
pub use mount::Mount;

/// The password test accounts use.
pub const PASSWORD: &str = "a good password";

/// The path of a workspace binary built for this test run.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A free loopback port no other server of this test process was given. A port
/// from bind(0) is not held, so two tests running at once could be handed the same
/// one; the loser's server then exits while the winner answers for it. Ports here
/// come from one sequence per process, below Linux's ephemeral range (outgoing
/// connections never hold them) and above the test services' ports.
/// A test setting from the environment (`PAN_LOAD_SECS`, a seed to replay…),
/// or `default()` when it is unset or does not parse.
pub fn setting<T: std::str::FromStr>(var: &str, default: impl FnOnce() -> T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(default)
}

/// `pan-latency-proxy` in front of a server: every round trip through it
/// takes `rtt` longer (this machine's kernel has no netem).
pub struct LatencyProxy {
    child: Child,
    port: u16,
}

impl LatencyProxy {
    pub fn start(server: &Server, rtt: Duration) -> Self {
        let port = free_port();
        let child = Command::new(bin("pan-latency-proxy"))
            .arg(port.to_string())
            .arg(server.port.to_string())
            .arg(format!("{}", rtt.as_secs_f64() * 1000.0))
            .stdin(Stdio::null())
            .spawn()
            .expect("starting pan-latency-proxy");
        wait_until("the proxy to listen", Duration::from_secs(10), || {
            is_listening(port)
        });
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing uses, from a range below the ephemeral ports (so no
/// outgoing connection takes it meanwhile).
pub fn free_port() -> u16 {
    const FIRST: u32 = 27_000;
    const COUNT: u32 = 5_700;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(131) % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % COUNT) as u16;
        if port_is_free(port) {
            return port;
        }
    }
    panic!(
        "no free loopback port between {FIRST} and {}",
        FIRST + COUNT
    );
}

/// Whether a loopback TCP port can be bound. The probe binds without
/// listening: a listening probe, inherited by a child that another test thread
/// forks at that moment, would accept connections until the child's exec
/// closes it, and a server's readiness check could take it for the server.
fn port_is_free(port: u16) -> bool {
    // SAFETY: a socket of our own, closed before returning; the address is a
    // zeroed sockaddr_in filled in field by field.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let bound = libc::bind(
            fd,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) == 0;
        libc::close(fd);
        bound
    }
}

/// Whether something listens on the loopback port. A connection from the port to
/// itself does not count: with nothing listening, Linux can pick the target port
/// as the connection's own ephemeral port and connect the socket to itself.
pub fn is_listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .and_then(|s| s.local_addr())
        .is_ok_and(|local| local.port() != port)
}

/// Waits for `ready` to hold, polling; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `panserver serve` on a random port with its own data directory.
pub struct Server {
    pub port: u16,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
    /// Whether this server made its deployment (and drops it when done).
    owns_deployment: bool,
    child: Option<Child>,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `PAN_*` settings.
    /// Starts a server with extra `PAN_*` settings. On the full stack it gets a
    /// deployment of its own (database, namespaces), migrated before it starts.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let mut settings: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let full = profile::is_full();
        if full {
            settings.extend(profile::fresh_deployment());
        }
        let server = Self::launch(settings, full, None);
        if full {
            let out = server.command(&["migrate"], "");
            assert!(
                out.status.success(),
                "migrate: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut server = server;
        server.spawn();
        server
    }

    /// A second API server of the same deployment (same database, sessions, queue,
    /// store and staging directory), as a scaled-out deployment runs them.
    pub fn start_sharing(first: &Server, env: &[(&str, &str)]) -> Self {
        let mut settings = first.env.clone();
        settings.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut server = Self::launch(settings, false, Some(first));
        server.spawn();
        server
    }

    fn launch(env: Vec<(String, String)>, owns_deployment: bool, sharing: Option<&Server>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Servers of one deployment share its data directory, and so its staging.
        let data = match sharing {
            Some(first) => first.data.clone(),
            None => dir.path().join("data"),
        };
        Server {
            port: free_port(),
            data,
            _dir: Some(dir),
            env,
            owns_deployment,
            child: None,
        }
    }

    /// Settings this server runs with (beyond the inherited environment).
    pub fn settings(&self) -> &[(String, String)] {
        &self.env
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(bin("panserver"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data")
            .arg(&self.data)
            .env(
                "PAN_LOG",
                std::env::var("PAN_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let port = self.port;
        let child = self.child.insert(cmd.spawn().expect("starting panserver"));
        // A connection is enough: the server binds only once it is ready (and may speak TLS).
        wait_until("panserver to listen", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("panserver exited before it listened: {status}");
            }
            is_listening(port)
        });
    }

    /// The server process's pid (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs another panserver subcommand against this server's data.
    pub fn command(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(bin("panserver"))
            .args(args)
            .arg("--data")
            .arg(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running panserver");
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin.as_bytes());
        }
        child.wait_with_output().expect("panserver output")
    }

    /// Asserts that `panserver check` finds nothing wrong (`what` names the moment).
    /// A chunk in flight (staged and not yet recorded, or stored and not yet
    /// removed from staging) looks like a problem for a moment; a real one stays,
    /// so the check is repeated for a while before it counts as failed.
    pub fn assert_consistent(&self, what: &str) {
        let mut last = String::new();
        for _ in 0..30 {
            let out = self.command(&["check"], "");
            if out.status.success() {
                return;
            }
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("{what}: panserver check: {last}");
    }

    /// Starts a `panserver transfer` worker process of this deployment, logging
    /// each chunk it moves to `log`.
    pub fn spawn_transfer_worker(&self, log: &Path) -> Child {
        let log = std::fs::File::create(log).expect("worker log");
        Command::new(bin("panserver"))
            .args(["transfer", "--workers", "1", "--data"])
            .arg(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PAN_LOG", "panserver=info,panserver::transfer=debug,warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting a transfer worker")
    }

    /// How many chunks the object store holds for this deployment.
    pub fn stored_chunks(&self) -> usize {
        let setting = |key: &str| self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        match (setting("PAN_NAMESPACE"), setting("PAN_STORE")) {
            (Some(ns), Some(store)) if profile::is_full() => {
                profile::bucket_objects(store, &format!("{ns}/chunks/")).len()
            }
            _ => self.files_under("store").len(),
        }
    }

    /// Files (chunks) under a directory of the server's data, recursively.
    pub fn files_under(&self, sub: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.data.join(sub)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n != "tmp") {
                        stack.push(path);
                    }
                } else {
                    out.push(path);
                }
            }
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test's report says whether the server was still running
        // (a refused connection to one that exited, or one that never did).
        if std::thread::panicking()
            && let Some(child) = self.child.as_mut()
        {
            match child.try_wait() {
                Ok(Some(status)) => {
                    eprintln!("panserver on port {} had exited: {status}", self.port)
                }
                _ => eprintln!("panserver on port {} was still running", self.port),
            }
        }
        self.kill();
        if self.owns_deployment {
            profile::drop_deployment(&self.env);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), cheap enough for gigabytes.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        Noise::new(seed).fill(&mut v);
        v
    }
}

impl std::io::Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.fill(buf);
        Ok(buf.len())
    }
}

/// Writes `len` bytes of noise to `path` and returns their SHA-256.
pub fn write_noise_file(path: &Path, seed: u64, len: u64) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut noise = Noise::new(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        noise.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    file.flush().expect("flush");
    hex::encode(hasher.finalize())
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).expect("open");
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).expect("read");
    hex::encode(hasher.finalize())
}

/// Sends `request` as raw bytes (no client-side normalisation) and returns the status.
pub fn raw_http(port: u16, request: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("status line");
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a status code")
}

/// A small tmpfs mounted for one test (needs root), to fill up on purpose.
pub struct SmallDisk {
    pub path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB on `path` (created if missing).
    pub fn mount_on(path: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(path).expect("mountpoint");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "pan-test"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs (needs root)");
        Self {
            path: path.to_path_buf(),
            _dir: None,
        }
    }

    pub fn new(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut disk = Self::mount_on(dir.path(), mib);
        disk._dir = Some(dir);
        disk
    }

    /// The bytes free on the disk.
    pub fn free_bytes(&self) -> u64 {
        // SAFETY: statvfs on a path we own, into a zeroed struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).expect("path");
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize
    }

    /// Fills the disk with a file, leaving about `leave_mib` MiB free.
    pub fn fill(&self, leave_mib: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let size = self.free_bytes().saturating_sub(leave_mib << 20);
        let data = vec![0x5au8; 1 << 20];
        let mut f = std::fs::File::create(&filler).expect("filler");
        let mut written = 0;
        while written < size {
            let n = (size - written).min(data.len() as u64) as usize;
            std::io::Write::write_all(&mut f, &data[..n]).expect("filling");
            written += n as u64;
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A process's peak resident memory (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Runs `scripts/services.sh ARGS DIR` on the test services (full stack).
pub fn services(args: &[&str]) {
    let dir = std::env::var("PAN_TEST_SERVICES_DIR")
        .expect("PAN_TEST_SERVICES_DIR (scripts/test.sh sets it)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
    let status = Command::new("bash")
        .arg(script)
        .args(args)
        .arg(&dir)
        .status()
        .expect("services.sh");
    assert!(status.success(), "services.sh {args:?}");
}
