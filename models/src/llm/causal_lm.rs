//! A decoder-only causal LM of the Qwen2 / Llama families, written for soft prompts: the forward
//! pass starts from `inputs_embeds` (so encoder-made vectors can sit among token embeddings),
//! takes a [`TokenMask`] for left or right padding, fills an optional [`KvCache`], and returns
//! hidden states; logits are computed only for the rows the caller asks for.
//!
//! Parameter names follow Hugging Face (`model.layers.0.self_attn.q_proj.weight`, ...), so a
//! safetensors checkpoint loads through a plain `VarBuilder`. Training uses differentiable ops;
//! [`Mode::Infer`] switches to candle's fused kernels, which have no backward (DESIGN.md "Known
//! traps").

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::config::LlmConfig;
use super::frozen_layer::FrozenLayer;
use super::mask::TokenMask;
use crate::frozen;

/// Whether gradients must flow through the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Differentiable ops everywhere (alignment training).
    Train,
    /// Fused kernels without backward (evaluation, generation).
    Infer,
}

/// Keys and values of every layer for the tokens seen so far, `[B, kv_heads, S, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// RMS norm; [`Mode::Infer`] takes candle's fused kernel (no backward; none for f64).
pub(super) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer if x.dtype() != DType::F64 => candle_nn::ops::rms_norm(x, weight, eps as f32),
        _ => {
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            frozen::broadcast_mul(&x.broadcast_div(&(ms + eps)?.sqrt()?)?, weight)
        }
    }
}

fn softmax(x: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => candle_nn::ops::softmax_last_dim(x),
        Mode::Train => candle_nn::ops::softmax(x, D::Minus1),
    }
}

/// `cos`, `sin` of shape `[B, 1, T, head_dim]` (rotate-half layout) for the given positions.
fn rope_tables(
    positions: &[u32],
    rows: usize,
    head_dim: usize,
    theta: f64,
    dtype: DType,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f64> = (0..half)
        .map(|i| theta.powf(-2.0 * i as f64 / head_dim as f64))
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * head_dim);
    let mut sin = Vec::with_capacity(positions.len() * head_dim);
    for &p in positions {
        for _ in 0..2 {
            for f in &inv {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
    }
    let t = positions.len() / rows.max(1);
    let shape = (rows, 1, t, head_dim);
    Ok((
        Tensor::from_vec(cos, shape, dev)?.to_dtype(dtype)?,
        Tensor::from_vec(sin, shape, dev)?.to_dtype(dtype)?,
    ))
}

pub(super) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    frozen::broadcast_mul(x, cos)?.add(&frozen::broadcast_mul(&rotated, sin)?)
}

/// A projection `x W^T + b`. Through [`frozen::linear`], so a frozen LLM's backward computes
/// only activation gradients.
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        frozen::linear(x, &self.weight, self.bias.as_ref())
    }
}

fn linear(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder<'_>) -> Result<Linear> {
    // Hugging Face's `initializer_range` (0.02) for freshly built models; ignored when loading.
    let w = vb.get_with_hints(
        (d_out, d_in),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
    )?;
    let b = if bias {
        Some(vb.get_with_hints(d_out, "bias", Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Linear { weight: w, bias: b })
}

/// Low-rank adaptation (Hu et al. 2021) of a frozen projection: `W x + (alpha / r) B A x`, with
/// `A` Kaiming-uniform and `B` zero so training starts from the unadapted model.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
        }
    }
}

struct Lora {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

impl Lora {
    fn new(cfg: LoraConfig, d_in: usize, d_out: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Lora {
            a: vb.get_with_hints(
                (cfg.rank, d_in),
                "lora_A",
                candle_nn::init::DEFAULT_KAIMING_UNIFORM,
            )?,
            b: vb.get_with_hints((d_out, cfg.rank), "lora_B", Init::Const(0.0))?,
            scale: cfg.alpha / cfg.rank as f64,
        })
    }
}

/// A projection with an optional LoRA branch.
struct Projection {
    base: Linear,
    lora: Option<Lora>,
}

impl Projection {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.base.forward(x)?;
        match &self.lora {
            None => Ok(y),
            Some(l) => {
                let low = frozen::linear(&frozen::linear(x, &l.a, None)?, &l.b, None)?;
                y + (low * l.scale)?
            }
        }
    }
}

struct Attention {
    q: Projection,
    k: Linear,
    v: Projection,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(
        cfg: &LlmConfig,
        vb: VarBuilder<'_>,
        lora: Option<(LoraConfig, VarBuilder)>,
    ) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let kv = cfg.num_key_value_heads * hd;
        let q_out = cfg.num_attention_heads * hd;
        let adapt = |name: &str, d_out: usize| -> Result<Option<Lora>> {
            lora.as_ref()
                .map(|(c, lvb)| Lora::new(*c, d, d_out, lvb.pp(name)))
                .transpose()
        };
        Ok(Attention {
            q: Projection {
                base: linear(d, q_out, cfg.attention_bias, vb.pp("q_proj"))?,
                lora: adapt("q_proj", q_out)?,
            },
            k: linear(d, kv, cfg.attention_bias, vb.pp("k_proj"))?,
            v: Projection {
                base: linear(d, kv, cfg.attention_bias, vb.pp("v_proj"))?,
                lora: adapt("v_proj", kv)?,
            },
            o: linear(cfg.num_attention_heads * hd, d, false, vb.pp("o_proj"))?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
        })
    }

    /// `x: [B, T, d]`; `bias: [B, 1, T, S]` with `S` = cached + `T`.
    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        bias: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let hd = self.head_dim;
        let split = |y: Tensor, h: usize| -> Result<Tensor> {
            y.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = apply_rope(&split(self.q.forward(x)?, self.heads)?, &rope.0, &rope.1)?;
        let mut k = apply_rope(&split(self.k.forward(x)?, self.kv_heads)?, &rope.0, &rope.1)?;
        let mut v = split(self.v.forward(x)?, self.kv_heads)?;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let s = k.dim(2)?;
        // Grouped-query attention without copying keys: the `rep` query heads sharing a
        // key-value head are stacked along the time axis of one batched matmul.
        let rep = self.heads / self.kv_heads;
        let q = q.reshape((b, self.kv_heads, rep * t, hd))?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.reshape((
            b,
            self.kv_heads,
            rep,
            t,
            s,
        ))?;
        let scores = frozen::broadcast_add(&scores, &bias.unsqueeze(2)?)?;
        let probs = softmax(&scores, mode)?.reshape((b, self.kv_heads, rep * t, s))?;
        let out = probs
            .matmul(&v)?
            .reshape((b, self.heads, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, self.heads * hd))?;
        self.o.forward(&out)
    }
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn new(cfg: &LlmConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate: linear(d, f, false, vb.pp("gate_proj"))?,
            up: linear(d, f, false, vb.pp("up_proj"))?,
            down: linear(f, d, false, vb.pp("down_proj"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down
            .forward(&(self.gate.forward(x)?.silu()? * self.up.forward(x)?)?)
    }
}

struct DecoderLayer {
    attn: Attention,
    mlp: Mlp,
    input_norm: Tensor,
    post_attn_norm: Tensor,
    /// The same weights as one op with an input-only backward, when none of them trains.
    frozen: Option<FrozenLayer>,
}

impl DecoderLayer {
    fn new(
        cfg: &LlmConfig,
        vb: VarBuilder<'_>,
        lora: Option<(LoraConfig, VarBuilder)>,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let ones = Init::Const(1.0);
        let mut layer = DecoderLayer {
            attn: Attention::new(cfg, vb.pp("self_attn"), lora)?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_norm: vb.get_with_hints(d, "input_layernorm.weight", ones)?,
            post_attn_norm: vb.get_with_hints(d, "post_attention_layernorm.weight", ones)?,
            frozen: None,
        };
        layer.frozen = layer.as_frozen(cfg.rms_norm_eps);
        Ok(layer)
    }

    /// The layer as a [`FrozenLayer`] when no weight of it trains (no LoRA, no variables).
    fn as_frozen(&self, eps: f64) -> Option<FrozenLayer> {
        let (a, m) = (&self.attn, &self.mlp);
        if a.q.lora.is_some() || a.v.lora.is_some() || a.o.bias.is_some() {
            return None;
        }
        let pair = |l: &Linear| (l.weight.clone(), l.bias.clone());
        let f = FrozenLayer {
            q: pair(&a.q.base),
            k: pair(&a.k),
            v: pair(&a.v.base),
            o: a.o.weight.clone(),
            gate: m.gate.weight.clone(),
            up: m.up.weight.clone(),
            down: m.down.weight.clone(),
            input_norm: self.input_norm.clone(),
            post_attn_norm: self.post_attn_norm.clone(),
            heads: a.heads,
            kv_heads: a.kv_heads,
            head_dim: a.head_dim,
            eps,
        };
        let weights = [&f.q.0, &f.k.0, &f.v.0, &f.o, &f.gate, &f.up, &f.down];
        let norms = [&f.input_norm, &f.post_attn_norm];
        let biases = [&f.q.1, &f.k.1, &f.v.1];
        let trains = weights.iter().chain(&norms).any(|t| t.track_op())
            || biases
                .iter()
                .any(|b| b.as_ref().is_some_and(|b| b.track_op()));
        (!trains).then_some(f)
    }
}

/// The causal LM.
pub struct CausalLm {
    cfg: LlmConfig,
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: Option<Tensor>,
}

impl CausalLm {
    /// Builds the model from `vb` at the root of a Hugging Face checkpoint's name space.
    pub fn new(cfg: &LlmConfig, vb: VarBuilder<'_>) -> Result<Self> {
        Self::with_lora(cfg, vb, None)
    }

    /// Builds the model with LoRA branches on the q and v projections of every layer, their
    /// weights from `lora.1` (named like the projections: `model.layers.0.self_attn.q_proj.lora_A`).
    pub fn with_lora(
        cfg: &LlmConfig,
        vb: VarBuilder<'_>,
        lora: Option<(LoraConfig, VarBuilder)>,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let m = vb.pp("model");
        let embed = m.get_with_hints(
            (cfg.vocab_size, d),
            "embed_tokens.weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = m.pp(format!("layers.{i}"));
                let lora_vb = lora
                    .as_ref()
                    .map(|(c, lvb)| (*c, lvb.pp(format!("model.layers.{i}.self_attn"))));
                DecoderLayer::new(cfg, l, lora_vb)
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = m.get_with_hints(d, "norm.weight", Init::Const(1.0))?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(vb.get_with_hints(
                (cfg.vocab_size, d),
                "lm_head.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?)
        };
        Ok(CausalLm {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// Token embeddings `[B, T, d]` of `ids: [B, T]` (u32).
    pub fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden_size))
    }

    /// The output projection `[V, d]` (the embedding table when tied).
    pub fn output_table(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Final hidden states `[B, T, d]` of the new tokens `x: [B, T, d]`. `mask` covers the
    /// cached prefix and the new tokens (`mask.len() == cache.len() + T`).
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &TokenMask,
        mut cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let cached = cache.as_ref().map_or(0, |c| c.len());
        if mask.rows() != b || mask.len() != cached + t {
            candle_core::bail!(
                "token mask is {}x{} but the input is {b}x{t} with {cached} cached positions",
                mask.rows(),
                mask.len()
            );
        }
        let rope = rope_tables(
            &mask.positions(t),
            b,
            self.cfg.head_dim(),
            self.cfg.rope_theta,
            x.dtype(),
            x.device(),
        )?;
        let bias = mask.attention_bias(t, x.dtype(), x.device())?;
        let eps = self.cfg.rms_norm_eps;
        let real = Tensor::new(mask.real_positions(), x.device())?;
        let mut h = x.contiguous()?;
        for (i, layer) in self.layers.iter().enumerate() {
            // Training through a frozen layer (the soft tokens need gradients, the weights do
            // not): one op that keeps only what the input's gradient needs.
            if let (Mode::Train, None, Some(frozen)) = (mode, cache.as_ref(), &layer.frozen)
                && h.track_op()
            {
                h = frozen.forward(&h, &rope, &bias, &real)?;
                continue;
            }
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let a = layer.attn.forward(
                &rms_norm(&h, &layer.input_norm, eps, mode)?,
                &rope,
                &bias,
                slot,
                mode,
            )?;
            h = (h + a)?;
            let f = layer
                .mlp
                .forward(&rms_norm(&h, &layer.post_attn_norm, eps, mode)?)?;
            h = (h + f)?;
        }
        rms_norm(&h, &self.norm, eps, mode)
    }

    /// Logits `[N, V]` of hidden rows `h: [N, d]`.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        frozen::linear(h, self.output_table(), None)
    }

    /// A fresh cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.num_hidden_layers)
    }
}
