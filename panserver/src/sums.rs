//! Block checksums of a chunk: a CRC-32 of every 64 KiB block, computed while
//! the chunk is staged (when its SHA-256 is checked) and kept with its row.
//!
//! A read of part of a chunk then reads and checks only the blocks it needs. A
//! 4 KiB read used to read the whole chunk (1 MiB on average, up to 4 MiB) and
//! hash it with SHA-256, which was most of a ranged GET's cost. The CRC still
//! catches a corrupt block; `panserver check` verifies the SHA-256 of every
//! chunk. A chunk staged before the checksums existed has none and is read
//! and checked whole.

/// The bytes each checksum covers; the last block of a chunk may be shorter.
pub const SUM_BLOCK: u64 = 64 << 10;
/// The bytes one block's checksum takes (a little-endian CRC-32).
const SUM_BYTES: usize = 4;

/// Computes the checksums of a chunk fed in pieces of any size.
#[derive(Default)]
pub struct BlockSummer {
    sums: Vec<u8>,
    crc: crc32fast::Hasher,
    in_block: u64,
}

impl BlockSummer {
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (SUM_BLOCK - self.in_block).min(data.len() as u64) as usize;
            self.crc.update(&data[..take]);
            self.in_block += take as u64;
            data = &data[take..];
            if self.in_block == SUM_BLOCK {
                self.end_block();
            }
        }
    }

    fn end_block(&mut self) {
        let crc = std::mem::take(&mut self.crc).finalize();
        self.sums.extend_from_slice(&crc.to_le_bytes());
        self.in_block = 0;
    }

    /// The checksums, one per block, in order.
    pub fn finish(mut self) -> Vec<u8> {
        if self.in_block > 0 {
            self.end_block();
        }
        self.sums
    }
}

/// The checksums of `data`, a whole chunk.
pub fn block_sums(data: &[u8]) -> Vec<u8> {
    let mut summer = BlockSummer::default();
    summer.update(data);
    summer.finish()
}

/// Whether `sums` has exactly one checksum per block of a chunk of `size` bytes.
pub fn fits(sums: &[u8], size: u64) -> bool {
    sums.len() as u64 == size.div_ceil(SUM_BLOCK) * SUM_BYTES as u64
}

/// The byte range of the whole blocks of a chunk of `size` bytes that hold [from, to).
pub fn covering(size: u64, from: u64, to: u64) -> (u64, u64) {
    let start = from / SUM_BLOCK * SUM_BLOCK;
    let end = (to.div_ceil(SUM_BLOCK) * SUM_BLOCK).min(size);
    (start, end)
}

/// Whether `data`, the chunk's bytes from `start` (a block boundary) to the
/// end of a block or of the chunk, matches its checksums.
pub fn check(sums: &[u8], start: u64, data: &[u8]) -> bool {
    let first = (start / SUM_BLOCK) as usize;
    data.chunks(SUM_BLOCK as usize)
        .enumerate()
        .all(|(i, block)| {
            let at = (first + i) * SUM_BYTES;
            sums.get(at..at + SUM_BYTES)
                .is_some_and(|want| crc32fast::hash(block).to_le_bytes() == want)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn pieces_of_any_size_give_the_sums_of_the_whole() {
        let chunk = data(3 * SUM_BLOCK as usize + 1000);
        let whole = block_sums(&chunk);
        assert_eq!(whole.len(), 4 * SUM_BYTES);
        assert!(fits(&whole, chunk.len() as u64));
        for piece in [1, 1000, SUM_BLOCK as usize, 100_000] {
            let mut summer = BlockSummer::default();
            chunk.chunks(piece).for_each(|p| summer.update(p));
            assert_eq!(summer.finish(), whole, "pieces of {piece}");
        }
        assert!(block_sums(&[]).is_empty());
        assert!(fits(&[], 0));
        assert!(!fits(&whole, SUM_BLOCK));
    }

    #[test]
    fn a_part_is_checked_by_its_blocks_alone() {
        let chunk = data(2 * SUM_BLOCK as usize + 500);
        let sums = block_sums(&chunk);
        let size = chunk.len() as u64;
        let (start, end) = covering(size, SUM_BLOCK + 10, SUM_BLOCK + 20);
        assert_eq!((start, end), (SUM_BLOCK, 2 * SUM_BLOCK));
        assert!(check(&sums, start, &chunk[start as usize..end as usize]));
        let (start, end) = covering(size, 5, size);
        assert_eq!((start, end), (0, size));
        assert!(check(&sums, start, &chunk));
        let tail = covering(size, size - 1, size);
        assert_eq!(tail, (2 * SUM_BLOCK, size));
        assert!(check(&sums, tail.0, &chunk[tail.0 as usize..]));
    }

    #[test]
    fn a_changed_byte_fails_its_block() {
        let mut chunk = data(2 * SUM_BLOCK as usize);
        let sums = block_sums(&chunk);
        chunk[SUM_BLOCK as usize + 3] ^= 1;
        assert!(check(&sums, 0, &chunk[..SUM_BLOCK as usize]));
        assert!(!check(&sums, SUM_BLOCK, &chunk[SUM_BLOCK as usize..]));
        assert!(!check(&sums, 0, &chunk));
        // Checksums that end early fail what they do not cover.
        assert!(!check(&sums[..SUM_BYTES], 0, &data(2 * SUM_BLOCK as usize)));
    }
}
