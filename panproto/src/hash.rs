//! Hash helpers. Chunks and contents are addressed by SHA-256; SHA-1 is kept only
//! for pan.go's instant-upload interface and is never used as a key on its own.

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The SHA-256 of no bytes.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// True for a lowercase 64-digit hex string, the only form a hash takes on the wire.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whole-content SHA-256 and SHA-1, fed incrementally.
#[derive(Default, Clone)]
pub struct ContentHasher {
    sha256: Sha256,
    sha1: Sha1,
    len: u64,
}

impl ContentHasher {
    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.sha1.update(data);
        self.len += data.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// (sha256 hex, sha1 hex)
    pub fn finish(self) -> (String, String) {
        (
            hex::encode(self.sha256.finalize()),
            hex::encode(self.sha1.finalize()),
        )
    }
}

/// The identity of a content: SHA-256 over its chunk list. Two files with the same
/// chunk list are the same content, whatever their whole-file hashes claim.
pub fn manifest_id(chunks: &[crate::wire::ChunkRef]) -> String {
    let mut h = Sha256::new();
    for c in chunks {
        h.update(c.sha256.as_deref().unwrap_or("-").as_bytes());
        h.update(b":");
        h.update(c.size.to_string().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let mut h = ContentHasher::default();
        h.update(b"ab");
        h.update(b"c");
        let (s256, s1) = h.finish();
        assert_eq!(
            s256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s1, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(sha256_hex(b"abc"), s256);
    }

    #[test]
    fn hex_form_is_strict() {
        assert!(is_sha256_hex(&sha256_hex(b"x")));
        assert!(!is_sha256_hex(&sha256_hex(b"x").to_uppercase()));
        assert!(!is_sha256_hex("../../etc/passwd"));
        assert!(!is_sha256_hex(""));
    }
}
