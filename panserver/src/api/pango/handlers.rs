//! The handlers behind pan.go's routes. pan.go's files are flat, named by their
//! SHA-1 (`filehash`); here they are the files in the user's top folder, found
//! by the SHA-1 pan computed itself, never one a client claimed.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use panproto::wire::{
    CommitRequest, Credentials, DirEntry, NodeKind, RenameMode, RenameRequest, UploadInit,
};
use serde::Serialize;
use serde_json::json;
use sha1::{Digest, Sha1};
use warp::Reply;
use warp::multipart::FormData;
use warp::reply::Response;

use super::{Params, envelope, failure, pango_caller};
use crate::api::download::{ReadRequest, download};
use crate::auth::random_hex;
use crate::meta::Actor;
use crate::parts::{PART_SIZE, PartStore, PartUpload};
use crate::service::uploads::BodyStream;
use crate::service::user_info;
use crate::service::{App, NS, now_ns};
use crate::service::{ServiceError, ServiceResult};
use crate::session::NewFile;

/// pan.go's answer when instant upload cannot be done: its clients then upload normally.
const FAST_UPLOAD_FAILED: &str = "秒传失败，请访问普通上传接口";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct FileMeta {
    file_sha1: String,
    file_name: String,
    file_size: i64,
    upload_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct UserFile {
    user_name: String,
    file_hash: String,
    file_name: String,
    file_size: i64,
    upload_at: String,
    last_updated: String,
}

/// pan.go's time format, "2006-01-02 15:04:05", in UTC.
fn go_time(ns: i64) -> String {
    let secs = ns.div_euclid(NS);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The files in the user's top folder, with their SHA-1 once computed.
async fn top_files(
    app: &App,
    user: i64,
    root: i64,
) -> ServiceResult<Vec<(DirEntry, Option<String>)>> {
    const PAGE: i64 = 1000;
    let mut files = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app.meta.list(user, root, after.as_deref(), PAGE).await?;
        let full = page.len() as i64 == PAGE;
        after = page.last().map(|e| e.name.clone());
        for entry in page {
            if entry.node.kind != NodeKind::File {
                continue;
            }
            let sha1 = sha1_of(app, &entry.node).await?;
            files.push((entry, sha1));
        }
        if !full {
            return Ok(files);
        }
    }
}

/// A file's whole-content SHA-1, once the server has computed it.
async fn sha1_of(app: &App, node: &panproto::wire::Node) -> ServiceResult<Option<String>> {
    Ok(match &node.content {
        Some(content) => app.meta.content_sha1(content).await?,
        None => Some(EMPTY_SHA1.to_string()),
    })
}

async fn file_by_sha1(app: &App, user: i64, root: i64, sha1: &str) -> ServiceResult<DirEntry> {
    top_files(app, user, root)
        .await?
        .into_iter()
        .find(|(_, h)| h.as_deref() == Some(sha1))
        .map(|(entry, _)| entry)
        .ok_or(ServiceError::NotFound)
}

async fn file_meta(app: &App, entry: &DirEntry) -> ServiceResult<FileMeta> {
    let sha1 = sha1_of(app, &entry.node).await?.unwrap_or_default();
    Ok(FileMeta {
        file_sha1: sha1,
        file_name: entry.name.clone(),
        file_size: entry.node.size,
        upload_at: go_time(entry.node.mtime),
    })
}

/// Stores `body` as the file `name` in the top folder (created, or replaced).
async fn store_top_file(
    app: &App,
    by: Actor,
    root: i64,
    name: &str,
    body: BodyStream,
) -> ServiceResult<FileMeta> {
    panproto::validate_name(name)?;
    let node = app.make(by, root, name, NodeKind::File, 0o644).await?;
    if node.kind != NodeKind::File {
        return Err(ServiceError::not_a_file(node.kind));
    }
    let node = app.ingest(by, node.ino, body, None, None).await?;
    file_meta(
        app,
        &DirEntry {
            name: name.to_string(),
            node,
        },
    )
    .await
}

const EMPTY_SHA1: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";

pub async fn signup(app: Arc<App>, p: Params) -> Response {
    let result = async {
        if !app.limits.signup {
            return Err(ServiceError::SignupDisabled);
        }
        app.add_user(p.require("username")?, p.require("password")?)
            .await?;
        Ok(())
    };
    envelope(result.await, "OK")
}

pub async fn signin(app: Arc<App>, p: Params) -> Response {
    let result = async {
        let creds = Credentials {
            username: p.require("username")?.to_string(),
            password: p.require("password")?.to_string(),
        };
        let signed = app.signin(&creds).await?;
        Ok(json!({"Location": "/", "Username": creds.username, "Token": signed.token}))
    };
    envelope(result.await, "OK")
}

pub async fn info(app: Arc<App>, p: Params, bearer: Option<String>) -> Response {
    let result = async {
        let (_, user) = pango_caller(&app, &p, bearer).await?;
        let info = user_info(&user);
        Ok(json!({
            "Username": info.username,
            "SignupAt": go_time(info.created_at),
            "UsedBytes": info.used_bytes,
            "UsedFiles": info.used_files,
            "QuotaBytes": info.quota_bytes,
        }))
    };
    envelope(result.await, "OK")
}

/// `POST /file/upload`: a multipart form whose `file` field is stored under its file name.
pub async fn upload(app: Arc<App>, p: Params, bearer: Option<String>, form: FormData) -> Response {
    let result = async {
        let mut params = p;
        let mut form = Box::pin(form);
        while let Some(part) = form.next().await {
            let part =
                part.map_err(|e| ServiceError::BadRequest(format!("multipart form: {e}")))?;
            if part.name() != "file" {
                let value = part_text(part).await?;
                params.0.insert(value.0, value.1);
                continue;
            }
            let (caller, user) = pango_caller(&app, &params, bearer.clone()).await?;
            let name = part
                .filename()
                .ok_or_else(|| ServiceError::BadRequest("the file part has no file name".into()))?
                .to_string();
            let body: BodyStream = part
                .stream()
                .map_ok(|mut buf| {
                    use bytes::Buf;
                    buf.copy_to_bytes(buf.remaining())
                })
                .map_err(std::io::Error::other)
                .boxed();
            return store_top_file(&app, caller.actor(), user.root_ino, &name, body).await;
        }
        Err(ServiceError::BadRequest(
            "the form has no file field".into(),
        ))
    };
    envelope(result.await, "OK")
}

async fn part_text(part: warp::multipart::Part) -> ServiceResult<(String, String)> {
    let name = part.name().to_string();
    let mut value = Vec::new();
    let mut stream = Box::pin(part.stream());
    while let Some(buf) = stream.next().await {
        use bytes::Buf;
        let mut buf = buf.map_err(|e| ServiceError::BadRequest(format!("multipart form: {e}")))?;
        if value.len() + buf.remaining() > 4096 {
            return Err(ServiceError::TooLarge);
        }
        value.extend_from_slice(&buf.copy_to_bytes(buf.remaining()));
    }
    let value = String::from_utf8(value)
        .map_err(|_| ServiceError::BadRequest("form fields must be UTF-8".into()))?;
    Ok((name, value))
}

pub async fn meta(app: Arc<App>, p: Params, bearer: Option<String>) -> Response {
    let result = async {
        let (caller, user) = pango_caller(&app, &p, bearer).await?;
        let entry = file_by_sha1(&app, caller.user, user.root_ino, &p.sha1()?).await?;
        file_meta(&app, &entry).await
    };
    envelope(result.await, "OK")
}

pub async fn query(app: Arc<App>, p: Params, bearer: Option<String>) -> Response {
    let result = async {
        let (caller, user) = pango_caller(&app, &p, bearer).await?;
        let limit = p
            .get("limit")
            .map(|_| p.number("limit"))
            .transpose()?
            .unwrap_or(1000) as usize;
        let mut files = top_files(&app, caller.user, user.root_ino).await?;
        files.sort_by_key(|(e, _)| std::cmp::Reverse(e.node.mtime));
        Ok(files
            .into_iter()
            .take(limit)
            .map(|(entry, sha1)| UserFile {
                user_name: user.username.clone(),
                file_hash: sha1.unwrap_or_default(),
                file_name: entry.name,
                file_size: entry.node.size,
                upload_at: go_time(entry.node.ctime),
                last_updated: go_time(entry.node.mtime),
            })
            .collect::<Vec<_>>())
    };
    envelope(result.await, "OK")
}

pub async fn download_file(
    app: Arc<App>,
    p: Params,
    bearer: Option<String>,
    range: Option<String>,
) -> Response {
    let found = async {
        let (caller, user) = pango_caller(&app, &p, bearer).await?;
        let entry = file_by_sha1(&app, caller.user, user.root_ino, &p.sha1()?).await?;
        Ok::<_, ServiceError>((caller, entry))
    };
    match found.await {
        Ok((caller, entry)) => {
            let req = ReadRequest {
                range,
                ..ReadRequest::default()
            };
            download(app, caller.user, entry.node.ino, req, Some(&entry.name)).await
        }
        Err(e) => failure(&e),
    }
}

/// `op=0` renames; pan.go knew no other operation.
pub async fn update(app: Arc<App>, p: Params, bearer: Option<String>) -> Response {
    let result = async {
        let (caller, user) = pango_caller(&app, &p, bearer).await?;
        if p.get("op") != Some("0") {
            return Err(ServiceError::NotPermitted(
                "only op=0 (rename) is supported",
            ));
        }
        let new_name = p.require("filename")?.to_string();
        panproto::validate_name(&new_name)?;
        let entry = file_by_sha1(&app, caller.user, user.root_ino, &p.sha1()?).await?;
        let req = RenameRequest {
            parent: user.root_ino,
            name: entry.name.clone(),
            new_parent: user.root_ino,
            new_name: new_name.clone(),
            mode: RenameMode::NoReplace,
        };
        app.meta.rename(caller.actor(), &req, now_ns()).await?;
        file_meta(
            &app,
            &DirEntry {
                name: new_name,
                node: entry.node,
            },
        )
        .await
    };
    envelope(result.await, "OK")
}

pub async fn delete(app: Arc<App>, p: Params, bearer: Option<String>) -> Response {
    let result = async {
        let (caller, user) = pango_caller(&app, &p, bearer).await?;
        let entry = file_by_sha1(&app, caller.user, user.root_ino, &p.sha1()?).await?;
        app.meta
            .remove(caller.actor(), user.root_ino, &entry.name, false, now_ns())
            .await?;
        Ok(())
    };
    envelope(result.await, "OK")
}

/// Instant upload. pan.go granted any content whose SHA-1 a client named; pan
/// needs the SHA-256 too (`sha256`) and a proof of possession: the first call
/// answers code 1 with `UploadID` and `Challenge`, the second brings `uploadid`
/// and `proof`. Without them the answer is pan.go's "use the normal upload". The
/// file appears only once the content commits, so a client that never proves
/// leaves nothing behind.
pub async fn fastupload(app: Arc<App>, p: Params, bearer: Option<String>) -> Response {
    let result = async {
        let (caller, user) = pango_caller(&app, &p, bearer).await?;
        let name = p.require("filename")?.to_string();
        panproto::validate_name(&name)?;
        if let (Some(id), Some(proof)) = (p.get("uploadid"), p.get("proof")) {
            app.prove(caller.user, id, proof).await?;
            let node = app
                .commit_upload(
                    caller.actor(),
                    id,
                    CommitRequest {
                        if_content: None,
                        mtime: None,
                    },
                )
                .await?;
            return Ok(FastUpload::Done(
                file_meta(&app, &DirEntry { name, node }).await?,
            ));
        }
        let sha1 = p.sha1()?;
        let Some(sha256) = p.get("sha256") else {
            return Ok(FastUpload::Refused(
                "pan needs the file's sha256 and a proof of possession",
            ));
        };
        let Some(known) = app.meta.content_by_hash(sha256, Some(&sha1)).await? else {
            return Ok(FastUpload::Refused("the server does not have this content"));
        };
        let size: u64 = known.chunks.iter().map(|c| c.size).sum();
        if p.get("filesize").is_some() && p.number("filesize")? != size {
            return Ok(FastUpload::Refused("the size does not match the content"));
        }
        let init = UploadInit {
            ino: 0,
            chunks: Vec::new(),
            sha256: Some(sha256.into()),
            sha1: Some(sha1),
        };
        let file = NewFile {
            parent: user.root_ino,
            name: name.clone(),
        };
        let state = app
            .begin_upload_of_new_file(caller.user, file, init)
            .await?;
        if let Some(challenge) = state.challenge {
            return Ok(FastUpload::Prove(
                json!({"UploadID": state.id, "Challenge": challenge}),
            ));
        }
        let node = app
            .commit_upload(
                caller.actor(),
                &state.id,
                CommitRequest {
                    if_content: None,
                    mtime: None,
                },
            )
            .await?;
        Ok(FastUpload::Done(
            file_meta(&app, &DirEntry { name, node }).await?,
        ))
    };
    match result.await {
        Ok(FastUpload::Done(meta)) => envelope(Ok(meta), "秒传成功"),
        Ok(FastUpload::Prove(data)) => warp::reply::json(
            &json!({"code": 1, "msg": "proof of possession required", "data": data}),
        )
        .into_response(),
        Ok(FastUpload::Refused(why)) => warp::reply::json(
            &json!({"code": -1, "msg": FAST_UPLOAD_FAILED, "data": {"reason": why}}),
        )
        .into_response(),
        Err(e) => failure(&e),
    }
}

enum FastUpload {
    Done(FileMeta),
    Prove(serde_json::Value),
    Refused(&'static str),
}

pub async fn mp_init(app: Arc<App>, p: Params, bearer: Option<String>) -> Response {
    let result = async {
        let (caller, _) = pango_caller(&app, &p, bearer).await?;
        let size = p.number("filesize")?;
        if size > app.limits.max_upload_bytes {
            return Err(ServiceError::TooLarge);
        }
        let upload = PartUpload {
            id: random_hex(16),
            user: caller.user,
            sha1: p.sha1()?,
            size,
            expires_at: app.session_expiry(now_ns()),
        };
        PartStore::new(app.staging.root()).create(&upload).await?;
        Ok(json!({
            "FileHash": upload.sha1,
            "FileSize": upload.size,
            "UploadID": upload.id,
            "ChunkSize": PART_SIZE,
            "ChunkCount": upload.part_count(),
        }))
    };
    envelope(result.await, "OK")
}

/// `uploadid` and `index` in the query string; the body is the part's bytes.
pub async fn mp_part(
    app: Arc<App>,
    p: Params,
    bearer: Option<String>,
    body: BodyStream,
) -> Response {
    let result = async {
        let (caller, _) = pango_caller(&app, &p, bearer).await?;
        let parts = PartStore::new(app.staging.root());
        let upload = parts
            .load(caller.user, p.require("uploadid")?, now_ns())
            .await?;
        parts.write_part(&upload, p.number("index")?, body).await
    };
    envelope(result.await, "OK")
}

/// Joins the parts, checks them against the declared SHA-1 and size, and only
/// then stores the file: pan.go completed uploads it had not received.
pub async fn mp_complete(app: Arc<App>, p: Params, bearer: Option<String>) -> Response {
    let result = async {
        let (caller, user) = pango_caller(&app, &p, bearer).await?;
        let parts = PartStore::new(app.staging.root());
        let upload = parts
            .load(caller.user, p.require("uploadid")?, now_ns())
            .await?;
        let name = p.require("filename")?.to_string();
        let missing = parts.missing(&upload).await?;
        if !missing.is_empty() {
            return Err(ServiceError::Incomplete(format!(
                "{} parts are missing",
                missing.len()
            )));
        }
        let mut hasher = Sha1::new();
        let mut content = parts.content(&upload)?;
        while let Some(piece) = content.next().await {
            hasher
                .update(&piece.map_err(|e| ServiceError::Internal(format!("reading parts: {e}")))?);
        }
        if hex::encode(hasher.finalize()) != upload.sha1 {
            parts.remove(&upload.id).await?;
            return Err(ServiceError::HashMismatch);
        }
        let meta = store_top_file(
            &app,
            caller.actor(),
            user.root_ino,
            &name,
            parts.content(&upload)?,
        )
        .await?;
        parts.remove(&upload.id).await?;
        Ok(meta)
    };
    envelope(result.await, "OK")
}
