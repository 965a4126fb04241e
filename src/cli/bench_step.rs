//! `uqa bench step`: one pre-training step of the Trm++ encoder, the counterpart of
//! `../shared/bench/encoder_step.py` with the same defaults (4 layers, width 512, 4 heads,
//! sequence 128, batch 8, 100,000 items, full side information, random ids) and the same FLOP
//! formula, so the two JSON lines compare field by field.
//!
//! A step is `uqa pretrain`'s own step on one rank (`engine::train_step`): forward and the
//! chunked full-softmax loss, backward, gradients moved into flat buffers, clipping by the
//! global norm and our AdamW. Threads: `OMP_NUM_THREADS` (or `RAYON_NUM_THREADS`), as for every command.

use std::process::ExitCode;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use clap::Args;
use serde_json::json;
use uqa_data::batch::{BagColumn, SequenceBatch};
use uqa_data::rng::Rng;
use uqa_data::schema::Vocab;
use uqa_models::{
    EmbedderConfig, EncoderConfig, GradSink, InputVariant, NextItemConfig, ObjectiveConfig,
    PretrainConfig, PretrainModel, TrmConfig, seeded_var_builder,
};
use uqa_trainer::config::OptimConfig;
use uqa_trainer::engine::{Optimization, Stage, Units, train_step};
use uqa_trainer::optim::{AdamWConfig, Params, Schedule};
use uqa_trainer::parallel::Replicas;
use uqa_trainer::pretrain::{SEQUENCE_UNITS, label_count, position_count};

use super::CliResult;
use super::bench::{check_fits, peak_rss_mb};
use super::numbers::{fraction, non_negative, u64_in, usize_in};

/// Width of the BPE vocabulary of the shared text-token table (Qwen2's).
const TEXT_VOCAB: u64 = 151_936;

/// Largest vocabulary of any id column: ids are drawn and stored as u32.
const MAX_VOCAB: u64 = u32::MAX as u64;

// Upper bounds on sizes are far beyond any encoder we benchmark and keep a typo from asking for
// an impossible model; vocabularies start at 2 because ids are drawn from 1..size (0 pads).
#[derive(Debug, Args)]
pub struct StepArgs {
    #[arg(long, default_value_t = 4, value_parser = usize_in(1..=1024))]
    layers: usize,
    #[arg(long, default_value_t = 512, value_parser = usize_in(1..=65_536))]
    dim: usize,
    #[arg(long, default_value_t = 4, value_parser = usize_in(1..=1024))]
    heads: usize,
    #[arg(long, default_value_t = 128, value_parser = usize_in(2..=65_536))]
    seq: usize,
    #[arg(long, default_value_t = 8, value_parser = usize_in(1..=65_536))]
    batch: usize,
    /// Item vocabulary size.
    #[arg(long, default_value_t = 100_000, value_parser = u64_in(2..=MAX_VOCAB))]
    items: u64,
    #[arg(long, default_value_t = 9_330, value_parser = u64_in(2..=MAX_VOCAB))]
    cates: u64,
    #[arg(long, default_value_t = 149_750, value_parser = u64_in(2..=MAX_VOCAB))]
    brands: u64,
    /// Also the seller vocabulary size, as in encoder_step.py.
    #[arg(long, default_value_t = 268_446, value_parser = u64_in(2..=MAX_VOCAB))]
    shops: u64,
    /// BPE tokens per text bag.
    #[arg(long, default_value_t = 8, value_parser = usize_in(1..=1024))]
    bag_len: usize,
    /// full, no-text or no-side.
    #[arg(long, default_value = "full")]
    side: String,
    /// Item rows per chunk of the chunked cross-entropy.
    #[arg(long, default_value_t = 2048, value_parser = usize_in(1..))]
    ce_chunk: usize,
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    dropout: f32,
    #[arg(long, default_value_t = 4e-4, value_parser = non_negative)]
    lr: f64,
    /// Clip by this global gradient norm (0: off).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    clip: f64,
    /// Timed steps.
    #[arg(long, default_value_t = 10, value_parser = usize_in(1..=10_000))]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2, value_parser = usize_in(0..=10_000))]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute each block's activations in backward (`activation_checkpointing`).
    #[arg(long)]
    activation_checkpointing: bool,
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

    fn collate(&self, _rows: &[usize]) -> uqa_trainer::Result<SequenceBatch> {
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

    fn loss(&self, b: &SequenceBatch, step: u64) -> uqa_trainer::Result<Tensor> {
        Ok(self.model.loss(b, true, self.seed ^ step)?.sum)
    }

    fn grad_sink(&self) -> Option<&GradSink> {
        Some(&self.sink)
    }
}

/// The checks clap's per-flag ranges cannot make: how flags combine. Each error names the flags.
fn check_flags(a: &StepArgs) -> Result<(), String> {
    if !a.dim.is_multiple_of(a.heads) || !(a.dim / a.heads).is_multiple_of(2) {
        return Err(format!(
            "--heads {} must divide --dim {} into an even head dimension (RoPE)",
            a.heads, a.dim
        ));
    }
    // A lower bound, in f64 so that no product overflows: the embedding tables (item width 128,
    // side and token width 64, EmbedderConfig's defaults) and the attention weights, each held
    // as weights, gradients and AdamW's two moments; the attention scores of every layer kept
    // for backward; the batch's text-bag ids.
    let (d, l) = (a.dim as f64, a.layers as f64);
    let side = (a.cates + a.brands + 2 * a.shops) as f64;
    let tables = a.items as f64 * 128.0
        + 64.0
            * match a.side.as_str() {
                "full" => side + TEXT_VOCAB as f64,
                "no-text" => side,
                _ => 0.0,
            };
    let weights = 4.0 * 4.0 * (tables + l * 4.0 * d * d);
    let kept = if a.activation_checkpointing { 1.0 } else { l };
    let (b, s) = (a.batch as f64, a.seq as f64);
    let scores = 4.0 * kept * b * a.heads as f64 * s * s;
    let bags = 4.0 * 5.0 * b * s * a.bag_len as f64;
    check_fits(
        weights + scores + bags,
        "--items, --cates, --brands, --shops, --dim, --layers, --heads, --batch, --seq and --bag-len",
    )
}

/// Model FLOPs of one training step, encoder_step.py's `step_flops`: forward =
/// 2 N P_dense + L 4 B T^2 d + 2 N 128 items, a step = 3 forwards.
fn step_flops(a: &StepArgs, input_dim: usize, hidden: usize) -> f64 {
    let (n, d, l) = ((a.batch * a.seq) as f64, a.dim as f64, a.layers as f64);
    let p_dense = input_dim as f64 * d + l * (4.0 * d * d + 3.0 * d * hidden as f64) + d * 128.0;
    let fwd = 2.0 * n * p_dense
        + l * 4.0 * a.batch as f64 * (a.seq as f64).powi(2) * d
        + 2.0 * n * 128.0 * a.items as f64;
    3.0 * fwd
}

/// Random full-length rows (no padding), like encoder_step.py's batch with `--min-len 0`.
fn random_batch(a: &StepArgs, vocab: &Vocab, seed: u64) -> SequenceBatch {
    let mut rng = Rng::new(seed);
    let positions = a.batch * a.seq;
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
        ids: (0..positions * a.bag_len)
            .map(|_| draw(TEXT_VOCAB))
            .collect(),
        offsets: (0..=positions).map(|p| (p * a.bag_len) as u32).collect(),
    });
    SequenceBatch {
        batch_size: a.batch,
        seq_len: a.seq,
        lengths: vec![a.seq as u32; a.batch],
        rows: (0..a.batch).collect(),
        ids,
        bags,
        timestamps: None,
    }
}

pub fn run(a: StepArgs) -> CliResult {
    let variant = match a.side.as_str() {
        "full" => InputVariant::Full,
        "no-text" => InputVariant::NoText,
        "no-side" => InputVariant::NoSide,
        other => return Err(format!("--side {other}: expected full, no-text or no-side").into()),
    };
    check_flags(&a)?;
    let vocab = Vocab {
        items: a.items,
        cates: a.cates,
        brands: a.brands,
        shops: a.shops,
        sellers: a.shops,
        tokens: TEXT_VOCAB,
    };
    let encoder = TrmConfig {
        layers: a.layers,
        width: a.dim,
        heads: a.heads,
        dropout: a.dropout,
        activation_checkpointing: a.activation_checkpointing,
        ..TrmConfig::default()
    };
    let hidden = encoder.mlp_hidden();
    let cfg = PretrainConfig {
        embedder: EmbedderConfig {
            variant,
            ..EmbedderConfig::default()
        },
        encoder: EncoderConfig::Trmpp(encoder),
        objective: ObjectiveConfig::NextItem(NextItemConfig { chunk: a.ce_chunk }),
        output_head: true,
    };
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, a.seed, DType::F32, &Device::Cpu);
    let mut model = PretrainModel::new(&cfg, &vocab, vb)?;
    let sink = GradSink::new();
    model.set_grad_sink(Some(sink.clone()));
    let counts = cfg.param_count(&vocab);
    let stage = BenchStage {
        params: Params::from_varmap(&varmap),
        model,
        sink,
        batch: random_batch(&a, &vocab, a.seed),
        seed: a.seed,
    };
    let optim = OptimConfig {
        adamw: AdamWConfig {
            lr: a.lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        },
        schedule: Schedule::Constant,
        clip_norm: a.clip,
    };
    let mut opt = Optimization::new(stage.params.clone(), optim, None, |_| 1.0);
    let mut replicas = Replicas::Single;
    let flops = step_flops(&a, cfg.embedder.concat_dim(), hidden);
    eprintln!(
        "params: {:.2} M total, {:.2} M without embedding tables; {:.1} GFLOP/step; ce chunked ({})",
        (counts.dense + counts.embeddings) as f64 / 1e6,
        counts.dense as f64 / 1e6,
        flops / 1e9,
        a.ce_chunk
    );

    let mut rows = Vec::new();
    let mut losses = Vec::new();
    let total = (a.warmup + a.steps) as u64;
    for i in 0..total {
        let batches = [stage.collate(&[])?];
        let r = train_step(&stage, &batches, &mut opt, &mut replicas, i, total)?;
        let (f, b, o) = (r.forward_seconds, r.backward_seconds, r.optimizer_seconds);
        let timed = i >= a.warmup as u64;
        eprintln!(
            "step {i:3} {} loss {:.4} total {:.3}s fwd {f:.3}s bwd {b:.3}s opt {o:.3}s",
            if timed { "timed" } else { "warm " },
            r.loss,
            f + b + o
        );
        losses.push(r.loss);
        if timed {
            rows.push([f + b + o, f, b, o]);
        }
    }
    let median = |j: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| r[j]).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let step_s = median(0);
    let threads = candle_core::utils::get_num_threads();
    let res = json!({
        "bench": "encoder_step", "impl": "uqa", "threads": threads,
        "layers": a.layers, "dim": a.dim, "heads": a.heads, "seq": a.seq, "batch": a.batch,
        "items": a.items, "side": a.side, "ce": "chunked", "ce_chunk": a.ce_chunk,
        "adamw": "uqa", "activation_checkpointing": a.activation_checkpointing,
        "params_total": counts.dense + counts.embeddings, "params_dense": counts.dense,
        "flops_per_step": flops, "steps": a.steps, "warmup": a.warmup,
        "step_s_median": step_s, "fwd_s_median": median(1), "bwd_s_median": median(2),
        "opt_s_median": median(3),
        "step_s_all": rows.iter().map(|r| (r[0] * 1e4).round() / 1e4).collect::<Vec<_>>(),
        "seq_per_s": a.batch as f64 / step_s, "pos_per_s": (a.batch * a.seq) as f64 / step_s,
        "gflops_per_s": flops / step_s / 1e9, "peak_rss_mb": peak_rss_mb(),
        "loss_first": losses[0], "loss_last": losses[losses.len() - 1],
    });
    eprintln!(
        "median step {step_s:.3}s  {:.2} seq/s  {:.0} pos/s  {:.1} GFLOP/s  peak RSS {:.0} MB",
        res["seq_per_s"].as_f64().unwrap_or(0.0),
        res["pos_per_s"].as_f64().unwrap_or(0.0),
        res["gflops_per_s"].as_f64().unwrap_or(0.0),
        res["peak_rss_mb"].as_f64().unwrap_or(0.0),
    );
    println!("{res}");
    Ok(ExitCode::SUCCESS)
}
