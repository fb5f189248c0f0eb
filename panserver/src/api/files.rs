//! The tree by path, for scripts: `PUT /files/PATH` stores the body (what
//! `curl -T` sends), `GET` reads a file (with Range) or lists a directory,
//! `DELETE` removes a file or an empty directory, `GET /stat/PATH` gives attributes.

use std::sync::Arc;

use http::StatusCode;
use panproto::wire::NodeKind;
use warp::path::Tail;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::download::{ReadRequest, download};
use super::nodes::body_stream;
use super::{Caller, empty_reply, error_reply, json_reply, signed_in};
use crate::service::App;
use crate::service::{ServiceError, ServiceResult};

/// Deepest path accepted.
const MAX_DEPTH: usize = 256;

fn segments(tail: &Tail) -> ServiceResult<Vec<String>> {
    Ok(panproto::parse_path(tail.as_str(), MAX_DEPTH)?)
}

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let a = move || signed_in(app.clone());
    let put = warp::path("files")
        .and(warp::path::tail())
        .and(warp::put())
        .and(a())
        .and(body_stream())
        .then(|tail: Tail, app: Arc<App>, c: Caller, body| async move {
            let r = async {
                let path = segments(&tail)?;
                let (node, created) = app.file_for_put(c.actor(), &path).await?;
                let stored = app.ingest(c.actor(), node.ino, body, None, None).await;
                if stored.is_err() && created {
                    // A refused upload leaves no empty file behind.
                    let _ = app.remove_path(c.actor(), &path).await;
                }
                stored
            };
            json_reply(r.await, StatusCode::CREATED)
        });
    let get = warp::path("files")
        .and(warp::path::tail())
        .and(warp::get())
        .and(a())
        .and(warp::header::optional::<String>("range"))
        .then(
            |tail: Tail, app: Arc<App>, c: Caller, range: Option<String>| async move {
                let found = async {
                    let path = segments(&tail)?;
                    let node = app.resolve(c.user, &path).await?;
                    Ok::<_, ServiceError>((c, node, path.last().cloned()))
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
                    Ok((_, node, _)) => error_reply(&ServiceError::not_a_file(node.kind)),
                    Err(e) => error_reply(&e),
                }
            },
        );
    let delete = warp::path("files")
        .and(warp::path::tail())
        .and(warp::delete())
        .and(a())
        .then(|tail: Tail, app: Arc<App>, c: Caller| async move {
            let r = async { app.remove_path(c.actor(), &segments(&tail)?).await };
            empty_reply(r.await)
        });
    let stat = warp::path("stat")
        .and(warp::path::tail())
        .and(warp::get())
        .and(a())
        .then(|tail: Tail, app: Arc<App>, c: Caller| async move {
            let r = async { app.resolve(c.user, &segments(&tail)?).await };
            json_reply(r.await, StatusCode::OK)
        });
    put.or(get).unify().or(delete).unify().or(stat).unify()
}
