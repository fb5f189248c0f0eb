//! FUSE passthrough: a handle of a file that is wholly on local disk (a
//! complete working copy, or a whole content in the disk cache, moved back
//! out to be one) is opened straight onto that local file, and the kernel
//! reads and writes it with no round trip through panfs.
//!
//! The kernel's rule shapes the bookkeeping: an inode's opens are either all
//! passthrough onto one backing file or all through the page cache (direct
//! I/O opens go with either). So a file open through the page cache stays so
//! until those handles close, and a file open passthrough gives direct I/O to
//! a handle that cannot share its backing file.
//!
//! panfs never sees a passthrough handle's writes. While one is open for
//! writing, every look panfs takes at the copy (a stat, a read through panfs,
//! a change, an upload) first takes the local file's size and counts every
//! byte changed, and so does that handle's close: an upload always sends what
//! the kernel wrote. Only a look that finds the copy as an upload's settling
//! look left it (`cache::direct`) counts nothing: the close after an fsync
//! sends nothing again.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use panproto::wire::Node;

use super::attr::now_ns;
use super::files::{Body, FileState, Life, PageCache};
use super::{FsError, FsResult, PanFs};
use crate::cache::shadow::Shadow;

/// The smallest cached content that a read is worth a passthrough open for.
const PASSTHROUGH_CACHED_MIN: u64 = 1 << 20;

/// How the kernel does a handle's reads and writes.
pub enum Io {
    /// Through panfs, with the page cache used as `PageCache` says.
    Cached(PageCache),
    /// Straight onto this local file.
    Passthrough(File),
}

/// How one handle was opened, undone at its release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HandleIo {
    /// Through the page cache: no passthrough open may join it.
    Cached,
    /// Direct I/O through panfs: goes with either.
    Direct,
    Passthrough,
}

/// A file's open handles, by how the kernel does their I/O.
#[derive(Debug, Default)]
pub(super) struct Opens {
    cached: u32,
    passthrough: u32,
    /// Passthrough handles open for writing.
    writers: u32,
    /// The identity of the passthrough handles' backing file.
    backing: u64,
}

/// Whether passthrough is on, and what it did: shown by `panfs status`.
#[derive(Debug, Default)]
pub struct PassthroughStatus {
    on: AtomicBool,
    /// Why it is off, once decided.
    why_off: std::sync::Mutex<String>,
    pub opens: AtomicU64,
}

impl PassthroughStatus {
    pub fn describe(&self) -> String {
        if self.on.load(Ordering::Relaxed) {
            return "on".into();
        }
        match super::lock(&self.why_off).as_str() {
            "" => "off".into(),
            why => format!("off ({why})"),
        }
    }
}

impl Opens {
    pub(super) fn is_passthrough(&self) -> bool {
        self.passthrough > 0
    }
}

impl FileState {
    /// Takes in what passthrough handles may have written, before panfs
    /// reads or changes the copy.
    pub(super) fn see_direct_writes(&mut self) -> FsResult<()> {
        self.take_in_direct_writes(false)
    }

    /// As `see_direct_writes`, before an upload: a later look can then tell
    /// whether anything was written after it (see `cache::direct`).
    pub(super) fn settle_direct_writes(&mut self) -> FsResult<()> {
        self.take_in_direct_writes(true)
    }

    fn take_in_direct_writes(&mut self, settle: bool) -> FsResult<()> {
        if self.opens.writers == 0 {
            return Ok(());
        }
        match &mut self.body {
            Body::Local { shadow, .. } => shadow
                .took_direct_writes(now_ns(), settle)
                .map_err(|e| FsError::local("looking at the working copy", e)),
            Body::Remote { .. } => Ok(()),
        }
    }
}

impl PanFs {
    /// Turns passthrough on or off for the handles opened from now on: the
    /// adapter says whether the kernel can do it (`why` when not).
    pub fn set_passthrough(&self, on: bool, why: &str) {
        let on = on && self.opts.passthrough;
        let why = if self.opts.passthrough {
            why
        } else {
            "--passthrough off"
        };
        if !on {
            tracing::info!(
                why,
                "FUSE passthrough is off: every read and write goes through panfs"
            );
        }
        *super::lock(&self.passthrough.why_off) = why.to_string();
        self.passthrough.on.store(on, Ordering::Relaxed);
    }

    /// Picks how a new handle of `node`'s file does its I/O and counts it.
    /// `pages`: what an open through the page cache would do; `place`: where
    /// the file is, for a working copy made here.
    pub(super) fn pick_io(
        &self,
        node: &Node,
        f: &mut FileState,
        writes: bool,
        pages: PageCache,
        place: Option<(i64, String)>,
    ) -> FsResult<(HandleIo, Io)> {
        if self.passthrough.on.load(Ordering::Relaxed) && f.opens.cached == 0 {
            self.copy_from_disk(node, f, place)?;
            if let Body::Local { shadow, .. } = &mut f.body
                && shadow.is_complete()
            {
                let local = |e| FsError::local("opening the working copy for passthrough", e);
                let (file, backing) = shadow.backing().map_err(local)?;
                if f.opens.passthrough == 0 || f.opens.backing == backing {
                    if writes {
                        if f.opens.writers == 0 {
                            shadow.settle_direct_writes().map_err(local)?;
                        } else {
                            shadow.took_direct_writes(now_ns(), false).map_err(local)?;
                        }
                        f.opens.writers += 1;
                    }
                    f.opens.passthrough += 1;
                    f.opens.backing = backing;
                    self.passthrough.opens.fetch_add(1, Ordering::Relaxed);
                    return Ok((HandleIo::Passthrough, Io::Passthrough(file)));
                }
            }
        }
        if f.opens.passthrough > 0 || pages == PageCache::Bypass {
            return Ok((HandleIo::Direct, Io::Cached(PageCache::Bypass)));
        }
        f.opens.cached += 1;
        Ok((HandleIo::Cached, Io::Cached(pages)))
    }

    /// Whether `copy_from_disk` may give the node a working copy.
    pub(super) fn may_copy_at_open(node: &Node) -> bool {
        node.size == 0 || node.size as u64 >= PASSTHROUGH_CACHED_MIN
    }

    /// Gives a file held only on the server a working copy, when that costs
    /// no transfer: an empty file, or a whole content in the disk cache
    /// (moved out of it, and back in once the copy retires clean).
    fn copy_from_disk(
        &self,
        node: &Node,
        f: &mut FileState,
        place: Option<(i64, String)>,
    ) -> FsResult<()> {
        let Body::Remote { content, size } = &f.body else {
            return Ok(());
        };
        let local = |e| FsError::local("making a working copy for passthrough", e);
        let (copies, ino, mtime) = (&self.copies, node.ino, node.mtime);
        let shadow = match content {
            None if *size == 0 => Shadow::create(copies, ino, None, Vec::new(), 0, mtime)
                .map(Some)
                .map_err(local)?,
            // Smaller contents are read through panfs: the kernel keeps their
            // pages, and moving a small file in and out of the cache at each
            // open costs more than the reads it spares.
            Some(content) if *size >= PASSTHROUGH_CACHED_MIN => {
                let (content, size) = (content.clone(), *size);
                Shadow::from_whole(copies, ino, content.clone(), size, mtime, |to| {
                    self.fetcher.disk.take_whole(&content, size, to)
                })
                .map_err(local)?
            }
            _ => None,
        };
        if let Some(mut shadow) = shadow {
            shadow.record.place = place;
            f.body = Body::Local {
                shadow: Box::new(shadow),
                synced_ctime: 0,
            };
        }
        Ok(())
    }

    /// Undoes what `pick_io` counted for a handle, at its release: the last
    /// look at what a passthrough writer wrote, and whether the kernel's
    /// cached pages of the file must go (it wrote past them).
    pub(super) fn io_released(&self, f: &mut FileState, io: HandleIo, writes: bool) -> bool {
        match io {
            HandleIo::Cached => f.opens.cached -= 1,
            HandleIo::Direct => {}
            HandleIo::Passthrough => {
                if writes {
                    // Journaled as it is at its close, as a write through panfs
                    // journals the copy: a restarted panfs sends it.
                    let linked = f.life == Life::Linked;
                    let journaled = f.see_direct_writes().and_then(|()| match &mut f.body {
                        Body::Local { shadow, .. } if linked => shadow
                            .save(self.copies_synced())
                            .map_err(|e| FsError::local("journaling a passthrough write", e)),
                        _ => Ok(()),
                    });
                    if let Err(e) = journaled {
                        tracing::error!(
                            error = e.chain(),
                            "could not take in a passthrough handle's writes"
                        );
                    }
                    f.opens.writers -= 1;
                }
                f.opens.passthrough -= 1;
                return writes;
            }
        }
        false
    }

    /// The kernel would not take a passthrough handle: it goes through panfs
    /// with direct I/O instead, and passthrough is off from now on.
    pub fn passthrough_refused(&self, fh: u64, why: &std::io::Error) {
        tracing::warn!(error = %why, "the kernel refused FUSE passthrough");
        self.set_passthrough(false, "the kernel refused it");
        if let Ok(handle) = self.handle(fh) {
            let mut f = super::lock(&handle.file.state);
            self.io_released(&mut f, HandleIo::Passthrough, handle.writes);
            drop(f);
            *super::lock(&handle.io) = HandleIo::Direct;
        }
    }
}
