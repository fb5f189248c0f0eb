//! The tree by inode: attributes, listings, lookups, create, link, remove,
//! rename, and a file's content (download, one-request upload, chunk list).

use std::sync::Arc;

use futures::StreamExt;
use http::StatusCode;
use panproto::wire::{
    ChunkRef, CreateRequest, LinkRequest, Listing, Manifest, NodeKind, RenameRequest,
    SetAttrRequest,
};
use serde::Deserialize;
use warp::reply::Response;
use warp::{Buf, Filter, Rejection};

use crate::upload::BodyStream;

use super::download::{ReadRequest, download};
use super::{Credential, credential, decode_segment, empty_reply, json_body, json_reply, with_app};
use crate::app::{App, now_ns};
use crate::error::{ApiError, ApiResult};

const PAGE_MAX: i64 = 1000;

#[derive(Debug, Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct WriteQuery {
    mtime: Option<i64>,
    /// Store only if the file still holds this content ("" = none yet).
    if_content: Option<String>,
}

impl WriteQuery {
    fn if_content(&self) -> Option<Option<&str>> {
        self.if_content
            .as_deref()
            .map(|c| Some(c).filter(|c| !c.is_empty()))
    }
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    dir: bool,
}

impl App {
    async fn listing(&self, user: i64, dir: i64, q: ListQuery) -> ApiResult<Listing> {
        let limit = q.limit.unwrap_or(PAGE_MAX).clamp(1, PAGE_MAX);
        let entries = self.meta.list(user, dir, q.after.as_deref(), limit).await?;
        let next = (entries.len() as i64 == limit)
            .then(|| entries.last().map(|e| e.name.clone()))
            .flatten();
        Ok(Listing { entries, next })
    }

    async fn set_attr(
        &self,
        user: i64,
        ino: i64,
        req: SetAttrRequest,
    ) -> ApiResult<panproto::wire::Node> {
        let now = now_ns();
        if let Some(size) = req.size {
            self.truncate(user, ino, size, req.mtime).await?;
        }
        Ok(self.meta.set_attr(user, ino, &req, now).await?)
    }

    async fn manifest(&self, user: i64, ino: i64) -> ApiResult<Manifest> {
        let (node, extents) = self.meta.extents(user, ino).await?;
        Ok(Manifest {
            content: node.content,
            size: node.size,
            chunks: extents
                .into_iter()
                .map(|e| ChunkRef {
                    sha256: e.sha256,
                    size: e.size as u64,
                })
                .collect(),
        })
    }

    pub async fn create_node(
        &self,
        user: i64,
        parent: i64,
        req: CreateRequest,
    ) -> ApiResult<panproto::wire::Node> {
        panproto::validate_name(&req.name)?;
        if req.kind == NodeKind::Symlink
            && let Some(target) = &req.target
            && (target.is_empty() || target.len() > 4095 || target.contains('\0'))
        {
            return Err(ApiError::BadRequest(
                "a symlink target is 1 to 4095 bytes without NUL".into(),
            ));
        }
        Ok(self.meta.create(user, parent, &req, now_ns()).await?)
    }

    async fn rename_node(&self, user: i64, req: RenameRequest) -> ApiResult<()> {
        panproto::validate_name(&req.name)?;
        panproto::validate_name(&req.new_name)?;
        Ok(self.meta.rename(user, &req, now_ns()).await?)
    }
}

/// A request body, streamed: an upload that stalls for `BODY_IDLE` fails
/// instead of holding the request open forever.
pub fn body_stream() -> impl Filter<Extract = (BodyStream,), Error = Rejection> + Clone {
    warp::body::stream().map(into_body)
}

fn into_body<S, B>(body: S) -> BodyStream
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    let bytes = body.map(|r| {
        r.map(|mut b| b.copy_to_bytes(b.remaining()))
            .map_err(std::io::Error::other)
    });
    idle_timeout(bytes.boxed(), BODY_IDLE).boxed()
}

const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

fn idle_timeout(
    body: BodyStream,
    idle: std::time::Duration,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::unfold(Some(body), move |state| async move {
        let mut body = state?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(item)) => Some((item, Some(body))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body stalled",
                )),
                None,
            )),
        }
    })
}

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let a = move || with_app(app.clone()).and(credential());
    let getattr = warp::path!("nodes" / i64).and(warp::get()).and(a()).then(
        |ino: i64, app: Arc<App>, auth: Credential| async move {
            let r = async {
                let c = app.authenticate(&auth).await?;
                Ok(app.meta.node(c.user, ino).await?)
            };
            json_reply(r.await, StatusCode::OK)
        },
    );
    let setattr = warp::path!("nodes" / i64)
        .and(warp::patch())
        .and(a())
        .and(json_body())
        .then(
            |ino: i64, app: Arc<App>, auth: Credential, req: SetAttrRequest| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    app.set_attr(c.user, ino, req).await
                };
                json_reply(r.await, StatusCode::OK)
            },
        );
    let list = warp::path!("nodes" / i64 / "children")
        .and(warp::get())
        .and(a())
        .and(warp::query::<ListQuery>())
        .then(
            |ino: i64, app: Arc<App>, auth: Credential, q: ListQuery| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    app.listing(c.user, ino, q).await
                };
                json_reply(r.await, StatusCode::OK)
            },
        );
    let lookup = warp::path!("nodes" / i64 / "children" / String)
        .and(warp::get())
        .and(a())
        .then(
            |ino: i64, name: String, app: Arc<App>, auth: Credential| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    let name = decode_segment(&name)?;
                    Ok(app.meta.lookup(c.user, ino, &name).await?)
                };
                json_reply(r.await, StatusCode::OK)
            },
        );
    let create = warp::path!("nodes" / i64 / "children")
        .and(warp::post())
        .and(a())
        .and(json_body())
        .then(
            |parent: i64, app: Arc<App>, auth: Credential, req: CreateRequest| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    app.create_node(c.user, parent, req).await
                };
                json_reply(r.await, StatusCode::CREATED)
            },
        );
    let link = warp::path!("nodes" / i64 / "links")
        .and(warp::post())
        .and(a())
        .and(json_body())
        .then(
            |parent: i64, app: Arc<App>, auth: Credential, req: LinkRequest| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    panproto::validate_name(&req.name)?;
                    Ok(app
                        .meta
                        .link(c.user, req.ino, parent, &req.name, now_ns())
                        .await?)
                };
                json_reply(r.await, StatusCode::CREATED)
            },
        );
    let remove = warp::path!("nodes" / i64 / "children" / String)
        .and(warp::delete())
        .and(a())
        .and(warp::query::<RemoveQuery>())
        .then(|parent: i64, name: String, app: Arc<App>, auth: Credential, q: RemoveQuery| async move {
            let r = async {
                let c = app.authenticate(&auth).await?;
                let name = decode_segment(&name)?;
                Ok(app.meta.remove(c.user, parent, &name, q.dir, now_ns()).await?)
            };
            empty_reply(r.await)
        });
    let rename = warp::path!("rename")
        .and(warp::post())
        .and(a())
        .and(json_body())
        .then(
            |app: Arc<App>, auth: Credential, req: RenameRequest| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    app.rename_node(c.user, req).await
                };
                empty_reply(r.await)
            },
        );
    let read = warp::path!("nodes" / i64 / "content")
        .and(warp::get())
        .and(a())
        .and(warp::header::optional::<String>("range"))
        .and(warp::header::optional::<String>("if-match"))
        .and(warp::query::<ReadQuery>())
        .then(
            |ino: i64,
             app: Arc<App>,
             auth: Credential,
             range: Option<String>,
             if_match: Option<String>,
             q: ReadQuery| async move {
                let req = ReadRequest {
                    range,
                    if_match,
                    version: q.version,
                };
                match app.authenticate(&auth).await {
                    Ok(c) => download(app, c.user, ino, req, None).await,
                    Err(e) => super::error_reply(&e),
                }
            },
        );
    let write = warp::path!("nodes" / i64 / "content")
        .and(warp::put())
        .and(a())
        .and(warp::query::<WriteQuery>())
        .and(body_stream())
        .then(
            |ino: i64, app: Arc<App>, auth: Credential, q: WriteQuery, body| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    app.ingest(c.user, ino, body, q.mtime, q.if_content()).await
                };
                json_reply(r.await, StatusCode::OK)
            },
        );
    let manifest = warp::path!("nodes" / i64 / "manifest")
        .and(warp::get())
        .and(a())
        .then(|ino: i64, app: Arc<App>, auth: Credential| async move {
            let r = async {
                let c = app.authenticate(&auth).await?;
                app.manifest(c.user, ino).await
            };
            json_reply(r.await, StatusCode::OK)
        });
    getattr
        .or(setattr)
        .unify()
        .or(list)
        .unify()
        .or(lookup)
        .unify()
        .or(create)
        .unify()
        .or(link)
        .unify()
        .or(remove)
        .unify()
        .or(rename)
        .unify()
        .or(read)
        .unify()
        .or(write)
        .unify()
        .or(manifest)
        .unify()
}
