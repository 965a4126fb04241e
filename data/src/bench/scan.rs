//! `uqa bench scan`: open a sequence file (memory-mapped) and read every id of every feature of
//! every row, releasing each batch's pages once read (a streaming pass).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::memory::peak_rss_mb;
use crate::error::{DataError, Result};
use crate::reader::SequenceFile;
use crate::schema::Feature;

/// The figures of one scan.
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    pub rows: usize,
    pub positions: usize,
    pub ids: usize,
    pub bytes: u64,
    /// Seconds to open (map and validate) the file, and to open and scan it.
    pub open_s: f64,
    pub total_s: f64,
    pub peak_rss_mb: f64,
    /// A checksum of every id read, so the reads cannot be optimised away.
    pub checksum: i64,
}

pub fn scan(path: &Path) -> Result<ScanReport> {
    let start = Instant::now();
    let file = SequenceFile::open(path)?;
    let open_s = start.elapsed().as_secs_f64();
    let (mut positions, mut ids, mut checksum) = (0usize, 0usize, 0i64);
    for b in 0..file.num_batches() {
        for row in file.batch_rows(b) {
            positions += row.len();
            for f in Feature::ALL {
                let (values, _) = row.bags(f);
                ids += values.len();
                checksum = values
                    .iter()
                    .fold(checksum, |acc, &x| acc.wrapping_mul(31).wrapping_add(x));
            }
        }
        file.release_batch_pages(b);
    }
    let total_s = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len();
    Ok(ScanReport {
        rows: file.num_rows(),
        positions,
        ids,
        bytes,
        open_s,
        total_s,
        peak_rss_mb: peak_rss_mb(),
        checksum,
    })
}
