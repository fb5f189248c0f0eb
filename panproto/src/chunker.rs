//! Content-defined chunking (FastCDC 2020). Server and client use the same
//! parameters, so the same bytes always produce the same chunk list and an edit
//! moves only the boundaries near it.

use std::io::Read;

use fastcdc::v2020::{Error as CdcError, StreamCDC};

pub const CHUNK_MIN: u32 = 256 * 1024;
pub const CHUNK_AVG: u32 = 1024 * 1024;
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;

/// One chunk cut from a stream: where it sits and its bytes.
pub struct Chunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Cuts a reader into chunks; memory use is bounded by `CHUNK_MAX`.
pub struct Chunker<R: Read> {
    inner: StreamCDC<R>,
}

impl<R: Read> Chunker<R> {
    pub fn new(reader: R) -> Self {
        Self {
            inner: StreamCDC::new(reader, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX),
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = std::io::Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.inner.next()? {
            Ok(c) => Some(Ok(Chunk {
                offset: c.offset,
                data: c.data,
            })),
            Err(CdcError::IoError(e)) => Some(Err(e)),
            Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng, rngs::StdRng};

    fn cuts(data: &[u8]) -> Vec<(u64, usize)> {
        Chunker::new(data)
            .map(|c| {
                let c = c.expect("chunk");
                (c.offset, c.data.len())
            })
            .collect()
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    #[test]
    fn chunks_cover_input_within_bounds() {
        let data = random(20 << 20, 1);
        let list = cuts(&data);
        let mut next = 0u64;
        for (i, (off, len)) in list.iter().enumerate() {
            assert_eq!(*off, next);
            assert!(*len <= CHUNK_MAX as usize);
            if i + 1 < list.len() {
                assert!(*len >= CHUNK_MIN as usize);
            }
            next += *len as u64;
        }
        assert_eq!(next, data.len() as u64);
        let avg = data.len() / list.len();
        assert!(avg > 512 * 1024 && avg < 2 * 1024 * 1024, "average {avg}");
    }

    #[test]
    fn boundaries_move_only_near_an_edit() {
        let data = random(24 << 20, 2);
        let before = cuts(&data);
        let mut edited = data.clone();
        let at = 12 << 20;
        edited.splice(at..at, b"inserted bytes".iter().copied());
        let after = cuts(&edited);
        // Every chunk of the edited data is an old chunk, at its old offset before
        // the edit or shifted by the insertion after it, except a few near the edit.
        let shift = 14u64;
        let old: std::collections::HashSet<_> = before.iter().copied().collect();
        let new_chunks = after
            .iter()
            .filter(|(off, len)| {
                let unshifted = old.contains(&(*off, *len));
                let shifted = *off >= shift && old.contains(&(off - shift, *len));
                !(unshifted || shifted)
            })
            .collect::<Vec<_>>();
        assert!(!new_chunks.is_empty());
        assert!(new_chunks.len() <= 3, "{} chunks changed", new_chunks.len());
        for (off, _) in new_chunks {
            assert!(off.abs_diff(at as u64) <= 2 * CHUNK_MAX as u64);
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(cuts(&[]).is_empty());
    }
}
