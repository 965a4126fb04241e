//! Structural properties every encoder must have: causality (changing a future position
//! changes no earlier output) and padding invariance (extra right padding changes no valid
//! output). Run in f64 with dropout off, so "unchanged" means equal to 1e-12.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{Rng, batch, repad};
use uqa_models::{
    BlockLayout, EncoderConfig, Gru4RecConfig, HstuConfig, Mamba4RecConfig, Positions,
    SasrecConfig, TrmConfig, mask_tensor,
};

fn tiny_sasrec(positions: Positions, layout: BlockLayout) -> SasrecConfig {
    SasrecConfig {
        layers: 2,
        width: 8,
        heads: 2,
        ffn: 12,
        max_len: 16,
        positions,
        layout,
        init_std: 0.3,
        ..SasrecConfig::default()
    }
}

fn encoders() -> Vec<EncoderConfig> {
    vec![
        EncoderConfig::Trmpp(TrmConfig {
            layers: 2,
            width: 8,
            heads: 2,
            init_std: 0.3,
            ..TrmConfig::default()
        }),
        EncoderConfig::Sasrec(tiny_sasrec(Positions::FromStart, BlockLayout::PostNorm)),
        EncoderConfig::Sasrec(tiny_sasrec(Positions::FromEnd, BlockLayout::PreNorm)),
        EncoderConfig::Sasrec(tiny_sasrec(Positions::FromEnd, BlockLayout::Sasrec)),
        EncoderConfig::Hstu(hstu(false)),
        EncoderConfig::Hstu(hstu(true)),
        EncoderConfig::Gru4rec(Gru4RecConfig {
            layers: 2,
            width: 8,
            hidden: 6,
            ..Gru4RecConfig::default()
        }),
        EncoderConfig::Mamba4rec(Mamba4RecConfig {
            layers: 2,
            width: 8,
            d_state: 4,
            ..Mamba4RecConfig::default()
        }),
    ]
}

fn hstu(reference_compat: bool) -> HstuConfig {
    HstuConfig {
        layers: 2,
        width: 8,
        heads: 2,
        linear_dim: 3,
        attention_dim: 4,
        max_len: 16,
        time_buckets: 40,
        init_std: 0.3,
        reference_compat,
        ..HstuConfig::default()
    }
}

fn diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn changing_a_future_position_changes_no_earlier_output() {
    for cfg in encoders() {
        let vm = VarMap::new();
        let enc = cfg
            .build(VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu))
            .unwrap();
        let d = cfg.width();
        let mut rng = Rng(21);
        let x = rng.tensor(&[1, 6, d]);
        let mask = Tensor::ones((1, 6), DType::F64, &Device::Cpu).unwrap();
        let y = enc.forward(&x, &mask, false).unwrap();
        for t0 in [1usize, 3, 5] {
            let bump = Tensor::cat(
                &[
                    Tensor::zeros((1, t0, d), DType::F64, &Device::Cpu).unwrap(),
                    rng.tensor(&[1, 6 - t0, d]),
                ],
                1,
            )
            .unwrap();
            let y2 = enc.forward(&(&x + bump).unwrap(), &mask, false).unwrap();
            let before = diff(&y.i((.., ..t0)).unwrap(), &y2.i((.., ..t0)).unwrap());
            let after = diff(&y.i((.., t0..)).unwrap(), &y2.i((.., t0..)).unwrap());
            assert!(
                before < 1e-12,
                "{cfg:?}: positions < {t0} moved by {before}"
            );
            assert!(
                after > 1e-6,
                "{cfg:?}: positions >= {t0} did not change ({after})"
            );
        }
    }
}

#[test]
fn extra_right_padding_changes_no_valid_output() {
    let short = batch(&[4, 2, 3], 4, 5);
    let long = repad(&short, 9);
    for cfg in encoders() {
        let vm = VarMap::new();
        let enc = cfg
            .build(VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu))
            .unwrap();
        let d = cfg.width();
        let mut rng = Rng(8);
        let x_short = rng.tensor(&[3, 4, d]);
        // Garbage (not zeros) at the padding: it must not leak into valid positions.
        let x_long = Tensor::cat(&[&x_short, &rng.tensor(&[3, 5, d])], 1).unwrap();
        let m_short = mask_tensor(&short, DType::F64, &Device::Cpu).unwrap();
        let m_long = mask_tensor(&long, DType::F64, &Device::Cpu).unwrap();
        let y_short = enc.forward(&x_short, &m_short, false).unwrap();
        let y_long = enc.forward(&x_long, &m_long, false).unwrap();
        for (r, &len) in short.lengths.iter().enumerate() {
            let len = len as usize;
            let a = y_short.i((r, ..len)).unwrap();
            let b = y_long.i((r, ..len)).unwrap();
            assert!(
                diff(&a, &b) < 1e-12,
                "{cfg:?}: row {r} changed with padding"
            );
        }
    }
}

#[test]
fn hstu_uses_timestamps_unless_in_reference_mode() {
    let b = batch(&[4, 3], 4, 2);
    let mask = mask_tensor(&b, DType::F64, &Device::Cpu).unwrap();
    let ts_a: Vec<i64> = vec![0, 10, 20, 30, 0, 5, 10, 0];
    let ts_b: Vec<i64> = vec![0, 10, 20, 90_000, 0, 5, 10, 0];
    for compat in [false, true] {
        let vm = VarMap::new();
        let cfg = EncoderConfig::Hstu(hstu(compat));
        let enc = cfg
            .build(VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu))
            .unwrap();
        let x = Rng(4).tensor(&[2, 4, 8]);
        let ya = enc.forward_timed(&x, &mask, Some(&ts_a), false).unwrap();
        let yb = enc.forward_timed(&x, &mask, Some(&ts_b), false).unwrap();
        let y0 = enc.forward(&x, &mask, false).unwrap();
        // Row 1 keeps its timestamps; row 0's last gap changed (query time of position 2 is
        // the timestamp of position 3).
        assert!(diff(&ya.i(1).unwrap(), &yb.i(1).unwrap()) < 1e-12);
        let changed = diff(&ya.i((0, 2)).unwrap(), &yb.i((0, 2)).unwrap());
        if compat {
            assert!(
                changed < 1e-12 && diff(&ya, &y0) < 1e-12,
                "compat must ignore time"
            );
        } else {
            assert!(changed > 1e-6, "time bias had no effect ({changed})");
        }
    }
}
