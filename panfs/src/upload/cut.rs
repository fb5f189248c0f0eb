//! Cutting a range of a local file into content-defined chunks, and hashing
//! each where it was cut, with no copy (`Chunker::cut_next`).
//!
//! Tried and left out: cutting on one thread while another hashes. Each runs
//! at about 1 GB/s on the test machine, but a 1 GiB write with `fsync` took
//! as long either way (3.6-4.5 s, five runs): the server's side bounds it.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use panproto::Chunker;

use super::Cut;

/// Reads [pos, end) of a file, for the chunker. A file that ends early (cut
/// short while being sent) is an error, never a shorter chunk.
struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Cuts [from, to) of `file` into chunks and gives each one's offset in the
/// file, length and SHA-256 to `each`, in order.
pub(super) fn cut_and_hash(
    file: &File,
    (from, to): (u64, u64),
    each: &mut dyn FnMut(Cut),
) -> std::io::Result<()> {
    let reader = RangeReader {
        file,
        pos: from,
        end: to,
    };
    let mut chunker = Chunker::new(reader);
    while let Some((offset, data)) = chunker.cut_next()? {
        each((from + offset, data.len() as u64, panproto::sha256_hex(data)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Bytes that do not repeat (xorshift), so that the cuts fall by content.
    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(&data).expect("write");
        (f, data)
    }

    #[test]
    fn a_range_is_cut_as_its_bytes_are_and_placed_in_the_file() {
        let (f, data) = file_of(9 << 20);
        let from = 4096;
        let mut cuts = Vec::new();
        cut_and_hash(f.as_file(), (from, data.len() as u64), &mut |c| {
            cuts.push(c)
        })
        .expect("cut");
        let expected: Vec<Cut> = Chunker::new(&data[from as usize..])
            .map(|c| {
                let c = c.expect("chunk");
                let sha = panproto::sha256_hex(&c.data);
                (from + c.offset, c.data.len() as u64, sha)
            })
            .collect();
        assert!(cuts.len() > 3, "{} chunks", cuts.len());
        assert_eq!(cuts, expected);
    }

    #[test]
    fn a_file_shorter_than_the_range_is_an_error() {
        let (f, data) = file_of(1 << 20);
        let past = data.len() as u64 + (8 << 20);
        let err = cut_and_hash(f.as_file(), (0, past), &mut |_| {}).expect_err("short file");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
