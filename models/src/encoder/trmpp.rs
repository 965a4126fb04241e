//! Trm++ (REFERENCE.md section 3; `../shared/bench/encoder_step.py`): pre-norm blocks
//! `x += drop(attn(rms(x))); x += drop(mlp(rms(x)))` with causal multi-head attention, RoPE on
//! queries and keys (base 10000, rotate-half, fp32), bias-free linears, a SwiGLU MLP of hidden
//! size `round_up(int(8/3 d), 256)`, dropout on attention probabilities and both residual
//! branches, and no final norm. Init: normal(0, 0.02), output projections (`attn.o`,
//! `mlp.down`) scaled by `1 / sqrt(2 * layers)` (GPT-2 style residual scaling).

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::Encoder;
use crate::error::{CandleContext, ModelError, Result};
use crate::grad_sink::GradSink;
use crate::layers::{
    AttentionSpec, RmsNorm, Rope, SelfAttention, causal_padding_bias, dropout, linear,
    linear_params, normal,
};
use crate::recompute::{BlockFn, recompute_in_backward};

/// Trm++ hyper-parameters. Defaults are the reference code's (4 layers, width 512, 4 heads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrmConfig {
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    pub dropout: f32,
    pub rope_base: f64,
    pub norm_eps: f64,
    pub init_std: f64,
    /// Recompute each block's activations in backward instead of keeping them (Hugging Face's
    /// `gradient_checkpointing`): one block's activations in memory at a time, for one more
    /// forward pass. Takes effect in training runs, which seed dropout and collect gradients
    /// in a sink.
    pub activation_checkpointing: bool,
}

impl Default for TrmConfig {
    fn default() -> Self {
        TrmConfig {
            layers: 4,
            width: 512,
            heads: 4,
            dropout: 0.1,
            rope_base: 10_000.0,
            norm_eps: 1e-5,
            init_std: 0.02,
            activation_checkpointing: false,
        }
    }
}

/// The paper's scaling presets (Table 5) as `(nominal size, layers, width, heads)`.
pub const TABLE5_PRESETS: [(&str, usize, usize, usize); 8] = [
    ("3.2M", 4, 256, 4),
    ("13M", 4, 512, 8),
    ("25M", 8, 512, 8),
    ("57M", 8, 768, 12),
    ("85M", 12, 768, 12),
    ("303M", 24, 1024, 8),
    ("680M", 24, 1536, 12),
    ("1.2B", 24, 2048, 16),
];

impl TrmConfig {
    /// A Table 5 preset by its nominal size ("3.2M" ... "1.2B"), other fields at defaults.
    pub fn preset(name: &str) -> Option<Self> {
        TABLE5_PRESETS
            .iter()
            .find(|p| p.0 == name)
            .map(|&(_, layers, width, heads)| TrmConfig {
                layers,
                width,
                heads,
                ..TrmConfig::default()
            })
    }

    /// SwiGLU hidden size: `int(8/3 * d)` rounded up to a multiple of 256 (1536 at d = 512).
    pub fn mlp_hidden(&self) -> usize {
        (8 * self.width / 3).div_ceil(256) * 256
    }

    /// Parameters of the blocks: per layer 4 d^2 (attention) + 3 d h (SwiGLU) + 2 d (norms).
    pub fn param_count(&self) -> usize {
        let d = self.width;
        self.layers * (4 * d * d + 3 * d * self.mlp_hidden() + 2 * d)
    }

    pub fn validate(&self, path: &str) -> Result<()> {
        let field = |f: &str| format!("{path}.{f}");
        if self.layers == 0 {
            return Err(ModelError::config(field("layers"), "must be positive"));
        }
        if self.width == 0 || self.heads == 0 {
            return Err(ModelError::config(
                field(if self.width == 0 { "width" } else { "heads" }),
                "must be positive",
            ));
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(ModelError::config(
                field("heads"),
                format!("{} heads do not divide width {}", self.heads, self.width),
            ));
        }
        if !(self.width / self.heads).is_multiple_of(2) {
            return Err(ModelError::config(
                field("heads"),
                format!(
                    "head dim {} must be even for RoPE's rotate-half layout",
                    self.width / self.heads
                ),
            ));
        }
        super::check_dropout(self.dropout, &field("dropout"))?;
        super::check_positive(self.rope_base, &field("rope_base"))?;
        super::check_positive(self.norm_eps, &field("norm_eps"))?;
        super::check_positive(self.init_std, &field("init_std"))
    }
}

struct Block {
    norm1: RmsNorm,
    attn: SelfAttention,
    norm2: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    dropout: f32,
}

impl Block {
    fn new(cfg: &TrmConfig, vb: VarBuilder<'_>) -> candle_core::Result<Self> {
        let (d, h) = (cfg.width, cfg.mlp_hidden());
        let init = normal(cfg.init_std);
        let out_init = normal(cfg.init_std / (2.0 * cfg.layers as f64).sqrt());
        let spec = AttentionSpec {
            width: d,
            heads: cfg.heads,
            bias: false,
            dropout: cfg.dropout,
            init,
            out_init,
        };
        let mlp = vb.pp("mlp");
        Ok(Block {
            norm1: RmsNorm::new(d, cfg.norm_eps, vb.pp("norm1"))?,
            attn: SelfAttention::new(&spec, vb.pp("attn"))?,
            norm2: RmsNorm::new(d, cfg.norm_eps, vb.pp("norm2"))?,
            gate: linear(d, h, false, init, mlp.pp("gate"))?,
            up: linear(d, h, false, init, mlp.pp("up"))?,
            down: linear(h, d, false, out_init, mlp.pp("down"))?,
            dropout: cfg.dropout,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        bias: &Tensor,
        rope: &Rope,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let a = self
            .attn
            .forward(&self.norm1.forward(x)?, bias, Some(rope), train)?;
        let x = (x + dropout(&a, self.dropout, train)?)?;
        let y = self.norm2.forward(&x)?;
        let m = self
            .down
            .forward(&(self.gate.forward(&y)?.silu()? * self.up.forward(&y)?)?)?;
        x + dropout(&m, self.dropout, train)?
    }

    fn params(&self) -> Vec<Tensor> {
        let mut p = vec![self.norm1.weight().clone(), self.norm2.weight().clone()];
        p.extend(self.attn.params());
        for l in [&self.gate, &self.up, &self.down] {
            p.extend(linear_params(l));
        }
        p
    }
}

/// The Trm++ encoder. Weights live under `layers.{i}.{norm1,attn.{q,k,v,o},norm2,mlp.*}`.
pub struct TrmPlusPlus {
    cfg: TrmConfig,
    blocks: Vec<Arc<Block>>,
    sink: Option<GradSink>,
}

impl TrmPlusPlus {
    pub fn new(cfg: &TrmConfig, vb: VarBuilder<'_>) -> Result<Self> {
        cfg.validate("encoder")?;
        let blocks = (0..cfg.layers)
            .map(|i| Block::new(cfg, vb.pp("layers").pp(i)).map(Arc::new))
            .collect::<candle_core::Result<Vec<_>>>()
            .ctx("building trm++ blocks")?;
        Ok(TrmPlusPlus {
            cfg: cfg.clone(),
            blocks,
            sink: None,
        })
    }
}

impl Encoder for TrmPlusPlus {
    fn forward(&self, x: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let run = || -> candle_core::Result<Tensor> {
            let (_, t, _) = x.dims3()?;
            let rope = Rope::new(
                t,
                self.cfg.width / self.cfg.heads,
                self.cfg.rope_base,
                x.dtype(),
                x.device(),
            )?;
            let bias = causal_padding_bias(mask)?;
            let mut x = x.clone();
            for block in &self.blocks {
                x = match (&self.sink, self.cfg.activation_checkpointing && train) {
                    (Some(sink), true) => {
                        let (b, bias, rope) = (block.clone(), bias.clone(), rope.clone());
                        let run: BlockFn = Arc::new(move |x| b.forward(x, &bias, &rope, true));
                        recompute_in_backward(run, &x, block.params(), sink)?
                    }
                    _ => block.forward(&x, &bias, &rope, train)?,
                };
            }
            Ok(x)
        };
        super::check_input(x, mask, self.cfg.width)?;
        run().ctx("trm++ forward")
    }

    fn set_grad_sink(&mut self, sink: Option<GradSink>) {
        self.sink = sink;
    }

    fn width(&self) -> usize {
        self.cfg.width
    }

    fn param_count(&self) -> usize {
        self.cfg.param_count()
    }
}
