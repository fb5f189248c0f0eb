//! Block-sized and chunk-sized buffers, recycled.
//!
//! A buffer freed to glibc may go back to the system (a mapped one always
//! does), and each of its pages faults in again when the next buffer takes
//! its place: with every block buffer mapped, a quarter of panfs's time in
//! cold random reads, where every read that misses fetches a block. A block's
//! bytes are put in a buffer from here instead, and it comes back here when
//! the last `Bytes` sharing it is dropped (a block evicted from the memory
//! cache, a read answered). The chunks an upload sends, above glibc's mmap
//! threshold (`tune_malloc` in main.rs), are read into buffers from here too
//! (a megabyte each, on average). Each pool keeps a few free buffers, so
//! memory stays bounded by the caches' bounds plus those.

use std::sync::Mutex;

use bytes::Bytes;

use super::blocks::BLOCK;

/// The size of each block buffer.
pub const SIZE: usize = BLOCK as usize;

/// Free buffers of one size: a pool for the process, as the allocator is.
pub struct BufPool {
    size: usize,
    free_max: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

/// The pool every block's bytes use; 8 MiB of them kept free at most.
pub static BLOCKS: BufPool = BufPool::new(SIZE, 32);

/// The most one FUSE read asks for: the kernel's reads of a sequential
/// reader are this large (256 pages, as `max_write` allows).
pub const READ_MAX: usize = 1 << 20;

/// The pool of reads that span several blocks, joined for the kernel's one
/// reply: each was a fresh mapping otherwise, faulted in and unmapped.
pub static READS: BufPool = BufPool::new(READ_MAX, 8);

/// The pool of the chunks an upload sends: as many kept free as one upload
/// sends at once; of each, only the pages its largest chunk touched are
/// resident (1 MiB on average, 16 MiB at worst for the four).
pub static CHUNKS: BufPool = BufPool::new(panproto::CHUNK_MAX as usize, 4);

impl BufPool {
    const fn new(size: usize, free_max: usize) -> Self {
        Self {
            size,
            free_max,
            free: Mutex::new(Vec::new()),
        }
    }

    /// An empty buffer with room for one of this pool's size.
    pub fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        reused.unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// `buf` as shared bytes; a buffer from `take` that never grew comes back
    /// when the last of them is dropped.
    pub fn freeze(&'static self, buf: Vec<u8>) -> Bytes {
        if buf.capacity() == self.size {
            Bytes::from_owner(Recycled { buf, pool: self })
        } else {
            Bytes::from(buf)
        }
    }

    /// A copy of `data` (at most this pool's size, or it is an ordinary
    /// allocation).
    pub fn copy(&'static self, data: &[u8]) -> Bytes {
        let mut buf = self.take();
        buf.extend_from_slice(data);
        self.freeze(buf)
    }

    /// Takes back a buffer from `take` that was not used.
    pub fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut free) = self.free.lock()
            && free.len() < self.free_max
        {
            free.push(buf);
        }
    }
}

/// The owner of a block's bytes while a `Bytes` shares them.
struct Recycled {
    buf: Vec<u8>,
    pool: &'static BufPool,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> &'static BufPool {
        Box::leak(Box::new(BufPool::new(SIZE, 4)))
    }

    #[test]
    fn a_buffer_comes_back_when_its_last_slice_goes_and_keeps_its_bytes_till_then() {
        let pool = pool();
        let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        let bytes = pool.copy(&data);
        let slice = bytes.slice(1000..2000);
        let address = bytes.as_ptr();
        drop(bytes);
        // Still shared: a new buffer is another one, and the slice is intact.
        let other = pool.take();
        assert_ne!(other.as_ptr(), address);
        assert_eq!(&slice[..], &data[1000..2000]);
        drop(slice);
        // Given back: the next buffer taken is it, empty.
        let again = pool.take();
        assert_eq!(again.as_ptr(), address);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), SIZE);
    }

    #[test]
    fn a_buffer_that_grew_past_a_block_is_an_ordinary_one() {
        let pool = pool();
        let mut buf = pool.take();
        buf.resize(SIZE + 1, 7);
        let bytes = pool.freeze(buf);
        assert_eq!(bytes.len(), SIZE + 1);
        assert!(bytes.iter().all(|&b| b == 7));
        drop(bytes);
        assert!(pool.free.lock().expect("pool").is_empty());
    }
}
