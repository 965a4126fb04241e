//! The trainer's memory-lean path gives candle's gradients: table gradients gathered in a
//! `GradSink`, and Trm++ blocks recomputed in backward (activation checkpointing) with their
//! parameter gradients sent to the sink, equal the plain backward's within f32 rounding, with
//! dropout on (the recomputation redraws the same seeded masks).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use common::{VOCAB, batch, named_vars};
use uqa_models::{GradSink, PretrainConfig, PretrainModel};

fn config(checkpointing: bool) -> PretrainConfig {
    let json = format!(
        r#"{{
            "embedder": {{"variant": "full", "item_dim": 8, "side_dim": 4}},
            "encoder": {{"kind": "trmpp", "layers": 2, "width": 16, "heads": 2, "dropout": 0.2,
                         "activation_checkpointing": {checkpointing}}},
            "objective": {{"kind": "sl", "chunk": 5}}
        }}"#
    );
    serde_json::from_str(&json).unwrap()
}

/// Gradients by parameter name, and which came from the sink.
fn gradients(checkpointing: bool, sink: Option<GradSink>) -> (HashMap<String, Vec<f32>>, usize) {
    let vm = VarMap::new();
    let vb = uqa_models::seeded_var_builder(&vm, 7, DType::F32, &Device::Cpu);
    let mut model = PretrainModel::new(&config(checkpointing), &VOCAB, vb).unwrap();
    model.set_grad_sink(sink.clone());
    let b = batch(&[5, 3, 4], 5, 11);
    let loss = model.loss(&b, true, 42).unwrap().mean().unwrap();
    let store = loss.backward().unwrap();
    let mut out = HashMap::new();
    let mut from_sink = 0;
    for (name, var) in named_vars(&vm) {
        let mut g = vec![0f32; var.elem_count()];
        if let Some(t) = store.get(&var) {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            g.iter_mut().zip(v).for_each(|(a, b)| *a += b);
        }
        if let Some(v) = sink.as_ref().and_then(|s| s.take(&var)) {
            from_sink += 1;
            g.iter_mut().zip(v).for_each(|(a, b)| *a += b);
        }
        out.insert(name, g);
    }
    (out, from_sink)
}

fn assert_close(a: &HashMap<String, Vec<f32>>, b: &HashMap<String, Vec<f32>>) {
    assert_eq!(a.len(), b.len());
    for (name, x) in a {
        let y = &b[name];
        let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let worst = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(worst <= 1e-5 * scale.max(1.0), "{name}: differs by {worst}");
        assert!(x.iter().any(|&v| v != 0.0), "{name}: all-zero gradient");
    }
}

#[test]
fn table_gradients_through_the_sink_equal_candles() {
    let (plain, _) = gradients(false, None);
    let (sunk, from_sink) = gradients(false, Some(GradSink::new()));
    // The six tables: item (lookup + tied logits), cate, brand, shop, seller, tokens.
    assert_eq!(from_sink, 6);
    assert_close(&plain, &sunk);
}

#[test]
fn recomputed_blocks_give_the_plain_gradients() {
    let (plain, _) = gradients(false, None);
    let (recomputed, from_sink) = gradients(true, Some(GradSink::new()));
    // Tables plus every block parameter: 2 x (2 norms + q, k, v, o + gate, up, down).
    assert_eq!(from_sink, 6 + 2 * 9);
    assert_close(&plain, &recomputed);
}

#[test]
fn without_a_sink_checkpointing_falls_back_to_the_plain_backward() {
    let (plain, _) = gradients(false, None);
    let (fallback, from_sink) = gradients(true, None);
    assert_eq!(from_sink, 0);
    assert_close(&plain, &fallback);
}
