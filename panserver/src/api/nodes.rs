//! The tree by inode: attributes, listings, lookups, create, link, remove,
//! rename, and a file's content (download, one-request upload, chunk list).

use std::sync::Arc;

use futures::StreamExt;
use http::StatusCode;
use panproto::wire::{CreateRequest, LinkRequest, RenameRequest, SetAttrRequest};
use serde::Deserialize;
use warp::reply::Response;
use warp::{Buf, Filter, Rejection};

use crate::service::uploads::BodyStream;

use super::download::{ReadRequest, download};
use super::{Caller, decode_segment, empty_reply, json_body, json_reply, signed_in};
use crate::service::{App, now_ns};

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
    let a = move || signed_in(app.clone());
    let getattr = warp::path!("nodes" / i64).and(warp::get()).and(a()).then(
        |ino: i64, app: Arc<App>, c: Caller| async move {
            let r = async { Ok(app.meta.node(c.user, ino).await?) };
            json_reply(r.await, StatusCode::OK)
        },
    );
    let setattr = warp::path!("nodes" / i64)
        .and(warp::patch())
        .and(a())
        .and(json_body())
        .then(
            |ino: i64, app: Arc<App>, c: Caller, req: SetAttrRequest| async move {
                let r = async { app.set_attr(c.actor(), ino, req).await };
                json_reply(r.await, StatusCode::OK)
            },
        );
    let list = warp::path!("nodes" / i64 / "children")
        .and(warp::get())
        .and(a())
        .and(warp::query::<ListQuery>())
        .then(
            |ino: i64, app: Arc<App>, c: Caller, q: ListQuery| async move {
                let r = async { app.listing(c.user, ino, q.after.as_deref(), q.limit).await };
                json_reply(r.await, StatusCode::OK)
            },
        );
    let lookup = warp::path!("nodes" / i64 / "children" / String)
        .and(warp::get())
        .and(a())
        .then(
            |ino: i64, name: String, app: Arc<App>, c: Caller| async move {
                let r = async {
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
            |parent: i64, app: Arc<App>, c: Caller, req: CreateRequest| async move {
                let r = async { app.create_node(c.actor(), parent, req).await };
                json_reply(r.await, StatusCode::CREATED)
            },
        );
    let link = warp::path!("nodes" / i64 / "links")
        .and(warp::post())
        .and(a())
        .and(json_body())
        .then(
            |parent: i64, app: Arc<App>, c: Caller, req: LinkRequest| async move {
                let r = async {
                    panproto::validate_name(&req.name)?;
                    Ok(app
                        .meta
                        .link(c.actor(), req.ino, parent, &req.name, now_ns())
                        .await?)
                };
                json_reply(r.await, StatusCode::CREATED)
            },
        );
    let remove = warp::path!("nodes" / i64 / "children" / String)
        .and(warp::delete())
        .and(a())
        .and(warp::query::<RemoveQuery>())
        .then(
            |parent: i64, name: String, app: Arc<App>, c: Caller, q: RemoveQuery| async move {
                let r = async {
                    let name = decode_segment(&name)?;
                    Ok(app
                        .meta
                        .remove(c.actor(), parent, &name, q.dir, now_ns())
                        .await?)
                };
                empty_reply(r.await)
            },
        );
    let rename = warp::path!("rename")
        .and(warp::post())
        .and(a())
        .and(json_body())
        .then(|app: Arc<App>, c: Caller, req: RenameRequest| async move {
            let r = async { app.rename_node(c.actor(), req).await };
            empty_reply(r.await)
        });
    let read = warp::path!("nodes" / i64 / "content")
        .and(warp::get())
        .and(a())
        .and(warp::header::optional::<String>("range"))
        .and(warp::header::optional::<String>("if-match"))
        .and(warp::query::<ReadQuery>())
        .then(
            |ino: i64,
             app: Arc<App>,
             c: Caller,
             range: Option<String>,
             if_match: Option<String>,
             q: ReadQuery| async move {
                let req = ReadRequest {
                    range,
                    if_match,
                    version: q.version,
                };
                download(app, c.user, ino, req, None).await
            },
        );
    let write = warp::path!("nodes" / i64 / "content")
        .and(warp::put())
        .and(a())
        .and(warp::query::<WriteQuery>())
        .and(body_stream())
        .then(
            |ino: i64, app: Arc<App>, c: Caller, q: WriteQuery, body| async move {
                let r = async {
                    app.ingest(c.actor(), ino, body, q.mtime, q.if_content())
                        .await
                };
                json_reply(r.await, StatusCode::OK)
            },
        );
    let manifest = warp::path!("nodes" / i64 / "manifest")
        .and(warp::get())
        .and(a())
        .then(|ino: i64, app: Arc<App>, c: Caller| async move {
            let r = async { app.manifest(c.user, ino).await };
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
