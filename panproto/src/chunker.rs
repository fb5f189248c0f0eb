//! Content-defined chunking (FastCDC 2020). Server and client use the same
//! parameters, so the same bytes always produce the same chunk list and an edit
//! moves only the boundaries near it.
//!
//! The cuts are those of `fastcdc`'s `StreamCDC`, found over a buffer of our
//! own. `StreamCDC` copies out each chunk, then moves the rest of its 4 MiB
//! buffer to the front and zeroes its tail: about 5 MiB moved per 1 MiB chunk.
//! Here a byte is copied out once and moved at most once more (cutting 1 GiB:
//! 0.80 s before, 0.60 s now, on the 2-core test machine).

use std::io::{self, Read};

use fastcdc::v2020::{MASKS, cut};

pub const CHUNK_MIN: u32 = 256 * 1024;
pub const CHUNK_AVG: u32 = 1024 * 1024;
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;

/// The buffer holds this many largest chunks: what is left of it is moved to
/// the front after every largest chunk's worth at most.
const BUFFER_CHUNKS: usize = 2;

/// One chunk cut from a stream: where it sits and its bytes.
pub struct Chunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Finds the cuts in a stream; memory use is bounded by the buffer.
struct Cutter<R: Read> {
    reader: R,
    buf: Vec<u8>,
    /// The unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    /// The stream offset of `buf[start]`.
    offset: u64,
}

impl<R: Read> Cutter<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            buf: vec![0; BUFFER_CHUNKS * CHUNK_MAX as usize],
            start: 0,
            end: 0,
            eof: false,
            offset: 0,
        }
    }

    /// The next chunk's offset and bytes (borrowed until the next call).
    fn next_chunk(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        let max = CHUNK_MAX as usize;
        if self.end - self.start < max && !self.eof {
            if self.buf.len() - self.start < max {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            while self.end - self.start < max && !self.eof {
                match self.reader.read(&mut self.buf[self.end..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if self.start == self.end {
            return Ok(None);
        }
        // `StreamCDC`'s masks: normalization level 1 around the average size.
        let bits = CHUNK_AVG.trailing_zeros() as usize;
        let (mask_s, mask_l) = (MASKS[bits + 1], MASKS[bits - 1]);
        let (_, count) = cut(
            &self.buf[self.start..self.end],
            CHUNK_MIN as usize,
            CHUNK_AVG as usize,
            max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
        );
        let at = self.start;
        let offset = self.offset;
        self.start += count;
        self.offset += count as u64;
        Ok(Some((offset, &self.buf[at..at + count])))
    }
}

/// Cuts a reader into chunks, each in a vector of its own.
pub struct Chunker<R: Read> {
    cutter: Cutter<R>,
}

impl<R: Read> Chunker<R> {
    pub fn new(reader: R) -> Self {
        Self {
            cutter: Cutter::new(reader),
        }
    }

    /// The next chunk's offset and bytes, lent until the next call: for a
    /// caller that only reads them (hashes, stages), with no copy. Iterating
    /// gives each chunk in a vector of its own instead; a 1 MiB vector per
    /// chunk is a fresh mapping in a process whose mmap threshold is lower
    /// (panfs), every page of it faulted in.
    pub fn cut_next(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        self.cutter.next_chunk()
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.cutter.next_chunk() {
            Ok(Some((offset, data))) => Some(Ok(Chunk {
                offset,
                data: data.to_vec(),
            })),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
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
    fn chunks_lent_are_those_given_in_vectors() {
        let data = random(9 << 20, 11);
        let given: Vec<(u64, Vec<u8>)> = Chunker::new(&data[..])
            .map(|c| c.map(|c| (c.offset, c.data)).expect("chunk"))
            .collect();
        let mut lent = Vec::new();
        let mut chunker = Chunker::new(&data[..]);
        while let Some((offset, bytes)) = chunker.cut_next().expect("chunk") {
            lent.push((offset, bytes.to_vec()));
        }
        assert!(given.len() > 3, "{} chunks", given.len());
        assert!(given == lent, "the same cuts and the same bytes");
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(cuts(&[]).is_empty());
    }

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn cuts_are_those_of_fastcdc_streaming() {
        let data = random(30 << 20, 3);
        for len in [
            1,
            CHUNK_MIN as usize - 1,
            CHUNK_MIN as usize + 1,
            9 << 20,
            30 << 20,
        ] {
            let data = &data[..len];
            let reference: Vec<(u64, usize)> =
                fastcdc::v2020::StreamCDC::new(data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
                    .map(|c| {
                        let c = c.expect("chunk");
                        (c.offset, c.length)
                    })
                    .collect();
            for step in [len, 65536, 4093] {
                let ours: Vec<(u64, usize)> = Chunker::new(Trickle { data, step })
                    .map(|c| {
                        let c = c.expect("chunk");
                        (c.offset, c.data.len())
                    })
                    .collect();
                assert_eq!(ours, reference, "{len} bytes read {step} at a time");
            }
        }
    }

    #[test]
    fn a_read_error_is_returned() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        assert!(Chunker::new(Failing).next().expect("an item").is_err());
    }
}
