//! Proof of possession for instant upload: the server names a nonce and byte
//! ranges of the content; only someone holding the bytes can answer.

use sha2::{Digest, Sha256};

/// Incrementally builds the answer: SHA-256 over the nonce, then each range's bytes in order.
pub struct ProofHasher(Sha256);

impl ProofHasher {
    pub fn new(nonce: &str) -> Self {
        let mut h = Sha256::new();
        h.update(nonce.as_bytes());
        Self(h)
    }

    pub fn update(&mut self, range_bytes: &[u8]) {
        self.0.update(range_bytes);
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}
