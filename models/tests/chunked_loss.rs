//! The chunked tied cross-entropy against the plain full-logits version: values and gradients
//! with respect to the hidden states and the item table, f64 and f32, chunk sizes that do and do
//! not divide the vocabulary, and logits large enough to overflow a naive exp.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::Rng;
use uqa_models::GradSink;
use uqa_models::loss::{chunked_cross_entropy_sum, chunked_logsumexp, naive_cross_entropy_sum};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
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

/// Loss and gradients (h, table) of one implementation.
fn run(h: &Tensor, w: &Tensor, labels: &Tensor, chunk: Option<usize>) -> (f64, Tensor, Tensor) {
    let (hv, wv) = (Var::from_tensor(h).unwrap(), Var::from_tensor(w).unwrap());
    let loss = match chunk {
        Some(c) => chunked_cross_entropy_sum(hv.as_tensor(), wv.as_tensor(), labels, c, None),
        None => naive_cross_entropy_sum(hv.as_tensor(), wv.as_tensor(), labels),
    }
    .unwrap();
    let grads = loss.backward().unwrap();
    let value = loss
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let gh = grads.get(hv.as_tensor()).expect("gradient for h").clone();
    let gw = grads
        .get(wv.as_tensor())
        .expect("gradient for the table")
        .clone();
    (value, gh, gw)
}

fn case(
    n: usize,
    v: usize,
    k: usize,
    scale: f64,
    dtype: DType,
    seed: u64,
) -> (Tensor, Tensor, Tensor) {
    let mut rng = Rng(seed);
    let h = (rng.tensor(&[n, k]) * scale)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let w = rng.tensor(&[v, k]).to_dtype(dtype).unwrap();
    let labels: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
    (h, w, Tensor::from_vec(labels, n, &Device::Cpu).unwrap())
}

#[test]
fn chunked_equals_naive_in_f64_for_many_chunk_sizes() {
    let (h, w, labels) = case(9, 37, 6, 1.0, DType::F64, 1);
    let (loss, gh, gw) = run(&h, &w, &labels, None);
    assert!(
        loss > 9.0 * 2.0,
        "a random 37-way loss is near 9 * ln 37 = 32.5, got {loss}"
    );
    for chunk in [1, 5, 8, 36, 37, 64] {
        let (l, ch, cw) = run(&h, &w, &labels, Some(chunk));
        assert!((l - loss).abs() < 1e-10, "chunk {chunk}: {l} vs {loss}");
        assert!(max_abs_diff(&ch, &gh) < 1e-10, "chunk {chunk}: dh");
        assert!(max_abs_diff(&cw, &gw) < 1e-10, "chunk {chunk}: dW");
    }
}

#[test]
fn chunked_equals_naive_in_f32_within_1e_5() {
    let (h, w, labels) = case(16, 50, 8, 1.0, DType::F32, 2);
    let (loss, gh, gw) = run(&h, &w, &labels, None);
    let (l, ch, cw) = run(&h, &w, &labels, Some(7));
    assert!((l - loss).abs() <= 1e-5 * loss.abs(), "{l} vs {loss}");
    assert!(max_abs_diff(&ch, &gh) < 1e-5);
    assert!(max_abs_diff(&cw, &gw) < 1e-5);
}

/// With a sink, the table's gradient lands there (added to what a lookup already put in) and
/// candle gets none for the table; `dh` is unchanged.
#[test]
fn a_sink_receives_the_table_gradient() {
    let (h, w, labels) = case(16, 50, 8, 1.0, DType::F32, 4);
    let (_, gh, gw) = run(&h, &w, &labels, Some(7));
    let (hv, wv) = (Var::from_tensor(&h).unwrap(), Var::from_tensor(&w).unwrap());
    let sink = GradSink::new();
    sink.add_rows(wv.as_tensor(), &[3], &[1.0; 8]);
    let loss =
        chunked_cross_entropy_sum(hv.as_tensor(), wv.as_tensor(), &labels, 7, Some(&sink)).unwrap();
    let grads = loss.backward().unwrap();
    assert!(grads.get(wv.as_tensor()).is_none());
    assert!(max_abs_diff(grads.get(hv.as_tensor()).unwrap(), &gh) < 1e-6);
    let mut want: Vec<f32> = gw.flatten_all().unwrap().to_vec1().unwrap();
    for x in &mut want[3 * 8..4 * 8] {
        *x += 1.0;
    }
    let got = sink.take(wv.as_tensor()).unwrap();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-6, "{worst}");
}

#[test]
fn large_logits_stay_finite_and_exact() {
    // Logits around +-300: exp overflows f64 without the running max.
    let (h, w, labels) = case(5, 20, 4, 150.0, DType::F64, 3);
    let (loss, gh, gw) = run(&h, &w, &labels, None);
    let (l, ch, cw) = run(&h, &w, &labels, Some(3));
    assert!(l.is_finite() && l > 10.0, "{l}");
    assert!((l - loss).abs() < 1e-9 * loss.abs());
    assert!(max_abs_diff(&ch, &gh) < 1e-9);
    assert!(max_abs_diff(&cw, &gw) < 1e-9);
}

#[test]
fn logsumexp_matches_a_hand_computed_value() {
    // h = [1, 0], W rows [0,0], [1,0], [2,0]: logits 0, 1, 2.
    let h = Tensor::new(&[[1.0f64, 0.0]], &Device::Cpu).unwrap();
    let w = Tensor::new(&[[0.0f64, 0.0], [1.0, 0.0], [2.0, 0.0]], &Device::Cpu).unwrap();
    let lse = chunked_logsumexp(&h, &w, 2)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let expected = (1.0f64 + 1f64.exp() + 2f64.exp()).ln();
    assert!(
        (lse[0] - expected).abs() < 1e-14,
        "{} vs {expected}",
        lse[0]
    );
}

#[test]
fn empty_input_gives_zero() {
    let h = Tensor::zeros((0, 4), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::ones((10, 4), DType::F32, &Device::Cpu).unwrap();
    let labels = Tensor::zeros(0, DType::U32, &Device::Cpu).unwrap();
    let l = chunked_cross_entropy_sum(&h, &w, &labels, 4, None).unwrap();
    assert_eq!(l.to_scalar::<f32>().unwrap(), 0.0);
}
