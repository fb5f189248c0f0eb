//! What an upload sends: the byte ranges to chunk anew, and the new chunk
//! list, with base chunks reused outside those ranges.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use panproto::wire::ChunkRef;
use panproto::{CHUNK_MAX, Chunker};

use super::{Snapshot, UploadError, UploadResult};
use crate::cache::shadow::ShadowRecord;
use crate::ranges::RangeSet;

/// Reads [pos, end) of a file, for the chunker. A file that ends early (cut
/// short while being sent) is an error, never a shorter chunk.
pub(super) struct RangeReader<'a> {
    pub file: &'a File,
    pub pos: u64,
    pub end: u64,
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

/// Base chunks with their offsets.
fn with_offsets(chunks: &[ChunkRef]) -> Vec<(u64, ChunkRef)> {
    let mut offset = 0;
    chunks
        .iter()
        .map(|c| {
            let at = offset;
            offset += c.size;
            (at, c.clone())
        })
        .collect()
}

/// The byte ranges that must be chunked anew: each change widened to the base
/// chunks it touches, plus anything past the base's end.
pub(super) fn changed_regions(r: &ShadowRecord) -> Vec<(u64, u64)> {
    let size = r.size;
    let base = with_offsets(&r.base_chunks);
    let base_end = base.last().map_or(0, |(o, c)| o + c.size);
    if base.is_empty() {
        return if size > 0 {
            vec![(0, size)]
        } else {
            Vec::new()
        };
    }
    let widen = |a: u64, b: u64| -> (u64, u64) {
        let start = base
            .iter()
            .find(|(o, c)| o + c.size > a)
            .map_or(base_end, |(o, _)| *o);
        let end = base
            .iter()
            .find(|(o, c)| o + c.size >= b)
            .map_or(b, |(o, c)| (o + c.size).max(b));
        (start.min(a), end)
    };
    let mut regions = crate::ranges::RangeSet::default();
    for &(a, b) in r.dirty.iter() {
        let (s, e) = widen(a, b);
        regions.insert(s, e);
    }
    if let Some(cut) = r.cut
        && cut < base_end
    {
        let (s, e) = widen(cut, cut + 1);
        regions.insert(s, e);
    }
    if size > base_end {
        regions.insert(base_end, size);
    }
    regions
        .iter()
        .map(|&(a, b)| (a, b.min(size)))
        .filter(|(a, b)| a < b)
        .collect()
}

/// [a, b) cut into pieces that are all zeros (true) or hold data (false), in order.
fn segments(zeros: &RangeSet, a: u64, b: u64) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    let mut pos = a;
    for (ga, gb) in zeros.gaps(a, b) {
        if pos < ga {
            out.push((pos, ga, true));
        }
        out.push((ga, gb, false));
        pos = gb;
    }
    if pos < b {
        out.push((pos, b, true));
    }
    out
}

/// A run of zeros as hole entries, none longer than a chunk may be.
fn holes(len: u64) -> impl Iterator<Item = ChunkRef> {
    let max = u64::from(CHUNK_MAX);
    (0..len.div_ceil(max)).map(move |i| ChunkRef {
        sha256: None,
        size: (len - i * max).min(max),
    })
}

/// The chunk list of a new content, and where each data chunk lies in the file.
pub(super) struct Plan {
    pub chunks: Vec<ChunkRef>,
    /// (offset, length) by SHA-256.
    pub placed: HashMap<String, (u64, u64)>,
}

/// The new chunk list: base chunks outside the changed regions, new ones
/// inside, each new one told to `on_new` (offset, length, SHA-256) as it is cut.
pub(super) fn plan(
    snap: &Snapshot,
    regions: &[(u64, u64)],
    on_new: &mut dyn FnMut(u64, u64, &str),
) -> UploadResult<Plan> {
    let size = snap.record.size;
    let base = with_offsets(&snap.record.base_chunks);
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut placed = HashMap::new();
    let mut pos = 0u64;
    let mut regions = regions.iter().peekable();
    while pos < size {
        if let Some(&&(a, b)) = regions.peek()
            && a <= pos
        {
            for (s, e, zeros) in segments(&snap.record.zeros, a, b) {
                if zeros {
                    chunks.extend(holes(e - s));
                    continue;
                }
                let reader = RangeReader {
                    file: &snap.file,
                    pos: s,
                    end: e,
                };
                for chunk in Chunker::new(reader) {
                    let chunk = chunk?;
                    let sha = panproto::sha256_hex(&chunk.data);
                    let len = chunk.data.len() as u64;
                    on_new(s + chunk.offset, len, &sha);
                    placed.insert(sha.clone(), (s + chunk.offset, len));
                    chunks.push(ChunkRef {
                        sha256: Some(sha),
                        size: len,
                    });
                }
            }
            pos = b;
            regions.next();
            continue;
        }
        let next_region = regions.peek().map_or(size, |r| r.0);
        match base.iter().find(|(o, _)| *o == pos) {
            Some((o, c)) if o + c.size <= next_region => {
                if let Some(sha) = &c.sha256 {
                    placed.entry(sha.clone()).or_insert((*o, c.size));
                }
                chunks.push(c.clone());
                pos += c.size;
            }
            _ => return Err(UploadError::Plan(pos)),
        }
    }
    Ok(Plan { chunks, placed })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::upload) fn record(
        base_sizes: &[u64],
        size: u64,
        dirty: &[(u64, u64)],
        cut: Option<u64>,
    ) -> ShadowRecord {
        let mut r = ShadowRecord {
            ino: 1,
            base: Some("base".into()),
            base_chunks: base_sizes
                .iter()
                .map(|&size| ChunkRef {
                    sha256: Some(format!("{size}")),
                    size,
                })
                .collect(),
            size,
            present: RangeSet::default(),
            dirty: RangeSet::default(),
            cut,
            zeros: RangeSet::default(),
            mtime: 0,
            ctime: 0,
            place: None,
        };
        for &(a, b) in dirty {
            r.dirty.insert(a, b);
        }
        r
    }

    #[test]
    fn changes_are_widened_to_the_base_chunks_they_touch() {
        let base = [100, 100, 100];
        assert_eq!(
            changed_regions(&record(&base, 300, &[(150, 160)], None)),
            [(100, 200)]
        );
        // Two changes in touching chunks make one region.
        let two = record(&base, 300, &[(150, 160), (90, 110)], None);
        assert_eq!(changed_regions(&two), [(0, 200)]);
        // A file cut short re-chunks the chunk the cut falls in, up to the new end.
        assert_eq!(
            changed_regions(&record(&base, 250, &[], Some(250))),
            [(200, 250)]
        );
        // Bytes past the base's end are new.
        assert_eq!(
            changed_regions(&record(&base, 350, &[(300, 350)], None)),
            [(300, 350)]
        );
        // No base: everything is new; an empty file has nothing to send.
        assert_eq!(
            changed_regions(&record(&[], 10, &[(0, 10)], None)),
            [(0, 10)]
        );
        assert!(changed_regions(&record(&[], 0, &[], None)).is_empty());
    }

    #[test]
    fn segments_alternate_data_and_zeros() {
        let mut zeros = RangeSet::default();
        zeros.insert(10, 20);
        zeros.insert(30, 40);
        assert_eq!(
            segments(&zeros, 0, 50),
            vec![
                (0, 10, false),
                (10, 20, true),
                (20, 30, false),
                (30, 40, true),
                (40, 50, false)
            ]
        );
        assert_eq!(segments(&zeros, 12, 18), vec![(12, 18, true)]);
        assert_eq!(segments(&RangeSet::default(), 5, 9), vec![(5, 9, false)]);
    }

    #[test]
    fn long_holes_are_split_at_the_chunk_limit() {
        let max = u64::from(CHUNK_MAX);
        let sizes: Vec<u64> = holes(2 * max + 7).map(|c| c.size).collect();
        assert_eq!(sizes, vec![max, max, 7]);
        assert!(holes(3 * max).all(|c| c.sha256.is_none()));
    }
}
