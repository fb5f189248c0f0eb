//! Where panfs keeps things: the login (token, mode 0600) under
//! `$XDG_CONFIG_HOME/pan`; unsent writes (the journal and working copies) under
//! `$XDG_STATE_HOME/pan`, never in a cache, which is safe to delete; cached
//! content, logs and mount records under `$XDG_CACHE_HOME/pan`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    pub server: String,
    pub user: String,
    pub token: String,
    pub token_id: i64,
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => dirs::home_dir()
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join(fallback),
    }
}

pub fn config_dir() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("pan")
}

pub fn cache_root() -> PathBuf {
    xdg("XDG_CACHE_HOME", ".cache").join("pan")
}

pub fn state_root() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state").join("pan")
}

fn login_path() -> PathBuf {
    config_dir().join("login.json")
}

pub fn load_login() -> anyhow::Result<Login> {
    let path = login_path();
    let text = std::fs::read(&path)
        .with_context(|| format!("not logged in (no {}): run `panfs login`", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn save_login(login: &Login) -> anyhow::Result<()> {
    let dir = config_dir();
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join("login.json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(login)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, login_path())?;
    Ok(())
}

pub fn remove_login() -> anyhow::Result<bool> {
    match std::fs::remove_file(login_path()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Refuses plain HTTP to anything but this machine unless explicitly allowed:
/// the token would cross the network in clear.
pub fn check_transport(server: &str, insecure_http: bool) -> anyhow::Result<()> {
    let Some(rest) = server.strip_prefix("http://") else {
        anyhow::ensure!(
            server.starts_with("https://"),
            "the server URL must start with http:// or https://"
        );
        return Ok(());
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let loopback = host == "localhost" || host == "[::1]" || host.starts_with("127.");
    anyhow::ensure!(
        loopback || insecure_http,
        "refusing plain HTTP to {host}: use https://, or pass --insecure-http"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_transport;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_transport("http://127.0.0.1:8080", false).is_ok());
        assert!(check_transport("http://localhost:8080/", false).is_ok());
        assert!(check_transport("https://pan.example.com", false).is_ok());
        assert!(check_transport("http://pan.example.com", false).is_err());
        assert!(check_transport("http://pan.example.com", true).is_ok());
        assert!(check_transport("ftp://x", true).is_err());
    }
}
