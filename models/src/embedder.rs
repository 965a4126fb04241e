//! Feature fusion (REFERENCE.md section 3): one mean-pooling embedding bag per feature, the
//! pooled vectors concatenated in the reference's order (item, cate, brand, shop, seller, then
//! the five text bags title, cate, shop, brand, seller) and projected by a biased linear layer
//! to the encoder width. With the reference dims the concatenation is 128 + 9 * 64 = 704.
//!
//! Id features hold one id per position, so their "bag" is a plain row lookup. The five text
//! features share ONE token table; their bags are pooled with a gather (`index_select`) followed
//! by a weighted segment sum (`index_add`): both have a backward in candle 0.11, so the pooling
//! is differentiable with respect to the table, and no `[positions, max_bag_len]` padding is
//! materialised. An empty bag contributes nothing to its segment, i.e. a zero vector.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};
use uqa_data::batch::{BagColumn, SequenceBatch};
use uqa_data::schema::Vocab;

use crate::error::{CandleContext, ModelError, Result};
use crate::grad_sink::{GradSink, gather_rows};

/// Which features feed the model (the paper's input ablation, Table 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InputVariant {
    /// All 10 features ("Full Info").
    #[default]
    Full,
    /// The five id features, no text bags ("w/o Text").
    NoText,
    /// The item id only ("w/o Side").
    NoSide,
}

/// Names of the id features in batch order, for error messages.
const ID_NAMES: [&str; 5] = ["item", "cate", "brand", "shop", "seller"];
const TEXT_NAMES: [&str; 5] = [
    "title tokens",
    "cate tokens",
    "shop tokens",
    "brand tokens",
    "seller tokens",
];

/// Widths and initialisation of the feature embedder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedderConfig {
    pub variant: InputVariant,
    /// Width of the item-id table; also the width the output head projects to (tied logits).
    pub item_dim: usize,
    /// Width of every side-id table and of the shared token table.
    pub side_dim: usize,
    /// Standard deviation of the normal initialisation of all tables (reference: 0.02).
    pub init_std: f64,
    /// Factor on the looked-up item embeddings at the input only (the tied output logits use the
    /// table as is). 1 in the reference; SASRec scales by sqrt(item_dim), which lets the items
    /// rather than the position embeddings dominate the first layer's input.
    pub item_scale: f64,
    /// Project the concatenated features to the encoder width (the reference). Off, the
    /// concatenation feeds the encoder as is, which needs it to be exactly the encoder width
    /// (SASRec's item embeddings are its input).
    pub projection: bool,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            variant: InputVariant::Full,
            item_dim: 128,
            side_dim: 64,
            init_std: 0.02,
            item_scale: 1.0,
            projection: true,
        }
    }
}

impl EmbedderConfig {
    /// Width of the concatenated features, the input of the projection.
    pub fn concat_dim(&self) -> usize {
        match self.variant {
            InputVariant::Full => self.item_dim + 9 * self.side_dim,
            InputVariant::NoText => self.item_dim + 4 * self.side_dim,
            InputVariant::NoSide => self.item_dim,
        }
    }

    /// Dense parameters (the projection), embedding tables excluded as in the paper.
    pub fn dense_params(&self, width: usize) -> usize {
        if self.projection {
            self.concat_dim() * width + width
        } else {
            0
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.item_dim == 0 {
            return Err(ModelError::config("embedder.item_dim", "must be positive"));
        }
        if self.side_dim == 0 && self.variant != InputVariant::NoSide {
            return Err(ModelError::config("embedder.side_dim", "must be positive"));
        }
        if !(self.init_std.is_finite() && self.init_std > 0.0) {
            return Err(ModelError::config(
                "embedder.init_std",
                format!("must be finite and positive, got {}", self.init_std),
            ));
        }
        if !(self.item_scale.is_finite() && self.item_scale > 0.0) {
            return Err(ModelError::config(
                "embedder.item_scale",
                format!("must be finite and positive, got {}", self.item_scale),
            ));
        }
        Ok(())
    }
}

/// The embedding tables and the input projection.
pub struct FeatureEmbedder {
    cfg: EmbedderConfig,
    item: Tensor,
    /// cate, brand, shop, seller tables (absent for `NoSide`).
    side: Option<[Tensor; 4]>,
    /// The token table shared by the five text bags (present for `Full` only).
    tokens: Option<Tensor>,
    vocab: Vocab,
    /// None when `projection = false`.
    proj: Option<Linear>,
    /// Where the tables' gradients go (see `grad_sink`); none: through candle.
    sink: Option<GradSink>,
}

impl FeatureEmbedder {
    /// Builds the tables (sized from `vocab`) and the projection to `width` under `vb`:
    /// `item`, `cate`, `brand`, `shop`, `seller`, `tokens`, `proj.{weight,bias}`.
    pub fn new(
        cfg: &EmbedderConfig,
        vocab: &Vocab,
        width: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        cfg.validate()?;
        if width == 0 {
            return Err(ModelError::config("encoder.width", "must be positive"));
        }
        let init = Init::Randn {
            mean: 0.0,
            stdev: cfg.init_std,
        };
        let table = |name: &str, rows: u64, dim: usize| -> Result<Tensor> {
            let rows = usize::try_from(rows)
                .ok()
                .filter(|&r| r > 0 && r <= u32::MAX as usize)
                .ok_or_else(|| {
                    ModelError::config(
                        format!("vocab.{name}"),
                        format!("must be in 1..=2^32-1, got {rows}"),
                    )
                })?;
            vb.get_with_hints((rows, dim), name, init)
                .ctx(&format!("creating the {name} embedding table"))
        };
        let item = table("item", vocab.items, cfg.item_dim)?;
        let side = match cfg.variant {
            InputVariant::NoSide => None,
            _ => Some([
                table("cate", vocab.cates, cfg.side_dim)?,
                table("brand", vocab.brands, cfg.side_dim)?,
                table("shop", vocab.shops, cfg.side_dim)?,
                table("seller", vocab.sellers, cfg.side_dim)?,
            ]),
        };
        let tokens = match cfg.variant {
            InputVariant::Full => Some(table("tokens", vocab.tokens, cfg.side_dim)?),
            _ => None,
        };
        let proj = if cfg.projection {
            Some(
                crate::layers::torch_linear(cfg.concat_dim(), width, vb.pp("proj"))
                    .ctx("creating the input projection")?,
            )
        } else if cfg.concat_dim() != width {
            return Err(ModelError::config(
                "embedder.projection",
                format!(
                    "false needs the features ({} wide) to be the encoder width {width}",
                    cfg.concat_dim()
                ),
            ));
        } else {
            None
        };
        Ok(FeatureEmbedder {
            cfg: cfg.clone(),
            item,
            side,
            tokens,
            vocab: *vocab,
            proj,
            sink: None,
        })
    }

    /// Send the tables' gradients to `sink` instead of candle's `GradStore` (None: back to candle).
    pub fn set_grad_sink(&mut self, sink: Option<GradSink>) {
        self.sink = sink;
    }

    /// The item-id table `[items, item_dim]`; the next-item loss ties its logits to it.
    pub fn item_table(&self) -> &Tensor {
        &self.item
    }

    pub fn config(&self) -> &EmbedderConfig {
        &self.cfg
    }

    /// Fused, projected features `[B, T, width]` of a padded batch.
    pub fn forward(&self, batch: &SequenceBatch) -> Result<Tensor> {
        let x = self.features(batch)?;
        match &self.proj {
            Some(proj) => proj.forward(&x),
            None => Ok(x),
        }
        .and_then(|y| y.reshape((batch.batch_size, batch.seq_len, ())))
        .ctx("projecting the fused features")
    }

    /// The concatenated pooled features before the projection, `[B * T, concat_dim]`.
    pub fn features(&self, batch: &SequenceBatch) -> Result<Tensor> {
        let positions = check_batch(batch, self.tokens.is_some())?;
        let mut feats = Vec::with_capacity(6);
        let items = self.lookup(&self.item, batch, 0, self.vocab.items)?;
        feats.push(if self.cfg.item_scale == 1.0 {
            items
        } else {
            (items * self.cfg.item_scale).ctx("scaling item embeddings")?
        });
        if let Some(side) = &self.side {
            let sizes = [
                self.vocab.cates,
                self.vocab.brands,
                self.vocab.shops,
                self.vocab.sellers,
            ];
            for (k, table) in side.iter().enumerate() {
                feats.push(self.lookup(table, batch, k + 1, sizes[k])?);
            }
        }
        if let Some(tokens) = &self.tokens {
            feats.push(pool_text_bags(
                tokens,
                &batch.bags,
                positions,
                self.vocab.tokens,
                self.sink.as_ref(),
            )?);
        }
        Tensor::cat(&feats, 1).ctx("concatenating features")
    }

    fn lookup(
        &self,
        table: &Tensor,
        batch: &SequenceBatch,
        feature: usize,
        vocab: u64,
    ) -> Result<Tensor> {
        let ids = &batch.ids[feature];
        check_ids(ids, vocab, ID_NAMES[feature])?;
        gather_rows(table, ids, self.sink.as_ref())
            .ctx(&format!("looking up {} embeddings", ID_NAMES[feature]))
    }
}

/// Mean-pools the five text bags of every position through the shared token table:
/// `[positions, 5 * dim]`, feature-major within a position.
fn pool_text_bags(
    tokens: &Tensor,
    bags: &[BagColumn; 5],
    positions: usize,
    vocab: u64,
    sink: Option<&GradSink>,
) -> Result<Tensor> {
    let dim = tokens.dim(1).ctx("token table shape")?;
    let nnz: usize = bags.iter().map(|b| b.ids.len()).sum();
    let mut ids = Vec::with_capacity(nnz);
    let mut segment = Vec::with_capacity(nnz);
    let mut weight = Vec::with_capacity(nnz);
    for (k, bag) in bags.iter().enumerate() {
        check_ids(&bag.ids, vocab, TEXT_NAMES[k])?;
        for p in 0..positions {
            let (lo, hi) = (bag.offsets[p] as usize, bag.offsets[p + 1] as usize);
            let w = 1.0 / (hi - lo).max(1) as f64;
            for &id in &bag.ids[lo..hi] {
                ids.push(id);
                segment.push((p * 5 + k) as u32);
                weight.push(w);
            }
        }
    }
    segment_mean(tokens, ids, segment, weight, positions * 5, sink)
        .and_then(|pooled| pooled.reshape((positions, 5 * dim)))
        .ctx("pooling text bags")
}

/// `out[s] = sum_{i: segment[i] = s} weight[i] * table[ids[i]]` for `segments` segments: a
/// gather and an `index_add`, both differentiable with respect to `table`.
fn segment_mean(
    table: &Tensor,
    ids: Vec<u32>,
    segment: Vec<u32>,
    weight: Vec<f64>,
    segments: usize,
    sink: Option<&GradSink>,
) -> candle_core::Result<Tensor> {
    let (dev, dtype) = (table.device(), table.dtype());
    let zeros = Tensor::zeros((segments, table.dim(1)?), dtype, dev)?;
    let n = ids.len();
    if n == 0 {
        // Every bag empty: nothing to gather (and candle rejects empty index tensors).
        return Ok(zeros);
    }
    let rows = gather_rows(table, &ids, sink)?;
    let w = Tensor::from_vec(weight, (n, 1), dev)?.to_dtype(dtype)?;
    zeros.index_add(
        &Tensor::from_vec(segment, n, dev)?,
        &rows.broadcast_mul(&w)?,
        0,
    )
}

/// Checks the flat vectors (and the bag offsets when `with_bags`) against `B * T`; returns the
/// number of positions.
fn check_batch(batch: &SequenceBatch, with_bags: bool) -> Result<usize> {
    let positions = batch.batch_size * batch.seq_len;
    if batch.lengths.len() != batch.batch_size {
        return Err(ModelError::batch(format!(
            "{} lengths for a batch of {}",
            batch.lengths.len(),
            batch.batch_size
        )));
    }
    if let Some(b) = batch
        .lengths
        .iter()
        .position(|&l| l as usize > batch.seq_len)
    {
        return Err(ModelError::batch(format!(
            "row {b} has length {} > seq_len {}",
            batch.lengths[b], batch.seq_len
        )));
    }
    for (k, ids) in batch.ids.iter().enumerate() {
        if ids.len() != positions {
            return Err(ModelError::batch(format!(
                "{} ids: {} values for B * T = {positions}",
                ID_NAMES[k],
                ids.len()
            )));
        }
    }
    for (k, bag) in batch.bags.iter().enumerate().filter(|_| with_bags) {
        let ok = bag.offsets.len() == positions + 1
            && bag.offsets.first() == Some(&0)
            && bag.offsets.last().map(|&o| o as usize) == Some(bag.ids.len())
            && bag.offsets.windows(2).all(|w| w[0] <= w[1]);
        if !ok {
            return Err(ModelError::batch(format!(
                "{} bags: offsets must be {} non-decreasing values from 0 to {}",
                TEXT_NAMES[k],
                positions + 1,
                bag.ids.len()
            )));
        }
    }
    Ok(positions)
}

fn check_ids(ids: &[u32], vocab: u64, feature: &'static str) -> Result<()> {
    match ids.iter().position(|&id| id as u64 >= vocab) {
        None => Ok(()),
        Some(position) => Err(ModelError::IdOutOfRange {
            feature,
            id: ids[position],
            position,
            vocab,
        }),
    }
}

/// The batch's padding mask `[B, T]` (1 valid, 0 padding) as a tensor of `dtype`.
pub fn mask_tensor(batch: &SequenceBatch, dtype: DType, dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(batch.mask(), (batch.batch_size, batch.seq_len), dev)
        .and_then(|m| m.to_dtype(dtype))
        .ctx("building the padding mask")
}
