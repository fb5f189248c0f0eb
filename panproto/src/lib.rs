//! Shared between `panserver` and `panfs`: the wire types of the HTTP API, the
//! content-defined chunker, hashing helpers, and the parsers of untrusted input
//! (names and paths, chunk lists, Range headers; each has a fuzz target in
//! `panproto/fuzz`). No I/O beyond `Read`.

pub mod batch;
pub mod chunker;
pub mod hash;
pub mod name;
pub mod proof;
pub mod range;
pub mod wire;
pub mod xattr;

pub use chunker::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, Chunk, Chunker};
pub use hash::{ContentHasher, EMPTY_SHA256, is_sha256_hex, manifest_id, sha256_hex};
pub use name::{NAME_MAX, NameError, PathError, decode_name, parse_path, validate_name};
pub use range::{RangeRequest, parse_range};
pub use wire::{ChunkListError, check_chunk_list};
pub use xattr::{
    XATTR_NAME_MAX, XATTR_NODE_MAX, XATTR_VALUE_MAX, XattrNameError, validate_xattr_name,
};
