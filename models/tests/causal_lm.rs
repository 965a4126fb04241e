//! Properties of the causal LM that parity fixtures cannot show on their own: padding on either
//! side changes nothing, cached decoding equals a full forward, the fused inference path equals
//! the differentiable one, gradients reach `inputs_embeds` and every parameter, and a frozen LM
//! back-propagates to its inputs without building gradients for its weights.

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarMap;
use uqa_models::llm::{CausalLm, LlmConfig, Mode, Padding, TokenMask};
use uqa_models::seeded_var_builder;

fn tiny(dtype: DType) -> (CausalLm, VarMap) {
    let mut cfg = LlmConfig::tiny(61);
    cfg.hidden_size = 16;
    cfg.intermediate_size = 24;
    let map = VarMap::new();
    let vb = seeded_var_builder(&map, 7, dtype, &Device::Cpu);
    (CausalLm::new(&cfg, vb).unwrap(), map)
}

fn ids(v: &[u32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn padding_side_does_not_change_outputs() {
    let (lm, _) = tiny(DType::F32);
    let long = [5u32, 9, 13, 2, 40];
    let short = [7u32, 3];
    for mode in [Mode::Train, Mode::Infer] {
        let alone = |row: &[u32]| {
            let x = lm.embed_tokens(&ids(row)).unwrap();
            lm.forward(&x, &TokenMask::full(1, row.len()), None, mode)
                .unwrap()
        };
        let (h_long, h_short) = (alone(&long), alone(&short));
        for padding in [Padding::Left, Padding::Right] {
            let pad = |row: &[u32]| -> Vec<u32> {
                let fill = vec![0u32; 5 - row.len()];
                match padding {
                    Padding::Left => [fill.as_slice(), row].concat(),
                    Padding::Right => [row, fill.as_slice()].concat(),
                }
            };
            let batch = Tensor::new(&[pad(&long), pad(&short)].concat()[..], &Device::Cpu)
                .unwrap()
                .reshape((2, 5))
                .unwrap();
            let mask = TokenMask::from_lengths(&[5, 2], padding);
            let h = lm
                .forward(&lm.embed_tokens(&batch).unwrap(), &mask, None, mode)
                .unwrap();
            assert!(max_diff(&h.i(0).unwrap(), &h_long.i(0).unwrap()) < 1e-5);
            let start = if padding == Padding::Left { 3 } else { 0 };
            let got = h.i((1, start..start + 2)).unwrap();
            assert!(
                max_diff(&got, &h_short.i(0).unwrap()) < 1e-5,
                "{padding:?} {mode:?}"
            );
        }
    }
}

#[test]
fn cached_decoding_equals_a_full_forward() {
    let (lm, _) = tiny(DType::F32);
    let seq = [4u32, 8, 15, 16, 23, 42];
    let x = lm.embed_tokens(&ids(&seq)).unwrap();
    let full = lm
        .forward(&x, &TokenMask::full(1, 6), None, Mode::Infer)
        .unwrap();
    let mut cache = lm.new_cache();
    let mut mask = TokenMask::full(1, 3);
    let mut parts = vec![
        lm.forward(
            &x.narrow(1, 0, 3).unwrap(),
            &mask,
            Some(&mut cache),
            Mode::Infer,
        )
        .unwrap(),
    ];
    for t in 3..6 {
        mask.extend(1);
        parts.push(
            lm.forward(
                &x.narrow(1, t, 1).unwrap(),
                &mask,
                Some(&mut cache),
                Mode::Infer,
            )
            .unwrap(),
        );
    }
    assert_eq!(cache.len(), 6);
    let stepped = Tensor::cat(&parts, 1).unwrap();
    assert!(max_diff(&stepped, &full) < 1e-5);
}

#[test]
fn fused_inference_equals_the_differentiable_path() {
    let (lm, _) = tiny(DType::F32);
    let x = lm.embed_tokens(&ids(&[1, 2, 3, 4])).unwrap();
    let m = TokenMask::full(1, 4);
    let a = lm.forward(&x, &m, None, Mode::Train).unwrap();
    let b = lm.forward(&x, &m, None, Mode::Infer).unwrap();
    assert!(max_diff(&a, &b) < 1e-5);
}

#[test]
fn gradients_reach_inputs_embeds_and_every_parameter() {
    let (lm, map) = tiny(DType::F64);
    let x0 = lm.embed_tokens(&ids(&[3, 1, 4, 1, 5])).unwrap().detach();
    let probe = Tensor::randn(0f64, 1.0, x0.shape(), &Device::Cpu).unwrap();
    let objective = |x: &Tensor| -> Tensor {
        let h = lm
            .forward(x, &TokenMask::full(1, 5), None, Mode::Train)
            .unwrap();
        let logits = lm.logits(&h.i(0).unwrap()).unwrap();
        (logits.sqr().unwrap().sum_all().unwrap() * 1e-2).unwrap()
    };
    let xv = candle_core::Var::from_tensor(&x0).unwrap();
    let loss = objective(xv.as_tensor());
    let grads = loss.backward().unwrap();
    let gx = grads
        .get(xv.as_tensor())
        .expect("gradient of inputs_embeds");
    // Directional finite difference along `probe`.
    let eps = 1e-6;
    let plus = objective(&(&x0 + (&probe * eps).unwrap()).unwrap());
    let minus = objective(&(&x0 - (&probe * eps).unwrap()).unwrap());
    let numeric = ((plus - minus).unwrap() / (2.0 * eps))
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let analytic = (gx * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(
        (numeric - analytic).abs() <= 1e-6 * (1.0 + numeric.abs()),
        "numeric {numeric} analytic {analytic}"
    );
    for (name, var) in map.data().lock().unwrap().iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(norm > 0.0, "zero gradient for {name}");
    }
}

/// The adapter strategy's case: the LM's weights are plain tensors (not variables). The gradient
/// of `inputs_embeds` is the same as through the trainable LM, and the backward pass builds no
/// weight-sized gradient (frozen projections, norms and output head compute input gradients only).
#[test]
fn a_frozen_lm_back_propagates_to_its_inputs_only() {
    let (trainable, map) = tiny(DType::F64);
    let weights = map
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let params: usize = map.all_vars().iter().map(|v| v.elem_count()).sum();
    let vb = candle_nn::VarBuilder::from_tensors(weights, DType::F64, &Device::Cpu);
    let frozen = CausalLm::new(trainable.config(), vb).unwrap();
    // Two rows, the second right-padded (the training layout), through grouped-query attention
    // with q/k/v biases (the tiny config is Qwen2-shaped: 4 heads, 2 key-value heads).
    let rows = Tensor::new(
        &[[3u32, 1, 4, 1, 5, 9, 2], [2, 7, 1, 8, 0, 0, 0]],
        &Device::Cpu,
    )
    .unwrap();
    let x0 = trainable.embed_tokens(&rows).unwrap().detach();
    let mask = TokenMask::from_lengths(&[7, 4], Padding::Right);
    let run = |lm: &CausalLm| {
        let x = candle_core::Var::from_tensor(&x0).unwrap();
        let h = lm.forward(x.as_tensor(), &mask, None, Mode::Train).unwrap();
        // The real positions only, as the loss reads them (padding's outputs are unspecified).
        let real = Tensor::new(mask.real_positions(), &Device::Cpu).unwrap();
        let h = h.reshape((14, 16)).unwrap().index_select(&real, 0).unwrap();
        let logits = lm.logits(&h).unwrap();
        let grads = (logits.sqr().unwrap().sum_all().unwrap() * 1e-2)
            .unwrap()
            .backward()
            .unwrap();
        let stored: usize = grads
            .get_ids()
            .map(|&id| grads.get_id(id).unwrap().elem_count())
            .sum();
        (grads.get(x.as_tensor()).unwrap().clone(), stored)
    };
    let (g_trainable, stored_trainable) = run(&trainable);
    let (g_frozen, stored_frozen) = run(&frozen);
    assert!(max_diff(&g_trainable, &g_frozen) < 1e-10);
    // The trainable run stores every parameter's gradient (at least `params` values) besides
    // the activations' that both runs store.
    assert!(
        stored_frozen + params <= stored_trainable,
        "frozen {stored_frozen} + {params} parameters > trainable {stored_trainable}"
    );
}
