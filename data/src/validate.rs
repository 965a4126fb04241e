//! Full check of a sequence file: everything [`SequenceFile::open`] checks (layout, nulls, bag
//! sizes, equal lengths across columns) plus every id against its vocabulary and no empty
//! sequence. The first problem is reported with its row, position and column.

use crate::error::{DataError, Result};
use crate::reader::SequenceFile;
use crate::schema::{Feature, Vocab, VocabKind};

/// What a successful validation saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationReport {
    pub rows: usize,
    pub positions: usize,
    pub vocab: Vocab,
    pub id_base: i64,
}

/// Validate against `vocab` (the file's own metadata when `None`, else the reference sizes).
pub fn validate(file: &SequenceFile, vocab: Option<Vocab>) -> Result<ValidationReport> {
    let vocab = vocab.or(file.vocab()).unwrap_or(Vocab::REFERENCE);
    let id_base = file.id_base();
    let mut positions = 0;
    for b in 0..file.num_batches() {
        for row in file.batch_rows(b) {
            if row.is_empty() {
                return Err(DataError::EmptySequence {
                    path: file.path().to_path_buf(),
                    row: row.index,
                });
            }
            positions += row.len();
            for f in Feature::ALL {
                let size = vocab.size(f.vocab());
                let min = if f.vocab() == VocabKind::Tokens {
                    0
                } else {
                    id_base
                };
                let (values, _) = row.bags(f);
                if let Some(k) = values.iter().position(|&id| id < min || id as u64 >= size) {
                    // Locate the position holding the k-th value of the row.
                    let (_, offsets) = row.bags(f);
                    let position = offsets.skip(1).position(|end| end > k).unwrap_or(0);
                    return Err(DataError::IdOutOfRange {
                        path: file.path().to_path_buf(),
                        row: row.index,
                        position,
                        column: f.column().to_string(),
                        id: values[k],
                        min,
                        vocab: size,
                    });
                }
            }
        }
        file.release_batch_pages(b);
    }
    Ok(ValidationReport {
        rows: file.num_rows(),
        positions,
        vocab,
        id_base,
    })
}
