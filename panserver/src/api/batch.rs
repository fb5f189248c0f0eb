//! Batches and reserved inode numbers: `POST /batch` applies ordered
//! operations in one transaction; `POST /inodes` reserves numbers for the
//! nodes a client makes before it sends them.

use std::sync::Arc;

use http::StatusCode;
use panproto::batch::{BATCH_BYTES_MAX, BatchRequest, ReserveRequest};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{Caller, json_body, json_body_within, json_reply, signed_in};
use crate::service::App;

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let batch = warp::path!("batch")
        .and(warp::post())
        .and(signed_in(app.clone()))
        .and(json_body_within::<BatchRequest>(BATCH_BYTES_MAX))
        .then(|app: Arc<App>, c: Caller, req: BatchRequest| async move {
            json_reply(app.batch(c.actor(), req).await, StatusCode::OK)
        });
    let inodes = warp::path!("inodes")
        .and(warp::post())
        .and(signed_in(app))
        .and(json_body::<ReserveRequest>())
        .then(|app: Arc<App>, c: Caller, req: ReserveRequest| async move {
            json_reply(
                app.reserve_inos(c.user, req.count).await,
                StatusCode::CREATED,
            )
        });
    batch.or(inodes).unify()
}
