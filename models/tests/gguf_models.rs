//! Real GGUF models (Qwen2.5-Coder-0.5B-Instruct Q4_K_M, SmolLM2-135M-Instruct Q4_1) against
//! Hugging Face transformers, which dequantises the same files to f32: the GGUF tokenizer gives
//! the same prompt ids, and greedy decoding with the KV cache gives the same tokens.
//!
//! The models are not committed: `scripts/fetch-assets.sh llm` puts them in the cache; without
//! them each case is a recorded skip (a failure under `UQA_REQUIRE=gguf`, see uqa-testkit); a
//! file that is there but does not load fails. Fixtures: `models/tests/fixtures/llm/gguf_*.json`
//! from `models/scripts/gen_llm_fixtures.py gguf`.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use uqa_models::llm::{
    CausalLm, GenerateConfig, GgufFile, Mode, Padding, TokenMask, check_tokenizer, greedy,
};

#[derive(Deserialize)]
struct Fixture {
    model: String,
    file: String,
    stop_ids: Vec<u32>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    prompt_ids: Vec<u32>,
    continuation_ids: Vec<u32>,
    continuation_text: String,
    top2_margins: Vec<f32>,
}

fn fixture(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llm")
        .join(format!("gguf_{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Greedy decoding of one prompt: prefill, then one cached step per token, stopping after a
/// stop token (which is kept, as in the fixture). Returns the tokens and each step's top-2
/// logit margin.
fn decode(lm: &CausalLm, prompt: &[u32], max_new: usize, stop: &[u32]) -> (Vec<u32>, Vec<f32>) {
    let dev = lm.device().clone();
    let mut cache = lm.new_cache();
    let mut mask = TokenMask::full(1, prompt.len());
    let mut ids = Tensor::new(prompt, &dev).unwrap().unsqueeze(0).unwrap();
    let (mut out, mut margins) = (Vec::new(), Vec::new());
    for _ in 0..max_new {
        let x = lm.embed_tokens(&ids).unwrap();
        let h = lm
            .forward(&x, &mask, Some(&mut cache), Mode::Infer)
            .unwrap();
        let last = h
            .narrow(1, h.dim(1).unwrap() - 1, 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        let logits: Vec<f32> = lm
            .logits(&last)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.select_nth_unstable_by(1, |a, b| logits[*b].total_cmp(&logits[*a]));
        let (best, second) = if logits[order[0]] >= logits[order[1]] {
            (order[0], order[1])
        } else {
            (order[1], order[0])
        };
        out.push(best as u32);
        margins.push(logits[best] - logits[second]);
        if stop.contains(&(best as u32)) {
            break;
        }
        ids = Tensor::new(&[best as u32], &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        mask.extend(1);
    }
    (out, margins)
}

/// `batched`: also run the library's batched greedy decoder (skipped for the 0.5B model, where
/// it would double the test's runtime).
fn check_model(test: &str, name: &str, batched: bool) {
    let fx = fixture(name);
    let path = uqa_data::assets::cache_dir().join("llm").join(&fx.file);
    if !path.exists() {
        let reason = format!(
            "{} not found; run scripts/fetch-assets.sh llm",
            path.display()
        );
        return uqa_testkit::skip(uqa_testkit::Category::Gguf, test, reason);
    }
    let start = Instant::now();
    let gguf = GgufFile::open(&path).unwrap();
    let tokenizer = gguf.tokenizer().unwrap();
    let cfg = gguf.config().unwrap();
    check_tokenizer(&tokenizer, &cfg).unwrap();
    assert!(
        gguf.chat_template()
            .is_some_and(|t| t.contains("<|im_start|>"))
    );
    // HF's GGUF tokenizers name other EOS tokens (`<|endoftext|>`; SmolLM's id 1); what
    // matters is that we stop where transformers stopped, checked per case below.
    let stop = cfg.stop_token_ids.clone();
    let lm = gguf.load_model(&Device::Cpu).unwrap();
    println!("{name}: loaded in {:.1?}", start.elapsed());

    for case in &fx.cases {
        let enc = tokenizer.encode(case.text.as_str(), false).unwrap();
        assert_eq!(
            enc.get_ids(),
            case.prompt_ids,
            "{name}: prompt ids of {:?}",
            case.text
        );
        let t = Instant::now();
        let (ours, margins) = decode(&lm, &case.prompt_ids, case.continuation_ids.len(), &stop);
        println!(
            "{name}: {} prompt + {} new tokens in {:.1?}: {:?}",
            case.prompt_ids.len(),
            ours.len(),
            t.elapsed(),
            tokenizer.decode(&ours, false).unwrap()
        );
        if let Some(step) = ours
            .iter()
            .zip(&case.continuation_ids)
            .position(|(a, b)| a != b)
        {
            panic!(
                "{name}: step {step} differs from transformers: ours {} (top-2 margin {:.4}), \
                 theirs {} (margin {:.4}); ours so far {:?}, theirs {:?} ({:?})",
                ours[step],
                margins[step],
                case.continuation_ids[step],
                case.top2_margins[step],
                &ours[..=step],
                &case.continuation_ids[..=step],
                case.continuation_text
            );
        }
        assert_eq!(ours, case.continuation_ids, "{name}");
        if let Some(last) = ours.last().filter(|t| fx.stop_ids.contains(t)) {
            assert!(
                stop.contains(last),
                "{name}: transformers stopped at {last}, we do not"
            );
        }
        assert_eq!(
            tokenizer.decode(&ours, false).unwrap(),
            case.continuation_text,
            "{name}: decoded text"
        );
    }

    if !batched {
        println!("{} ({}): total {:.1?}", fx.model, name, start.elapsed());
        return;
    }
    // The library's batched greedy decoder over all prompts at once (left-padded) agrees too;
    // it drops the stop token, the fixture keeps it.
    let t = Instant::now();
    let lengths: Vec<usize> = fx.cases.iter().map(|c| c.prompt_ids.len()).collect();
    let width = *lengths.iter().max().unwrap();
    let mut flat = Vec::new();
    for c in &fx.cases {
        flat.extend(std::iter::repeat_n(0u32, width - c.prompt_ids.len()));
        flat.extend(&c.prompt_ids);
    }
    let ids = Tensor::from_vec(flat, (fx.cases.len(), width), &Device::Cpu).unwrap();
    let x = lm.embed_tokens(&ids).unwrap();
    let max_new_tokens = fx
        .cases
        .iter()
        .map(|c| c.continuation_ids.len())
        .max()
        .unwrap();
    let batched = greedy(
        &lm,
        &x,
        &TokenMask::from_lengths(&lengths, Padding::Left),
        &GenerateConfig {
            max_new_tokens,
            stop_tokens: stop.clone(),
        },
    )
    .unwrap();
    for (c, got) in fx.cases.iter().zip(&batched) {
        let want: Vec<u32> = c
            .continuation_ids
            .iter()
            .copied()
            .filter(|t| !stop.contains(t))
            .collect();
        assert_eq!(got, &want, "{name}: batched greedy");
    }
    println!("{name}: batched greedy in {:.1?}", t.elapsed());
    println!("{} ({}): total {:.1?}", fx.model, name, start.elapsed());
}

#[test]
fn smollm2_135m_instruct_q4_1_matches_transformers() {
    check_model(
        "smollm2_135m_instruct_q4_1_matches_transformers",
        "smollm2-135m-instruct",
        true,
    );
}

#[test]
fn qwen25_coder_05b_instruct_q4_k_m_matches_transformers() {
    check_model(
        "qwen25_coder_05b_instruct_q4_k_m_matches_transformers",
        "qwen2.5-coder-0.5b-instruct",
        false,
    );
}
