//! GGUF files (llama.cpp's format): the model configuration from the metadata, the weights
//! dequantised to f32 under their Hugging Face names, the tokenizer and the chat template.
//!
//! llama.cpp's converter permutes the rows of the q and k projections of the `llama`
//! architecture so that its interleaved ("GPT-J") RoPE computes what Hugging Face's rotate-half
//! RoPE computes; we use rotate-half, so that permutation is undone here. `qwen2` is stored
//! unpermuted (llama.cpp runs it with NEOX RoPE, which is rotate-half).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use tokenizers::Tokenizer;

use super::expected::check_tensors;
use crate::error::{CandleContext, ModelError, Result};
use crate::llm::causal_lm::CausalLm;
use crate::llm::config::{Architecture, LlmConfig};

/// An opened GGUF file: its metadata and tensor directory (tensor data is read on load).
pub struct GgufFile {
    path: PathBuf,
    content: Content,
}

/// llama.cpp tensor names (after `blk.N.`) and their Hugging Face counterparts (after
/// `model.layers.N.`).
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The Hugging Face name of a llama.cpp tensor name, if the model uses that tensor.
fn hf_name(gguf: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let (_, hf) = LAYER_NAMES.iter().find(|(g, _)| *g == module)?;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The llama.cpp name of a Hugging Face tensor name (for error messages).
fn gguf_name(hf: &str) -> String {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == hf) {
        return g.to_string();
    }
    let parsed = hf.strip_prefix("model.layers.").and_then(|rest| {
        let (layer, rest) = rest.split_once('.')?;
        let (module, kind) = rest.rsplit_once('.')?;
        let (g, _) = LAYER_NAMES.iter().find(|(_, h)| *h == module)?;
        Some(format!("blk.{layer}.{g}.{kind}"))
    });
    parsed.unwrap_or_else(|| hf.to_string())
}

/// Storage types we dequantise. Q8_1 and Q8_K are llama.cpp's internal dot-product formats,
/// never used to store weights, and Hugging Face cannot dequantise them (no reference).
fn supported(dtype: GgmlDType) -> bool {
    !matches!(dtype, GgmlDType::Q8_1 | GgmlDType::Q8K)
}

/// Names of the ggml type ids candle does not know (ggml.h), for error messages.
fn ggml_type_name(id: u32) -> String {
    let name = match id {
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => "unknown",
    };
    format!("{name} (ggml type {id})")
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

/// A number; f32 values are read back as the shortest decimal that rounds to them (the value
/// the converter wrote, e.g. `1e-6` from `config.json`), not as the widened binary f32.
fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => x.to_string().parse().ok(),
        Value::F64(x) => Some(*x),
        other => as_u64(other).map(|x| x as f64),
    }
}

impl GgufFile {
    /// Reads the header (metadata and tensor directory) of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path)
            .map_err(|e| ModelError::model_file(path, format!("cannot open: {e}")))?;
        let content = match Content::read(&mut file) {
            Ok(c) => c,
            Err(e) => {
                // candle refuses type ids it does not know while reading the directory, without
                // naming the tensor; find it ourselves for a useful message.
                if let Some((tensor, id)) = first_unknown_type(path) {
                    return Err(ModelError::tensor(
                        path,
                        tensor,
                        format!(
                            "stored as {}, which this loader cannot dequantise",
                            ggml_type_name(id)
                        ),
                    ));
                }
                return Err(ModelError::model_file(
                    path,
                    format!("not a readable GGUF file: {e}"),
                ));
            }
        };
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value, if present.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn meta_err(&self, key: &str, reason: impl Into<String>) -> ModelError {
        ModelError::config(format!("{}: {key}", self.path.display()), reason)
    }

    pub(crate) fn meta_str(&self, key: &str) -> Result<&str> {
        match self.metadata(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.meta_err(key, "is not a string")),
            None => Err(self.meta_err(key, "missing")),
        }
    }

    fn meta_usize(&self, key: &str) -> Result<usize> {
        let v = self
            .metadata(key)
            .ok_or_else(|| self.meta_err(key, "missing"))?;
        as_u64(v)
            .map(|x| x as usize)
            .ok_or_else(|| self.meta_err(key, format!("is not a non-negative integer: {v:?}")))
    }

    fn meta_f64(&self, key: &str) -> Result<Option<f64>> {
        self.metadata(key)
            .map(|v| as_f64(v).ok_or_else(|| self.meta_err(key, format!("is not a number: {v:?}"))))
            .transpose()
    }

    /// `general.architecture`, refused unless it is one we reproduce.
    pub fn architecture(&self) -> Result<Architecture> {
        match self.meta_str("general.architecture")? {
            "qwen2" => Ok(Architecture::Qwen2),
            "llama" => Ok(Architecture::Llama),
            other => Err(ModelError::model_file(
                &self.path,
                format!("unsupported architecture `{other}` (supported: qwen2, llama)"),
            )),
        }
    }

    /// The token strings of `tokenizer.ggml.tokens`.
    pub(crate) fn tokens(&self) -> Result<Vec<&str>> {
        let key = "tokenizer.ggml.tokens";
        let Some(Value::Array(items)) = self.metadata(key) else {
            return Err(self.meta_err(key, "missing or not an array"));
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(self.meta_err(key, "holds a non-string")),
            })
            .collect()
    }

    /// The model configuration from the `{arch}.*` metadata. The vocabulary is the token list
    /// (Qwen's includes its padding entries, matching the embedding rows); the output table is
    /// tied iff there is no `output.weight`; generation stops at the EOS token and at
    /// `<|im_end|>` when the vocabulary has it.
    pub fn config(&self) -> Result<LlmConfig> {
        let architecture = self.architecture()?;
        let arch = self.meta_str("general.architecture")?;
        let key = |k: &str| format!("{arch}.{k}");
        if let Some(Value::String(kind)) = self.metadata(&key("rope.scaling.type"))
            && kind != "none"
        {
            return Err(self.meta_err(
                &key("rope.scaling.type"),
                format!("RoPE scaling `{kind}` is not supported"),
            ));
        }
        if self.content.tensor_infos.contains_key("rope_freqs.weight") {
            return Err(ModelError::tensor(
                &self.path,
                "rope_freqs.weight",
                "RoPE frequency scaling (Llama 3.1 style) is not supported",
            ));
        }
        let tokens = self.tokens().ok();
        let vocab_size = match &tokens {
            Some(t) => t.len(),
            None => self.meta_usize(&key("vocab_size"))?,
        };
        let mut stop_token_ids = Vec::new();
        if let Some(eos) = self
            .metadata("tokenizer.ggml.eos_token_id")
            .and_then(as_u64)
        {
            stop_token_ids.push(eos as u32);
        }
        if let Some(im_end) = tokens
            .as_ref()
            .and_then(|t| t.iter().position(|s| *s == "<|im_end|>"))
            && !stop_token_ids.contains(&(im_end as u32))
        {
            stop_token_ids.push(im_end as u32);
        }
        let heads = self.meta_usize(&key("attention.head_count"))?;
        let cfg = LlmConfig {
            architecture,
            vocab_size,
            hidden_size: self.meta_usize(&key("embedding_length"))?,
            intermediate_size: self.meta_usize(&key("feed_forward_length"))?,
            num_hidden_layers: self.meta_usize(&key("block_count"))?,
            num_attention_heads: heads,
            num_key_value_heads: match self.metadata(&key("attention.head_count_kv")) {
                Some(_) => self.meta_usize(&key("attention.head_count_kv"))?,
                None => heads,
            },
            rms_norm_eps: self
                .meta_f64(&key("attention.layer_norm_rms_epsilon"))?
                .ok_or_else(|| {
                    self.meta_err(&key("attention.layer_norm_rms_epsilon"), "missing")
                })?,
            rope_theta: self.meta_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            max_position_embeddings: match self.metadata(&key("context_length")) {
                Some(_) => self.meta_usize(&key("context_length"))?,
                None => 32_768,
            },
            tie_word_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
            attention_bias: architecture == Architecture::Qwen2
                || self.content.tensor_infos.contains_key("blk.0.attn_q.bias"),
            stop_token_ids,
        };
        cfg.validate().map_err(|e| match e {
            ModelError::Config { field, reason } => {
                ModelError::config(format!("{}: {field}", self.path.display()), reason)
            }
            other => other,
        })?;
        if let Some(Value::U32(_) | Value::U64(_) | Value::I32(_)) =
            self.metadata(&key("rope.dimension_count"))
        {
            let dims = self.meta_usize(&key("rope.dimension_count"))?;
            if dims != cfg.head_dim() {
                return Err(self.meta_err(
                    &key("rope.dimension_count"),
                    format!(
                        "partial RoPE ({dims} of {} head dimensions) is not supported",
                        cfg.head_dim()
                    ),
                ));
            }
        }
        Ok(cfg)
    }

    /// `tokenizer.chat_template` (a Jinja template), if the file has one.
    pub fn chat_template(&self) -> Option<&str> {
        match self.metadata("tokenizer.chat_template") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The tokenizer described by the `tokenizer.ggml.*` metadata.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        super::tokenizer::from_gguf(self)
    }

    /// Loads the model, every tensor dequantised to f32, on `device`.
    pub fn load_model(&self, device: &Device) -> Result<CausalLm> {
        let (cfg, tensors) = self.load_weights(device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        CausalLm::new(&cfg, vb).ctx(&format!(
            "loading the causal LM from {}",
            self.path.display()
        ))
    }

    /// The configuration and the dequantised f32 weights under Hugging Face names; callers
    /// that train the LLM turn them into variables.
    pub fn load_weights(&self, device: &Device) -> Result<(LlmConfig, HashMap<String, Tensor>)> {
        let cfg = self.config()?;
        let mut found = HashMap::new();
        let mut names = Vec::new();
        for (name, info) in &self.content.tensor_infos {
            let Some(hf) = hf_name(name) else {
                return Err(ModelError::tensor(
                    &self.path,
                    name,
                    "not a tensor of the qwen2 / llama layout this loader knows",
                ));
            };
            if !supported(info.ggml_dtype) {
                return Err(ModelError::tensor(
                    &self.path,
                    name,
                    format!(
                        "stored as {:?}, which this loader cannot dequantise",
                        info.ggml_dtype
                    ),
                ));
            }
            found.insert(hf.clone(), (info.shape.dims().to_vec(), self.path.clone()));
            names.push((name.clone(), hf));
        }
        check_tensors(&cfg, &found, &self.path, gguf_name)?;
        // Tensors are read and dequantised in parallel (each worker with its own file handle):
        // dequantisation is single-threaded per tensor in candle and dominates load time.
        let tensors = names
            .into_par_iter()
            .map_init(
                || File::open(&self.path),
                |file, (name, hf)| {
                    let file = file.as_mut().map_err(|e| {
                        ModelError::model_file(&self.path, format!("cannot open: {e}"))
                    })?;
                    let t = self.read_f32(file, &name, &cfg, device)?;
                    Ok((hf, t))
                },
            )
            .collect::<Result<HashMap<String, Tensor>>>()?;
        Ok((cfg, tensors))
    }
}

impl GgufFile {
    /// One tensor, dequantised to f32 on `device`, with llama's q/k permutation undone.
    fn read_f32(
        &self,
        file: &mut File,
        name: &str,
        cfg: &LlmConfig,
        device: &Device,
    ) -> Result<Tensor> {
        let ctx = || format!("{}: tensor `{name}`", self.path.display());
        let t = self
            .content
            .tensor(file, name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .ctx(&ctx())?;
        let heads = match cfg.architecture {
            Architecture::Llama if name.contains(".attn_q.") => Some(cfg.num_attention_heads),
            Architecture::Llama if name.contains(".attn_k.") => Some(cfg.num_key_value_heads),
            _ => None,
        };
        let t = match heads {
            Some(h) => unpermute(&t, h).ctx(&ctx())?,
            None => t,
        };
        t.to_dtype(DType::F32)
            .and_then(|t| t.to_device(device))
            .ctx(&ctx())
    }
}

/// Undoes llama.cpp's `permute(w, n_head)`: its rows, per head, go from `[2, hd/2]` order
/// (rotate-half pairs `i`, `i + hd/2`) to `[hd/2, 2]` order (adjacent pairs); this is the
/// inverse, for weights `[n_head * hd, d]` and biases `[n_head * hd]`.
fn unpermute(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let half = rows / heads / 2;
    let rest: usize = dims[1..].iter().product();
    t.reshape((heads, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// Walks the header of a GGUF v2/v3 file to the first tensor whose type id candle does not
/// know; `None` if the header cannot be walked or every type is known.
fn first_unknown_type(path: &Path) -> Option<(String, u32)> {
    let mut r = std::io::BufReader::new(File::open(path).ok()?);
    let u32_ = |r: &mut dyn Read| -> Option<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).ok()?;
        Some(u32::from_le_bytes(b))
    };
    let u64_ = |r: &mut dyn Read| -> Option<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).ok()?;
        Some(u64::from_le_bytes(b))
    };
    let string = |r: &mut dyn Read| -> Option<String> {
        let n = u64_(r)?;
        if n > 1 << 20 {
            return None;
        }
        let mut b = vec![0u8; n as usize];
        r.read_exact(&mut b).ok()?;
        String::from_utf8(b).ok()
    };
    fn skip(r: &mut std::io::BufReader<File>, ty: u32, depth: usize) -> Option<()> {
        let fixed = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                let mut b = [0u8; 8];
                r.read_exact(&mut b).ok()?;
                return r
                    .seek(SeekFrom::Current(
                        i64::try_from(u64::from_le_bytes(b)).ok()?,
                    ))
                    .ok()
                    .map(|_| ());
            }
            9 if depth < 8 => {
                let mut b = [0u8; 4];
                r.read_exact(&mut b).ok()?;
                let inner = u32::from_le_bytes(b);
                let mut n = [0u8; 8];
                r.read_exact(&mut n).ok()?;
                for _ in 0..u64::from_le_bytes(n) {
                    skip(r, inner, depth + 1)?;
                }
                return Some(());
            }
            _ => return None,
        };
        r.seek_relative(fixed).ok()
    }
    if u32_(&mut r)? != 0x4655_4747 || !matches!(u32_(&mut r)?, 2 | 3) {
        return None;
    }
    let tensors = u64_(&mut r)?;
    let kvs = u64_(&mut r)?;
    for _ in 0..kvs {
        string(&mut r)?;
        let ty = u32_(&mut r)?;
        skip(&mut r, ty, 0)?;
    }
    for _ in 0..tensors {
        let name = string(&mut r)?;
        let dims = u32_(&mut r)?;
        if dims > 4 {
            return None;
        }
        r.seek_relative(8 * dims as i64).ok()?;
        let ty = u32_(&mut r)?;
        u64_(&mut r)?;
        let known = matches!(ty, 0..=3 | 6..=15 | 30);
        if !known {
            return Some((name, ty));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (g, h) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"),
            (
                "blk.0.ffn_norm.weight",
                "model.layers.0.post_attention_layernorm.weight",
            ),
            ("output.weight", "lm_head.weight"),
        ] {
            assert_eq!(hf_name(g).as_deref(), Some(h));
            assert_eq!(gguf_name(h), g);
        }
        assert_eq!(hf_name("blk.0.attn_qkv.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, hd/2, d).swapaxes(1, 2).reshape(w.shape)
        let (heads, hd, d) = (2usize, 4usize, 3usize);
        let w = Tensor::arange(0f32, (heads * hd * d) as f32, &Device::Cpu)
            .unwrap()
            .reshape((heads * hd, d))
            .unwrap();
        let permuted = w
            .reshape((heads, 2, hd / 2, d))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((heads * hd, d))
            .unwrap();
        let back = unpermute(&permuted, heads).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }
}
