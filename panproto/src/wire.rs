//! JSON bodies of the HTTP API (`/api/v1`). Times are nanoseconds since the Unix epoch.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigninResponse {
    pub token: String,
    pub token_id: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: i64,
    pub username: String,
    pub created_at: i64,
    pub root_ino: i64,
    pub used_bytes: i64,
    pub used_files: i64,
    pub quota_bytes: i64,
    pub quota_files: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub current: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// A named pipe (`mkfifo`): metadata only, no content.
    Fifo,
    /// A UNIX socket's name in the tree: metadata only.
    Socket,
    /// Character and block device nodes: metadata (and `rdev`) only.
    CharDev,
    BlockDev,
}

impl NodeKind {
    pub const ALL: [NodeKind; 7] = [
        NodeKind::File,
        NodeKind::Dir,
        NodeKind::Symlink,
        NodeKind::Fifo,
        NodeKind::Socket,
        NodeKind::CharDev,
        NodeKind::BlockDev,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
            NodeKind::CharDev => "chardev",
            NodeKind::BlockDev => "blockdev",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An inode and its attributes. `content` identifies the bytes (changes on every write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub ino: i64,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: i64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    pub nlink: u32,
    pub content: Option<String>,
    pub target: Option<String>,
    /// The device number of a character or block device node (0 otherwise).
    #[serde(default)]
    pub rdev: u32,
    /// How many extended attributes the node has: a client with a fresh copy of
    /// the node answers "none" without asking.
    #[serde(default)]
    pub xattrs: u32,
    /// Bytes of the content that are stored, holes left out (what `du` counts).
    #[serde(default)]
    pub stored_bytes: i64,
}

impl Node {
    /// Takes `other`'s content and what goes with it (size, stored bytes,
    /// modification time), keeping this node's other attributes.
    pub fn take_content_of(&mut self, other: &Node) {
        self.content = other.content.clone();
        self.size = other.size;
        self.stored_bytes = other.stored_bytes;
        self.mtime = other.mtime;
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub node: Node,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listing {
    pub entries: Vec<DirEntry>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    pub name: String,
    pub kind: NodeKind,
    #[serde(default = "default_mode")]
    pub mode: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    /// Symlink target.
    pub target: Option<String>,
    /// Device number of a character or block device node.
    #[serde(default)]
    pub rdev: u32,
}

impl CreateRequest {
    /// A node owned by root (uid and gid 0), mode 0644, with no symlink
    /// target or device number: what tests make most.
    pub fn plain(name: &str, kind: NodeKind) -> Self {
        CreateRequest {
            name: name.to_string(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            target: None,
            rdev: 0,
        }
    }
}

fn default_mode() -> u32 {
    0o644
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkRequest {
    pub ino: i64,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenameMode {
    #[default]
    Replace,
    NoReplace,
    Exchange,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenameRequest {
    pub parent: i64,
    pub name: String,
    pub new_parent: i64,
    pub new_name: String,
    #[serde(default)]
    pub mode: RenameMode,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetAttrRequest {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<i64>,
    pub atime: Option<i64>,
    pub mtime: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkListError {
    #[error("too many chunks")]
    TooMany,
    #[error("a chunk is 1 byte to 4 MiB")]
    BadSize,
    #[error("a chunk hash is 64 lowercase hex digits")]
    BadHash,
}

/// Checks a client's chunk list: at most `max_chunks` entries, each 1 byte to
/// `CHUNK_MAX`, each hash (when not a hole) in canonical form.
pub fn check_chunk_list(chunks: &[ChunkRef], max_chunks: usize) -> Result<(), ChunkListError> {
    if chunks.len() > max_chunks {
        return Err(ChunkListError::TooMany);
    }
    for c in chunks {
        if c.size == 0 || c.size > u64::from(crate::CHUNK_MAX) {
            return Err(ChunkListError::BadSize);
        }
        if c.sha256
            .as_deref()
            .is_some_and(|h| !crate::is_sha256_hex(h))
        {
            return Err(ChunkListError::BadHash);
        }
    }
    Ok(())
}

/// One entry of a content's chunk list; `sha256: None` is a hole (zeros).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub sha256: Option<String>,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub content: Option<String>,
    pub size: i64,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadInit {
    /// The file inode the content is for.
    pub ino: i64,
    pub chunks: Vec<ChunkRef>,
    /// Whole-content hashes, when the client has them: they allow instant upload
    /// of a content already known by hash.
    pub sha256: Option<String>,
    pub sha1: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProofChallenge {
    pub nonce: String,
    /// (offset, length) pairs in the content; hash nonce then these bytes in order.
    pub ranges: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadState {
    pub id: String,
    pub ino: i64,
    pub expires_at: i64,
    /// Chunks the server still needs, by SHA-256.
    pub missing: Vec<String>,
    /// Present while a proof of possession is owed before commit.
    pub challenge: Option<ProofChallenge>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProofAnswer {
    pub proof: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRequest {
    /// When set, commit only if the file still holds this content; `null`
    /// (`Some(None)`) means it must have none yet. Absent: no condition.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub if_content: Option<Option<String>>,
    pub mtime: Option<i64>,
}

/// A field that is present, even as `null`, is `Some`: plain `Option<Option<_>>`
/// reads `null` as absent, which would turn "must have no content" into "no condition".
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The names of a node's extended attributes, in the order they were created.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct XattrNames {
    pub names: Vec<String>,
}

/// How a `PUT` of an extended attribute treats an existing one (`setxattr`'s flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XattrMode {
    /// Create or replace.
    #[default]
    Set,
    /// Fail with `exists` when it is there (`XATTR_CREATE`).
    Create,
    /// Fail with `no_attribute` when it is not (`XATTR_REPLACE`).
    Replace,
}

/// Why the server refused a request: the `code` of every error answer. Clients
/// decide on these (panfs maps each to an errno), never on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    BadCredentials,
    SignupDisabled,
    Throttled,
    NotFound,
    Exists,
    NotEmpty,
    NotDir,
    IsDir,
    NotPermitted,
    NameTooLong,
    BadName,
    HashMismatch,
    TooLarge,
    /// A conditional write found another version than the one it was based on.
    Conflict,
    /// The version a read asked for is gone.
    Changed,
    Incomplete,
    BadProof,
    QuotaExceeded,
    NotRegularFile,
    NoAttribute,
    XattrNotSupported,
    BadXattrName,
    XattrFull,
    NoSpace,
    RangeNotSatisfiable,
    MethodNotAllowed,
    LengthRequired,
    Corrupt,
    Unavailable,
    Internal,
    /// A change-feed cursor older than what the server keeps (or newer than it
    /// has): the body's `seq` is where to start over.
    CursorExpired,
    /// The upload session is gone (expired, or lost with its server): open a
    /// new one. Not `not_found`, which would mean the file is gone.
    UploadGone,
    /// A code this build does not know (from a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            Unauthorized => "unauthorized",
            BadCredentials => "bad_credentials",
            SignupDisabled => "signup_disabled",
            Throttled => "throttled",
            NotFound => "not_found",
            Exists => "exists",
            NotEmpty => "not_empty",
            NotDir => "not_dir",
            IsDir => "is_dir",
            NotPermitted => "not_permitted",
            NameTooLong => "name_too_long",
            BadName => "bad_name",
            HashMismatch => "hash_mismatch",
            TooLarge => "too_large",
            Conflict => "conflict",
            Changed => "changed",
            Incomplete => "incomplete",
            BadProof => "bad_proof",
            QuotaExceeded => "quota_exceeded",
            NotRegularFile => "not_regular_file",
            NoAttribute => "no_attribute",
            XattrNotSupported => "xattr_not_supported",
            BadXattrName => "bad_xattr_name",
            XattrFull => "xattr_full",
            NoSpace => "no_space",
            RangeNotSatisfiable => "range_not_satisfiable",
            MethodNotAllowed => "method_not_allowed",
            LengthRequired => "length_required",
            Corrupt => "corrupt",
            Unavailable => "unavailable",
            Internal => "internal",
            UploadGone => "upload_gone",
            CursorExpired => "cursor_expired",
            Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// With `cursor_expired`: the feed's current sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
}

/// The request header that names the client (a mount) making a change, so that
/// it can tell its own changes from others' in the feed.
pub const ORIGIN_HEADER: &str = "x-pan-origin";

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new node under `parent`/`name`.
    Create,
    /// Another name for an existing node.
    Link,
    /// A name removed; `node` is absent when it was the node's last.
    Remove,
    /// `parent`/`name` moved to `new_parent`/`new_name` (replacing or exchanging
    /// whatever was there).
    Rename,
    /// Mode, owner or times.
    Attr,
    /// New file content (size, content id).
    Content,
    /// An extended attribute set or removed.
    Xattr,
}

/// One committed change to a user's tree, in the order of `seq`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    pub ino: i64,
    /// The directory entry the change touched, when it touched one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where a rename moved the node to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_parent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_name: Option<String>,
    /// The node's attributes right after the change (absent once it has no name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// The `x-pan-origin` of the request that made it, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<u64>,
    /// Server time of the commit, ns.
    pub at: i64,
}

/// `GET /api/v1/changes`: the changes after the cursor, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangesResponse {
    /// The cursor to ask with next: the last change's `seq`, or the feed's
    /// current sequence number when there was none.
    pub seq: i64,
    pub changes: Vec<Change>,
    /// More changes are waiting beyond `limit`: ask again at once.
    pub more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatFs {
    pub used_bytes: i64,
    pub used_files: i64,
    pub quota_bytes: i64,
    pub quota_files: i64,
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn error_codes_are_their_json_names_and_unknown_ones_are_kept_apart() {
        for code in [
            ErrorCode::NotFound,
            ErrorCode::NameTooLong,
            ErrorCode::QuotaExceeded,
            ErrorCode::XattrNotSupported,
        ] {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).ok(), Some(code));
        }
        let newer: ErrorCode = serde_json::from_str("\"from_the_future\"").expect("deserialize");
        assert_eq!(newer, ErrorCode::Unknown);
    }

    #[test]
    fn a_commit_tells_no_condition_from_must_be_empty() {
        use super::CommitRequest;
        let read = |json: &str| {
            serde_json::from_str::<CommitRequest>(json)
                .expect("parse")
                .if_content
        };
        assert_eq!(read(r#"{"mtime": null}"#), None);
        assert_eq!(read(r#"{"if_content": null, "mtime": null}"#), Some(None));
        assert_eq!(
            read(r#"{"if_content": "c1", "mtime": 5}"#),
            Some(Some("c1".into()))
        );
        for if_content in [None, Some(None), Some(Some("c1".to_string()))] {
            let req = CommitRequest {
                if_content: if_content.clone(),
                mtime: None,
            };
            let json = serde_json::to_string(&req).expect("serialize");
            assert_eq!(read(&json), if_content, "{json}");
        }
    }
}
