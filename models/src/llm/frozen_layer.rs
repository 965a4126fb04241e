//! A decoder layer with no trainable weight, as one op over its input with a hand-written
//! backward that computes the input's gradient only: the alignment strategies that freeze the
//! LLM (`adapter`) still back-propagate through every layer to reach the soft tokens.
//!
//! Through candle's graph, such a layer kept every intermediate tensor of its forward pass
//! (about forty per layer, norms, rotary tables and masks included) until the whole backward
//! had run, and built and summed gradients for its weights. Here the forward runs untracked
//! (with candle's fused RMS-norm and softmax kernels, which have no backward of their own) and
//! keeps only what the input's gradient needs, as PyTorch's autograd does: the residual stream
//! after attention, the rotated queries and keys, the values, the attention probabilities and
//! the two MLP branches. The backward is the textbook one, in candle ops, so it runs on any
//! device:
//!
//! - RMS norm `y = x r w`, `r = (mean(x^2) + eps)^-1/2`: `dx = r (dy w) - x r^3 mean(dy w x)`;
//! - rotary embedding `y = x cos + rot(x) sin`, `rot([a, b]) = [-b, a]`: `dx = dy cos +
//!   rot^T(dy sin)`, `rot^T([a, b]) = [b, -a]`;
//! - softmax `P`: `dS = P (dP - sum(dP P))`;
//! - SwiGLU `m = silu(g) u`: `dg = dm u silu'(g)`, `du = dm silu(g)`.
//!
//! The projections and the MLP, nearly all of the arithmetic, run on the real tokens only,
//! gathered out of the padded batch (`real`): a batch of questions of 30 to 80 tokens padded
//! to the longest spends a third of a padded step on padding. Only attention works on the
//! padded layout, where padding is masked. Padding positions pass their input through
//! unchanged; nothing real reads them.
//!
//! `tests/causal_lm.rs` checks values and input gradients against the graph path.

use candle_core::{D, Result, Tensor};

use super::Mode;
use super::causal_lm::{apply_rope, rms_norm};
use crate::frozen::{input_grad_only, linear};

/// The weights of one decoder layer (shared with the layer, not copied).
#[derive(Clone)]
pub(super) struct FrozenLayer {
    pub q: (Tensor, Option<Tensor>),
    pub k: (Tensor, Option<Tensor>),
    pub v: (Tensor, Option<Tensor>),
    pub o: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
    pub input_norm: Tensor,
    pub post_attn_norm: Tensor,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
}

/// What the backward pass reads, from one forward pass. `N` is the number of real tokens.
struct Saved {
    /// The layer's input at the real tokens, `[N, d]`.
    x: Tensor,
    /// Residual stream after attention, `[N, d]`.
    h1: Tensor,
    /// Rotated queries `[B, kv, rep * T, hd]` and keys `[B, kv, T, hd]`, values `[B, kv, T, hd]`.
    q: Tensor,
    k: Tensor,
    v: Tensor,
    /// Attention probabilities `[B, kv, rep * T, T]`.
    probs: Tensor,
    /// MLP branches before the gating, `[N, f]`.
    gate: Tensor,
    up: Tensor,
}

/// `x @ m` over the last dimension of `x`, as one matrix product (`m: [k, n]`): the backward's
/// products with untransposed weights.
fn mm(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let k = dims[dims.len() - 1];
    let rows = x.elem_count() / k.max(1);
    let mut out = dims.to_vec();
    *out.last_mut().expect("a matrix") = m.dim(1)?;
    x.reshape((rows, k))?.matmul(m)?.reshape(out)
}

/// The transpose of [`apply_rope`] (its inverse, too: a rotation).
fn rotate_back(dy: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let s = dy.broadcast_mul(sin)?;
    let half = s.dim(D::Minus1)? / 2;
    let (a, b) = (
        s.narrow(D::Minus1, 0, half)?,
        s.narrow(D::Minus1, half, half)?,
    );
    dy.broadcast_mul(cos)? + Tensor::cat(&[&b, &a.neg()?], D::Minus1)?
}

fn rms_norm_backward(x: &Tensor, w: &Tensor, dy: &Tensor, eps: f64) -> Result<Tensor> {
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    let gw = dy.broadcast_mul(w)?;
    let dot = (&gw * x)?.mean_keepdim(D::Minus1)?;
    gw.broadcast_mul(&r)? - x.broadcast_mul(&(r.powf(3.0)? * dot)?)?
}

impl FrozenLayer {
    /// The layer's output for `x: [B, T, d]` (no KV cache), with `rope` tables `[B, 1, T, hd]`,
    /// the additive attention `bias: [B, 1, T, T]` and the flat indices of the `real` tokens
    /// (u32, `[N]`); backward computes `x`'s gradient only.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        bias: &Tensor,
        real: &Tensor,
    ) -> Result<Tensor> {
        let (out, saved) = self.forward_saving(&x.detach(), rope, bias, real)?;
        let layer = self.clone();
        let (rope, real) = (rope.clone(), real.clone());
        let shape = x.shape().clone();
        input_grad_only(x, out, move |g| {
            layer.backward(&rope, &real, &saved, &g.reshape(shape.clone())?)
        })
    }

    fn forward_saving(
        &self,
        x: &Tensor,
        (cos, sin): &(Tensor, Tensor),
        bias: &Tensor,
        real: &Tensor,
    ) -> Result<(Tensor, Saved)> {
        let (b, t, d) = x.dims3()?;
        let (hd, kv) = (self.head_dim, self.kv_heads);
        let rep = self.heads / kv;
        let flat = x.reshape((b * t, d))?;
        let xr = flat.index_select(real, 0)?;
        // Real rows back into the padded layout (zeros at padding), split into heads.
        let heads = |y: Tensor, h: usize| -> Result<Tensor> {
            Tensor::zeros((b * t, h * hd), y.dtype(), y.device())?
                .index_add(real, &y, 0)?
                .reshape((b, t, h, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let n1 = rms_norm(&xr, &self.input_norm, self.eps, Mode::Infer)?;
        let q = apply_rope(
            &heads(linear(&n1, &self.q.0, self.q.1.as_ref())?, self.heads)?,
            cos,
            sin,
        )?
        .reshape((b, kv, rep * t, hd))?;
        let k = apply_rope(
            &heads(linear(&n1, &self.k.0, self.k.1.as_ref())?, kv)?,
            cos,
            sin,
        )?;
        let v = heads(linear(&n1, &self.v.0, self.v.1.as_ref())?, kv)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?
            .reshape((b, kv, rep, t, t))?
            .broadcast_add(&bias.unsqueeze(2)?)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.reshape((b, kv, rep * t, t))?;
        let attn = probs
            .matmul(&v)?
            .reshape((b, self.heads, t, hd))?
            .transpose(1, 2)?
            .reshape((b * t, self.heads * hd))?
            .index_select(real, 0)?;
        let h1 = (&xr + linear(&attn, &self.o, None)?)?;
        let n2 = rms_norm(&h1, &self.post_attn_norm, self.eps, Mode::Infer)?;
        let gate = linear(&n2, &self.gate, None)?;
        let up = linear(&n2, &self.up, None)?;
        let m = (gate.silu()? * &up)?;
        let delta = ((&h1 + linear(&m, &self.down, None)?)? - &xr)?;
        let out = flat.index_add(real, &delta, 0)?.reshape((b, t, d))?;
        let saved = Saved {
            x: xr,
            h1,
            q,
            k,
            v,
            probs,
            gate,
            up,
        };
        Ok((out, saved))
    }

    fn backward(
        &self,
        (cos, sin): &(Tensor, Tensor),
        real: &Tensor,
        s: &Saved,
        dout: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, d) = dout.dims3()?;
        let (hd, kv) = (self.head_dim, self.kv_heads);
        let rep = self.heads / kv;
        let flat = dout.reshape((b * t, d))?;
        let dout_r = flat.index_select(real, 0)?;
        // MLP: out = h1 + down(silu(gate) * up).
        let dm = mm(&dout_r, &self.down)?;
        let sig = candle_nn::ops::sigmoid(&s.gate)?;
        let silu = (&s.gate * &sig)?;
        let dsilu = (&sig * ((&s.gate * (1.0 - &sig)?)? + 1.0)?)?;
        let dgate = ((&dm * &s.up)? * dsilu)?;
        let dup = (&dm * silu)?;
        let dn2 = (mm(&dgate, &self.gate)? + mm(&dup, &self.up)?)?;
        let dh1 = (&dout_r + rms_norm_backward(&s.h1, &self.post_attn_norm, &dn2, self.eps)?)?;
        // Attention: h1 = x + o(P v), P = softmax(q k^T scale + bias), on the padded layout.
        let dattn = Tensor::zeros((b * t, self.heads * hd), dh1.dtype(), dh1.device())?
            .index_add(real, &mm(&dh1, &self.o)?, 0)?
            .reshape((b, t, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, kv, rep * t, hd))?;
        let dprobs = dattn.matmul(&s.v.t()?)?;
        let dv = s.probs.t()?.matmul(&dattn)?;
        let dot = (&dprobs * &s.probs)?.sum_keepdim(D::Minus1)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let dscores = ((dprobs.broadcast_sub(&dot)? * &s.probs)? * scale)?;
        let dq = dscores.matmul(&s.k)?.reshape((b, self.heads, t, hd))?;
        let dk = dscores.t()?.matmul(&s.q)?;
        // Heads merged and the real rows gathered again.
        let merge = |y: Tensor, h: usize| -> Result<Tensor> {
            y.transpose(1, 2)?
                .contiguous()?
                .reshape((b * t, h * hd))?
                .index_select(real, 0)
        };
        let dq = merge(rotate_back(&dq, cos, sin)?, self.heads)?;
        let dk = merge(rotate_back(&dk, cos, sin)?, kv)?;
        let dv = merge(dv, kv)?;
        let dn1 = ((mm(&dq, &self.q.0)? + mm(&dk, &self.k.0)?)? + mm(&dv, &self.v.0)?)?;
        let dx = (dh1 + rms_norm_backward(&s.x, &self.input_norm, &dn1, self.eps)?)?;
        // Padding passes its gradient straight through, as its values went.
        flat.index_add(real, &(dx - dout_r)?, 0)?.reshape((b, t, d))
    }
}
