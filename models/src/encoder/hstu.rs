//! HSTU (Zhai et al. 2024, "Actions Speak Louder than Words"), one block:
//! `u, v, q, k = split(silu(W X' + b))` with `X' = LN(X)` parameter-free; pointwise causal
//! attention `A = silu(q k^T + rab) / n` (no softmax); `Y = u * LN(A v)`;
//! `X = X + W_o drop(Y) + b_o`. `rab` is a learned relative position bias
//! `pos_w[j - i + max_len - 1]` plus, when timestamps exist, a bias on log-bucketed time gaps
//! `ts_w[floor(ln(max(|t_q(i) - t_j|, 1)) / 0.301)]` (at most `time_buckets`), where the query
//! time `t_q(i)` is the next interaction's timestamp as in the official implementation (the
//! last valid position uses its own).
//!
//! Normalisation `n`: the official code divides by the padded length. Here, by default, row i
//! is divided by its number of causal keys (i + 1), which keeps the encoder causal and
//! independent of batch padding. `reference_compat = true` reproduces the UQABench reference:
//! no position or time bias (it passes no timestamps) and division by `max_len` (its padded
//! length, constant because it always pads to 512).

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::Encoder;
use crate::error::{CandleContext, ModelError, Result};
use crate::layers::{LayerNorm, dropout, linear, normal};

/// HSTU hyper-parameters; defaults are the UQABench reference's (4 blocks, 8 heads, per-head
/// linear and attention dims 256, dropout 0.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HstuConfig {
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    /// Per-head width of u and v.
    pub linear_dim: usize,
    /// Per-head width of q and k.
    pub attention_dim: usize,
    pub dropout: f32,
    pub max_len: usize,
    pub time_buckets: usize,
    pub norm_eps: f64,
    pub init_std: f64,
    /// Reproduce the reference's quirks: no relative bias, divide by `max_len`.
    pub reference_compat: bool,
}

impl Default for HstuConfig {
    fn default() -> Self {
        HstuConfig {
            layers: 4,
            width: 512,
            heads: 8,
            linear_dim: 256,
            attention_dim: 256,
            dropout: 0.1,
            max_len: 512,
            time_buckets: 128,
            norm_eps: 1e-6,
            init_std: 0.02,
            reference_compat: false,
        }
    }
}

impl HstuConfig {
    fn uvqk_dim(&self) -> usize {
        2 * self.heads * (self.linear_dim + self.attention_dim)
    }

    /// Per block: uvqk projection with bias, output projection with bias, the position bias
    /// (2 max_len - 1) and the time-bucket bias (time_buckets + 1). The biases exist (and are
    /// counted) in `reference_compat` mode too, where they stay unused, as in the reference.
    pub fn param_count(&self) -> usize {
        let (d, hv) = (self.width, self.heads * self.linear_dim);
        let per = d * self.uvqk_dim() + self.uvqk_dim() + hv * d + d;
        self.layers * (per + 2 * self.max_len - 1 + self.time_buckets + 1)
    }

    pub fn validate(&self, path: &str) -> Result<()> {
        let field = |f: &str| format!("{path}.{f}");
        for (name, v) in [
            ("layers", self.layers),
            ("width", self.width),
            ("heads", self.heads),
            ("linear_dim", self.linear_dim),
            ("attention_dim", self.attention_dim),
            ("max_len", self.max_len),
        ] {
            if v == 0 {
                return Err(ModelError::config(field(name), "must be positive"));
            }
        }
        super::check_dropout(self.dropout, &field("dropout"))?;
        super::check_positive(self.norm_eps, &field("norm_eps"))?;
        super::check_positive(self.init_std, &field("init_std"))
    }
}

struct Block {
    uvqk: Linear,
    o: Linear,
    pos_w: Tensor,
    ts_w: Tensor,
}

/// Per-forward constants shared by the blocks.
struct Ctx {
    /// `[B, 1, T, T]` 1 where query i may attend key j.
    allowed: Tensor,
    /// `[1, 1, T, 1]` or scalar-like divisor of the attention weights.
    divisor: Tensor,
    /// `[T * T]` indices into `pos_w` (row-major (i, j)).
    pos_idx: Tensor,
    /// `[B * T * T]` indices into `ts_w`, when timestamps were given.
    ts_idx: Option<Tensor>,
}

/// The HSTU encoder. Weights: `layers.{i}.{uvqk,o,pos_w,ts_w}`.
pub struct Hstu {
    cfg: HstuConfig,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl Hstu {
    pub fn new(cfg: &HstuConfig, vb: VarBuilder<'_>) -> Result<Self> {
        cfg.validate("encoder")?;
        let init = normal(cfg.init_std);
        let block = |vb: VarBuilder<'_>| -> candle_core::Result<Block> {
            Ok(Block {
                uvqk: linear(cfg.width, cfg.uvqk_dim(), true, init, vb.pp("uvqk"))?,
                o: linear(
                    cfg.heads * cfg.linear_dim,
                    cfg.width,
                    true,
                    init,
                    vb.pp("o"),
                )?,
                pos_w: vb.get_with_hints(2 * cfg.max_len - 1, "pos_w", init)?,
                ts_w: vb.get_with_hints(cfg.time_buckets + 1, "ts_w", init)?,
            })
        };
        let blocks = (0..cfg.layers)
            .map(|i| block(vb.pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()
            .ctx("building hstu blocks")?;
        Ok(Hstu {
            cfg: cfg.clone(),
            blocks,
            norm: LayerNorm::plain(cfg.norm_eps),
        })
    }

    fn context(&self, mask: &Tensor, timestamps: Option<&[i64]>) -> candle_core::Result<Ctx> {
        let (b, t) = mask.dims2()?;
        let dev = mask.device();
        let dtype = mask.dtype();
        let causal: Vec<u8> = (0..t * t).map(|k| u8::from(k % t <= k / t)).collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, t), dev)?.to_dtype(dtype)?;
        let allowed = causal.broadcast_mul(&mask.reshape((b, 1, 1, t))?)?;
        let divisor = if self.cfg.reference_compat {
            Tensor::full(self.cfg.max_len as f64, (1, 1, 1, 1), dev)?.to_dtype(dtype)?
        } else {
            Tensor::arange(1u32, t as u32 + 1, dev)?
                .to_dtype(dtype)?
                .reshape((1, 1, t, 1))?
        };
        let m = self.cfg.max_len;
        let pos_idx: Vec<u32> = (0..t * t).map(|k| (m - 1 + k % t - k / t) as u32).collect();
        let pos_idx = Tensor::from_vec(pos_idx, t * t, dev)?;
        let ts_idx = match timestamps {
            Some(ts) if !self.cfg.reference_compat => {
                let lengths: Vec<usize> = mask
                    .sum(1)?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?
                    .into_iter()
                    .map(|l| l as usize)
                    .collect();
                let mut idx = Vec::with_capacity(b * t * t);
                for (r, &len) in lengths.iter().enumerate() {
                    let row = &ts[r * t..(r + 1) * t];
                    for i in 0..t {
                        let tq = if i + 1 < len { row[i + 1] } else { row[i] };
                        for &tj in row {
                            let gap = (tq - tj).unsigned_abs().max(1) as f64;
                            let bucket = (gap.ln() / 0.301) as usize;
                            idx.push(bucket.min(self.cfg.time_buckets) as u32);
                        }
                    }
                }
                Some(Tensor::from_vec(idx, b * t * t, dev)?)
            }
            _ => None,
        };
        Ok(Ctx {
            allowed,
            divisor,
            pos_idx,
            ts_idx,
        })
    }

    fn block(
        &self,
        blk: &Block,
        x: &Tensor,
        ctx: &Ctx,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let (h, dv, dqk) = (cfg.heads, cfg.linear_dim, cfg.attention_dim);
        let uvqk = blk.uvqk.forward(&self.norm.forward(x)?)?.silu()?;
        let part = |start: usize, len: usize, head_dim: usize| -> candle_core::Result<Tensor> {
            uvqk.narrow(D::Minus1, start, len)?
                .reshape((b, t, h, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let u = uvqk.narrow(D::Minus1, 0, h * dv)?;
        let v = part(h * dv, h * dv, dv)?;
        let q = part(2 * h * dv, h * dqk, dqk)?;
        let k = part(2 * h * dv + h * dqk, h * dqk, dqk)?;
        let mut scores = q.matmul(&k.t()?)?;
        if !cfg.reference_compat {
            let pos = blk
                .pos_w
                .index_select(&ctx.pos_idx, 0)?
                .reshape((1, 1, t, t))?;
            scores = scores.broadcast_add(&pos)?;
            if let Some(ts_idx) = &ctx.ts_idx {
                let tb = blk.ts_w.index_select(ts_idx, 0)?.reshape((b, 1, t, t))?;
                scores = scores.broadcast_add(&tb)?;
            }
        }
        let att = scores
            .silu()?
            .broadcast_mul(&ctx.allowed)?
            .broadcast_div(&ctx.divisor)?;
        let av = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h * dv))?;
        let y = (u * self.norm.forward(&av)?)?;
        x + blk.o.forward(&dropout(&y, cfg.dropout, train)?)?
    }
}

impl Encoder for Hstu {
    fn forward(&self, x: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_timed(x, mask, None, train)
    }

    fn forward_timed(
        &self,
        x: &Tensor,
        mask: &Tensor,
        timestamps: Option<&[i64]>,
        train: bool,
    ) -> Result<Tensor> {
        super::check_input(x, mask, self.cfg.width)?;
        let (b, t) = mask.dims2().ctx("hstu mask")?;
        if t > self.cfg.max_len {
            return Err(ModelError::batch(format!(
                "sequence length {t} exceeds hstu max_len {}",
                self.cfg.max_len
            )));
        }
        if let Some(ts) = timestamps
            && ts.len() != b * t
        {
            return Err(ModelError::batch(format!(
                "{} timestamps for B * T = {}",
                ts.len(),
                b * t
            )));
        }
        let run = || -> candle_core::Result<Tensor> {
            let ctx = self.context(mask, timestamps)?;
            let mut x = x.clone();
            for blk in &self.blocks {
                x = self.block(blk, &x, &ctx, train)?;
            }
            Ok(x)
        };
        run().ctx("hstu forward")
    }

    fn width(&self) -> usize {
        self.cfg.width
    }

    fn param_count(&self) -> usize {
        self.cfg.param_count()
    }
}
