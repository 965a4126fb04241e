//! SASRec (Kang & McAuley 2018) as the UQABench reference builds it: a learned absolute position
//! embedding added to the fused input, dropout, post-norm transformer encoder layers
//! (`x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x)))`, biased linears, ReLU FFN with
//! dropout after the activation, as `torch.nn.TransformerEncoderLayer`), a causal + padding
//! mask, and a final LayerNorm. Weights: normal(0, init_std), biases zero, norms at identity.
//!
//! `layout` picks where the norms sit: after each residual sum (the reference's, above), before
//! each sub-layer (pre-norm), or as in the SASRec authors' code (TensorFlow, and its PyTorch
//! port SASRec.pytorch) whose numbers the paper reports: `Q = LN(x); x = Q + attn(Q, x, x);
//! x = LN(x); x = x + ffn(x)`, queries normalised but keys and values not, no dropout on the
//! attention output.
//!
//! Positions count from each sequence's start by default (the reference's right-padded layout).
//! `positions = "from-end"` counts back from the most recent item instead, so the newest item
//! always has the same position embedding whatever the history length: what the SASRec paper's
//! left-padded layout gives.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::Encoder;
use crate::error::{CandleContext, ModelError, Result};
use crate::layers::{
    AttentionSpec, LayerNorm, SelfAttention, causal_padding_bias, dropout, linear, normal,
};

/// Which end of a sequence position 0 sits at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// Position t is the t-th kept interaction (the UQABench reference).
    #[default]
    FromStart,
    /// Position 0 is the most recent interaction (the SASRec paper's left padding).
    FromEnd,
}

/// Where a block's LayerNorms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockLayout {
    /// `x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x)))` (torch's default encoder layer,
    /// the UQABench reference).
    #[default]
    PostNorm,
    /// `x = x + drop(attn(LN(x))); x = x + drop(ffn(LN(x)))` (`norm_first=True`).
    PreNorm,
    /// The SASRec authors' code: `Q = LN(x); x = Q + attn(Q, x, x); x = LN(x); x = x + ffn(x)`.
    Sasrec,
}

/// SASRec hyper-parameters. Defaults are the UQABench reference code's (6 layers, 8 heads,
/// width 512, FFN 1536, dropout 0.1, 512 positions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SasrecConfig {
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    pub ffn: usize,
    pub dropout: f32,
    /// Rows of the position table; longer sequences are an error.
    pub max_len: usize,
    pub positions: Positions,
    /// Where the norms sit (see [`BlockLayout`]). Post-norm (the reference's) trains slowly without
    /// learning-rate warmup.
    pub layout: BlockLayout,
    pub norm_eps: f64,
    pub init_std: f64,
}

impl Default for SasrecConfig {
    fn default() -> Self {
        SasrecConfig {
            layers: 6,
            width: 512,
            heads: 8,
            ffn: 1536,
            dropout: 0.1,
            max_len: 512,
            positions: Positions::FromStart,
            layout: BlockLayout::PostNorm,
            norm_eps: 1e-5,
            init_std: 0.02,
        }
    }
}

impl SasrecConfig {
    /// Per layer: attention 4 d^2 + 4 d, FFN 2 d f + f + d, two norms 4 d; plus the position
    /// table (counted: it is part of the encoder, not a feature table) and the final norm.
    pub fn param_count(&self) -> usize {
        let (d, f) = (self.width, self.ffn);
        self.layers * (4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d) + self.max_len * d + 2 * d
    }

    pub fn validate(&self, path: &str) -> Result<()> {
        let field = |f: &str| format!("{path}.{f}");
        for (name, v) in [
            ("layers", self.layers),
            ("width", self.width),
            ("heads", self.heads),
            ("ffn", self.ffn),
            ("max_len", self.max_len),
        ] {
            if v == 0 {
                return Err(ModelError::config(field(name), "must be positive"));
            }
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(ModelError::config(
                field("heads"),
                format!("{} heads do not divide width {}", self.heads, self.width),
            ));
        }
        super::check_dropout(self.dropout, &field("dropout"))?;
        super::check_positive(self.norm_eps, &field("norm_eps"))?;
        super::check_positive(self.init_std, &field("init_std"))
    }
}

struct Layer {
    attn: SelfAttention,
    norm1: LayerNorm,
    ffn1: Linear,
    ffn2: Linear,
    norm2: LayerNorm,
    dropout: f32,
    layout: BlockLayout,
}

impl Layer {
    fn new(cfg: &SasrecConfig, vb: VarBuilder<'_>) -> candle_core::Result<Self> {
        let init = normal(cfg.init_std);
        let spec = AttentionSpec {
            width: cfg.width,
            heads: cfg.heads,
            bias: true,
            dropout: cfg.dropout,
            init,
            out_init: init,
        };
        Ok(Layer {
            attn: SelfAttention::new(&spec, vb.pp("attn"))?,
            norm1: LayerNorm::new(cfg.width, cfg.norm_eps, vb.pp("norm1"))?,
            ffn1: linear(cfg.width, cfg.ffn, true, init, vb.pp("ffn1"))?,
            ffn2: linear(cfg.ffn, cfg.width, true, init, vb.pp("ffn2"))?,
            norm2: LayerNorm::new(cfg.width, cfg.norm_eps, vb.pp("norm2"))?,
            dropout: cfg.dropout,
            layout: cfg.layout,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let attn = |x: &Tensor| -> candle_core::Result<Tensor> {
            dropout(
                &self.attn.forward(x, bias, None, train)?,
                self.dropout,
                train,
            )
        };
        let ffn = |x: &Tensor| -> candle_core::Result<Tensor> {
            let h = dropout(&self.ffn1.forward(x)?.relu()?, self.dropout, train)?;
            dropout(&self.ffn2.forward(&h)?, self.dropout, train)
        };
        match self.layout {
            BlockLayout::PostNorm => {
                let x = self.norm1.forward(&(x + attn(x)?)?)?;
                self.norm2.forward(&(&x + ffn(&x)?)?)
            }
            BlockLayout::PreNorm => {
                let x = (x + attn(&self.norm1.forward(x)?)?)?;
                &x + ffn(&self.norm2.forward(&x)?)?
            }
            BlockLayout::Sasrec => {
                let q = self.norm1.forward(x)?;
                let x = (&q + self.attn.forward_kv(&q, x, bias, None, train)?)?;
                let x = self.norm2.forward(&x)?;
                &x + ffn(&x)?
            }
        }
    }
}

/// The SASRec encoder. Weights: `pos`, `layers.{i}.{attn.*,norm1,ffn1,ffn2,norm2}`, `final_norm`.
pub struct Sasrec {
    cfg: SasrecConfig,
    pos: Tensor,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
}

impl Sasrec {
    pub fn new(cfg: &SasrecConfig, vb: VarBuilder<'_>) -> Result<Self> {
        cfg.validate("encoder")?;
        let build = || -> candle_core::Result<Sasrec> {
            Ok(Sasrec {
                cfg: cfg.clone(),
                pos: vb.get_with_hints((cfg.max_len, cfg.width), "pos", normal(cfg.init_std))?,
                layers: (0..cfg.layers)
                    .map(|i| Layer::new(cfg, vb.pp("layers").pp(i)))
                    .collect::<candle_core::Result<Vec<_>>>()?,
                final_norm: LayerNorm::new(cfg.width, cfg.norm_eps, vb.pp("final_norm"))?,
            })
        };
        build().ctx("building sasrec")
    }
}

impl Sasrec {
    /// `[B, T, width]` position embeddings counted back from each row's last valid position
    /// (padding takes row 0; its outputs are never read).
    fn positions_from_end(&self, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = mask.dims2()?;
        let valid = mask.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let mut index = Vec::with_capacity(b * t);
        for row in &valid {
            let len = row.iter().filter(|&&m| m != 0.0).count();
            index.extend((0..t).map(|i| if i < len { (len - 1 - i) as u32 } else { 0 }));
        }
        let index = Tensor::from_vec(index, b * t, mask.device())?;
        self.pos
            .index_select(&index, 0)?
            .reshape((b, t, self.cfg.width))
    }
}

impl Encoder for Sasrec {
    fn forward(&self, x: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        super::check_input(x, mask, self.cfg.width)?;
        let t = mask.dim(1).ctx("sasrec mask")?;
        if t > self.cfg.max_len {
            return Err(ModelError::batch(format!(
                "sequence length {t} exceeds sasrec max_len {}",
                self.cfg.max_len
            )));
        }
        let run = || -> candle_core::Result<Tensor> {
            let bias = causal_padding_bias(mask)?;
            let x = match self.cfg.positions {
                Positions::FromStart => x.broadcast_add(&self.pos.narrow(0, 0, t)?)?,
                Positions::FromEnd => (x + self.positions_from_end(mask)?)?,
            };
            let mut x = dropout(&x, self.cfg.dropout, train)?;
            for layer in &self.layers {
                x = layer.forward(&x, &bias, train)?;
            }
            self.final_norm.forward(&x)
        };
        run().ctx("sasrec forward")
    }

    fn width(&self) -> usize {
        self.cfg.width
    }

    fn param_count(&self) -> usize {
        self.cfg.param_count()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    use super::*;

    /// On rows without padding, counting from the end equals counting from the start with the
    /// position table reversed; on a padded row, the newest item takes row 0.
    #[test]
    fn positions_from_end_reverse_the_table() {
        let dev = Device::Cpu;
        let cfg = SasrecConfig {
            layers: 1,
            width: 4,
            heads: 1,
            ffn: 4,
            max_len: 5,
            positions: Positions::FromEnd,
            ..SasrecConfig::default()
        };
        let vm = VarMap::new();
        let enc = Sasrec::new(&cfg, VarBuilder::from_varmap(&vm, DType::F64, &dev)).unwrap();
        let rows = |t: &Tensor| -> Vec<Vec<f64>> { t.to_vec2().unwrap() };
        let table = rows(&enc.pos);
        let full = Tensor::ones((1, 5), DType::F64, &dev).unwrap();
        let got = rows(&enc.positions_from_end(&full).unwrap().squeeze(0).unwrap());
        let reversed: Vec<Vec<f64>> = table.iter().rev().cloned().collect();
        assert_eq!(got, reversed);

        let padded = Tensor::new(&[[1f64, 1.0, 0.0, 0.0, 0.0]], &dev).unwrap();
        let got = rows(&enc.positions_from_end(&padded).unwrap().squeeze(0).unwrap());
        assert_eq!((&got[0], &got[1]), (&table[1], &table[0]));
    }
}
