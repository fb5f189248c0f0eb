//! A real `panfs` mount of one account, with its own config and cache
//! directories (as `$XDG_CONFIG_HOME`, `$XDG_CACHE_HOME` and `$XDG_STATE_HOME`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{Server, bin};

pub struct Mount {
    pub path: PathBuf,
    pub server_url: String,
    home: tempfile::TempDir,
    args: Vec<String>,
    mounted: bool,
}

impl Mount {
    /// Signs `user` up (if needed), logs in and mounts.
    pub fn new(server: &Server, user: &str) -> Self {
        Self::with_args(server, user, &[])
    }

    pub fn with_args(server: &Server, user: &str, args: &[&str]) -> Self {
        Self::at(&server.url(), user, args)
    }

    /// Mounts through `url` (a proxy in front of the server, say).
    pub fn at(url: &str, user: &str, args: &[&str]) -> Self {
        crate::Api::user(url, user, crate::PASSWORD);
        let home = tempfile::tempdir().expect("tempdir");
        let path = home.path().join("mnt");
        std::fs::create_dir_all(&path).expect("mountpoint");
        let mut m = Mount {
            path,
            server_url: url.to_string(),
            home,
            args: args.iter().map(|s| s.to_string()).collect(),
            mounted: false,
        };
        let out = m.panfs(
            &["login", "--server", url, "--user", user, "--password-stdin"],
            crate::PASSWORD,
        );
        assert!(
            out.status.success(),
            "login: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.mount();
        m
    }

    pub fn config_dir(&self) -> PathBuf {
        self.home.path().join("config")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.home.path().join("cache")
    }

    /// Empties panfs's caches (blocks, whole contents, the saved replica)
    /// while unmounted; its logs and mount records stay.
    pub fn empty_cache(&self) {
        assert!(!self.mounted, "the cache is emptied while unmounted");
        let pan = self.cache_dir().join("pan");
        for e in std::fs::read_dir(&pan).expect("cache dir").flatten() {
            if e.path().is_dir() && e.file_name() != "mounts" {
                std::fs::remove_dir_all(e.path()).expect("empty the cache");
            }
        }
    }

    /// `panfs sync` of the mount: every change made on it is on the server.
    pub fn sync(&self) {
        let out = self.panfs(&["sync", &self.path.to_string_lossy()], "");
        assert!(
            out.status.success(),
            "panfs sync: {}\nthe mount's log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(100)
        );
    }

    /// The end of the daemon's log (for a failing test's report).
    pub fn log_tail(&self, lines: usize) -> String {
        let dir = self.cache_dir().join("pan");
        let mut out = String::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                out += &all[all.len().saturating_sub(lines)..].join("\n");
            }
        }
        out
    }

    /// Where panfs keeps unsent writes (`$XDG_STATE_HOME`).
    pub fn state_dir(&self) -> PathBuf {
        self.home.path().join("state")
    }

    /// Runs panfs with this mount's environment.
    pub fn panfs(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(bin("panfs"))
            .args(args)
            .env("XDG_CONFIG_HOME", self.config_dir())
            .env("XDG_CACHE_HOME", self.cache_dir())
            .env("XDG_STATE_HOME", self.state_dir())
            .env(
                "PAN_LOG",
                std::env::var("PAN_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run panfs");
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin.as_bytes());
        }
        child.wait_with_output().expect("panfs output")
    }

    pub fn mount(&mut self) {
        let path = self.path.to_string_lossy().into_owned();
        let mut args = vec!["mount", path.as_str()];
        let extra = self.args.clone();
        args.extend(extra.iter().map(String::as_str));
        let out = self.panfs(&args, "");
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = true;
    }

    pub fn umount(&mut self) {
        let out = self.panfs(&["umount", &self.path.to_string_lossy()], "");
        assert!(
            out.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = false;
    }

    /// The daemon's mount record (pid, pending writes, bytes sent), which it
    /// rewrites every second.
    pub fn record(&self) -> serde_json::Value {
        let dir = self.cache_dir().join("pan").join("mounts");
        for e in std::fs::read_dir(&dir).expect("mount records").flatten() {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).expect("record")).expect("json");
            if v["mountpoint"].as_str() == Some(&*self.path.to_string_lossy()) {
                return v;
            }
        }
        panic!("no mount record for {}", self.path.display());
    }

    /// The daemon's pid, from its mount record.
    pub fn pid(&self) -> u32 {
        self.record()["pid"].as_u64().expect("pid") as u32
    }

    /// Bytes of file content this mount has sent, once its record caught up.
    pub fn bytes_sent(&self) -> u64 {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        self.record()["bytes_sent"].as_u64().expect("bytes_sent")
    }

    /// Bytes of file contents this mount fetched from the server.
    pub fn bytes_fetched(&self) -> u64 {
        self.record()["bytes_fetched"]
            .as_u64()
            .expect("bytes_fetched")
    }

    /// Bytes of files this mount copied as a server-side operation.
    pub fn bytes_copied_on_server(&self) -> u64 {
        self.record()["bytes_copied_on_server"]
            .as_u64()
            .expect("bytes_copied_on_server")
    }

    /// SIGKILLs the daemon and clears the dead mount, as a crash would leave it.
    pub fn kill(&mut self) {
        let pid = self.pid();
        // SAFETY: killing the test's own panfs daemon.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        crate::wait_until("panfs to die", std::time::Duration::from_secs(10), || {
            // SAFETY: probing a pid.
            unsafe { libc::kill(pid as i32, 0) != 0 }
        });
        self.umount();
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Runs a shell command with the mount as working directory; panics on failure.
    pub fn sh(&self, script: &str) -> String {
        let out = Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(script)
            .current_dir(&self.path)
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "`{script}` failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn root(&self) -> &Path {
        &self.path
    }

    /// Writes `ours` to `name` through a handle opened here with `open`, while
    /// another client stores a version of its own through the API; then
    /// fsyncs and closes, which must succeed (the race a conflict copy settles).
    pub fn write_while_another_client_stores(
        &self,
        api: &crate::Api,
        name: &str,
        open: &std::fs::OpenOptions,
        ours: &[u8],
    ) {
        let mut f = open.open(self.p(name)).expect("open for writing");
        f.write_all(ours).expect("write");
        let theirs = format!("another client's version of {name}");
        let path = format!("/api/v1/files/{name}");
        assert_eq!(api.put_bytes(&path, theirs.into_bytes()).0, 201);
        f.sync_all()
            .expect("fsync keeps our version as a copy and succeeds");
    }

    /// Asserts that `stem.ext` at the top of the mount has one conflict copy,
    /// which holds `ours`.
    pub fn assert_one_conflict_copy(&self, stem: &str, ext: &str, ours: &[u8]) {
        let copies: Vec<_> = std::fs::read_dir(&self.path)
            .expect("readdir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{stem} (conflict on ")) && n.ends_with(ext))
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}\n{}", self.log_tail(20));
        let kept = std::fs::read(self.p(&copies[0])).expect("read the copy");
        assert_eq!(kept, ours);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A failing test's report ends with what the daemon logged last.
        if std::thread::panicking() {
            eprintln!(
                "panfs log of {} (last lines):\n{}",
                self.path.display(),
                self.log_tail(80)
            );
            if let Ok(dir) = std::env::var("PAN_KEEP_LOGS") {
                let to = Path::new(&dir).join(format!(
                    "panfs-{}.log",
                    self.home
                        .path()
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                ));
                let _ = std::fs::write(to, self.log_tail(usize::MAX));
            }
        }
        if self.mounted {
            let _ = self.panfs(&["umount", &self.path.to_string_lossy()], "");
        }
    }
}
