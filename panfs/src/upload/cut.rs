//! Cutting a range of a local file into content-defined chunks, and hashing
//! each where it was cut, with no copy (`Chunker::cut_next`); and checking
//! chunks cut before (sent while the file was written) against its bytes now.
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

/// Of the chunks cut earlier (`cut`, in file order), the run that starts at
/// `from` and still holds the file's bytes, as far as `to`: what cutting
/// [from, to) now would give for those bytes, since the cut points follow
/// from the bytes alone. The chunks are hashed again (a passthrough writer
/// may have changed any of them unseen), on several threads at once, which
/// is faster than cutting anew on one.
pub(super) fn still_cut(
    file: &File,
    cut: &[Cut],
    (from, to): (u64, u64),
) -> std::io::Result<Vec<Cut>> {
    let start = cut.partition_point(|c| c.0 < from);
    let mut end = from;
    let run: Vec<&Cut> = cut[start..]
        .iter()
        .take_while(|c| {
            let next = c.0 == end && c.0 + c.1 <= to;
            end = c.0 + c.1;
            next
        })
        .collect();
    if run.is_empty() {
        // Most uploads: nothing was sent ahead (asking for the cores reads
        // cgroup files).
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let per_thread = run.len().div_ceil(threads).max(1);
    let held: Vec<Vec<bool>> = std::thread::scope(|scope| {
        let checks: Vec<_> = run
            .chunks(per_thread)
            .map(|part| scope.spawn(move || holds(file, part)))
            .collect();
        checks
            .into_iter()
            .map(|check| {
                check
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a hashing thread panicked")))
            })
            .collect::<std::io::Result<_>>()
    })?;
    let still = held.iter().flatten().take_while(|&&h| h).count();
    Ok(run[..still].iter().map(|&c| c.clone()).collect())
}

/// Whether each chunk's bytes in `file` still hash to its SHA-256.
fn holds(file: &File, part: &[&Cut]) -> std::io::Result<Vec<bool>> {
    let mut buf = Vec::new();
    part.iter()
        .map(|(offset, len, sha)| {
            buf.resize(*len as usize, 0);
            file.read_exact_at(&mut buf, *offset)?;
            Ok(panproto::sha256_hex(&buf) == *sha)
        })
        .collect()
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

    fn cuts_of(file: &File, range: (u64, u64)) -> Vec<Cut> {
        let mut cuts = Vec::new();
        cut_and_hash(file, range, &mut |c| cuts.push(c)).expect("cut");
        cuts
    }

    #[test]
    fn chunks_cut_before_are_kept_up_to_the_first_whose_bytes_changed() {
        let (f, data) = file_of(12 << 20);
        let cuts = cuts_of(f.as_file(), (0, data.len() as u64));
        assert!(cuts.len() > 6, "{} chunks", cuts.len());
        let all = still_cut(f.as_file(), &cuts, (0, data.len() as u64)).expect("check");
        assert_eq!(all, cuts, "unchanged bytes keep every chunk");
        // One byte changes inside the fifth chunk.
        let (offset, len, _) = cuts[4];
        let at = offset + len / 2;
        f.as_file()
            .write_all_at(&[!data[at as usize]], at)
            .expect("write");
        let kept = still_cut(f.as_file(), &cuts, (0, data.len() as u64)).expect("check");
        assert_eq!(
            kept,
            cuts[..4],
            "chunks from the changed one on are cut anew"
        );
    }

    #[test]
    fn chunks_cut_before_count_only_from_the_start_and_within_the_range() {
        let (f, data) = file_of(12 << 20);
        let cuts = cuts_of(f.as_file(), (0, data.len() as u64));
        let second = cuts[1].0;
        let from_second =
            still_cut(f.as_file(), &cuts, (second, data.len() as u64)).expect("check");
        assert_eq!(from_second, cuts[1..]);
        let off_a_cut =
            still_cut(f.as_file(), &cuts, (second + 1, data.len() as u64)).expect("check");
        assert!(
            off_a_cut.is_empty(),
            "a range that starts off a cut point keeps none"
        );
        let end_of_third = cuts[2].0 + cuts[2].1;
        let within = still_cut(f.as_file(), &cuts, (0, end_of_third + 1)).expect("check");
        assert_eq!(within, cuts[..3], "only chunks that end within the range");
    }
}
