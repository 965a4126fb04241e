//! Full check of a sequence file: everything [`SequenceFile::open`] checks (layout, nulls, bag
//! sizes, equal lengths across columns) plus every id against its vocabulary and no empty
//! sequence. The first problem is reported with its row, position and column. The item catalog
//! gets the same treatment ([`validate_catalog`]).

use std::path::Path;

use crate::catalog::ItemCatalog;
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

/// What a successful catalog validation saw: items and named entities per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogReport {
    pub items: usize,
    /// Entities of each table (cates, brands, shops, sellers), padding excluded.
    pub entities: [usize; 4],
}

/// Full check of `item_catalog.arrow`: everything [`ItemCatalog::read`] checks (columns and
/// their types, items numbered 1..n in order, one text per entity) plus every item's entity ids
/// against `vocab` when given. The first problem names its row and column.
pub fn validate_catalog(path: &Path, vocab: Option<Vocab>) -> Result<CatalogReport> {
    let catalog = ItemCatalog::read(path)?;
    if let Some(v) = vocab {
        if catalog.items.len() as u64 > v.items {
            return Err(DataError::BadRow {
                path: path.to_path_buf(),
                row: v.items as usize,
                reason: format!(
                    "{} items, the vocabulary has {} item ids",
                    catalog.items.len() - 1,
                    v.items
                ),
            });
        }
        for (item, a) in catalog.items.iter().enumerate().skip(1) {
            let checks = [
                ("cate_id", a.cate, v.cates),
                ("brand_id", a.brand, v.brands),
                ("shop_id", a.shop, v.shops),
                ("seller_id", a.seller, v.sellers),
            ];
            for (column, id, size) in checks {
                if u64::from(id) >= size {
                    return Err(DataError::BadRow {
                        path: path.to_path_buf(),
                        row: item - 1,
                        reason: format!("{column} {id} is outside the vocabulary of {size}"),
                    });
                }
            }
        }
    }
    let named = |t: &crate::catalog::TextTable| t.len().saturating_sub(1);
    Ok(CatalogReport {
        items: catalog.items.len() - 1,
        entities: [
            named(&catalog.cates),
            named(&catalog.brands),
            named(&catalog.shops),
            named(&catalog.sellers),
        ],
    })
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
