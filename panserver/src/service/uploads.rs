//! The upload protocol: open a session with a chunk list, learn what is missing,
//! prove possession of chunks held by others, send chunks, commit.

use std::collections::HashSet;

use futures::StreamExt;
use panproto::proof::ProofHasher;
use panproto::wire::{
    ChunkRef, CommitRequest, Node, NodeKind, ProofChallenge, UploadInit, UploadState,
};
use rand::Rng;
use subtle::ConstantTimeEq;

use crate::auth::random_hex;
use crate::meta::Actor;
use crate::service::session_chunks::SessionChunks;
use crate::service::{App, NS, now_ns};
use crate::service::{ServiceError, ServiceResult};
use crate::session::{NewFile, UploadSession};

/// A request body as it arrives.
pub type BodyStream = futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

const PROOF_RANGES: usize = 4;
const PROOF_RANGE_LEN: u64 = 64;

/// The chunk hashes of a content, each once, in order (holes have none).
pub fn distinct_hashes<'a>(hashes: impl IntoIterator<Item = Option<&'a String>>) -> Vec<String> {
    let mut seen = HashSet::new();
    hashes
        .into_iter()
        .flatten()
        .filter(|h| seen.insert(*h))
        .cloned()
        .collect()
}

pub fn validate_chunks(app: &App, chunks: &[ChunkRef]) -> ServiceResult<()> {
    panproto::check_chunk_list(chunks, app.limits.max_session_chunks).map_err(|e| match e {
        panproto::ChunkListError::TooMany => ServiceError::TooLarge,
        other => ServiceError::BadRequest(other.to_string()),
    })
}

/// Picks byte ranges inside the chunks to prove, as offsets in the whole content.
fn challenge_for(chunks: &[ChunkRef], unproven: &[String]) -> ProofChallenge {
    let mut rng = rand::thread_rng();
    let mut candidates = Vec::new();
    let mut offset = 0u64;
    for c in chunks {
        if c.sha256.as_ref().is_some_and(|h| unproven.contains(h)) {
            candidates.push((offset, c.size));
        }
        offset += c.size;
    }
    let mut ranges = Vec::new();
    for _ in 0..PROOF_RANGES.min(candidates.len().max(1)) {
        let (start, size) = candidates[rng.gen_range(0..candidates.len())];
        let len = PROOF_RANGE_LEN.min(size);
        let at = start + rng.gen_range(0..=size - len);
        ranges.push((at, len));
    }
    ProofChallenge {
        nonce: random_hex(16),
        ranges,
    }
}

impl App {
    /// What the client still has to send: every chunk the user does not own and is
    /// not asked to prove. Ownership only grows, so this never hides a chunk that a
    /// concurrent upload by someone else made present in the meantime.
    async fn state_of(&self, session: &UploadSession) -> ServiceResult<UploadState> {
        let wanted = distinct_hashes(session.chunks.iter().map(|c| c.sha256.as_ref()));
        let owned = self.meta.owned_chunks(session.user, &wanted).await?;
        Ok(UploadState {
            id: session.id.clone(),
            ino: session.ino,
            expires_at: session.expires_at,
            missing: wanted
                .into_iter()
                .filter(|h| !owned.contains(h) && !session.unproven.contains(h))
                .collect(),
            challenge: session.challenge.clone(),
        })
    }

    async fn load_session(&self, user: i64, id: &str) -> ServiceResult<UploadSession> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ServiceError::UploadGone);
        }
        let mut session = self
            .sessions
            .load(user, id, now_ns())
            .await?
            .ok_or(ServiceError::UploadGone)?;
        // Activity keeps a session alive.
        session.expires_at = self.session_expiry(now_ns());
        Ok(session)
    }

    /// When a session used at `now` expires.
    pub fn session_expiry(&self, now: i64) -> i64 {
        now + self.limits.session_ttl_secs * NS
    }

    /// Moves a live session's expiry without writing it again (nothing else
    /// in it changed); UploadGone when it is gone.
    async fn keep_alive(&self, id: &str) -> ServiceResult<()> {
        let now = now_ns();
        if self
            .sessions
            .touch(id, self.session_expiry(now), now)
            .await?
        {
            return Ok(());
        }
        self.session_chunks.remove(id);
        Err(ServiceError::UploadGone)
    }

    pub async fn begin_upload(&self, user: i64, init: UploadInit) -> ServiceResult<UploadState> {
        let node = self.meta.node(user, init.ino).await?;
        if node.kind != NodeKind::File {
            return Err(ServiceError::not_a_file(node.kind));
        }
        self.open_session(user, init, None).await
    }

    /// An upload of a file that is created in `file.parent` only when it commits;
    /// `init.ino` is not used.
    pub async fn begin_upload_of_new_file(
        &self,
        user: i64,
        file: NewFile,
        init: UploadInit,
    ) -> ServiceResult<UploadState> {
        if self.meta.node(user, file.parent).await?.kind != NodeKind::Dir {
            return Err(ServiceError::NotDir);
        }
        let init = UploadInit { ino: 0, ..init };
        self.open_session(user, init, Some(file)).await
    }

    async fn open_session(
        &self,
        user: i64,
        mut init: UploadInit,
        new_file: Option<NewFile>,
    ) -> ServiceResult<UploadState> {
        // Instant upload by whole-file hash: the known content's chunk list stands in
        // for the client's (the client still proves it holds the bytes).
        if init.chunks.is_empty()
            && let Some(sha256) = init.sha256.as_deref()
            && sha256 != panproto::EMPTY_SHA256
        {
            // An unknown hash must not open a session for an empty content.
            let known = self
                .meta
                .content_by_hash(sha256, init.sha1.as_deref())
                .await?
                .ok_or(ServiceError::NotFound)?;
            init.chunks = known.chunks;
        }
        validate_chunks(self, &init.chunks)?;
        let wanted = distinct_hashes(init.chunks.iter().map(|c| c.sha256.as_ref()));
        let present = self.meta.present_chunks(&wanted).await?;
        let owned = self.meta.owned_chunks(user, &wanted).await?;
        let unproven: Vec<String> = wanted
            .iter()
            .filter(|h| present.contains(*h) && !owned.contains(*h))
            .cloned()
            .collect();
        let challenge = (!unproven.is_empty()).then(|| challenge_for(&init.chunks, &unproven));
        let session = UploadSession {
            id: random_hex(16),
            user,
            ino: init.ino,
            new_file,
            chunks: init.chunks,
            unproven,
            challenge,
            expires_at: self.session_expiry(now_ns()),
        };
        self.sessions.save(&session).await?;
        self.state_of(&session).await
    }

    pub async fn upload_state(&self, user: i64, id: &str) -> ServiceResult<UploadState> {
        let session = self.load_session(user, id).await?;
        self.keep_alive(id).await?;
        self.state_of(&session).await
    }

    /// Streams one chunk's body into staging, verifying it against its hash.
    pub async fn put_chunk(
        &self,
        user: i64,
        id: &str,
        sha256: &str,
        body: BodyStream,
    ) -> ServiceResult<()> {
        let chunks = match self.session_chunks.get(user, id) {
            Some(chunks) => chunks,
            None => {
                let session = self.load_session(user, id).await?;
                let chunks = SessionChunks::of(&session);
                self.session_chunks.insert(id, chunks.clone());
                chunks
            }
        };
        // Neither the session nor its chunk list is read or written again for
        // each chunk (that made a big file's upload quadratic): its expiry is
        // all that moves, and the store says whether it still lives.
        self.keep_alive(id).await?;
        let size = *chunks.sizes.get(sha256).ok_or_else(|| {
            ServiceError::BadRequest("the session does not list this chunk".into())
        })?;
        self.stage_chunk(user, sha256, size, body).await
    }

    async fn stage_chunk(
        &self,
        user: i64,
        sha256: &str,
        size: u64,
        mut body: BodyStream,
    ) -> ServiceResult<()> {
        let gate = self.share_gate().await;
        let mut writer = self.staging.writer(sha256, size)?;
        while let Some(piece) = body.next().await {
            let piece =
                piece.map_err(|e| ServiceError::BadRequest(format!("reading the body: {e}")))?;
            writer.write(&piece)?;
        }
        // The sync waits for the disk: on a thread of its own, not one of the
        // few that serve every request.
        let sha = sha256.to_string();
        let staged = tokio::task::spawn_blocking(move || writer.finish(&sha, size))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        self.record_chunks(user, vec![staged], gate).await
    }

    pub async fn prove(&self, user: i64, id: &str, answer: &str) -> ServiceResult<UploadState> {
        let mut session = self.load_session(user, id).await?;
        let Some(challenge) = session.challenge.clone() else {
            return self.state_of(&session).await;
        };
        let mut expected = ProofHasher::new(&challenge.nonce);
        for (start, len) in &challenge.ranges {
            expected.update(&self.content_range(&session.chunks, *start, *len).await?);
        }
        let expected = expected.finish();
        // One challenge, one answer: a wrong answer needs a new session.
        session.challenge = None;
        if !bool::from(expected.as_bytes().ct_eq(answer.as_bytes())) {
            self.end_session(&session.id).await?;
            return Err(ServiceError::BadProof);
        }
        self.meta.grant_chunks(user, &session.unproven).await?;
        session.unproven.clear();
        self.sessions.save(&session).await?;
        self.state_of(&session).await
    }

    /// Bytes [start, start+len) of a content given by its chunk list (all present).
    async fn content_range(
        &self,
        chunks: &[ChunkRef],
        start: u64,
        len: u64,
    ) -> ServiceResult<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        let mut offset = 0u64;
        for c in chunks {
            let end = offset + c.size;
            if end > start && offset < start + len {
                let from = start.max(offset) - offset;
                let to = (start + len).min(end) - offset;
                match &c.sha256 {
                    Some(h) => out
                        .extend_from_slice(&self.read_chunk(h).await?[from as usize..to as usize]),
                    None => out.resize(out.len() + (to - from) as usize, 0),
                }
            }
            offset = end;
        }
        Ok(out)
    }

    pub async fn commit_upload(
        &self,
        by: Actor,
        id: &str,
        req: CommitRequest,
    ) -> ServiceResult<Node> {
        let user = by.user;
        let session = self.load_session(user, id).await?;
        if session.challenge.is_some() || !session.unproven.is_empty() {
            return Err(ServiceError::Incomplete(
                "a proof of possession is owed".into(),
            ));
        }
        let wanted = distinct_hashes(session.chunks.iter().map(|c| c.sha256.as_ref()));
        let owned = self.meta.owned_chunks(user, &wanted).await?;
        let missing = wanted.iter().filter(|h| !owned.contains(*h)).count();
        if missing > 0 {
            return Err(ServiceError::Incomplete(format!(
                "{missing} chunks are missing"
            )));
        }
        let ino = match &session.new_file {
            Some(file) => {
                let node = self
                    .make(by, file.parent, &file.name, NodeKind::File, 0o644)
                    .await?;
                if node.kind != NodeKind::File {
                    return Err(ServiceError::not_a_file(node.kind));
                }
                node.ino
            }
            None => session.ino,
        };
        let now = now_ns();
        let node = self
            .meta
            .set_content(
                by,
                ino,
                &session.chunks,
                None,
                req.if_content.as_ref().map(|c| c.as_deref()),
                req.mtime.unwrap_or(now),
                now,
            )
            .await?;
        self.end_session(&session.id).await?;
        Ok(node)
    }

    /// Ends a session the client no longer needs (the chunks it sent ahead
    /// are now in a committed file, or it gave up): its chunks are no longer
    /// pinned against garbage collection. UploadGone when the user has no
    /// such session.
    pub async fn end_upload(&self, user: i64, id: &str) -> ServiceResult<()> {
        let session = self.load_session(user, id).await?;
        self.end_session(&session.id).await
    }

    async fn end_session(&self, id: &str) -> ServiceResult<()> {
        self.sessions.remove(id).await?;
        self.session_chunks.remove(id);
        Ok(())
    }

    /// The one-request upload: the server cuts the streamed body into chunks itself.
    /// `mtime` defaults to now.
    pub async fn ingest(
        &self,
        by: Actor,
        ino: i64,
        body: BodyStream,
        mtime: Option<i64>,
        if_content: Option<Option<&str>>,
    ) -> ServiceResult<Node> {
        let user = by.user;
        // Refused before any byte is staged.
        let node = self.meta.node(user, ino).await?;
        if node.kind != NodeKind::File {
            return Err(ServiceError::not_a_file(node.kind));
        }
        let reader = tokio_util::io::StreamReader::new(body);
        let mut reader = tokio_util::io::SyncIoBridge::new(reader);
        let limit = self.limits.max_upload_bytes;
        // Chunking and hashing are CPU work on blocking I/O: keep them off the async threads.
        let (chunks, hashes) = self
            .stage_and_record(user, move |staging| {
                let mut hasher = panproto::ContentHasher::default();
                let mut staged = Vec::new();
                let mut chunker = panproto::Chunker::new(&mut reader);
                let body_error = |e| ServiceError::BadRequest(format!("reading the body: {e}"));
                while let Some((_, data)) = chunker.cut_next().map_err(body_error)? {
                    hasher.update(data);
                    if hasher.len() > limit {
                        return Err(ServiceError::TooLarge);
                    }
                    staged.push(staging.put(data)?);
                }
                let chunks: Vec<ChunkRef> = staged
                    .iter()
                    .map(|c| ChunkRef {
                        sha256: Some(c.sha256.clone()),
                        size: c.size as u64,
                    })
                    .collect();
                Ok((staged, (chunks, hasher.finish())))
            })
            .await?;
        let now = now_ns();
        Ok(self
            .meta
            .set_content(
                by,
                ino,
                &chunks,
                Some((&hashes.0, &hashes.1)),
                if_content,
                mtime.unwrap_or(now),
                now,
            )
            .await?)
    }
}
