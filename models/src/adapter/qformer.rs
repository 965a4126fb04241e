//! A one-block Q-Former: `k` learned queries attend (multi-head cross-attention) to the
//! encoder states projected to the LLM width, then a feed-forward block; pre-norm residuals.
//! The paper reports it unstable under the adapter-only strategy (NaN losses); the trainer's
//! non-finite check stops such runs with the step number.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::layers::{LayerNorm, linear, normal};

pub struct QFormer {
    queries: Tensor,
    input: Linear,
    norm_q: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    norm_ff: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    heads: usize,
}

impl QFormer {
    pub fn new(
        d_enc: usize,
        d: usize,
        queries: usize,
        heads: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let init = normal(0.02);
        Ok(QFormer {
            queries: vb.get_with_hints((queries, d), "queries", init)?,
            input: linear(d_enc, d, true, init, vb.pp("input"))?,
            norm_q: LayerNorm::new(d, 1e-5, vb.pp("norm_q"))?,
            q: linear(d, d, true, init, vb.pp("q"))?,
            k: linear(d, d, true, init, vb.pp("k"))?,
            v: linear(d, d, true, init, vb.pp("v"))?,
            o: linear(d, d, true, init, vb.pp("o"))?,
            norm_ff: LayerNorm::new(d, 1e-5, vb.pp("norm_ff"))?,
            ff_in: linear(d, 4 * d, true, init, vb.pp("ff_in"))?,
            ff_out: linear(4 * d, d, true, init, vb.pp("ff_out"))?,
            heads,
        })
    }

    /// Soft tokens produced per user.
    pub fn queries(&self) -> usize {
        self.queries.dim(0).unwrap_or(0)
    }

    pub fn forward(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t, _) = states.dims3()?;
        let (k_len, d) = self.queries.dims2()?;
        let hd = d / self.heads;
        let mem = self.input.forward(states)?;
        let x = self
            .queries
            .unsqueeze(0)?
            .broadcast_as((b, k_len, d))?
            .contiguous()?;
        let split = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(&self.norm_q.forward(&x)?)?, k_len)?;
        let k = split(self.k.forward(&mem)?, t)?;
        let v = split(self.v.forward(&mem)?, t)?;
        // Padding keys get a large negative bias; a user with no valid position attends evenly.
        let bias = ((mask.reshape((b, 1, 1, t))? - 1.0)? * 1e9)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(&bias)?;
        let att = candle_nn::ops::softmax(&scores, D::Minus1)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, k_len, d))?;
        let x = (x + self.o.forward(&att)?)?;
        let ff = self
            .ff_out
            .forward(&self.ff_in.forward(&self.norm_ff.forward(&x)?)?.gelu_erf()?)?;
        x + ff
    }
}
