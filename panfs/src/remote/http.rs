//! The `Remote` trait over pan's HTTP API.

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

use super::{FeedPage, IfContent, Remote, RemoteError, RemoteResult};
use crate::cache::bufs::{self, BLOCKS};

/// The HTTP API client.
pub struct HttpRemote {
    base: String,
    token: String,
    http: reqwest::Client,
    /// Sent with every request, so this mount knows its own changes in the feed.
    origin: u64,
    /// A request timed out and none was answered since: the server stopped
    /// answering without refusing (a lost network, a stopped server). Until
    /// it answers again, calls that only read fail at once instead of each
    /// waiting out the timeout; a local-first mount then answers from what it
    /// saw. The syncer, the follower and uploads keep asking, and the first
    /// answer any of them gets ends it.
    silent: AtomicBool,
}

impl HttpRemote {
    pub fn new(base: &str, token: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(32)
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
            origin: rand_origin(),
            silent: AtomicBool::new(false),
        })
    }

    /// Fails at once while the server is silent (see `silent`).
    fn unless_silent(&self) -> RemoteResult<()> {
        if self.silent.load(Ordering::Relaxed) {
            return Err(RemoteError::NotSent(
                "the server stopped answering; not asked again until it answers the syncer or the change feed".into(),
            ));
        }
        Ok(())
    }

    /// Notes what a request's sending says of the server: silent after a
    /// timeout, answering after any response.
    fn note_answer<T>(&self, sent: &reqwest::Result<T>) {
        let silent = matches!(sent, Err(e) if e.is_timeout());
        if sent.is_ok() || silent {
            let was = self.silent.swap(silent, Ordering::Relaxed);
            if was != silent {
                if silent {
                    tracing::warn!(
                        "the server stopped answering: calls that only read fail at once until it answers again"
                    );
                } else {
                    tracing::info!("the server answers again");
                }
            }
        }
    }

    /// A read-only request's answer, at once an error while the server is silent.
    async fn query<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> RemoteResult<T> {
        self.unless_silent()?;
        self.json(req).await
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{}", self.base, path))
            .bearer_auth(&self.token)
            .header(ORIGIN_HEADER, self.origin)
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
        self.unless_silent()?;
        // By version: a handle opened before another client replaced the file reads
        // on from the version it opened, while the server keeps it.
        let req = self
            .request(
                Method::GET,
                &format!("/nodes/{ino}/content?version={content}"),
            )
            .header("Range", format!("bytes={}-{}", start, end - 1));
        let mut resp = self.send(req).await?;
        if resp.status() != StatusCode::PARTIAL_CONTENT && resp.status() != StatusCode::OK {
            return Err(RemoteError::Unreachable(format!(
                "unexpected status {}",
                resp.status()
            )));
        }
        let unreachable = |e: reqwest::Error| RemoteError::Unreachable(e.to_string());
        if end - start > bufs::SIZE as u64 {
            return resp.bytes().await.map_err(unreachable);
        }
        // A block or less, as most reads are: into a recycled buffer.
        let mut buf = BLOCKS.take();
        while let Some(piece) = resp.chunk().await.map_err(unreachable)? {
            buf.extend_from_slice(&piece);
        }
        Ok(BLOCKS.freeze(buf))
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
