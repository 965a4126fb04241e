//! The reference adapter: `Linear(d_enc -> d_llm)` on every position, then the mean over valid
//! positions (dividing by the true length, not the padded one).

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

pub struct MeanPool {
    proj: Linear,
}

impl MeanPool {
    pub fn new(d_enc: usize, d_llm: usize, vb: VarBuilder) -> Result<Self> {
        // PyTorch's nn.Linear default, as the reference builds it.
        let bound = 1.0 / (d_enc as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let w = vb
            .pp("proj")
            .get_with_hints((d_llm, d_enc), "weight", init)?;
        let b = vb.pp("proj").get_with_hints(d_llm, "bias", init)?;
        Ok(MeanPool {
            proj: Linear::new(w, Some(b)),
        })
    }

    pub fn forward(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let y = self.proj.forward(states)?;
        let m = mask.unsqueeze(D::Minus1)?;
        let count = m.sum_keepdim(1)?.clamp(1.0, f64::INFINITY)?;
        y.broadcast_mul(&m)?.sum_keepdim(1)?.broadcast_div(&count)
    }
}
