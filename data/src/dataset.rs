//! A dataset folder: the reference files plus what uqa adds beside them.
//!
//! ```text
//! DIR/dataset.json                metadata: source, tokenizer, vocabulary, preprocessing, counts
//! DIR/tokenizer.json              the tokenizer that produced the text token ids
//! DIR/item_catalog.arrow          one row per item: entity ids, texts, token ids
//! DIR/pretrain_data_train.arrow   one row per user: the training history
//! DIR/pretrain_data_eval.arrow    one row per user, same order: the held-out tail
//! ```
//! Row i of the two pretrain files is the same user (the `user_id` column says so too).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::catalog::ItemCatalog;
use crate::error::{DataError, Result};
use crate::preprocess::{PreprocessConfig, PreprocessCounts, Preprocessed, RawEvent};
use crate::reader::SequenceFile;
use crate::schema::{Columns, Vocab};
use crate::tokenizer::TokenizerInfo;
use crate::writer::SequenceWriter;

pub const METADATA_FILE: &str = "dataset.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const CATALOG_FILE: &str = "item_catalog.arrow";
pub const TRAIN_FILE: &str = "pretrain_data_train.arrow";
pub const EVAL_FILE: &str = "pretrain_data_eval.arrow";

/// Metadata format version; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Where the data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    Synthetic { preset: String, seed: u64 },
    Movielens { variant: String, path: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetMeta {
    pub format_version: u32,
    pub source: Source,
    pub tokenizer: TokenizerInfo,
    pub vocab: Vocab,
    /// Smallest valid entity id; 0 is padding.
    pub id_base: i64,
    pub preprocess: PreprocessConfig,
    pub counts: PreprocessCounts,
    /// What fills fields the source lacks (e.g. MovieLens has no brands), for the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Users written per record batch. Small enough to keep the writer's buffers modest at the
/// `taobao` preset, large enough that per-batch overhead is negligible.
const USERS_PER_BATCH: usize = 2048;

/// Write a preprocessed dataset into `dir` (created if needed). Every file is written
/// atomically; `dataset.json` is written last, so a folder with metadata is complete.
pub fn write_dataset(
    dir: &Path,
    data: &Preprocessed,
    source: Source,
    tokenizer_json: &[u8],
    tokenizer: TokenizerInfo,
    preprocess: PreprocessConfig,
    notes: Vec<String>,
) -> Result<DatasetMeta> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let c = &data.catalog;
    let vocab = Vocab {
        items: c.items.len() as u64,
        cates: c.cates.len() as u64,
        brands: c.brands.len() as u64,
        shops: c.shops.len() as u64,
        sellers: c.sellers.len() as u64,
        tokens: tokenizer.vocab_size,
    };
    write_atomic(dir.join(TOKENIZER_FILE), tokenizer_json)?;
    c.write(&dir.join(CATALOG_FILE))?;
    let columns = Columns {
        user_id: true,
        timestamps: true,
        ..Default::default()
    };
    for (name, part) in [(TRAIN_FILE, Part::History), (EVAL_FILE, Part::Tail)] {
        let mut writer = SequenceWriter::create(&dir.join(name), columns, &vocab, 1)?;
        let mut builder = writer.builder();
        for chunk in data.users.chunks(USERS_PER_BATCH) {
            for u in chunk {
                let events: &[RawEvent] = match part {
                    Part::History => &u.history,
                    Part::Tail => &u.tail,
                };
                builder.begin_row(u.user_id);
                for e in events {
                    builder.push_position(&c.position(e.item, e.timestamp));
                }
                builder.end_row(None, None);
            }
            writer.write(&mut builder)?;
        }
        writer.finish()?;
    }
    let meta = DatasetMeta {
        format_version: FORMAT_VERSION,
        source,
        tokenizer,
        vocab,
        id_base: 1,
        preprocess,
        counts: data.counts,
        notes,
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| DataError::Invalid(e.to_string()))?;
    write_atomic(dir.join(METADATA_FILE), &json)?;
    Ok(meta)
}

enum Part {
    History,
    Tail,
}

/// An opened dataset folder.
#[derive(Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    pub meta: DatasetMeta,
    pub train: SequenceFile,
    pub eval: SequenceFile,
}

impl Dataset {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let meta = read_meta(&dir)?;
        let train = SequenceFile::open(dir.join(TRAIN_FILE))?;
        let eval = SequenceFile::open(dir.join(EVAL_FILE))?;
        if train.num_rows() != eval.num_rows() {
            return Err(DataError::BadMetadata {
                path: dir.join(EVAL_FILE),
                reason: format!(
                    "{} rows, but {TRAIN_FILE} has {}: the files must hold the same users in the same order",
                    eval.num_rows(),
                    train.num_rows()
                ),
            });
        }
        Ok(Self {
            dir,
            meta,
            train,
            eval,
        })
    }

    pub fn catalog(&self) -> Result<ItemCatalog> {
        ItemCatalog::read(&self.dir.join(CATALOG_FILE))
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_FILE)
    }
}

pub fn read_meta(dir: &Path) -> Result<DatasetMeta> {
    let path = dir.join(METADATA_FILE);
    let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
    let meta: DatasetMeta = serde_json::from_slice(&bytes).map_err(|e| DataError::BadMetadata {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if meta.format_version != FORMAT_VERSION {
        return Err(DataError::BadMetadata {
            path,
            reason: format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                meta.format_version
            ),
        });
    }
    Ok(meta)
}
