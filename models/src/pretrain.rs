//! The pre-training model assembled from its parts: feature embedder -> encoder -> objective
//! (next-item cross-entropy "SL" or InfoNCE "CL"), with the item table tied between input and
//! output. This is what the trainer builds from the `[model]` section of an experiment config.

use candle_core::{IndexOp, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use uqa_data::batch::SequenceBatch;
use uqa_data::schema::Vocab;

use crate::embedder::{EmbedderConfig, FeatureEmbedder, InputVariant, mask_tensor};
use crate::encoder::{Encoder, EncoderConfig};
use crate::error::{CandleContext, ModelError, Result};
use crate::grad_sink::GradSink;
use crate::loss::{
    InfoNceConfig, InfoNceLoss, ItemHead, LossSum, NextItemConfig, NextItemLoss, SampledBceConfig,
    SampledBceLoss, uniform_negatives,
};

/// The pre-training objective; in TOML `kind = "next-item"` (alias `sl`), `"info-nce"`
/// (alias `cl`) or `"sampled-bce"` (the SASRec paper's) plus the objective's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ObjectiveConfig {
    #[serde(alias = "sl")]
    NextItem(NextItemConfig),
    #[serde(alias = "cl")]
    InfoNce(InfoNceConfig),
    /// The SASRec paper's binary cross-entropy against sampled negatives.
    SampledBce(SampledBceConfig),
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig::NextItem(NextItemConfig::default())
    }
}

/// Everything needed to build a [`PretrainModel`] (vocabulary sizes come from the data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    #[serde(default)]
    pub embedder: EmbedderConfig,
    pub encoder: EncoderConfig,
    #[serde(default)]
    pub objective: ObjectiveConfig,
    /// The `Linear(width, item_dim)` output head before the tied logits (the reference). Off,
    /// the encoder output is ranked against the item table directly, as in the SASRec authors'
    /// code; the encoder width must then equal `embedder.item_dim`.
    #[serde(default = "default_output_head")]
    pub output_head: bool,
}

fn default_output_head() -> bool {
    true
}

/// Parameter counts: `dense` follows the paper's convention (embedding tables excluded);
/// `embeddings` are the feature tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    pub dense: usize,
    pub embeddings: usize,
}

impl PretrainConfig {
    /// Counts from the config alone, nothing allocated (so the 1.2B preset can be sized
    /// anywhere).
    pub fn param_count(&self, vocab: &Vocab) -> ParamCount {
        let e = &self.embedder;
        let d = self.encoder.width();
        let head = if self.output_head {
            d * e.item_dim + e.item_dim
        } else {
            0
        };
        let side = (vocab.cates + vocab.brands + vocab.shops + vocab.sellers) as usize;
        let embeddings = vocab.items as usize * e.item_dim
            + match e.variant {
                InputVariant::Full => (side + vocab.tokens as usize) * e.side_dim,
                InputVariant::NoText => side * e.side_dim,
                InputVariant::NoSide => 0,
            };
        ParamCount {
            dense: e.dense_params(d) + self.encoder.param_count() + head,
            embeddings,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.embedder.validate()?;
        self.encoder.validate()?;
        let (width, item_dim) = (self.encoder.width(), self.embedder.item_dim);
        if !self.output_head && width != item_dim {
            return Err(ModelError::config(
                "output_head",
                format!("false needs encoder width {width} = embedder.item_dim {item_dim}"),
            ));
        }
        match &self.objective {
            ObjectiveConfig::NextItem(c) if c.chunk == 0 => {
                Err(ModelError::config("objective.chunk", "must be positive"))
            }
            ObjectiveConfig::InfoNce(c) => c.validate(),
            ObjectiveConfig::SampledBce(c) if c.negatives == 0 => Err(ModelError::config(
                "objective.negatives",
                "must be positive",
            )),
            _ => Ok(()),
        }
    }
}

enum Objective {
    NextItem(NextItemLoss),
    InfoNce(InfoNceLoss),
    SampledBce(SampledBceLoss),
}

/// Embedder, encoder and objective. Weights: `embedder.*`, `encoder.*`, `head.*`.
pub struct PretrainModel {
    cfg: PretrainConfig,
    embedder: FeatureEmbedder,
    encoder: Box<dyn Encoder>,
    objective: Objective,
}

impl PretrainModel {
    pub fn new(cfg: &PretrainConfig, vocab: &Vocab, vb: VarBuilder<'_>) -> Result<Self> {
        cfg.validate()?;
        let width = cfg.encoder.width();
        let item_dim = cfg.embedder.item_dim;
        let embedder = FeatureEmbedder::new(&cfg.embedder, vocab, width, vb.pp("embedder"))?;
        let encoder = cfg.encoder.build(vb.pp("encoder"))?;
        let head = if cfg.output_head {
            ItemHead::linear(width, item_dim, vb.pp("head"))?
        } else {
            ItemHead::identity()
        };
        let objective = match &cfg.objective {
            ObjectiveConfig::NextItem(c) => Objective::NextItem(NextItemLoss::new(c, head)?),
            ObjectiveConfig::InfoNce(c) => Objective::InfoNce(InfoNceLoss::new(c, head)?),
            ObjectiveConfig::SampledBce(c) => Objective::SampledBce(SampledBceLoss::new(c, head)?),
        };
        Ok(PretrainModel {
            cfg: cfg.clone(),
            embedder,
            encoder,
            objective,
        })
    }

    pub fn config(&self) -> &PretrainConfig {
        &self.cfg
    }

    /// Send the embedding tables' gradients to `sink` rather than candle's `GradStore` (the
    /// trainer's memory-lean path; see `grad_sink`). InfoNCE's table gradient stays in candle.
    pub fn set_grad_sink(&mut self, sink: Option<GradSink>) {
        self.embedder.set_grad_sink(sink.clone());
        self.encoder.set_grad_sink(sink.clone());
        match &mut self.objective {
            Objective::NextItem(l) => l.set_grad_sink(sink),
            Objective::SampledBce(l) => l.set_grad_sink(sink),
            Objective::InfoNce(_) => {}
        }
    }

    pub fn item_table(&self) -> &Tensor {
        self.embedder.item_table()
    }

    /// Encoder hidden states `[B, T, width]` (the user representation adapters consume).
    /// The encoder's input: the fused feature embeddings `[B, T, d]` of each click.
    pub fn embed(&self, batch: &SequenceBatch) -> Result<Tensor> {
        self.embedder.forward(batch)
    }

    pub fn encode(&self, batch: &SequenceBatch, train: bool) -> Result<Tensor> {
        let x = self.embedder.forward(batch)?;
        let mask = mask_tensor(batch, x.dtype(), x.device())?;
        self.encoder
            .forward_timed(&x, &mask, batch.timestamps.as_deref(), train)
    }

    /// The summed training loss of a batch and its label count. `seed` draws the dropout masks
    /// and InfoNCE's sampled negatives; vary it per step and rank (the same seed repeats them,
    /// which makes resumed runs exact).
    pub fn loss(&self, batch: &SequenceBatch, train: bool, seed: u64) -> Result<LossSum> {
        crate::layers::seed_dropout(seed);
        let h = self.encode(batch, train)?;
        match &self.objective {
            Objective::NextItem(l) => l.forward(&h, self.item_table(), batch),
            Objective::InfoNce(l) => {
                let items = self.item_table().dim(0).ctx("item table shape")? as u64;
                let neg = uniform_negatives(seed, l.config().sampled_negatives, items);
                l.forward(&h, self.item_table(), batch, &neg)
            }
            Objective::SampledBce(l) => l.forward(&h, self.item_table(), batch, seed),
        }
    }

    /// Query vectors `[B, item_dim]` at each row's last valid position, for full-ranking
    /// evaluation (`scores = q @ item_table^T`). Rows of length 0 are an error.
    pub fn last_queries(&self, batch: &SequenceBatch) -> Result<Tensor> {
        if let Some(r) = batch.lengths.iter().position(|&l| l == 0) {
            return Err(ModelError::batch(format!(
                "row {r} is empty: nothing to query"
            )));
        }
        let h = self.encode(batch, false)?;
        let last: Vec<Tensor> = batch
            .lengths
            .iter()
            .enumerate()
            .map(|(r, &len)| h.i((r, len as usize - 1)))
            .collect::<candle_core::Result<_>>()
            .ctx("selecting last positions")?;
        let h = Tensor::stack(&last, 0).ctx("stacking last positions")?;
        match &self.objective {
            Objective::NextItem(l) => l.project(&h),
            Objective::InfoNce(l) => l.project(&h),
            Objective::SampledBce(l) => l.project(&h),
        }
    }
}
