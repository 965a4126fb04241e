//! Building blocks shared by the encoders: norms, rotary embeddings, the attention mask and
//! multi-head self-attention.
//!
//! Everything here is written in differentiable forms on purpose. candle 0.11's fused
//! `ops::rms_norm`, `ops::layer_norm`, `ops::softmax_last_dim` and `rotary_emb::rope` have no
//! backward and silently cut the gradient of everything upstream (candle issues #2168, #3569;
//! DESIGN.md "Known traps"); the gradient-check tests in `tests/` guard against regressions.

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{Init, Linear, Module, VarBuilder};

/// Normal initialisation with mean 0.
pub(crate) fn normal(std: f64) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: std,
    }
}

/// A linear layer with weights drawn from `weight_init` and zero bias (if any).
pub(crate) fn linear(
    d_in: usize,
    d_out: usize,
    bias: bool,
    weight_init: Init,
    vb: VarBuilder<'_>,
) -> Result<Linear> {
    let w = vb.get_with_hints((d_out, d_in), "weight", weight_init)?;
    let b = if bias {
        Some(vb.get_with_hints(d_out, "bias", Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// RMSNorm with a learned scale: `x / sqrt(mean(x^2) + eps) * w`.
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder<'_>) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        Ok(RmsNorm { weight, eps })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

/// A linear layer's weight and, when it has one, its bias.
pub(crate) fn linear_params(l: &Linear) -> Vec<Tensor> {
    std::iter::once(l.weight().clone())
        .chain(l.bias().cloned())
        .collect()
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(ms + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)
    }
}

/// LayerNorm, optionally without learned scale and shift (HSTU uses the parameter-free form).
pub(crate) struct LayerNorm {
    affine: Option<(Tensor, Tensor)>,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder<'_>) -> Result<Self> {
        let w = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let b = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(LayerNorm {
            affine: Some((w, b)),
            eps,
        })
    }

    pub fn plain(eps: f64) -> Self {
        LayerNorm { affine: None, eps }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let y = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        match &self.affine {
            Some((w, b)) => y.broadcast_mul(w)?.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Rotary position embedding tables, rotate-half layout: `cos`, `sin` of shape `[T, head_dim]`
/// where dimension `i` and `i + head_dim / 2` share the frequency `base^(-2i / head_dim)`.
#[derive(Clone)]
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Tables in f64 when the model runs in f64 (gradient checks), else in f32: the reference
    /// applies RoPE in fp32 even under mixed precision.
    pub fn new(seq: usize, head_dim: usize, base: f64, dtype: DType, dev: &Device) -> Result<Self> {
        let half = head_dim / 2;
        let mut ang = vec![0f64; seq * head_dim];
        for t in 0..seq {
            for i in 0..half {
                let a = t as f64 * base.powf(-2.0 * i as f64 / head_dim as f64);
                ang[t * head_dim + i] = a;
                ang[t * head_dim + i + half] = a;
            }
        }
        let work = rope_dtype(dtype);
        let ang = Tensor::from_vec(ang, (seq, head_dim), dev)?;
        Ok(Rope {
            cos: ang.cos()?.to_dtype(work)?,
            sin: ang.sin()?.to_dtype(work)?,
        })
    }

    /// Rotates `x: [B, H, T, head_dim]`; returns x's dtype.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(rope_dtype(dtype))?;
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&self.cos)?
            .add(&rotated.broadcast_mul(&self.sin)?)?
            .to_dtype(dtype)
    }
}

fn rope_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Additive attention bias `[B, 1, T, T]`: 0 where query `i` may attend key `j` (`j <= i` and `j`
/// valid), a large negative number elsewhere. A finite value rather than -inf keeps rows with no
/// allowed key (padding rows of an empty sequence) finite instead of NaN.
pub(crate) fn causal_padding_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    let dev = mask.device();
    let causal: Vec<u8> = (0..t * t).map(|k| u8::from(k % t <= k / t)).collect();
    let causal = Tensor::from_vec(causal, (1, 1, t, t), dev)?;
    let keys = mask.ne(0.0)?.reshape((b, 1, 1, t))?;
    let allowed = causal.broadcast_mul(&keys)?;
    let zeros = Tensor::zeros((b, 1, t, t), mask.dtype(), dev)?;
    let blocked = Tensor::full(-1e9f32, (b, 1, t, t), dev)?.to_dtype(mask.dtype())?;
    allowed
        .broadcast_as((b, 1, t, t))?
        .where_cond(&zeros, &blocked)
}

/// Multi-head self-attention with optional RoPE on queries and keys.
pub(crate) struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    dropout: f32,
}

impl SelfAttention {
    /// The projections' weights and biases.
    pub fn params(&self) -> Vec<Tensor> {
        [&self.q, &self.k, &self.v, &self.o]
            .into_iter()
            .flat_map(linear_params)
            .collect()
    }
}

/// How to initialise and shape a [`SelfAttention`].
pub(crate) struct AttentionSpec {
    pub width: usize,
    pub heads: usize,
    pub bias: bool,
    pub dropout: f32,
    pub init: Init,
    pub out_init: Init,
}

impl SelfAttention {
    pub fn new(spec: &AttentionSpec, vb: VarBuilder<'_>) -> Result<Self> {
        let d = spec.width;
        Ok(SelfAttention {
            q: linear(d, d, spec.bias, spec.init, vb.pp("q"))?,
            k: linear(d, d, spec.bias, spec.init, vb.pp("k"))?,
            v: linear(d, d, spec.bias, spec.init, vb.pp("v"))?,
            o: linear(d, d, spec.bias, spec.out_init, vb.pp("o"))?,
            heads: spec.heads,
            dropout: spec.dropout,
        })
    }

    /// `x: [B, T, d]`, `bias: [B, 1, T, T]` -> `[B, T, d]`.
    pub fn forward(
        &self,
        x: &Tensor,
        bias: &Tensor,
        rope: Option<&Rope>,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_kv(x, x, bias, rope, train)
    }

    /// Attention with queries from `x` and keys and values from `kv` (same shape): the SASRec
    /// authors' blocks normalise only the queries.
    pub fn forward_kv(
        &self,
        x: &Tensor,
        kv: &Tensor,
        bias: &Tensor,
        rope: Option<&Rope>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.heads;
        let split = |y: Tensor| -> Result<Tensor> {
            y.reshape((b, t, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let mut q = split(self.q.forward(x)?)?;
        let mut k = split(self.k.forward(kv)?)?;
        let v = split(self.v.forward(kv)?)?;
        if let Some(rope) = rope {
            q = rope.apply(&q)?;
            k = rope.apply(&k)?;
        }
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(bias)?;
        let probs = dropout(
            &candle_nn::ops::softmax(&scores, D::Minus1)?,
            self.dropout,
            train,
        )?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.o.forward(&out)
    }
}

thread_local! {
    /// The dropout stream of the current forward pass: a seed and a call counter.
    static DROPOUT_STREAM: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
}

/// Seeds the dropout masks of the forward passes that follow on this thread: every dropout call
/// draws its mask from `(seed, n)` for the n-th call, so a training step with the same seed
/// (a resumed run repeating it) draws the same masks. candle's own dropout uses a generator
/// that cannot be seeded.
pub fn seed_dropout(seed: u64) {
    DROPOUT_STREAM.with(|s| s.set(Some((seed, 0))));
}

/// Where the seeded dropout stream stands (None: unseeded).
pub(crate) fn dropout_stream() -> Option<(u64, u64)> {
    DROPOUT_STREAM.with(|s| s.get())
}

/// Moves the dropout stream, to draw a block's masks again when recomputing it.
pub(crate) fn set_dropout_stream(state: Option<(u64, u64)>) {
    DROPOUT_STREAM.with(|s| s.set(state));
}

/// Inverted dropout in training, identity otherwise (and when `p == 0`, so gradient checks
/// are deterministic). Masks come from the seeded stream ([`seed_dropout`]) when one is set.
pub(crate) fn dropout(x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
    if !train || p <= 0.0 {
        return Ok(x.clone());
    }
    let Some((seed, n)) = DROPOUT_STREAM.with(|s| s.get()) else {
        return candle_nn::ops::dropout(x, p);
    };
    DROPOUT_STREAM.with(|s| s.set(Some((seed, n + 1))));
    let mut rng = uqa_data::rng::Rng::derive(seed, 0xD0_0000 + n);
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.uniform() >= p as f64 { keep } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

/// A biased linear layer with PyTorch's default `nn.Linear` initialisation (weights and bias
/// uniform in `+-1/sqrt(d_in)`), which the reference uses for the input projection and the head.
pub(crate) fn torch_linear(d_in: usize, d_out: usize, vb: VarBuilder<'_>) -> Result<Linear> {
    let bound = 1.0 / (d_in as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let w = vb.get_with_hints((d_out, d_in), "weight", init)?;
    let b = vb.get_with_hints(d_out, "bias", init)?;
    Ok(Linear::new(w, Some(b)))
}

/// Splits `x: [B, T, ...]` into its T time steps `[B, ...]`, for step-by-step recurrences.
///
/// candle's backward of `narrow` materialises a zero-padded gradient of the *whole* input for
/// every slice, so slicing T steps directly costs O(T^2) memory traffic in backward (seconds
/// per step at T = 128 for GRU4Rec and Mamba4Rec). Slicing in two levels (about sqrt(T) blocks,
/// then steps within a block) brings that to O(T^1.5).
pub(crate) fn time_steps(x: &Tensor) -> Result<Vec<Tensor>> {
    let t = x.dim(1)?;
    let block = (t as f64).sqrt().ceil().max(1.0) as usize;
    let mut steps = Vec::with_capacity(t);
    for b0 in (0..t).step_by(block) {
        let len = block.min(t - b0);
        let blk = x.narrow(1, b0, len)?;
        for s in 0..len {
            steps.push(blk.narrow(1, s, 1)?.squeeze(1)?);
        }
    }
    Ok(steps)
}
