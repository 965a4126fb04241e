//! Finite-difference gradient checks (f64, tiny shapes) of every trainable module. They catch
//! candle's fused ops that silently drop gradients (DESIGN.md "Known traps"): a variable that
//! gets no gradient, or a wrong one, fails here.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{Rng, VOCAB, batch, gradcheck};
use uqa_models::{
    BlockLayout, EmbedderConfig, EncoderConfig, FeatureEmbedder, Gru4RecConfig, HstuConfig,
    InputVariant, ItemHead, Mamba4RecConfig, NextItemConfig, NextItemLoss, Positions,
    SampledBceConfig, SampledBceLoss, SasrecConfig, TrmConfig, mask_tensor,
};

fn vb(vm: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(vm, DType::F64, &Device::Cpu)
}

fn tiny_embedder(variant: InputVariant) -> EmbedderConfig {
    EmbedderConfig {
        variant,
        item_dim: 4,
        side_dim: 3,
        init_std: 0.5,
        item_scale: 1.5,
        ..EmbedderConfig::default()
    }
}

/// `sum(y * r)` for a fixed random `r`: a scalar whose gradient reaches every output element.
fn project(y: &Tensor, r: &Tensor) -> Tensor {
    (y * r).unwrap().sum_all().unwrap()
}

#[test]
fn embedder_gradients_match_finite_differences_for_every_variant() {
    let b = batch(&[4, 2], 4, 11);
    for variant in [
        InputVariant::Full,
        InputVariant::NoText,
        InputVariant::NoSide,
    ] {
        let vm = VarMap::new();
        let emb = FeatureEmbedder::new(&tiny_embedder(variant), &VOCAB, 5, vb(&vm)).unwrap();
        let r = Rng(3).tensor(&[2, 4, 5]);
        let loss = || project(&emb.forward(&b).unwrap(), &r);
        let n = gradcheck(&vm, &loss, 6, &[]);
        assert!(n >= 12, "{variant:?}: only {n} coordinates compared");
    }
}

fn encoder_gradcheck(cfg: EncoderConfig, timestamps: Option<&[i64]>, may_be_zero: &[&str]) {
    let vm = VarMap::new();
    let enc = cfg.build(vb(&vm)).unwrap();
    let mut rng = Rng(5);
    let x = rng.tensor(&[2, 5, cfg.width()]);
    let r = rng.tensor(&[2, 5, cfg.width()]);
    let b = batch(&[5, 3], 5, 1);
    let mask = mask_tensor(&b, DType::F64, &Device::Cpu).unwrap();
    // Only valid positions enter the objective, as in training.
    let m = mask.unsqueeze(2).unwrap();
    let loss = || {
        let y = enc.forward_timed(&x, &mask, timestamps, true).unwrap();
        project(&y, &r.broadcast_mul(&m).unwrap())
    };
    let n = gradcheck(&vm, &loss, 4, may_be_zero);
    assert!(n > 20, "only {n} coordinates compared");
}

#[test]
fn trmpp_gradients_match_finite_differences() {
    let cfg = TrmConfig {
        layers: 2,
        width: 8,
        heads: 2,
        dropout: 0.0,
        init_std: 0.3,
        ..TrmConfig::default()
    };
    encoder_gradcheck(EncoderConfig::Trmpp(cfg), None, &[]);
}

#[test]
fn sasrec_gradients_match_finite_differences() {
    let cfg = SasrecConfig {
        layers: 2,
        width: 6,
        heads: 2,
        ffn: 10,
        dropout: 0.0,
        max_len: 7,
        init_std: 0.3,
        ..SasrecConfig::default()
    };
    // Position rows 5 and 6 are never used by a length-5 batch (their gradient is zero).
    encoder_gradcheck(EncoderConfig::Sasrec(cfg.clone()), None, &[]);
    // Pre-norm blocks and the SASRec authors' blocks (keys and values not normalised), with
    // positions counted from the newest item.
    for layout in [BlockLayout::PreNorm, BlockLayout::Sasrec] {
        let paper = SasrecConfig {
            layout,
            positions: Positions::FromEnd,
            ..cfg.clone()
        };
        encoder_gradcheck(EncoderConfig::Sasrec(paper), None, &[]);
    }
}

fn tiny_hstu(reference_compat: bool) -> HstuConfig {
    HstuConfig {
        layers: 2,
        width: 6,
        heads: 2,
        linear_dim: 3,
        attention_dim: 4,
        dropout: 0.0,
        max_len: 7,
        time_buckets: 40,
        init_std: 0.3,
        reference_compat,
        ..HstuConfig::default()
    }
}

#[test]
fn hstu_gradients_match_finite_differences() {
    // Gaps from 1 s to a day fall in distinct log buckets, so the time bias is exercised.
    let ts: Vec<i64> = [0, 1, 30, 900, 86_400, 0, 5, 500, 0, 0].to_vec();
    encoder_gradcheck(EncoderConfig::Hstu(tiny_hstu(false)), Some(&ts), &[]);
    // The reference mode applies no relative bias: those tables get no gradient at all.
    encoder_gradcheck(
        EncoderConfig::Hstu(tiny_hstu(true)),
        None,
        &["pos_w", "ts_w"],
    );
}

#[test]
fn gru4rec_gradients_match_finite_differences() {
    let cfg = Gru4RecConfig {
        layers: 2,
        width: 5,
        hidden: 4,
        dropout: 0.0,
        ..Gru4RecConfig::default()
    };
    encoder_gradcheck(EncoderConfig::Gru4rec(cfg), None, &[]);
}

#[test]
fn mamba4rec_gradients_match_finite_differences() {
    let cfg = Mamba4RecConfig {
        layers: 2,
        width: 4,
        d_state: 3,
        d_conv: 3,
        dropout: 0.0,
        ..Mamba4RecConfig::default()
    };
    encoder_gradcheck(EncoderConfig::Mamba4rec(cfg), None, &[]);
}

#[test]
fn full_model_loss_gradients_match_finite_differences() {
    // Embedder -> Trm++ -> head -> chunked tied cross-entropy, chunk smaller than the vocab,
    // so the custom op's backward is checked in place, together with the tied item table.
    let vm = VarMap::new();
    let emb = FeatureEmbedder::new(
        &tiny_embedder(InputVariant::Full),
        &VOCAB,
        8,
        vb(&vm).pp("emb"),
    )
    .unwrap();
    let cfg = EncoderConfig::Trmpp(TrmConfig {
        layers: 1,
        width: 8,
        heads: 2,
        dropout: 0.0,
        init_std: 0.3,
        ..TrmConfig::default()
    });
    let enc = cfg.build(vb(&vm).pp("enc")).unwrap();
    let head = NextItemLoss::new(
        &NextItemConfig { chunk: 5 },
        ItemHead::linear(8, 4, vb(&vm).pp("head")).unwrap(),
    )
    .unwrap();
    let b = batch(&[5, 3, 1], 5, 9);
    let mask = mask_tensor(&b, DType::F64, &Device::Cpu).unwrap();
    let loss = || {
        let h = enc.forward(&emb.forward(&b).unwrap(), &mask, true).unwrap();
        let l = head.forward(&h, emb.item_table(), &b).unwrap();
        assert_eq!(l.count, 4 + 2);
        l.mean().unwrap()
    };
    let n = gradcheck(&vm, &loss, 5, &[]);
    assert!(n > 40, "only {n} coordinates compared");
}

#[test]
fn sampled_bce_gradients_match_finite_differences() {
    // Embedder -> SASRec -> head -> the SASRec paper's loss: the tied table is reached through
    // the input lookup, the next items and the sampled negatives (a fixed seed keeps them).
    sampled_bce_gradcheck(BlockLayout::PreNorm, true);
    // The SASRec authors' model: their block layout, no input projection, no output head.
    sampled_bce_gradcheck(BlockLayout::Sasrec, false);
}

fn sampled_bce_gradcheck(layout: BlockLayout, projections: bool) {
    let vm = VarMap::new();
    let width = if projections { 6 } else { 4 };
    let emb = FeatureEmbedder::new(
        &EmbedderConfig {
            projection: projections,
            ..tiny_embedder(InputVariant::NoSide)
        },
        &VOCAB,
        width,
        vb(&vm).pp("emb"),
    )
    .unwrap();
    let cfg = EncoderConfig::Sasrec(SasrecConfig {
        layers: 1,
        width,
        heads: 2,
        ffn: 8,
        dropout: 0.0,
        max_len: 5,
        init_std: 0.3,
        layout,
        positions: Positions::FromEnd,
        ..SasrecConfig::default()
    });
    let enc = cfg.build(vb(&vm).pp("enc")).unwrap();
    let item_head = if projections {
        ItemHead::linear(width, 4, vb(&vm).pp("head")).unwrap()
    } else {
        ItemHead::identity()
    };
    let head = SampledBceLoss::new(&SampledBceConfig { negatives: 2 }, item_head).unwrap();
    let b = batch(&[5, 3, 2], 5, 4);
    let mask = mask_tensor(&b, DType::F64, &Device::Cpu).unwrap();
    let loss = || {
        let h = enc.forward(&emb.forward(&b).unwrap(), &mask, true).unwrap();
        let l = head.forward(&h, emb.item_table(), &b, 11).unwrap();
        assert_eq!(l.count, 4 + 2 + 1);
        l.mean().unwrap()
    };
    let n = gradcheck(&vm, &loss, 5, &[]);
    assert!(n > 30, "only {n} coordinates compared");
}
