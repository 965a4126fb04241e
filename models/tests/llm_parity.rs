//! Parity of the causal LM with Hugging Face transformers, through both loaders, on small random
//! Qwen2 (tied and untied output) and Llama models; and the loaders' errors on bad input.
//!
//! Fixtures: `models/tests/fixtures/llm/<name>/` from `models/scripts/gen_llm_fixtures.py tiny`
//! (config.json + safetensors, the same weights as an f32 GGUF with llama.cpp's names and q/k
//! permutation, and HF's logits for a left- and a right-padded batch).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, IndexOp, Tensor};
use uqa_models::error::ModelError;
use uqa_models::llm::{
    CausalLm, GgufFile, LlmConfig, Mode, Padding, TokenMask, check_tokenizer, load_hf_dir,
};
use uqa_testkit::Category;

const MODELS: [&str; 3] = ["qwen2_tied", "qwen2_untied", "llama"];
const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llm")
        .join(name)
}

/// A fresh scratch directory under the system temp dir.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uqa-llm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Largest logit difference to HF over the valid positions of both reference batches, with
/// `cached`: the left-padded batch is also decoded as a prefill plus one-token cached steps.
fn check_against_reference(lm: &CausalLm, name: &str, how: &str) {
    let dev = Device::Cpu;
    let reference =
        candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &dev).unwrap();
    for side in ["left", "right"] {
        let get = |k: &str| reference[&format!("{side}.{k}")].clone();
        let mask_t: Vec<Vec<i64>> = get("mask").to_vec2().unwrap();
        let lengths: Vec<usize> = mask_t
            .iter()
            .map(|r| r.iter().filter(|v| **v == 1).count())
            .collect();
        let padding = if side == "left" {
            Padding::Left
        } else {
            Padding::Right
        };
        let mask = TokenMask::from_lengths(&lengths, padding);
        for (r, row) in mask_t.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert_eq!(mask.is_valid(r, c), *v == 1, "{name} {side} mask layout");
            }
        }
        let embeds = get("inputs_embeds");
        let x = if side == "left" {
            // Token embeddings of real ids: checks embed_tokens against HF too.
            let ids = get("ids").to_dtype(DType::U32).unwrap();
            let x = lm.embed_tokens(&ids).unwrap();
            assert!(max_abs(&x, &embeds) < 1e-6, "{name} ({how}) embed_tokens");
            x
        } else {
            embeds
        };
        let want = get("logits");
        let (b, t, v) = want.dims3().unwrap();
        for mode in [Mode::Infer, Mode::Train] {
            let h = lm.forward(&x, &mask, None, mode).unwrap();
            let logits = lm
                .logits(&h.reshape((b * t, h.dim(2).unwrap())).unwrap())
                .unwrap()
                .reshape((b, t, v))
                .unwrap();
            let mut worst = 0f32;
            for r in 0..b {
                for c in 0..t {
                    if mask.is_valid(r, c) {
                        worst = worst.max(max_abs(
                            &logits.i((r, c)).unwrap(),
                            &want.i((r, c)).unwrap(),
                        ));
                    }
                }
            }
            assert!(
                worst < TOL,
                "{name} ({how}, {side}-padded, {mode:?}): max logit difference {worst} to HF"
            );
        }
        if side == "left" {
            // Prefill, then one column at a time with the cache.
            let mut cache = lm.new_cache();
            // Every row must be real from `pre` on: `TokenMask::extend` appends real tokens.
            let pre = t - lengths.iter().copied().min().unwrap();
            assert_eq!(lengths.iter().max(), Some(&t), "one row spans the batch");
            let prefix: Vec<usize> = lengths.iter().map(|n| n - (t - pre)).collect();
            let mut m = TokenMask::from_lengths(&prefix, Padding::Left);
            lm.forward(
                &x.narrow(1, 0, pre).unwrap().contiguous().unwrap(),
                &m,
                Some(&mut cache),
                Mode::Infer,
            )
            .unwrap();
            for c in pre..t {
                m.extend(1);
                let h = lm
                    .forward(
                        &x.narrow(1, c, 1).unwrap().contiguous().unwrap(),
                        &m,
                        Some(&mut cache),
                        Mode::Infer,
                    )
                    .unwrap();
                let logits = lm.logits(&h.squeeze(1).unwrap()).unwrap();
                for r in 0..b {
                    let d = max_abs(&logits.i(r).unwrap(), &want.i((r, c)).unwrap());
                    assert!(d < TOL, "{name} ({how}) cached step {c} row {r}: {d}");
                }
            }
        }
    }
}

#[test]
fn safetensors_checkpoints_match_transformers() {
    for name in MODELS {
        let lm = load_hf_dir(&fixture(name), &Device::Cpu).unwrap();
        assert_eq!(lm.config().tie_word_embeddings, name == "qwen2_tied");
        check_against_reference(&lm, name, "safetensors");
    }
}

#[test]
fn gguf_files_match_transformers() {
    for name in MODELS {
        let gguf = GgufFile::open(&fixture(name).join("model.gguf")).unwrap();
        let hf = LlmConfig::from_hf_file(&fixture(name).join("config.json")).unwrap();
        let mut cfg = gguf.config().unwrap();
        // The fixture's EOS is its `<|im_end|>`: listed once.
        assert_eq!(cfg.stop_token_ids, vec![299], "{name}: EOS and <|im_end|>");
        cfg.stop_token_ids = hf.stop_token_ids.clone();
        cfg.max_position_embeddings = hf.max_position_embeddings;
        assert_eq!(cfg, hf, "{name}: config from GGUF metadata");
        let lm = gguf.load_model(&Device::Cpu).unwrap();
        check_against_reference(&lm, name, "gguf");
    }
}

#[test]
fn gguf_tokenizer_is_byte_level_bpe_with_special_tokens() {
    let gguf = GgufFile::open(&fixture("qwen2_tied").join("model.gguf")).unwrap();
    let tok = gguf.tokenizer().unwrap();
    let cfg = gguf.config().unwrap();
    check_tokenizer(&tok, &cfg).unwrap();
    let id = |s: &str| tok.token_to_id(s).unwrap();
    let enc = tok.encode("hello world<|im_end|>", false).unwrap();
    assert_eq!(
        enc.get_ids(),
        &[
            id("hell"),
            id("o"),
            id("Ġw"),
            id("or"),
            id("l"),
            id("d"),
            299
        ]
    );
    assert_eq!(
        tok.decode(enc.get_ids(), false).unwrap(),
        "hello world<|im_end|>"
    );
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "hello world");
    assert!(gguf.chat_template().is_none());
}

#[test]
fn gguf_qwen2_tokenizer_matches_the_real_tokenizer_json() {
    const TEST: &str = "gguf_qwen2_tokenizer_matches_the_real_tokenizer_json";
    let real = uqa_data::assets::cache_dir().join("qwen2-tokenizer/tokenizer.json");
    let gguf = uqa_data::assets::cache_dir().join("llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    // One skip per missing asset, so that UQA_REQUIRE=tokenizer or =gguf alone catches it; a
    // required one first, so that its failure leaves no skip of the other recorded.
    let mut missing: Vec<(Category, &PathBuf, &str)> = [
        (Category::Tokenizer, &real, "tokenizer"),
        (Category::Gguf, &gguf, "llm"),
    ]
    .into_iter()
    .filter(|(_, path, _)| !path.exists())
    .collect();
    missing.sort_by_key(|(category, _, _)| !uqa_testkit::required(*category));
    for (category, path, what) in &missing {
        let reason = format!(
            "{} not cached; run scripts/fetch-assets.sh {what}",
            path.display()
        );
        uqa_testkit::skip(*category, TEST, reason);
    }
    if !missing.is_empty() {
        return;
    }
    let real = tokenizers::Tokenizer::from_file(&real).unwrap();
    let ours = GgufFile::open(&gguf).unwrap().tokenizer().unwrap();
    for text in [
        "Hello, world! It's 2026: café déjà-vu, 12345 tokens.\n\n  def f(x):\n\treturn x ** 2",
        "<|im_start|>user\nWhat's the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "中文分词测试，数字１２３ and emoji 🙂 mixed   spaces\r\nCRLF",
    ] {
        let a = real.encode(text, false).unwrap();
        let b = ours.encode(text, false).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn hf_dir_errors_name_the_file_and_tensor() {
    let dev = Device::Cpu;
    // No config.json.
    let empty = scratch("empty");
    let err = load_hf_dir(&empty, &dev).err().unwrap().to_string();
    assert!(
        err.contains("config.json") && err.contains("missing"),
        "{err}"
    );

    // Unsupported architecture.
    let dir = scratch("arch");
    copy_dir(&fixture("qwen2_tied"), &dir);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("Qwen2ForCausalLM", "GPT2LMHeadModel"),
    )
    .unwrap();
    let err = load_hf_dir(&dir, &dev).err().unwrap().to_string();
    assert!(
        err.contains("config.json") && err.contains("GPT2LMHeadModel"),
        "{err}"
    );

    // A shape the config does not imply.
    let dir = scratch("shape");
    copy_dir(&fixture("qwen2_tied"), &dir);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
    )
    .unwrap();
    let err = load_hf_dir(&dir, &dev).err().unwrap();
    assert!(matches!(err, ModelError::Tensor { .. }), "{err:?}");
    let err = err.to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains("model.layers.0.mlp.gate_proj.weight")
            && err.contains("[96, 64]"),
        "{err}"
    );

    // A missing tensor (one shard of the sharded Llama checkpoint rewritten without it).
    let dir = scratch("missing");
    copy_dir(&fixture("llama"), &dir);
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let victim = "model.layers.1.mlp.down_proj.weight";
    let shard = dir.join(index["weight_map"][victim].as_str().unwrap());
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&shard, &dev).unwrap();
    tensors.remove(victim).unwrap();
    candle_core::safetensors::save(&tensors, &shard).unwrap();
    let err = load_hf_dir(&dir, &dev).err().unwrap().to_string();
    assert!(err.contains(victim) && err.contains("missing"), "{err}");

    // A shard listed by the index but absent.
    std::fs::remove_file(&shard).unwrap();
    let err = load_hf_dir(&dir, &dev).err().unwrap().to_string();
    assert!(
        err.contains(shard.file_name().unwrap().to_str().unwrap()) && err.contains("missing"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(empty);
    for tag in ["arch", "shape", "missing"] {
        let _ = std::fs::remove_dir_all(scratch(tag));
    }
}

/// Rewrites the tiny Qwen2 GGUF with `edit` applied to its metadata and tensors.
fn rewrite_gguf(
    out: &Path,
    edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<(String, QTensor)>),
) {
    let src = fixture("qwen2_tied").join("model.gguf");
    let mut f = std::fs::File::open(&src).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut meta: Vec<(String, Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|n| (n.clone(), content.tensor(&mut f, n, &Device::Cpu).unwrap()))
        .collect();
    edit(&mut meta, &mut tensors);
    let mut w = std::fs::File::create(out).unwrap();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &meta_refs, &tensor_refs).unwrap();
}

fn requantize(tensors: &mut [(String, QTensor)], name: &str, dtype: GgmlDType) {
    let slot = tensors.iter_mut().find(|(n, _)| n == name).unwrap();
    let f = slot.1.dequantize(&Device::Cpu).unwrap();
    slot.1 = QTensor::quantize(&f, dtype).unwrap();
}

#[test]
fn gguf_errors_name_the_file_tensor_and_type() {
    let dev = Device::Cpu;
    let dir = scratch("gguf");

    // The rewrite itself loads (so the failures below are the edits').
    let same = dir.join("same.gguf");
    rewrite_gguf(&same, |_, ts| {
        requantize(ts, "blk.0.ffn_up.weight", GgmlDType::Q8_0)
    });
    GgufFile::open(&same).unwrap().load_model(&dev).unwrap();

    // A storage type candle knows but no model file uses (and HF cannot dequantise).
    let q81 = dir.join("q8_1.gguf");
    rewrite_gguf(&q81, |_, ts| {
        requantize(ts, "blk.0.ffn_up.weight", GgmlDType::Q8_1)
    });
    let err = GgufFile::open(&q81)
        .unwrap()
        .load_model(&dev)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("q8_1.gguf") && err.contains("blk.0.ffn_up.weight") && err.contains("Q8_1"),
        "{err}"
    );

    // A type id candle does not know (IQ2_XXS = 16): patch the Q8_0 tensor's type in the header.
    let iq = dir.join("iq2.gguf");
    let mut bytes = std::fs::read(&same).unwrap();
    let name = b"blk.0.ffn_up.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let ty = at + 4 + 8 * dims;
    assert_eq!(u32::from_le_bytes(bytes[ty..ty + 4].try_into().unwrap()), 8); // Q8_0
    bytes[ty..ty + 4].copy_from_slice(&16u32.to_le_bytes());
    std::fs::write(&iq, bytes).unwrap();
    let err = GgufFile::open(&iq).err().unwrap().to_string();
    assert!(
        err.contains("iq2.gguf") && err.contains("blk.0.ffn_up.weight") && err.contains("IQ2_XXS"),
        "{err}"
    );

    // An architecture we do not reproduce.
    let gemma = dir.join("gemma.gguf");
    rewrite_gguf(&gemma, |meta, _| {
        for (k, v) in meta.iter_mut() {
            if k == "general.architecture" {
                *v = Value::String("gemma".into());
            }
        }
    });
    let err = GgufFile::open(&gemma)
        .unwrap()
        .load_model(&dev)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("gemma.gguf") && err.contains("`gemma`"),
        "{err}"
    );

    // A missing tensor, by its llama.cpp name.
    let missing = dir.join("missing.gguf");
    rewrite_gguf(&missing, |_, ts| {
        ts.retain(|(n, _)| n != "blk.1.ffn_down.weight")
    });
    let err = GgufFile::open(&missing)
        .unwrap()
        .load_model(&dev)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("missing.gguf") && err.contains("`blk.1.ffn_down.weight`"),
        "{err}"
    );

    // A misshaped tensor: the metadata says a wider FFN.
    let wide = dir.join("wide.gguf");
    rewrite_gguf(&wide, |meta, _| {
        for (k, v) in meta.iter_mut() {
            if k == "qwen2.feed_forward_length" {
                *v = Value::U32(256);
            }
        }
    });
    let err = GgufFile::open(&wide)
        .unwrap()
        .load_model(&dev)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("blk.0.ffn_gate.weight")
            && err.contains("[128, 64]")
            && err.contains("[256, 64]"),
        "{err}"
    );

    // Not a GGUF file at all.
    let text = dir.join("notes.gguf");
    std::fs::write(&text, "not a model").unwrap();
    let err = GgufFile::open(&text).err().unwrap().to_string();
    assert!(err.contains("notes.gguf"), "{err}");
    let err = GgufFile::open(&dir.join("absent.gguf"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("absent.gguf"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokenizer_larger_than_the_model_is_refused_with_both_sizes() {
    let gguf = GgufFile::open(&fixture("llama").join("model.gguf")).unwrap();
    let tok = gguf.tokenizer().unwrap();
    let mut cfg = gguf.config().unwrap();
    check_tokenizer(&tok, &cfg).unwrap();
    // Smaller tokenizer than the table is fine (Qwen pads its table).
    cfg.vocab_size = 320;
    check_tokenizer(&tok, &cfg).unwrap();
    cfg.vocab_size = 256;
    let err = check_tokenizer(&tok, &cfg).err().unwrap();
    assert!(
        matches!(err, ModelError::TokenizerMismatch { .. }),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("300") && err.contains("256"), "{err}");
}
