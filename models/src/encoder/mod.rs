//! Sequence encoders behind one trait: fused per-position features `[B, T, d]` and the padding
//! mask in, hidden states `[B, T, d]` out. Every encoder is causal: the output at position t
//! depends on inputs 0..=t only, so the hidden state at t predicts the item at t + 1. Sequences
//! are right-padded (see `uqa_data::batch`), so outputs at padding positions are unspecified and
//! callers ignore them.

mod gru4rec;
mod hstu;
mod mamba4rec;
mod sasrec;
mod trmpp;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{CandleContext, ModelError, Result};

pub use gru4rec::{Gru4Rec, Gru4RecConfig};
pub use hstu::{Hstu, HstuConfig};
pub use mamba4rec::{Mamba4Rec, Mamba4RecConfig};
pub use sasrec::{BlockLayout, Positions, Sasrec, SasrecConfig};
pub use trmpp::{TABLE5_PRESETS, TrmConfig, TrmPlusPlus};

/// A user-sequence encoder.
pub trait Encoder: Send + Sync {
    /// `x: [B, T, width]`, `mask: [B, T]` in x's dtype (1 valid, 0 padding) -> `[B, T, width]`.
    /// `train` turns dropout on.
    fn forward(&self, x: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor>;

    /// [`Encoder::forward`] with the batch's `[B * T]` timestamps (row-major, as in
    /// `SequenceBatch::timestamps`); encoders without a time signal ignore them.
    fn forward_timed(
        &self,
        x: &Tensor,
        mask: &Tensor,
        timestamps: Option<&[i64]>,
        train: bool,
    ) -> Result<Tensor> {
        let _ = timestamps;
        self.forward(x, mask, train)
    }

    /// Where parameter gradients go when the encoder recomputes activations in backward
    /// (`activation_checkpointing`); encoders without that option ignore it.
    fn set_grad_sink(&mut self, sink: Option<crate::grad_sink::GradSink>) {
        let _ = sink;
    }

    /// Model width d (input and output).
    fn width(&self) -> usize;

    /// Trainable parameters, counted analytically from the config.
    fn param_count(&self) -> usize;
}

/// Which encoder, with its own config; in TOML `kind = "trmpp"` plus the encoder's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EncoderConfig {
    #[serde(alias = "trm++")]
    Trmpp(TrmConfig),
    Sasrec(SasrecConfig),
    Hstu(HstuConfig),
    Gru4rec(Gru4RecConfig),
    Mamba4rec(Mamba4RecConfig),
}

impl EncoderConfig {
    pub fn width(&self) -> usize {
        match self {
            EncoderConfig::Trmpp(c) => c.width,
            EncoderConfig::Sasrec(c) => c.width,
            EncoderConfig::Hstu(c) => c.width,
            EncoderConfig::Gru4rec(c) => c.width,
            EncoderConfig::Mamba4rec(c) => c.width,
        }
    }

    /// The longest sequence the encoder can read (learned absolute positions in SASRec, HSTU's
    /// relative-position buckets); `None` when any length works.
    pub fn max_positions(&self) -> Option<usize> {
        match self {
            EncoderConfig::Sasrec(c) => Some(c.max_len),
            EncoderConfig::Hstu(c) => Some(c.max_len),
            EncoderConfig::Trmpp(_) | EncoderConfig::Gru4rec(_) | EncoderConfig::Mamba4rec(_) => {
                None
            }
        }
    }

    /// Parameters of the encoder alone, from the config (nothing is allocated).
    pub fn param_count(&self) -> usize {
        match self {
            EncoderConfig::Trmpp(c) => c.param_count(),
            EncoderConfig::Sasrec(c) => c.param_count(),
            EncoderConfig::Hstu(c) => c.param_count(),
            EncoderConfig::Gru4rec(c) => c.param_count(),
            EncoderConfig::Mamba4rec(c) => c.param_count(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            EncoderConfig::Trmpp(c) => c.validate("encoder"),
            EncoderConfig::Sasrec(c) => c.validate("encoder"),
            EncoderConfig::Hstu(c) => c.validate("encoder"),
            EncoderConfig::Gru4rec(c) => c.validate("encoder"),
            EncoderConfig::Mamba4rec(c) => c.validate("encoder"),
        }
    }

    /// Builds the encoder with its weights under `vb`.
    pub fn build(&self, vb: VarBuilder<'_>) -> Result<Box<dyn Encoder>> {
        Ok(match self {
            EncoderConfig::Trmpp(c) => Box::new(TrmPlusPlus::new(c, vb)?),
            EncoderConfig::Sasrec(c) => Box::new(Sasrec::new(c, vb)?),
            EncoderConfig::Hstu(c) => Box::new(Hstu::new(c, vb)?),
            EncoderConfig::Gru4rec(c) => Box::new(Gru4Rec::new(c, vb)?),
            EncoderConfig::Mamba4rec(c) => Box::new(Mamba4Rec::new(c, vb)?),
        })
    }
}

pub(crate) fn check_dropout(p: f32, field: &str) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(ModelError::config(
            field,
            format!("must be in [0, 1), got {p}"),
        ))
    }
}

pub(crate) fn check_positive(v: f64, field: &str) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ModelError::config(
            field,
            format!("must be finite and positive, got {v}"),
        ))
    }
}

/// Shapes of an encoder's input and mask.
pub(crate) fn check_input(x: &Tensor, mask: &Tensor, width: usize) -> Result<()> {
    let (b, t, d) = x.dims3().ctx("encoder input must be [B, T, d]")?;
    let (mb, mt) = mask.dims2().ctx("encoder mask must be [B, T]")?;
    if d != width || (mb, mt) != (b, t) {
        return Err(ModelError::batch(format!(
            "encoder input {:?} and mask {:?} do not match width {width}",
            x.dims(),
            mask.dims()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn the_1_2b_preset_counts_about_1_2_billion_without_allocating() {
        let cfg = TrmConfig::preset("1.2B").unwrap();
        assert_eq!((cfg.layers, cfg.width, cfg.heads), (24, 2048, 16));
        assert_eq!(cfg.mlp_hidden(), 5632);
        // 24 * (4 * 2048^2 + 3 * 2048 * 5632 + 2 * 2048)
        assert_eq!(cfg.param_count(), 1_233_223_680);
    }

    #[test]
    fn table5_presets_are_within_10_percent_of_their_nominal_size() {
        for (name, ..) in TABLE5_PRESETS {
            let cfg = TrmConfig::preset(name).unwrap();
            cfg.validate("encoder").unwrap();
            let nominal: f64 = match name.strip_suffix('B') {
                Some(b) => b.parse::<f64>().unwrap() * 1e9,
                None => name.trim_end_matches('M').parse::<f64>().unwrap() * 1e6,
            };
            let ratio = cfg.param_count() as f64 / nominal;
            assert!(
                (0.9..1.1).contains(&ratio),
                "{name}: {} params",
                cfg.param_count()
            );
        }
        assert_eq!(TrmConfig::default().mlp_hidden(), 1536);
    }

    #[test]
    fn analytic_counts_equal_the_allocated_parameters() {
        let configs = [
            EncoderConfig::Trmpp(TrmConfig {
                layers: 3,
                width: 40,
                heads: 4,
                ..TrmConfig::default()
            }),
            EncoderConfig::Sasrec(SasrecConfig {
                layers: 2,
                width: 24,
                heads: 3,
                ffn: 50,
                max_len: 9,
                ..SasrecConfig::default()
            }),
            EncoderConfig::Hstu(HstuConfig {
                layers: 2,
                width: 24,
                heads: 3,
                linear_dim: 5,
                attention_dim: 7,
                max_len: 9,
                time_buckets: 11,
                ..HstuConfig::default()
            }),
            EncoderConfig::Gru4rec(Gru4RecConfig {
                layers: 2,
                width: 12,
                hidden: 10,
                ..Gru4RecConfig::default()
            }),
            EncoderConfig::Mamba4rec(Mamba4RecConfig {
                layers: 2,
                width: 12,
                d_state: 3,
                ..Mamba4RecConfig::default()
            }),
        ];
        for cfg in configs {
            let vm = VarMap::new();
            let enc = cfg
                .build(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))
                .unwrap();
            let allocated: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
            assert_eq!(allocated, cfg.param_count(), "{cfg:?}");
            assert_eq!(enc.param_count(), allocated);
        }
    }

    #[test]
    fn configs_are_tagged_strict_and_validated_with_field_names() {
        let cfg: EncoderConfig =
            serde_json::from_str(r#"{"kind": "trm++", "layers": 2, "width": 64, "heads": 4}"#)
                .unwrap();
        assert_eq!(cfg.width(), 64);
        assert_eq!(cfg.param_count(), 2 * (4 * 64 * 64 + 3 * 64 * 256 + 2 * 64));
        let unknown = serde_json::from_str::<EncoderConfig>(r#"{"kind": "sasrec", "widht": 64}"#);
        assert!(unknown.unwrap_err().to_string().contains("widht"));
        let kind = serde_json::from_str::<EncoderConfig>(r#"{"kind": "lstm"}"#);
        assert!(kind.unwrap_err().to_string().contains("lstm"));

        let bad: EncoderConfig =
            serde_json::from_str(r#"{"kind": "trmpp", "width": 64, "heads": 5}"#).unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("encoder.heads") && err.contains("5 heads"),
            "{err}"
        );
        let bad: EncoderConfig =
            serde_json::from_str(r#"{"kind": "sasrec", "dropout": 1.0}"#).unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("encoder.dropout")
        );
        let odd_head: EncoderConfig =
            serde_json::from_str(r#"{"kind": "trmpp", "width": 12, "heads": 4}"#).unwrap();
        assert!(
            odd_head
                .validate()
                .unwrap_err()
                .to_string()
                .contains("even")
        );
    }
}
