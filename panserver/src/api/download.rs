//! Whole-file and ranged downloads, streamed chunk by chunk.

use std::sync::Arc;

use futures::StreamExt;
use futures::future::OptionFuture;
use http::{HeaderValue, StatusCode, header};
use panproto::wire::{Node, NodeKind};
use warp::reply::Response;

use super::server::StreamingBody;
use super::{RangeRequest, error_reply, parse_range};
use crate::service::App;
use crate::service::content::stream_range;
use crate::service::uploads::distinct_hashes;
use crate::service::{ServiceError, ServiceResult};

pub fn etag(node: &Node) -> String {
    version_etag(node.content.as_deref())
}

fn version_etag(content: Option<&str>) -> String {
    format!("\"{}\"", content.unwrap_or("empty"))
}

/// `Content-Disposition` for a download: always an attachment, so a browser never
/// renders stored bytes as a page of this origin; the name is percent-encoded (RFC 6266).
fn disposition(filename: Option<&str>) -> String {
    match filename {
        Some(name) => format!(
            "attachment; filename*=UTF-8''{}",
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => "attachment".into(),
    }
}

/// What a GET of a file's bytes asks for.
#[derive(Debug, Default)]
pub struct ReadRequest {
    /// The `Range` header.
    pub range: Option<String>,
    /// The `If-Match` header: 412 unless the file's current version has this ETag.
    pub if_match: Option<String>,
    /// `?version=`: this version of the file (a content id), current or past.
    pub version: Option<String>,
}

/// Answers a GET of a file's bytes, honouring `Range`, `If-Match` (a client
/// reading one version by ranges gets 412 once the file has changed) and `version`.
pub async fn download(
    app: Arc<App>,
    user: i64,
    ino: i64,
    req: ReadRequest,
    filename: Option<&str>,
) -> Response {
    match build(app, user, ino, req, filename).await {
        Ok(resp) => resp,
        Err(e) => error_reply(&e),
    }
}

async fn build(
    app: Arc<App>,
    user: i64,
    ino: i64,
    req: ReadRequest,
    filename: Option<&str>,
) -> ServiceResult<Response> {
    // A reader by version names the content, so the extents of an explicit
    // range are asked for beside the node, not after it: one database round
    // trip less on every ranged read. They are used only once the node says
    // the caller may read that version and the range is the one guessed.
    // (A version read a moment ago needs no query at all: `version_and_size`.)
    let guessed = match (
        &req.version,
        parse_range(req.range.as_deref(), i64::MAX as u64),
    ) {
        (Some(version), RangeRequest::Part { start, end }) => Some((version.clone(), start, end)),
        _ => None,
    };
    let early: OptionFuture<_> = guessed
        .as_ref()
        .map(|(version, start, end)| app.extents_in(version, *start as i64, *end as i64))
        .into();
    let (read, early) = tokio::join!(version_and_size(&app, user, ino, &req), early);
    let (content, size) = read?;
    let (status, start, end) = match parse_range(req.range.as_deref(), size as u64) {
        RangeRequest::Whole => (StatusCode::OK, 0, size as u64),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeRequest::Unsatisfiable => return Err(ServiceError::RangeNotSatisfiable(size)),
    };
    let extents = match &content {
        Some(content) if end > start => match (early, guessed) {
            (Some(early), Some((version, from, to)))
                if *content == version && from == start && end <= to =>
            {
                let mut extents = early?;
                extents.retain(|e| e.offset < end as i64);
                extents
            }
            _ => app.extents_in(content, start as i64, end as i64).await?,
        },
        _ => Vec::new(),
    };
    let stream = stream_range(app, extents, start as i64, end as i64).boxed();
    let mut resp = Response::default();
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    let mut set = |name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(header::CONTENT_LENGTH, (end - start).to_string());
    set(header::CONTENT_TYPE, "application/octet-stream".into());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(header::ETAG, version_etag(content.as_deref()));
    set(header::CONTENT_DISPOSITION, disposition(filename));
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", start, end - 1, size),
        );
    }
    resp.extensions_mut().insert(StreamingBody::new(stream));
    Ok(resp)
}

/// The version a GET reads (the one asked for, else the current one) and
/// its size. A current version read by the same user a moment ago is taken
/// from `version_reads`, with no query (an `If-Match` always asks). A past
/// version is not kept: its life ends with garbage collection, which a read
/// must see.
async fn version_and_size(
    app: &App,
    user: i64,
    ino: i64,
    req: &ReadRequest,
) -> ServiceResult<(Option<String>, i64)> {
    if let (Some(version), None) = (&req.version, &req.if_match)
        && let Some(size) = app.version_reads.size(user, ino, version)
    {
        return Ok((Some(version.clone()), size));
    }
    let node = app.meta.node(user, ino).await?;
    if node.kind != NodeKind::File {
        return Err(ServiceError::not_a_file(node.kind));
    }
    if let Some(expected) = &req.if_match
        && expected.trim() != "*"
        && expected.trim() != etag(&node)
    {
        return Err(ServiceError::Changed);
    }
    let Some(version) = &req.version else {
        return Ok((node.content, node.size));
    };
    if node.content.as_deref() != Some(version.as_str()) {
        let size = past_version_size(app, user, version).await?;
        return Ok((Some(version.clone()), size));
    }
    app.version_reads.insert(user, ino, version, node.size);
    Ok((node.content, node.size))
}

/// The size of a version a file had before it was replaced, which stays readable
/// until garbage collection drops it: a handle opened on it reads on, as on a
/// local disk. Only a content whose every chunk this user has held (uploaded, or
/// proved to have) qualifies, so a content id alone gives nothing away. A version
/// that is gone or not the user's answers `changed` (412).
async fn past_version_size(app: &App, user: i64, version: &str) -> ServiceResult<i64> {
    let extents = app.meta.extents_in(version, 0, i64::MAX).await?;
    let Some(last) = extents.last() else {
        return Err(ServiceError::Changed);
    };
    let hashes = distinct_hashes(extents.iter().map(|e| e.sha256.as_ref()));
    if app.meta.owned_chunks(user, &hashes).await?.len() != hashes.len() {
        return Err(ServiceError::Changed);
    }
    Ok(last.offset + last.size)
}
