//! Summary statistics of sequence files and dataset folders, computed in one streaming pass.

use crate::reader::SequenceFile;
use crate::schema::Feature;

/// Statistics of one sequence file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStats {
    pub rows: usize,
    pub positions: usize,
    /// Sequence length percentiles: (percentile, length).
    pub length_percentiles: Vec<(u32, usize)>,
    pub max_len: usize,
    pub mean_len: f64,
    /// Distinct ids seen per id feature, in the order of [`Feature::IDS`].
    pub distinct_ids: [usize; 5],
    /// Mean bag size per text feature, in the order of [`Feature::TEXTS`].
    pub mean_bag: [f64; 5],
    pub file_bytes: u64,
}

pub const PERCENTILES: [u32; 6] = [5, 25, 50, 75, 95, 99];

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[usize], p: u32) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p as f64 / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn file_stats(file: &SequenceFile) -> FileStats {
    let mut lengths = Vec::with_capacity(file.num_rows());
    let mut seen: [Vec<bool>; 5] = Default::default();
    let mut bag_values = [0usize; 5];
    for b in 0..file.num_batches() {
        for row in file.batch_rows(b) {
            lengths.push(row.len());
            for (k, f) in Feature::IDS.iter().enumerate() {
                for &id in row.ids(*f) {
                    let id = id.max(0) as usize;
                    if seen[k].len() <= id {
                        seen[k].resize(id + 1, false);
                    }
                    seen[k][id] = true;
                }
            }
            for (k, f) in Feature::TEXTS.iter().enumerate() {
                bag_values[k] += row.bags(*f).0.len();
            }
        }
        file.release_batch_pages(b);
    }
    let positions: usize = lengths.iter().sum();
    lengths.sort_unstable();
    let per_position = |n: usize| {
        if positions == 0 {
            0.0
        } else {
            n as f64 / positions as f64
        }
    };
    FileStats {
        rows: lengths.len(),
        positions,
        length_percentiles: PERCENTILES
            .iter()
            .map(|&p| (p, percentile(&lengths, p)))
            .collect(),
        max_len: lengths.last().copied().unwrap_or(0),
        mean_len: if lengths.is_empty() {
            0.0
        } else {
            positions as f64 / lengths.len() as f64
        },
        distinct_ids: seen.map(|s| s.iter().filter(|&&x| x).count()),
        mean_bag: bag_values.map(per_position),
        file_bytes: std::fs::metadata(file.path()).map_or(0, |m| m.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<usize> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 95), 95);
        assert_eq!(percentile(&[7], 5), 7);
        assert_eq!(percentile(&[], 50), 0);
    }
}
