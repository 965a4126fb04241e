//! SASRec (Kang & McAuley 2018) as the UQABench reference builds it: a learned absolute position
//! embedding added to the fused input, dropout, post-norm transformer encoder layers
//! (`x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x)))`, biased linears, ReLU FFN with
//! dropout after the activation, as `torch.nn.TransformerEncoderLayer`), a causal + padding
//! mask, and a final LayerNorm. Weights: normal(0, init_std), biases zero, norms at identity.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::Encoder;
use crate::error::{CandleContext, ModelError, Result};
use crate::layers::{
    AttentionSpec, LayerNorm, SelfAttention, causal_padding_bias, dropout, linear, normal,
};

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
}

impl Layer {
    fn new(cfg: &SasrecConfig, vb: VarBuilder) -> candle_core::Result<Self> {
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
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let a = self.attn.forward(x, bias, None, train)?;
        let x = self
            .norm1
            .forward(&(x + dropout(&a, self.dropout, train)?)?)?;
        let h = dropout(&self.ffn1.forward(&x)?.relu()?, self.dropout, train)?;
        let f = self.ffn2.forward(&h)?;
        self.norm2
            .forward(&(x + dropout(&f, self.dropout, train)?)?)
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
    pub fn new(cfg: &SasrecConfig, vb: VarBuilder) -> Result<Self> {
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
            let pos = self.pos.narrow(0, 0, t)?;
            let mut x = dropout(&x.broadcast_add(&pos)?, self.cfg.dropout, train)?;
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
