//! The schema, written once for both dialects. `{pk}`, `{bin}`, `{blob}` and `{table}` are
//! replaced per dialect; everything else is plain SQL both SQLite and MariaDB accept.

use super::Dialect;

/// Each step is applied once, in order; the version is kept in `tbl_schema_version`.
const MIGRATIONS: &[&[&str]] = &[
    // 1: users, tokens, the tree, contents, chunks, upload sessions.
    &[
        "CREATE TABLE tbl_user (
        id {pk},
        user_name VARCHAR(64) {bin} NOT NULL UNIQUE,
        user_pwd VARCHAR(255) NOT NULL,
        root_ino BIGINT NOT NULL DEFAULT 0,
        used_bytes BIGINT NOT NULL DEFAULT 0,
        used_files BIGINT NOT NULL DEFAULT 0,
        quota_bytes BIGINT NOT NULL DEFAULT 0,
        quota_files BIGINT NOT NULL DEFAULT 0,
        failed_logins BIGINT NOT NULL DEFAULT 0,
        locked_until BIGINT NOT NULL DEFAULT 0,
        signup_at BIGINT NOT NULL,
        status BIGINT NOT NULL DEFAULT 0
    ){table}",
        "CREATE TABLE tbl_user_token (
        id {pk},
        user_id BIGINT NOT NULL,
        token_hash CHAR(64) NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    ){table}",
        "CREATE INDEX idx_token_user ON tbl_user_token (user_id)",
        "CREATE TABLE tbl_inode (
        id {pk},
        user_id BIGINT NOT NULL,
        kind VARCHAR(8) NOT NULL,
        mode BIGINT NOT NULL,
        uid BIGINT NOT NULL,
        gid BIGINT NOT NULL,
        size BIGINT NOT NULL DEFAULT 0,
        atime BIGINT NOT NULL,
        mtime BIGINT NOT NULL,
        ctime BIGINT NOT NULL,
        nlink BIGINT NOT NULL,
        file_id BIGINT NULL,
        target TEXT NULL,
        status BIGINT NOT NULL DEFAULT 0,
        deleted_at BIGINT NOT NULL DEFAULT 0
    ){table}",
        "CREATE INDEX idx_inode_user ON tbl_inode (user_id, status)",
        "CREATE INDEX idx_inode_file ON tbl_inode (file_id)",
        "CREATE TABLE tbl_user_file (
        user_id BIGINT NOT NULL,
        parent_ino BIGINT NOT NULL,
        file_name VARCHAR(255) {bin} NOT NULL,
        ino BIGINT NOT NULL,
        PRIMARY KEY (parent_ino, file_name)
    ){table}",
        "CREATE INDEX idx_entry_ino ON tbl_user_file (ino)",
        "CREATE INDEX idx_entry_user ON tbl_user_file (user_id)",
        "CREATE TABLE tbl_file (
        id {pk},
        manifest_sha256 CHAR(64) NOT NULL UNIQUE,
        file_sha256 CHAR(64) NULL,
        file_sha1 CHAR(40) NULL,
        file_size BIGINT NOT NULL,
        refcount BIGINT NOT NULL DEFAULT 0,
        status BIGINT NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL
    ){table}",
        "CREATE INDEX idx_file_sha256 ON tbl_file (file_sha256)",
        "CREATE INDEX idx_file_sha1 ON tbl_file (file_sha1)",
        "CREATE INDEX idx_file_gc ON tbl_file (refcount, updated_at)",
        "CREATE TABLE tbl_file_chunk (
        file_id BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        chunk_sha256 CHAR(64) NULL,
        chunk_offset BIGINT NOT NULL,
        size BIGINT NOT NULL,
        PRIMARY KEY (file_id, seq)
    ){table}",
        "CREATE INDEX idx_file_chunk_offset ON tbl_file_chunk (file_id, chunk_offset)",
        "CREATE TABLE tbl_chunk (
        sha256 CHAR(64) NOT NULL PRIMARY KEY,
        size BIGINT NOT NULL,
        refcount BIGINT NOT NULL DEFAULT 0,
        location VARCHAR(16) NOT NULL,
        updated_at BIGINT NOT NULL
    ){table}",
        "CREATE INDEX idx_chunk_gc ON tbl_chunk (refcount, updated_at)",
        "CREATE INDEX idx_chunk_location ON tbl_chunk (location)",
        "CREATE TABLE tbl_user_chunk (
        user_id BIGINT NOT NULL,
        chunk_sha256 CHAR(64) NOT NULL,
        PRIMARY KEY (user_id, chunk_sha256)
    ){table}",
        "CREATE INDEX idx_user_chunk_sha ON tbl_user_chunk (chunk_sha256)",
        "CREATE TABLE tbl_upload_session (
        id CHAR(32) NOT NULL PRIMARY KEY,
        user_id BIGINT NOT NULL,
        body TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    ){table}",
    ],
    // 2: special files (FIFOs, sockets, devices) carry a device number; contents
    // count their bytes that are not holes; extended attributes, per inode (the
    // inode is scoped to its user).
    &[
        "ALTER TABLE tbl_inode ADD COLUMN rdev BIGINT NOT NULL DEFAULT 0",
        // A content's bytes that are not holes (NULL: recorded before holes were counted).
        "ALTER TABLE tbl_file ADD COLUMN data_bytes BIGINT NULL",
        "CREATE TABLE tbl_xattr (
        ino BIGINT NOT NULL,
        name VARCHAR(255) {bin} NOT NULL,
        value {blob} NOT NULL,
        PRIMARY KEY (ino, name)
    ){table}",
    ],
    // 3: the change feed: each user's sequence number and the changes kept.
    &[
        "ALTER TABLE tbl_user ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0",
        "CREATE TABLE tbl_change (
        user_id BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (user_id, seq)
    ){table}",
        "CREATE INDEX idx_change_at ON tbl_change (at)",
    ],
    // 4: inode numbers from one counter, taken in blocks, so that a client can
    // reserve numbers for the nodes it makes before the server sees them; the
    // ranges reserved, per user.
    &[
        "CREATE TABLE tbl_ino_alloc (
        id BIGINT NOT NULL PRIMARY KEY,
        next_ino BIGINT NOT NULL
    ){table}",
        "INSERT INTO tbl_ino_alloc (id, next_ino) SELECT 1, COALESCE(MAX(id), 0) + 1 FROM tbl_inode",
        "CREATE TABLE tbl_ino_range (
        user_id BIGINT NOT NULL,
        first_ino BIGINT NOT NULL,
        count BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (user_id, first_ino)
    ){table}",
    ],
    // 5: each chunk's block checksums (`crate::sums`), so that a ranged read
    // checks only the blocks it reads (NULL for chunks staged before); the
    // bytes of a small chunk kept in its row (location 'inline').
    &[
        "ALTER TABLE tbl_chunk ADD COLUMN block_sums {blob} NULL",
        "ALTER TABLE tbl_chunk ADD COLUMN data {blob} NULL",
    ],
];

pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// The statements that bring a database at `from` to the latest version.
pub fn steps(dialect: Dialect, from: i64) -> Vec<(i64, Vec<String>)> {
    MIGRATIONS
        .iter()
        .enumerate()
        .skip(from.max(0) as usize)
        .map(|(i, stmts)| {
            (
                i as i64 + 1,
                stmts.iter().map(|s| render(dialect, s)).collect(),
            )
        })
        .collect()
}

fn render(dialect: Dialect, sql: &str) -> String {
    let (pk, bin, table, blob) = match dialect {
        Dialect::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "", "", "BLOB"),
        Dialect::Mysql => (
            "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
            "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            // BLOB stops 1 byte short of a 64 KiB value.
            "MEDIUMBLOB",
        ),
    };
    sql.replace("{pk}", pk)
        .replace("{bin}", bin)
        .replace("{blob}", blob)
        .replace("{table}", table)
}
