//! The change feed: `GET /changes?since=N&wait=S&limit=L`. Without `since`, the
//! cursor to start from; with it, the changes after it, waiting up to `wait`
//! seconds for one; 410 with the current `seq` when the cursor is too old.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{Caller, json_reply, signed_in};
use crate::service::App;
use crate::service::feed::{LIMIT_MAX, WAIT_MAX};

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    since: Option<i64>,
    /// Seconds to wait for a change when there is none (0: answer at once).
    #[serde(default)]
    wait: f64,
    limit: Option<i64>,
}

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("changes")
        .and(warp::get())
        .and(warp::query::<ChangesQuery>())
        .and(signed_in(app))
        .then(|q: ChangesQuery, app: Arc<App>, c: Caller| async move {
            let wait = if q.wait.is_finite() && q.wait > 0.0 {
                Duration::from_secs_f64(q.wait.min(WAIT_MAX.as_secs_f64()))
            } else {
                Duration::ZERO
            };
            let limit = q.limit.unwrap_or(LIMIT_MAX);
            json_reply(
                app.changes(c.user, q.since, wait, limit).await,
                StatusCode::OK,
            )
        })
}
