//! Any bytes as an upload session's JSON: parsing and checking never panic, and
//! an accepted list holds only chunks of 1 byte to CHUNK_MAX with canonical hashes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panproto::wire::UploadInit;
use panproto::{CHUNK_MAX, check_chunk_list, is_sha256_hex};

fuzz_target!(|data: &[u8]| {
    let Ok(init) = serde_json::from_slice::<UploadInit>(data) else {
        return;
    };
    if check_chunk_list(&init.chunks, 1024).is_ok() {
        assert!(init.chunks.len() <= 1024);
        for c in &init.chunks {
            assert!(c.size >= 1 && c.size <= u64::from(CHUNK_MAX));
            assert!(c.sha256.as_deref().is_none_or(is_sha256_hex));
        }
    }
});
