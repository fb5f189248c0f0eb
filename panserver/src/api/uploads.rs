//! Upload sessions: open, ask what is missing, send chunks, prove, commit.

use std::sync::Arc;

use http::StatusCode;
use panproto::wire::{CommitRequest, ProofAnswer, UploadInit};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::nodes::body_stream;
use super::{Credential, credential, empty_reply, json_body, json_reply, with_app};
use crate::app::App;
use crate::error::ApiError;

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let a = move || with_app(app.clone()).and(credential());
    let begin = warp::path!("uploads")
        .and(warp::post())
        .and(a())
        .and(json_body())
        .then(
            |app: Arc<App>, auth: Credential, init: UploadInit| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    app.begin_upload(c.user, init).await
                };
                json_reply(r.await, StatusCode::CREATED)
            },
        );
    let state = warp::path!("uploads" / String)
        .and(warp::get())
        .and(a())
        .then(|id: String, app: Arc<App>, auth: Credential| async move {
            let r = async {
                let c = app.authenticate(&auth).await?;
                app.upload_state(c.user, &id).await
            };
            json_reply(r.await, StatusCode::OK)
        });
    let chunk = warp::path!("uploads" / String / "chunks" / String)
        .and(warp::put())
        .and(a())
        .and(body_stream())
        .then(
            |id: String, sha: String, app: Arc<App>, auth: Credential, body| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    if !panproto::is_sha256_hex(&sha) {
                        return Err(ApiError::BadRequest(
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
            |id: String, app: Arc<App>, auth: Credential, answer: ProofAnswer| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    app.prove(c.user, &id, &answer.proof).await
                };
                json_reply(r.await, StatusCode::OK)
            },
        );
    let commit = warp::path!("uploads" / String / "commit")
        .and(warp::post())
        .and(a())
        .and(json_body())
        .then(
            |id: String, app: Arc<App>, auth: Credential, req: CommitRequest| async move {
                let r = async {
                    let c = app.authenticate(&auth).await?;
                    app.commit_upload(c.user, &id, req).await
                };
                json_reply(r.await, StatusCode::OK)
            },
        );
    begin
        .or(state)
        .unify()
        .or(chunk)
        .unify()
        .or(prove)
        .unify()
        .or(commit)
        .unify()
}
