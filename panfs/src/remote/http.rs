//! The `Remote` trait over pan's HTTP API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use panproto::batch::{BatchRequest, BatchResponse, ReserveRequest, Reserved};
use panproto::wire::{
    CommitRequest, CreateRequest, DirEntry, ErrorBody, ErrorCode, LinkRequest, Listing, Manifest,
    Node, ORIGIN_HEADER, ProofAnswer, RenameRequest, SetAttrRequest, UploadInit, UploadState,
    UserInfo, XattrMode, XattrNames,
};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::clients::Clients;
use super::{FeedPage, IfContent, Remote, RemoteError, RemoteResult};
use crate::cache::bufs::{self, BLOCKS};

/// The HTTP API client.
pub struct HttpRemote {
    base: String,
    token: String,
    http: Clients,
    /// Sent with every request, so this mount knows its own changes in the feed.
    origin: u64,
    /// A request timed out and none was answered since: the server stopped
    /// answering without refusing (a lost network, a stopped server). Until
    /// it answers again, calls that only read fail at once instead of each
    /// waiting out the timeout; a local-first mount then answers from what it
    /// saw. A prober asks the server every `PROBE_EVERY` meanwhile, and the
    /// first answer any request gets ends it.
    silent: Arc<AtomicBool>,
}

/// How often a silent server is asked whether it answers again, and how long
/// each ask waits.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_WAIT: Duration = Duration::from_secs(3);

impl HttpRemote {
    pub fn new(base: &str, token: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: Clients::new(timeout)?,
            origin: rand_origin(),
            silent: Arc::default(),
        })
    }

    /// Fails at once while the server is silent (see `silent`).
    fn unless_silent(&self) -> RemoteResult<()> {
        if self.silent.load(Ordering::Relaxed) {
            return Err(RemoteError::NotSent(
                "the server stopped answering; asked again every second".into(),
            ));
        }
        Ok(())
    }

    /// Notes what a request's sending says of the server: silent after a
    /// timeout, answering after any response.
    fn note_answer<T>(&self, sent: &reqwest::Result<T>) {
        let silent = matches!(sent, Err(e) if e.is_timeout());
        // Any other failure (a refused connection) says neither.
        if sent.is_err() && !silent {
            return;
        }
        if set_silent(&self.silent, silent) && silent {
            self.start_probing();
        }
    }

    /// Asks a silent server for the account every `PROBE_EVERY`, each ask
    /// bounded by `PROBE_WAIT`, until one is answered (or another request
    /// is): so the mount learns the server is back within seconds, and no
    /// program's call has to be the one that waits to find out. The prober
    /// is a thread of its own: the request that found the server silent may
    /// run on a FUSE thread's runtime, which runs nothing between its reads.
    fn start_probing(&self) {
        let url = format!("{}/api/v1/user", self.base);
        let (token, silent) = (self.token.clone(), self.silent.clone());
        let probe = move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = reqwest::Client::builder().timeout(PROBE_WAIT).build()?;
            rt.block_on(async {
                while silent.load(Ordering::Relaxed) {
                    tokio::time::sleep(PROBE_EVERY).await;
                    if client.get(&url).bearer_auth(&token).send().await.is_ok() {
                        set_silent(&silent, false);
                    }
                }
            });
            anyhow::Ok(())
        };
        let started = std::thread::Builder::new()
            .name("panfs-probe".into())
            .spawn(move || {
                if let Err(e) = probe() {
                    tracing::warn!(error = %e, "could not ask the server whether it answers again");
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "could not start asking the server whether it answers again");
        }
    }

    /// A read-only request's answer, at once an error while the server is silent.
    async fn query<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> RemoteResult<T> {
        self.unless_silent()?;
        self.json(req).await
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .current()
            .request(method, format!("{}/api/v1{}", self.base, path))
            .bearer_auth(&self.token)
            .header(ORIGIN_HEADER, self.origin)
    }

    /// The answer to a GET of bytes [start, end) of the file as it is at
    /// `content`, its body still to read.
    async fn ranged(
        &self,
        ino: i64,
        content: &str,
        start: u64,
        end: u64,
    ) -> RemoteResult<reqwest::Response> {
        self.unless_silent()?;
        // By version: a handle opened before another client replaced the file reads
        // on from the version it opened, while the server keeps it.
        let req = self
            .request(
                Method::GET,
                &format!("/nodes/{ino}/content?version={content}"),
            )
            .header("Range", format!("bytes={}-{}", start, end - 1));
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::PARTIAL_CONTENT && resp.status() != StatusCode::OK {
            return Err(RemoteError::Unreachable(format!(
                "unexpected status {}",
                resp.status()
            )));
        }
        Ok(resp)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> RemoteResult<reqwest::Response> {
        let sent = req.send().await;
        self.note_answer(&sent);
        let resp = sent.map_err(|e| {
            if e.is_connect() {
                RemoteError::NotSent(e.to_string())
            } else {
                RemoteError::Unreachable(e.to_string())
            }
        })?;
        self.checked(resp).await
    }

    /// The response if it is a success, else its error.
    async fn checked(&self, resp: reqwest::Response) -> RemoteResult<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body: Option<ErrorBody> = resp.json().await.ok();
        let (code, message) = match body {
            Some(b) => (b.code, b.message),
            None => (ErrorCode::Unknown, format!("HTTP {status}")),
        };
        // A server that is restarting or lost a backing service is unreachable, not refusing.
        if status >= 500 && code != ErrorCode::QuotaExceeded && code != ErrorCode::NoSpace {
            return Err(RemoteError::Unreachable(format!("{code}: {message}")));
        }
        Err(RemoteError::Refused {
            status,
            code,
            message,
        })
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> RemoteResult<T> {
        self.send(req)
            .await?
            .json()
            .await
            .map_err(|e| RemoteError::Unreachable(e.to_string()))
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> RemoteResult<T> {
        self.json(self.request(method, path).json(body)).await
    }
}

/// Sets whether the server is silent, logging a change; true when it changed.
fn set_silent(flag: &AtomicBool, silent: bool) -> bool {
    let changed = flag.swap(silent, Ordering::Relaxed) != silent;
    match (changed, silent) {
        (true, true) => tracing::warn!(
            "the server stopped answering: calls that only read fail at once until it answers again"
        ),
        (true, false) => tracing::info!("the server answers again"),
        _ => {}
    }
    changed
}

/// A number no other mount picks: from the process, the clock and the kernel's
/// per-boot random UUID, hashed.
fn rand_origin() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    // Only positive values fit the server's JSON integers everywhere.
    h.finish() >> 1
}

fn encode(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A body that broke off mid-way.
fn body_broke(e: reqwest::Error) -> RemoteError {
    RemoteError::Unreachable(e.to_string())
}

#[async_trait]
impl Remote for HttpRemote {
    fn origin(&self) -> u64 {
        self.origin
    }

    async fn changes(&self, since: Option<i64>, wait: Duration) -> RemoteResult<FeedPage> {
        let path = match since {
            Some(since) => format!("/changes?since={since}&wait={}", wait.as_secs_f64()),
            None => "/changes".to_string(),
        };
        // The poll outlasts the client's usual timeout by design.
        let req = self
            .request(Method::GET, &path)
            .timeout(wait + Duration::from_secs(15));
        let sent = req.send().await;
        self.note_answer(&sent);
        let resp = sent.map_err(|e| RemoteError::Unreachable(e.to_string()))?;
        if resp.status() == StatusCode::GONE {
            let body: Option<ErrorBody> = resp.json().await.ok();
            return match body.and_then(|b| b.seq) {
                Some(current) => Ok(FeedPage::Expired { current }),
                None => Err(RemoteError::Unreachable(
                    "410 from the change feed without a sequence number".into(),
                )),
            };
        }
        self.checked(resp)
            .await?
            .json()
            .await
            .map(FeedPage::Changes)
            .map_err(|e| RemoteError::Unreachable(e.to_string()))
    }

    async fn user_info(&self) -> RemoteResult<UserInfo> {
        self.json(self.request(Method::GET, "/user")).await
    }

    async fn node(&self, ino: i64) -> RemoteResult<Node> {
        self.query(self.request(Method::GET, &format!("/nodes/{ino}")))
            .await
    }

    async fn lookup(&self, parent: i64, name: &str) -> RemoteResult<Node> {
        let path = format!("/nodes/{parent}/children/{}", encode(name));
        self.query(self.request(Method::GET, &path)).await
    }

    async fn list(&self, dir: i64) -> RemoteResult<Vec<DirEntry>> {
        let mut entries = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/nodes/{dir}/children?after={}", encode(a)),
                None => format!("/nodes/{dir}/children"),
            };
            let page: Listing = self.query(self.request(Method::GET, &path)).await?;
            entries.extend(page.entries);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(entries),
            }
        }
    }

    async fn create(&self, parent: i64, req: &CreateRequest) -> RemoteResult<Node> {
        self.call(Method::POST, &format!("/nodes/{parent}/children"), req)
            .await
    }

    async fn link(&self, ino: i64, parent: i64, name: &str) -> RemoteResult<Node> {
        let req = LinkRequest {
            ino,
            name: name.to_string(),
        };
        self.call(Method::POST, &format!("/nodes/{parent}/links"), &req)
            .await
    }

    async fn remove(&self, parent: i64, name: &str, dir: bool) -> RemoteResult<()> {
        let path = format!("/nodes/{parent}/children/{}?dir={dir}", encode(name));
        self.send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    async fn rename(&self, req: &RenameRequest) -> RemoteResult<()> {
        self.send(self.request(Method::POST, "/rename").json(req))
            .await?;
        Ok(())
    }

    async fn set_attr(&self, ino: i64, req: &SetAttrRequest) -> RemoteResult<Node> {
        self.call(Method::PATCH, &format!("/nodes/{ino}"), req)
            .await
    }

    async fn manifest(&self, ino: i64) -> RemoteResult<Manifest> {
        self.query(self.request(Method::GET, &format!("/nodes/{ino}/manifest")))
            .await
    }

    async fn read(&self, ino: i64, content: &str, start: u64, end: u64) -> RemoteResult<Bytes> {
        if end - start > bufs::SIZE as u64 {
            let resp = self.ranged(ino, content, start, end).await?;
            return resp.bytes().await.map_err(body_broke);
        }
        // A block or less, as most reads are: into a recycled buffer.
        let blocks = self.read_blocks(ino, content, start, end).await?;
        Ok(match blocks.as_slice() {
            [block] => block.clone(),
            _ => Bytes::from(blocks.concat()),
        })
    }

    async fn read_blocks(
        &self,
        ino: i64,
        content: &str,
        start: u64,
        end: u64,
    ) -> RemoteResult<Vec<Bytes>> {
        let mut resp = self.ranged(ino, content, start, end).await?;
        // Straight into recycled block buffers: a run gathered whole first
        // was a fresh mapping of megabytes, every page of it faulted in and
        // then unmapped, and copied once more into blocks (half of panfs's
        // time in a cold sequential read).
        let mut blocks = Vec::with_capacity((end - start).div_ceil(bufs::SIZE as u64) as usize);
        let mut buf = BLOCKS.take();
        while let Some(mut piece) = resp.chunk().await.map_err(body_broke)? {
            while !piece.is_empty() {
                let take = (bufs::SIZE - buf.len()).min(piece.len());
                buf.extend_from_slice(&piece.split_to(take));
                if buf.len() == bufs::SIZE {
                    blocks.push(BLOCKS.freeze(std::mem::replace(&mut buf, BLOCKS.take())));
                }
            }
        }
        if buf.is_empty() {
            BLOCKS.give_back(buf);
        } else {
            blocks.push(BLOCKS.freeze(buf));
        }
        Ok(blocks)
    }

    async fn put_content(
        &self,
        ino: i64,
        body: Bytes,
        mtime: i64,
        if_content: IfContent<'_>,
    ) -> RemoteResult<Node> {
        let mut path = format!("/nodes/{ino}/content?mtime={mtime}");
        if let Some(base) = if_content {
            path.push_str(&format!("&if_content={}", encode(base.unwrap_or(""))));
        }
        self.json(self.request(Method::PUT, &path).body(body)).await
    }

    async fn begin_upload(&self, init: &UploadInit) -> RemoteResult<UploadState> {
        self.call(Method::POST, "/uploads", init).await
    }

    async fn put_chunk(&self, session: &str, sha256: &str, body: Bytes) -> RemoteResult<()> {
        let path = format!("/uploads/{session}/chunks/{sha256}");
        self.send(self.request(Method::PUT, &path).body(body))
            .await?;
        Ok(())
    }

    async fn prove(&self, session: &str, proof: &str) -> RemoteResult<UploadState> {
        let answer = ProofAnswer {
            proof: proof.to_string(),
        };
        self.call(Method::POST, &format!("/uploads/{session}/proof"), &answer)
            .await
    }

    async fn commit(&self, session: &str, req: &CommitRequest) -> RemoteResult<Node> {
        self.call(Method::POST, &format!("/uploads/{session}/commit"), req)
            .await
    }

    async fn end_upload(&self, session: &str) -> RemoteResult<()> {
        let path = format!("/uploads/{session}");
        self.send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    async fn xattr_names(&self, ino: i64) -> RemoteResult<Vec<String>> {
        let names: XattrNames = self
            .query(self.request(Method::GET, &format!("/nodes/{ino}/xattrs")))
            .await?;
        Ok(names.names)
    }

    async fn xattr(&self, ino: i64, name: &str) -> RemoteResult<Bytes> {
        self.unless_silent()?;
        let path = format!("/nodes/{ino}/xattrs/{}", encode(name));
        self.send(self.request(Method::GET, &path))
            .await?
            .bytes()
            .await
            .map_err(|e| RemoteError::Unreachable(e.to_string()))
    }

    async fn set_xattr(
        &self,
        ino: i64,
        name: &str,
        value: &[u8],
        mode: XattrMode,
    ) -> RemoteResult<Node> {
        let mode = match mode {
            XattrMode::Set => "set",
            XattrMode::Create => "create",
            XattrMode::Replace => "replace",
        };
        let path = format!("/nodes/{ino}/xattrs/{}?mode={mode}", encode(name));
        // An empty value still says its length: the server requires one.
        let req = self
            .request(Method::PUT, &path)
            .header(reqwest::header::CONTENT_LENGTH, value.len())
            .body(value.to_vec());
        self.json(req).await
    }

    async fn remove_xattr(&self, ino: i64, name: &str) -> RemoteResult<Node> {
        let path = format!("/nodes/{ino}/xattrs/{}", encode(name));
        self.json(self.request(Method::DELETE, &path)).await
    }

    async fn batch(&self, req: &BatchRequest) -> RemoteResult<BatchResponse> {
        self.call(Method::POST, "/batch", req).await
    }

    async fn reserve_inos(&self, count: i64) -> RemoteResult<Reserved> {
        self.call(Method::POST, "/inodes", &ReserveRequest { count })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that takes connections and, until `answers` is set, reads
    /// requests and says nothing; then it answers each with 404.
    async fn server(answers: Arc<AtomicBool>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {
                        while !answers.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        let body = r#"{"code":"not_found","message":"no such node"}"#;
                        let reply = format!(
                            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    /// Requests run on two current-thread runtimes in turn, as two FUSE
    /// threads' reads are: each is answered, none waits on a connection that
    /// the other runtime opened (its task runs only while that one does).
    #[test]
    fn requests_from_two_current_thread_runtimes_are_each_answered() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server_rt = tokio::runtime::Runtime::new().expect("runtime");
        let url = server_rt.block_on(server(Arc::new(AtomicBool::new(true))));
        let remote = HttpRemote::new(&url, "token", Duration::from_secs(3)).expect("client");
        let current_thread = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        };
        let threads = [current_thread(), current_thread()];
        for rt in threads.iter().chain(&threads) {
            let answer = rt.block_on(remote.node(1)).expect_err("no such node");
            assert_eq!(answer.code(), Some(ErrorCode::NotFound), "{answer:?}");
        }
    }

    #[tokio::test]
    async fn a_silent_server_is_waited_for_once_and_probed_until_it_answers() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let answers = Arc::new(AtomicBool::new(false));
        let url = server(answers.clone()).await;
        let remote = HttpRemote::new(&url, "token", Duration::from_millis(500)).expect("client");
        let first = remote.node(1).await.expect_err("no answer");
        assert!(matches!(first, RemoteError::Unreachable(_)), "{first:?}");
        // Silent now: a read fails at once, without asking.
        let at = std::time::Instant::now();
        let second = remote.node(1).await.expect_err("silent");
        assert!(matches!(second, RemoteError::NotSent(_)), "{second:?}");
        assert!(at.elapsed() < Duration::from_millis(100), "it waited");
        // Once the server answers, the prober notices, and reads ask again.
        answers.store(true, Ordering::Relaxed);
        let at = std::time::Instant::now();
        loop {
            match remote.node(1).await {
                Err(e) if e.code() == Some(ErrorCode::NotFound) => break,
                Err(RemoteError::NotSent(_)) => {}
                other => panic!("{other:?}"),
            }
            assert!(at.elapsed() < Duration::from_secs(20), "never asked again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
