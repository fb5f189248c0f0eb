//! Upload sessions: open, ask what is missing, send chunks, prove, commit,
//! end.

use std::sync::Arc;

use http::StatusCode;
use panproto::wire::{CommitRequest, ProofAnswer, UploadInit};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::nodes::body_stream;
use super::{Caller, empty_reply, json_body, json_reply, signed_in};
use crate::service::App;
use crate::service::ServiceError;

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let a = move || signed_in(app.clone());
    let begin = warp::path!("uploads")
        .and(warp::post())
        .and(a())
        .and(json_body())
        .then(|app: Arc<App>, c: Caller, init: UploadInit| async move {
            let r = async { app.begin_upload(c.user, init).await };
            json_reply(r.await, StatusCode::CREATED)
        });
    let state = warp::path!("uploads" / String)
        .and(warp::get())
        .and(a())
        .then(|id: String, app: Arc<App>, c: Caller| async move {
            let r = async { app.upload_state(c.user, &id).await };
            json_reply(r.await, StatusCode::OK)
        });
    let end = warp::path!("uploads" / String)
        .and(warp::delete())
        .and(a())
        .then(|id: String, app: Arc<App>, c: Caller| async move {
            empty_reply(app.end_upload(c.user, &id).await)
        });
    let chunk = warp::path!("uploads" / String / "chunks" / String)
        .and(warp::put())
        .and(a())
        .and(body_stream())
        .then(
            |id: String, sha: String, app: Arc<App>, c: Caller, body| async move {
                let r = async {
                    if !panproto::is_sha256_hex(&sha) {
                        return Err(ServiceError::BadRequest(
                            "a chunk hash is 64 lowercase hex digits".into(),
                        ));
                    }
                    app.put_chunk(c.user, &id, &sha, body).await
                };
                empty_reply(r.await)
            },
        );
    let prove = warp::path!("uploads" / String / "proof")
        .and(warp::post())
        .and(a())
        .and(json_body())
        .then(
            |id: String, app: Arc<App>, c: Caller, answer: ProofAnswer| async move {
                let r = async { app.prove(c.user, &id, &answer.proof).await };
                json_reply(r.await, StatusCode::OK)
            },
        );
    let commit = warp::path!("uploads" / String / "commit")
        .and(warp::post())
        .and(a())
        .and(json_body())
        .then(
            |id: String, app: Arc<App>, c: Caller, req: CommitRequest| async move {
                let r = async { app.commit_upload(c.actor(), &id, req).await };
                json_reply(r.await, StatusCode::OK)
            },
        );
    begin
        .or(state)
        .unify()
        .or(end)
        .unify()
        .or(chunk)
        .unify()
        .or(prove)
        .unify()
        .or(commit)
        .unify()
}
