//! `uqa bench step`: one pre-training step of the Trm++ encoder, the counterpart of
//! `../shared/bench/encoder_step.py` with the same defaults (4 layers, width 512, 4 heads,
//! sequence 128, batch 8, 100,000 items, full side information, random ids) and the same FLOP
//! formula, so the two JSON lines compare field by field.
//!
//! A step is `uqa pretrain`'s own step on one rank ([`train_step`]): forward and the chunked
//! full-softmax loss, backward, gradients moved into flat buffers, clipping by the global norm
//! and our AdamW.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use uqa_data::batch::{BagColumn, SequenceBatch};
use uqa_data::rng::Rng;
use uqa_data::schema::Vocab;
use uqa_models::{
    EmbedderConfig, EncoderConfig, GradSink, InputVariant, NextItemConfig, ObjectiveConfig,
    PretrainConfig, PretrainModel, TrmConfig, seeded_var_builder,
};

use crate::config::OptimConfig;
use crate::engine::{Optimization, Stage, Units, train_step};
use crate::error::Result;
use crate::optim::{AdamWConfig, Params, Schedule};
use crate::parallel::Replicas;
use crate::pretrain::{SEQUENCE_UNITS, label_count, position_count};

/// Width of the BPE vocabulary of the shared text-token table (Qwen2's).
pub const TEXT_VOCAB: u64 = 151_936;

/// The encoder, the batch and the optimiser of the benchmark.
#[derive(Debug, Clone)]
pub struct StepBench {
    pub layers: usize,
    pub dim: usize,
    pub heads: usize,
    pub seq: usize,
    pub batch: usize,
    pub items: u64,
    pub cates: u64,
    pub brands: u64,
    /// Also the seller vocabulary size, as in encoder_step.py.
    pub shops: u64,
    /// BPE tokens per text bag.
    pub bag_len: usize,
    pub variant: InputVariant,
    /// Item rows per chunk of the chunked cross-entropy.
    pub ce_chunk: usize,
    pub dropout: f32,
    pub lr: f64,
    /// Clip by this global gradient norm (0: off).
    pub clip: f64,
    /// Timed steps, after `warmup` untimed ones.
    pub steps: usize,
    pub warmup: usize,
    pub seed: u64,
    pub activation_checkpointing: bool,
    /// Where the model computes (`uqa_models::device::open`).
    pub device: Device,
}

/// One step's seconds: forward, backward, optimiser.
#[derive(Debug, Clone, Copy)]
pub struct StepTime {
    pub step: u64,
    pub timed: bool,
    pub loss: f64,
    pub forward: f64,
    pub backward: f64,
    pub optimizer: f64,
}

impl StepTime {
    pub fn total(&self) -> f64 {
        self.forward + self.backward + self.optimizer
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct StepBenchReport {
    pub params_total: usize,
    pub params_dense: usize,
    pub flops_per_step: f64,
    /// Every step, warmup included.
    pub steps: Vec<StepTime>,
}

impl StepBenchReport {
    /// Median over the timed steps of `f`.
    pub fn median(&self, f: impl Fn(&StepTime) -> f64) -> f64 {
        let mut v: Vec<f64> = self.steps.iter().filter(|s| s.timed).map(f).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
}

/// The benchmark as a training stage: one fixed random batch, drawn again every step.
struct BenchStage {
    params: Params,
    model: PretrainModel,
    sink: GradSink,
    batch: SequenceBatch,
    seed: u64,
}

impl Stage for BenchStage {
    type Batch = SequenceBatch;

    const UNITS: Units = SEQUENCE_UNITS;

    fn params(&self) -> &Params {
        &self.params
    }

    fn rows(&self) -> usize {
        self.batch.batch_size
    }

    fn collate(&self, _rows: &[usize]) -> Result<SequenceBatch> {
        Ok(self.batch.clone())
    }

    fn labels(&self, b: &SequenceBatch) -> usize {
        label_count(b)
    }

    fn samples(&self, b: &SequenceBatch) -> usize {
        b.batch_size
    }

    fn inputs(&self, b: &SequenceBatch) -> usize {
        position_count(b)
    }

    fn loss(&self, b: &SequenceBatch, step: u64) -> Result<Tensor> {
        Ok(self.model.loss(b, true, self.seed ^ step)?.sum)
    }

    fn grad_sink(&self) -> Option<&GradSink> {
        Some(&self.sink)
    }
}

impl StepBench {
    /// Whether the heads split the width into even head dimensions (RoPE).
    pub fn heads_fit(&self) -> bool {
        self.dim.is_multiple_of(self.heads) && (self.dim / self.heads).is_multiple_of(2)
    }

    /// A lower bound on the bytes a step needs, in f64 so that no product overflows: the
    /// embedding tables (item width 128, side and token width 64, EmbedderConfig's defaults) and
    /// the attention weights, each held as weights, gradients and AdamW's two moments; the
    /// attention scores of every layer kept for backward; the batch's text-bag ids.
    pub fn memory_lower_bound(&self) -> f64 {
        let (d, l) = (self.dim as f64, self.layers as f64);
        let side = (self.cates + self.brands + 2 * self.shops) as f64;
        let tables = self.items as f64 * 128.0
            + 64.0
                * match self.variant {
                    InputVariant::Full => side + TEXT_VOCAB as f64,
                    InputVariant::NoText => side,
                    InputVariant::NoSide => 0.0,
                };
        let weights = 4.0 * 4.0 * (tables + l * 4.0 * d * d);
        let kept = if self.activation_checkpointing {
            1.0
        } else {
            l
        };
        let (b, s) = (self.batch as f64, self.seq as f64);
        let scores = 4.0 * kept * b * self.heads as f64 * s * s;
        let bags = 4.0 * 5.0 * b * s * self.bag_len as f64;
        weights + scores + bags
    }

    /// Model FLOPs of one training step, encoder_step.py's `step_flops`: forward =
    /// 2 N P_dense + L 4 B T^2 d + 2 N 128 items, a step = 3 forwards.
    fn step_flops(&self, input_dim: usize, hidden: usize) -> f64 {
        let (n, d, l) = (
            (self.batch * self.seq) as f64,
            self.dim as f64,
            self.layers as f64,
        );
        let p_dense =
            input_dim as f64 * d + l * (4.0 * d * d + 3.0 * d * hidden as f64) + d * 128.0;
        let fwd = 2.0 * n * p_dense
            + l * 4.0 * self.batch as f64 * (self.seq as f64).powi(2) * d
            + 2.0 * n * 128.0 * self.items as f64;
        3.0 * fwd
    }

    /// Random full-length rows (no padding), like encoder_step.py's batch with `--min-len 0`.
    fn random_batch(&self, vocab: &Vocab) -> SequenceBatch {
        let mut rng = Rng::new(self.seed);
        let positions = self.batch * self.seq;
        let mut draw = |n: u64| 1 + rng.below(n - 1) as u32;
        let sizes = [
            vocab.items,
            vocab.cates,
            vocab.brands,
            vocab.shops,
            vocab.sellers,
        ];
        let ids = sizes.map(|n| (0..positions).map(|_| draw(n)).collect::<Vec<u32>>());
        let bags = std::array::from_fn(|_| BagColumn {
            ids: (0..positions * self.bag_len)
                .map(|_| draw(TEXT_VOCAB))
                .collect(),
            offsets: (0..=positions).map(|p| (p * self.bag_len) as u32).collect(),
        });
        SequenceBatch {
            batch_size: self.batch,
            seq_len: self.seq,
            lengths: vec![self.seq as u32; self.batch],
            rows: (0..self.batch).collect(),
            ids,
            bags,
            timestamps: None,
        }
    }

    /// Builds the model and runs `warmup + steps` steps of one fixed batch; `on_step` sees each
    /// step as it ends. Call [`StepBench::heads_fit`] first.
    pub fn run(&self, mut on_step: impl FnMut(&StepTime)) -> Result<StepBenchReport> {
        let vocab = Vocab {
            items: self.items,
            cates: self.cates,
            brands: self.brands,
            shops: self.shops,
            sellers: self.shops,
            tokens: TEXT_VOCAB,
        };
        let encoder = TrmConfig {
            layers: self.layers,
            width: self.dim,
            heads: self.heads,
            dropout: self.dropout,
            activation_checkpointing: self.activation_checkpointing,
            ..TrmConfig::default()
        };
        let hidden = encoder.mlp_hidden();
        let cfg = PretrainConfig {
            embedder: EmbedderConfig {
                variant: self.variant,
                ..EmbedderConfig::default()
            },
            encoder: EncoderConfig::Trmpp(encoder),
            objective: ObjectiveConfig::NextItem(NextItemConfig {
                chunk: self.ce_chunk,
            }),
            output_head: true,
        };
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, self.seed, DType::F32, &self.device);
        let mut model = PretrainModel::new(&cfg, &vocab, vb)?;
        let sink = GradSink::new();
        model.set_grad_sink(Some(sink.clone()));
        let counts = cfg.param_count(&vocab);
        let stage = BenchStage {
            params: Params::from_varmap(&varmap),
            model,
            sink,
            batch: self.random_batch(&vocab),
            seed: self.seed,
        };
        let optim = OptimConfig {
            adamw: AdamWConfig {
                lr: self.lr,
                betas: (0.9, 0.999),
                eps: 1e-8,
                weight_decay: 0.01,
            },
            schedule: Schedule::Constant,
            clip_norm: self.clip,
        };
        let mut opt = Optimization::new(stage.params.clone(), optim, None, |_| 1.0);
        let mut replicas = Replicas::Single;
        let mut report = StepBenchReport {
            params_total: counts.dense + counts.embeddings,
            params_dense: counts.dense,
            flops_per_step: self.step_flops(cfg.embedder.concat_dim(), hidden),
            steps: Vec::new(),
        };
        let total = (self.warmup + self.steps) as u64;
        for step in 0..total {
            let batches = [stage.collate(&[])?];
            let r = train_step(&stage, &batches, &mut opt, &mut replicas, step, total)?;
            let time = StepTime {
                step,
                timed: step >= self.warmup as u64,
                loss: r.loss,
                forward: r.forward_seconds,
                backward: r.backward_seconds,
                optimizer: r.optimizer_seconds,
            };
            on_step(&time);
            report.steps.push(time);
        }
        Ok(report)
    }
}
