//! GRU4Rec (Hidasi et al. 2016) as the UQABench reference uses it: dropout on the fused input,
//! a stack of GRU layers (PyTorch's gate equations and initialisation), then
//! `Linear(hidden, width)` and a LayerNorm. Causal by construction; right padding comes after
//! every valid position, so it cannot influence them.
//!
//! The recurrence is unrolled step by step in ordinary differentiable tensor ops; the per-step
//! slices come from `layers::time_steps` (O(T^1.5) backward traffic instead of candle's
//! O(T^2) for direct slicing). A fused recurrence op with its own backward is the next step
//! if GRU4Rec must train fast at length 512.

use candle_core::{Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::Encoder;
use crate::error::{CandleContext, ModelError, Result};
use crate::layers::{LayerNorm, dropout, time_steps, torch_linear};

/// GRU4Rec hyper-parameters; defaults are the reference code's (2 layers, hidden 1024).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gru4RecConfig {
    pub layers: usize,
    /// Model width (input and output).
    pub width: usize,
    /// GRU state size.
    pub hidden: usize,
    pub dropout: f32,
    pub norm_eps: f64,
}

impl Default for Gru4RecConfig {
    fn default() -> Self {
        Gru4RecConfig {
            layers: 2,
            width: 512,
            hidden: 1024,
            dropout: 0.1,
            norm_eps: 1e-5,
        }
    }
}

impl Gru4RecConfig {
    /// GRU layers `3 H (in + H) + 6 H`, the output Linear and LayerNorm.
    pub fn param_count(&self) -> usize {
        let h = self.hidden;
        let gru: usize = (0..self.layers)
            .map(|l| {
                let input = if l == 0 { self.width } else { h };
                3 * h * (input + h) + 6 * h
            })
            .sum();
        gru + h * self.width + self.width + 2 * self.width
    }

    pub fn validate(&self, path: &str) -> Result<()> {
        for (name, v) in [
            ("layers", self.layers),
            ("width", self.width),
            ("hidden", self.hidden),
        ] {
            if v == 0 {
                return Err(ModelError::config(
                    format!("{path}.{name}"),
                    "must be positive",
                ));
            }
        }
        super::check_dropout(self.dropout, &format!("{path}.dropout"))?;
        super::check_positive(self.norm_eps, &format!("{path}.norm_eps"))
    }
}

struct GruLayer {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    hidden: usize,
}

impl GruLayer {
    /// PyTorch's `nn.GRU` layout (gates r, z, n stacked) and init `U(+-1/sqrt(H))`.
    fn new(input: usize, hidden: usize, vb: VarBuilder<'_>) -> candle_core::Result<Self> {
        let bound = 1.0 / (hidden as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(GruLayer {
            w_ih: vb.get_with_hints((3 * hidden, input), "w_ih", init)?,
            w_hh: vb.get_with_hints((3 * hidden, hidden), "w_hh", init)?,
            b_ih: vb.get_with_hints(3 * hidden, "b_ih", init)?,
            b_hh: vb.get_with_hints(3 * hidden, "b_hh", init)?,
            hidden,
        })
    }

    /// `x: [B, T, in]` -> `[B, T, H]`, from a zero initial state.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, input) = x.dims3()?;
        let h_dim = self.hidden;
        // Input-side gates for all steps in one matmul.
        let gi = x
            .reshape((b * t, input))?
            .matmul(&self.w_ih.t()?)?
            .broadcast_add(&self.b_ih)?
            .reshape((b, t, 3 * h_dim))?;
        let mut h = Tensor::zeros((b, h_dim), x.dtype(), x.device())?;
        let mut outs = Vec::with_capacity(t);
        for gi_t in time_steps(&gi)? {
            let gh = h.matmul(&self.w_hh.t()?)?.broadcast_add(&self.b_hh)?;
            let gate = |g: &Tensor, k: usize| g.narrow(1, k * h_dim, h_dim);
            let r = candle_nn::ops::sigmoid(&(gate(&gi_t, 0)? + gate(&gh, 0)?)?)?;
            let z = candle_nn::ops::sigmoid(&(gate(&gi_t, 1)? + gate(&gh, 1)?)?)?;
            let n = (gate(&gi_t, 2)? + (r * gate(&gh, 2)?)?)?.tanh()?;
            // h' = (1 - z) * n + z * h
            h = (&n + (z * (&h - &n)?)?)?;
            outs.push(h.clone());
        }
        Tensor::stack(&outs, 1)
    }
}

/// The GRU4Rec encoder. Weights: `layers.{i}.{w_ih,w_hh,b_ih,b_hh}`, `out`, `norm`.
pub struct Gru4Rec {
    cfg: Gru4RecConfig,
    layers: Vec<GruLayer>,
    out: Linear,
    norm: LayerNorm,
}

impl Gru4Rec {
    pub fn new(cfg: &Gru4RecConfig, vb: VarBuilder<'_>) -> Result<Self> {
        cfg.validate("encoder")?;
        let build = || -> candle_core::Result<Gru4Rec> {
            let layers = (0..cfg.layers)
                .map(|l| {
                    let input = if l == 0 { cfg.width } else { cfg.hidden };
                    GruLayer::new(input, cfg.hidden, vb.pp("layers").pp(l))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(Gru4Rec {
                cfg: cfg.clone(),
                layers,
                out: torch_linear(cfg.hidden, cfg.width, vb.pp("out"))?,
                norm: LayerNorm::new(cfg.width, cfg.norm_eps, vb.pp("norm"))?,
            })
        };
        build().ctx("building gru4rec")
    }
}

impl Encoder for Gru4Rec {
    fn forward(&self, x: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        super::check_input(x, mask, self.cfg.width)?;
        let run = || -> candle_core::Result<Tensor> {
            let mut h = dropout(x, self.cfg.dropout, train)?;
            for layer in &self.layers {
                h = layer.forward(&h)?;
            }
            self.norm.forward(&self.out.forward(&h)?)
        };
        run().ctx("gru4rec forward")
    }

    fn width(&self) -> usize {
        self.cfg.width
    }

    fn param_count(&self) -> usize {
        self.cfg.param_count()
    }
}
