//! InfoNCE against a per-row computation written out in plain Rust, accidental-hit masking,
//! the in-batch switch, and a finite-difference gradient check.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{batch, gradcheck};
use uqa_models::loss::{InfoNceConfig, InfoNceLoss, ItemHead, next_item_targets};

const ITEMS: usize = 23;

struct Setup {
    vm: VarMap,
    loss: InfoNceLoss,
    hidden: Tensor,
    table: Tensor,
}

fn setup(cfg: &InfoNceConfig) -> Setup {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let loss = InfoNceLoss::new(cfg, ItemHead::linear(6, 4, vb.pp("head")).unwrap()).unwrap();
    let table = vb
        .get_with_hints(
            (ITEMS, 4),
            "item",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )
        .unwrap();
    let hidden = vb
        .get_with_hints(
            (2, 5, 6),
            "hidden",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )
        .unwrap();
    Setup {
        vm,
        loss,
        hidden,
        table,
    }
}

/// The loss written row by row: q_i = W h_i + b; logits over allowed candidates.
fn by_hand(s: &Setup, b: &uqa_data::batch::SequenceBatch, neg: &[u32], cfg: &InfoNceConfig) -> f64 {
    let data = s.vm.data().lock().unwrap();
    let w: Vec<Vec<f64>> = data["head.weight"].as_tensor().to_vec2().unwrap();
    let bias: Vec<f64> = data["head.bias"].as_tensor().to_vec1().unwrap();
    let table: Vec<Vec<f64>> = s.table.to_vec2().unwrap();
    let hidden: Vec<Vec<f64>> = s.hidden.reshape((10, 6)).unwrap().to_vec2().unwrap();
    let t = next_item_targets(b);
    let cands: Vec<u32> = t.labels.iter().chain(neg).copied().collect();
    let mut total = 0.0;
    for (i, (&p, &y)) in t.positions.iter().zip(&t.labels).enumerate() {
        let q: Vec<f64> = (0..4)
            .map(|o| bias[o] + (0..6).map(|k| w[o][k] * hidden[p as usize][k]).sum::<f64>())
            .collect();
        let score = |id: u32| -> f64 {
            (0..4).map(|k| q[k] * table[id as usize][k]).sum::<f64>() / cfg.temperature
        };
        let mut z = vec![score(y)];
        for (j, &c) in cands.iter().enumerate() {
            let is_label_col = j < t.labels.len();
            if j == i || c == y || (is_label_col && !cfg.in_batch) {
                continue;
            }
            z.push(score(c));
        }
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        total += lse - z[0];
    }
    total
}

#[test]
fn infonce_equals_the_row_by_row_formula() {
    let mut b = batch(&[5, 4], 5, 2);
    // A repeated label (item ids 1 and 1) and a sampled negative equal to a label: both masked.
    b.ids[0][1] = 1;
    b.ids[0][6] = 1;
    let label = b.ids[0][3];
    for in_batch in [true, false] {
        let cfg = InfoNceConfig {
            temperature: 0.5,
            sampled_negatives: 4,
            in_batch,
        };
        let s = setup(&cfg);
        let neg = [label, 2, 9, 17];
        let l = s.loss.forward(&s.hidden, &s.table, &b, &neg).unwrap();
        assert_eq!(l.count, 4 + 3);
        let got: f64 = l.sum.to_scalar().unwrap();
        let want = by_hand(&s, &b, &neg, &cfg);
        assert!(
            got > 0.0 && (got - want).abs() < 1e-10,
            "in_batch {in_batch}: {got} vs {want}"
        );
    }
}

#[test]
fn infonce_gradients_match_finite_differences() {
    let cfg = InfoNceConfig {
        temperature: 0.7,
        sampled_negatives: 3,
        in_batch: true,
    };
    let s = setup(&cfg);
    let b = batch(&[5, 3], 5, 6);
    let neg = [3, 5, 8];
    let loss = || {
        s.loss
            .forward(&s.hidden, &s.table, &b, &neg)
            .unwrap()
            .mean()
            .unwrap()
    };
    let n = gradcheck(&s.vm, &loss, 6, &["hidden"]);
    assert!(n >= 18);
}

#[test]
fn out_of_range_negatives_are_reported_with_their_index() {
    let cfg = InfoNceConfig::default();
    let s = setup(&cfg);
    let b = batch(&[3, 2], 5, 1);
    let err = s
        .loss
        .forward(&s.hidden, &s.table, &b, &[4, 23])
        .unwrap_err();
    match err {
        uqa_models::ModelError::IdOutOfRange {
            feature,
            id,
            position,
            vocab,
        } => assert_eq!(
            (feature, id, position, vocab),
            ("item (sampled negative, index)", 23, 1, 23)
        ),
        other => panic!("unexpected {other}"),
    }
}
