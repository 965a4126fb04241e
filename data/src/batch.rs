//! Collation: rows of a [`SequenceFile`] into a padded mini-batch of flat vectors, the form the
//! models crate turns into tensors. Sequences keep their **last** `max_len` positions (the
//! reference's truncation) and are left-aligned with padding on the right, so position t of
//! every row is the t-th kept interaction and padding never sits between valid positions.

use crate::reader::{SequenceFile, SequenceRow};
use crate::schema::Feature;

/// A token bag feature for a whole batch: ids of all positions concatenated, and for each of the
/// `B * T` positions (row-major) the range `offsets[p]..offsets[p + 1]` of its ids. Padding
/// positions have empty bags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BagColumn {
    pub ids: Vec<u32>,
    pub offsets: Vec<u32>,
}

/// A padded mini-batch. Row-major `[B, T]` layout everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceBatch {
    pub batch_size: usize,
    /// T: the longest kept length in the batch.
    pub seq_len: usize,
    /// Valid positions per row.
    pub lengths: Vec<u32>,
    /// File row of each batch row.
    pub rows: Vec<usize>,
    /// One `[B * T]` vector per id feature in the order of [`Feature::IDS`]; 0 at padding.
    pub ids: [Vec<u32>; 5],
    /// One bag column per text feature in the order of [`Feature::TEXTS`].
    pub bags: [BagColumn; 5],
    /// `[B * T]` timestamps (0 at padding) when the file has them.
    pub timestamps: Option<Vec<i64>>,
}

impl SequenceBatch {
    /// 1.0 at valid positions, 0.0 at padding, `[B * T]`.
    pub fn mask(&self) -> Vec<f32> {
        let mut mask = vec![0.0; self.batch_size * self.seq_len];
        for (b, &len) in self.lengths.iter().enumerate() {
            mask[b * self.seq_len..b * self.seq_len + len as usize].fill(1.0);
        }
        mask
    }

    pub fn item_ids(&self) -> &[u32] {
        &self.ids[0]
    }
}

/// Collate `rows` of `file`, keeping the last `max_len` positions of each.
pub fn collate(file: &SequenceFile, rows: &[usize], max_len: usize) -> SequenceBatch {
    let views: Vec<SequenceRow<'_>> = rows.iter().map(|&r| file.row(r)).collect();
    let keep = |v: &SequenceRow<'_>| v.len().min(max_len);
    let t = views.iter().map(keep).max().unwrap_or(0);
    let b = views.len();
    let mut batch = SequenceBatch {
        batch_size: b,
        seq_len: t,
        lengths: views.iter().map(|v| keep(v) as u32).collect(),
        rows: rows.to_vec(),
        timestamps: file.has_timestamps().then(|| vec![0; b * t]),
        ..Default::default()
    };
    for (k, f) in Feature::IDS.iter().enumerate() {
        let out = &mut batch.ids[k];
        out.resize(b * t, 0);
        for (r, v) in views.iter().enumerate() {
            let ids = v.ids(*f);
            let kept = &ids[ids.len() - keep(v)..];
            for (dst, &id) in out[r * t..].iter_mut().zip(kept) {
                *dst = id as u32;
            }
        }
    }
    for (k, f) in Feature::TEXTS.iter().enumerate() {
        let col = &mut batch.bags[k];
        col.offsets.reserve(b * t + 1);
        col.offsets.push(0);
        for v in &views {
            let skip = v.len() - keep(v);
            let (values, offsets) = v.bags(*f);
            let offsets: Vec<usize> = offsets.collect();
            let (lo, hi) = (offsets[skip], offsets[v.len()]);
            let base = col.ids.len() as u32;
            col.ids.extend(values[lo..hi].iter().map(|&x| x as u32));
            col.offsets
                .extend(offsets[skip + 1..].iter().map(|&o| base + (o - lo) as u32));
            let last = *col.offsets.last().unwrap_or(&0);
            col.offsets.extend(std::iter::repeat_n(last, t - keep(v)));
        }
    }
    if let Some(ts) = batch.timestamps.as_mut() {
        for (r, v) in views.iter().enumerate() {
            let all = v.timestamps().unwrap_or_default();
            let kept = &all[all.len() - keep(v)..];
            ts[r * t..r * t + kept.len()].copy_from_slice(kept);
        }
    }
    batch
}
