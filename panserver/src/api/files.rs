//! The tree by path, for scripts: `PUT /files/PATH` stores the body (what
//! `curl -T` sends), `GET` reads a file (with Range) or lists a directory,
//! `DELETE` removes a file or an empty directory, `GET /stat/PATH` gives attributes.

use std::sync::Arc;

use http::StatusCode;
use panproto::wire::{CreateRequest, Node, NodeKind};
use warp::path::Tail;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::download::{ReadRequest, download};
use super::nodes::body_stream;
use super::{Credential, credential, empty_reply, error_reply, json_reply, with_app};
use crate::app::{App, now_ns};
use crate::error::{ApiError, ApiResult};
use crate::meta::MetaError;

/// Deepest path accepted.
const MAX_DEPTH: usize = 256;

fn segments(tail: &Tail) -> ApiResult<Vec<String>> {
    Ok(panproto::parse_path(tail.as_str(), MAX_DEPTH)?)
}

impl App {
    async fn resolve(&self, user: i64, path: &[String]) -> ApiResult<Node> {
        let root = self.meta.user_by_id(user).await?.root_ino;
        let mut node = self.meta.node(user, root).await?;
        for name in path {
            node = self.meta.lookup(user, node.ino, name).await?;
        }
        Ok(node)
    }

    /// The file at `path`, created (with its missing parents) when absent; true when created.
    async fn file_for_put(&self, user: i64, path: &[String]) -> ApiResult<(Node, bool)> {
        let Some((name, dirs)) = path.split_last() else {
            return Err(ApiError::IsDir);
        };
        let root = self.meta.user_by_id(user).await?.root_ino;
        let mut parent = root;
        for dir in dirs {
            parent = match self.meta.lookup(user, parent, dir).await {
                Ok(node) if node.kind == NodeKind::Dir => node.ino,
                Ok(_) => return Err(ApiError::NotDir),
                Err(MetaError::NotFound) => {
                    self.make(user, parent, dir, NodeKind::Dir, 0o755)
                        .await?
                        .ino
                }
                Err(e) => return Err(e.into()),
            };
        }
        match self.meta.lookup(user, parent, name).await {
            Ok(node) if node.kind == NodeKind::File => Ok((node, false)),
            Ok(node) => Err(ApiError::not_a_file(node.kind)),
            Err(MetaError::NotFound) => Ok((
                self.make(user, parent, name, NodeKind::File, 0o644).await?,
                true,
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a node, or returns the one a concurrent request just created.
    pub(crate) async fn make(
        &self,
        user: i64,
        parent: i64,
        name: &str,
        kind: NodeKind,
        mode: u32,
    ) -> ApiResult<Node> {
        let req = CreateRequest {
            name: name.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            target: None,
            rdev: 0,
        };
        match self.create_node(user, parent, req).await {
            Err(ApiError::Exists) => Ok(self.meta.lookup(user, parent, name).await?),
            other => other,
        }
    }

    async fn remove_path(&self, user: i64, path: &[String]) -> ApiResult<()> {
        let Some((name, dirs)) = path.split_last() else {
            return Err(ApiError::NotPermitted("the root cannot be removed"));
        };
        let parent = self.resolve(user, dirs).await?;
        let node = self.meta.lookup(user, parent.ino, name).await?;
        Ok(self
            .meta
            .remove(user, parent.ino, name, node.kind == NodeKind::Dir, now_ns())
            .await?)
    }
}

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let a = move || with_app(app.clone()).and(credential());
    let put = warp::path("files")
        .and(warp::path::tail())
        .and(warp::put())
        .and(a())
        .and(body_stream())
        .then(
            |tail: Tail, app: Arc<App>, auth: Credential, body| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    let path = segments(&tail)?;
                    let (node, created) = app.file_for_put(c.user, &path).await?;
                    let stored = app.ingest(c.user, node.ino, body, None, None).await;
                    if stored.is_err() && created {
                        // A refused upload leaves no empty file behind.
                        let _ = app.remove_path(c.user, &path).await;
                    }
                    stored
                };
                json_reply(r.await, StatusCode::CREATED)
            },
        );
    let get = warp::path("files")
        .and(warp::path::tail())
        .and(warp::get())
        .and(a())
        .and(warp::header::optional::<String>("range"))
        .then(
            |tail: Tail, app: Arc<App>, auth: Credential, range: Option<String>| async move {
                let found = async {
                    let c = app.authenticate(&auth).await?;
                    let path = segments(&tail)?;
                    let node = app.resolve(c.user, &path).await?;
                    Ok::<_, ApiError>((c, node, path.last().cloned()))
                };
                match found.await {
                    Ok((c, node, name)) if node.kind == NodeKind::File => {
                        let req = ReadRequest {
                            range,
                            ..ReadRequest::default()
                        };
                        download(app, c.user, node.ino, req, name.as_deref()).await
                    }
                    Ok((c, node, _)) if node.kind == NodeKind::Dir => json_reply(
                        app.meta
                            .list(c.user, node.ino, None, 100_000)
                            .await
                            .map_err(Into::into),
                        StatusCode::OK,
                    ),
                    Ok((_, node, _)) => error_reply(&ApiError::not_a_file(node.kind)),
                    Err(e) => error_reply(&e),
                }
            },
        );
    let delete = warp::path("files")
        .and(warp::path::tail())
        .and(warp::delete())
        .and(a())
        .then(|tail: Tail, app: Arc<App>, auth: Credential| async move {
            let r = async {
                let c = app.authenticate(&auth).await?;
                app.remove_path(c.user, &segments(&tail)?).await
            };
            empty_reply(r.await)
        });
    let stat = warp::path("stat")
        .and(warp::path::tail())
        .and(warp::get())
        .and(a())
        .then(|tail: Tail, app: Arc<App>, auth: Credential| async move {
            let r = async {
                let c = app.authenticate(&auth).await?;
                app.resolve(c.user, &segments(&tail)?).await
            };
            json_reply(r.await, StatusCode::OK)
        });
    put.or(get).unify().or(delete).unify().or(stat).unify()
}
