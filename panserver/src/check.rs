//! `panserver check`: verifies that every chunk the metadata knows is stored with
//! the right SHA-256, that reference counts and usage counters match what
//! references them, and that no dangling or half-committed state remains.
//! With `repair`, fixes what is safe to fix.

use std::collections::HashSet;

use futures::StreamExt;

use crate::meta::ChunkLocation;
use crate::service::{App, now_ns};
use crate::service::{ServiceError, ServiceResult};
use crate::store::chunk_key;
use crate::sums;

#[derive(Debug, Default)]
pub struct CheckReport {
    /// What is wrong (after repair: what was wrong).
    pub problems: Vec<String>,
    /// How many of the problems were repaired.
    pub repaired: usize,
    pub chunks_checked: u64,
}

/// Runs every check; with `repair`, also fixes what is safe to fix.
pub async fn check(app: &App, repair: bool) -> ServiceResult<CheckReport> {
    let mut report = CheckReport::default();
    let audit = app.meta.audit(repair).await?;
    report.repaired += audit.repaired;
    report.problems.extend(audit.problems);
    check_chunks(app, repair, &mut report).await?;
    check_staging(app, repair, &mut report).await?;
    Ok(report)
}

/// How many chunks are read back at once: the store answers each read after a
/// round trip, so one at a time leaves the check waiting on the network.
const PARALLEL_READS: usize = 16;

/// Reads back every known chunk and checks its hash.
async fn check_chunks(app: &App, repair: bool, report: &mut CheckReport) -> ServiceResult<()> {
    let mut after = String::new();
    loop {
        let page = app.meta.chunks_after(&after, 500).await?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        report.chunks_checked += page.len() as u64;
        let mut results = futures::stream::iter(page)
            .map(|(sha, location)| check_chunk(app, sha, location, repair))
            .buffer_unordered(PARALLEL_READS);
        while let Some(result) = results.next().await {
            if let Some((problem, repaired)) = result? {
                report.problems.push(problem);
                report.repaired += usize::from(repaired);
            }
        }
    }
    Ok(())
}

/// Checks one chunk; returns the problem found, if any, and whether it was repaired.
async fn check_chunk(
    app: &App,
    sha: String,
    location: ChunkLocation,
    repair: bool,
) -> ServiceResult<Option<(String, bool)>> {
    match app.read_chunk(&sha).await {
        // Bytes found; a chunk marked staged whose file is gone but which the store
        // has is safe to re-mark.
        Ok(_) if location == ChunkLocation::Staging && !app.staging.contains(&sha).await? => {
            if repair {
                app.meta
                    .set_chunk_location(&sha, ChunkLocation::Store, now_ns())
                    .await?;
            }
            Ok(Some((
                format!("chunk {sha} is marked staged but is only in the store"),
                repair,
            )))
        }
        Ok(data) => check_sums(app, &sha, &data, repair).await,
        Err(ServiceError::Corrupt) => Ok(Some((
            format!("chunk {sha} is missing or does not match its SHA-256"),
            false,
        ))),
        Err(e) => Err(e),
    }
}

/// A chunk's recorded block checksums must be those of its bytes (just checked
/// against its SHA-256): reads trust them. Repair records the right ones.
async fn check_sums(
    app: &App,
    sha: &str,
    data: &[u8],
    repair: bool,
) -> ServiceResult<Option<(String, bool)>> {
    let Some(recorded) = app.meta.block_sums(sha).await? else {
        return Ok(None);
    };
    let actual = sums::block_sums(data);
    if recorded == actual {
        return Ok(None);
    }
    if repair {
        app.meta.set_block_sums(sha, &actual).await?;
    }
    Ok(Some((
        format!("chunk {sha} has block checksums that do not match its bytes"),
        repair,
    )))
}

/// Files in staging that no chunk row knows: leftovers of a crash before the
/// row was written, or of a transfer after it. Removed on repair.
async fn check_staging(app: &App, repair: bool, report: &mut CheckReport) -> ServiceResult<()> {
    let names = app.staging.names().await?;
    let known: HashSet<String> = app.meta.present_chunks(&names).await?;
    for name in names.iter().filter(|n| !known.contains(*n)) {
        report
            .problems
            .push(format!("staging holds {name}, which no chunk row knows"));
        if repair && panproto::is_sha256_hex(name) {
            app.staging.remove(name).await?;
            report.repaired += 1;
        }
    }
    for name in names.iter().filter(|n| known.contains(*n)) {
        let elsewhere = match app.meta.chunk_location(name).await? {
            Some(ChunkLocation::Store) => app.store.get(&chunk_key(name)).await?.is_some(),
            Some(ChunkLocation::Inline) => true,
            _ => false,
        };
        if elsewhere {
            report.problems.push(format!(
                "chunk {name} is in the store (or its row) and still in staging"
            ));
            if repair {
                app.staging.remove(name).await?;
                report.repaired += 1;
            }
        }
    }
    Ok(())
}
