//! A node's extended attributes: list names, get, set (with create/replace
//! semantics) and remove one. Values are raw bytes; names are percent-encoded.

use std::sync::Arc;

use http::StatusCode;
use panproto::wire::{XattrMode, XattrNames};
use panproto::{XATTR_VALUE_MAX, validate_xattr_name};
use serde::Deserialize;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{Caller, error_reply, json_reply, signed_in};
use crate::service::{App, now_ns};
use crate::service::{ServiceError, ServiceResult};

#[derive(Debug, Deserialize)]
struct SetQuery {
    #[serde(default)]
    mode: XattrMode,
}

/// An attribute name from its path segment: percent-decoded UTF-8 in a supported namespace.
fn xattr_name(segment: &str) -> ServiceResult<String> {
    let name = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| ServiceError::BadRequest("an attribute name must be UTF-8".into()))?
        .into_owned();
    validate_xattr_name(&name)?;
    Ok(name)
}

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let a = move || signed_in(app.clone());
    let list = warp::path!("nodes" / i64 / "xattrs")
        .and(warp::get())
        .and(a())
        .then(|ino: i64, app: Arc<App>, c: Caller| async move {
            let r = async {
                let names = app.meta.xattr_names(c.user, ino).await?;
                Ok(XattrNames { names })
            };
            json_reply(r.await, StatusCode::OK)
        });
    let get = warp::path!("nodes" / i64 / "xattrs" / String)
        .and(warp::get())
        .and(a())
        .then(
            |ino: i64, name: String, app: Arc<App>, c: Caller| async move {
                let r = async {
                    let name = xattr_name(&name)?;
                    Ok::<_, ServiceError>(app.meta.xattr(c.user, ino, &name).await?)
                };
                match r.await {
                    Ok(value) => warp::reply::with_header(
                        value,
                        http::header::CONTENT_TYPE,
                        "application/octet-stream",
                    )
                    .into_response(),
                    Err(e) => error_reply(&e),
                }
            },
        );
    let set =
        warp::path!("nodes" / i64 / "xattrs" / String)
            .and(warp::put())
            .and(a())
            .and(warp::query::<SetQuery>())
            .and(warp::body::content_length_limit(XATTR_VALUE_MAX as u64))
            .and(warp::body::bytes())
            .then(
                |ino: i64,
                 name: String,
                 app: Arc<App>,
                 c: Caller,
                 q: SetQuery,
                 value: bytes::Bytes| async move {
                    let r = async {
                        let name = xattr_name(&name)?;
                        let node = app
                            .meta
                            .set_xattr(c.actor(), ino, &name, &value, q.mode, now_ns())
                            .await?;
                        Ok(node)
                    };
                    json_reply(r.await, StatusCode::OK)
                },
            );
    let remove = warp::path!("nodes" / i64 / "xattrs" / String)
        .and(warp::delete())
        .and(a())
        .then(
            |ino: i64, name: String, app: Arc<App>, c: Caller| async move {
                let r = async {
                    let name = xattr_name(&name)?;
                    Ok(app
                        .meta
                        .remove_xattr(c.actor(), ino, &name, now_ns())
                        .await?)
                };
                json_reply(r.await, StatusCode::OK)
            },
        );
    list.or(get).unify().or(set).unify().or(remove).unify()
}
