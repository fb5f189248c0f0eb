//! Shared between `panserver` and `panfs`: the wire types of the HTTP API, the
//! content-defined chunker, hashing helpers and name rules. No I/O beyond `Read`.

pub mod chunker;
pub mod hash;
pub mod name;
pub mod proof;
pub mod wire;

pub use chunker::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, Chunk, Chunker};
pub use hash::{ContentHasher, EMPTY_SHA256, is_sha256_hex, manifest_id, sha256_hex};
pub use name::{NameError, validate_name};
