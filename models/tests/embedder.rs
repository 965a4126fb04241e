//! Feature embedder values: mean pooling computed by hand from the tables, empty bags as zero
//! vectors, the shared token table, the input variants' widths, and bad input.

mod common;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use common::{VOCAB, batch};
use uqa_models::{EmbedderConfig, FeatureEmbedder, InputVariant, ModelError};

fn build(variant: InputVariant, vm: &VarMap) -> FeatureEmbedder {
    build_scaled(variant, 1.0, vm)
}

fn build_scaled(variant: InputVariant, item_scale: f64, vm: &VarMap) -> FeatureEmbedder {
    let cfg = EmbedderConfig {
        variant,
        item_dim: 4,
        side_dim: 3,
        init_std: 0.5,
        item_scale,
        ..EmbedderConfig::default()
    };
    let vb = VarBuilder::from_varmap(vm, DType::F64, &Device::Cpu);
    FeatureEmbedder::new(&cfg, &VOCAB, 5, vb).unwrap()
}

fn rows(vm: &VarMap, name: &str) -> Vec<Vec<f64>> {
    let data = vm.data().lock().unwrap();
    data[name].as_tensor().to_vec2().unwrap()
}

#[test]
fn item_scale_multiplies_the_item_columns_only() {
    let vm = VarMap::new();
    let emb = build_scaled(InputVariant::NoText, 3.0, &vm);
    let b = batch(&[3, 1], 3, 4);
    let feats: Vec<Vec<f64>> = emb.features(&b).unwrap().to_vec2().unwrap();
    let items = rows(&vm, "item");
    let cates = rows(&vm, "cate");
    for (p, row) in feats.iter().enumerate() {
        let item = &items[b.ids[0][p] as usize];
        let cate = &cates[b.ids[1][p] as usize];
        for j in 0..4 {
            assert!((row[j] - 3.0 * item[j]).abs() < 1e-12, "position {p}");
        }
        assert_eq!(&row[4..7], &cate[..]);
    }
}

/// Without the projection, SASRec's input is the (scaled) item embedding itself; a width that
/// differs from the features' is refused, naming the key.
#[test]
fn without_projection_the_features_are_the_encoder_input() {
    let cfg = EmbedderConfig {
        variant: InputVariant::NoSide,
        item_dim: 4,
        init_std: 0.5,
        item_scale: 2.0,
        projection: false,
        ..EmbedderConfig::default()
    };
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let emb = FeatureEmbedder::new(&cfg, &VOCAB, 4, vb.clone()).unwrap();
    assert_eq!(cfg.dense_params(4), 0);
    assert!(
        !vm.data()
            .lock()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("proj"))
    );
    let b = batch(&[3, 1], 3, 4);
    let x: Vec<Vec<Vec<f64>>> = emb.forward(&b).unwrap().to_vec3().unwrap();
    let items = rows(&vm, "item");
    for (p, &id) in b.ids[0].iter().enumerate() {
        let want: Vec<f64> = items[id as usize].iter().map(|v| 2.0 * v).collect();
        assert_eq!(x[p / 3][p % 3], want, "position {p}");
    }
    let err = FeatureEmbedder::new(&cfg, &VOCAB, 5, vb)
        .err()
        .expect("width 5 differs from item_dim 4")
        .to_string();
    assert!(err.contains("embedder.projection"), "{err}");
}

#[test]
fn features_are_the_hand_computed_bag_means_in_reference_order() {
    let vm = VarMap::new();
    let emb = build(InputVariant::Full, &vm);
    let mut b = batch(&[3, 1], 3, 4);
    // Position 0 of row 0: title bag [2, 2, 9] (a repeated token counts twice); make the
    // seller bag of position 1 empty.
    let title = &mut b.bags[0];
    let (lo, hi) = (title.offsets[0] as usize, title.offsets[1] as usize);
    title.ids.splice(lo..hi, [2, 2, 9]);
    let shift = 3 - (hi - lo) as i64;
    for o in &mut title.offsets[1..] {
        *o = (*o as i64 + shift) as u32;
    }
    let seller = &mut b.bags[4];
    let (lo, hi) = (seller.offsets[1] as usize, seller.offsets[2] as usize);
    seller.ids.drain(lo..hi);
    for o in &mut seller.offsets[2..] {
        *o -= (hi - lo) as u32;
    }
    let feats: Vec<Vec<f64>> = emb.features(&b).unwrap().to_vec2().unwrap();
    assert_eq!(feats.len(), 6);
    assert_eq!(feats[0].len(), 4 + 9 * 3);

    let tables = ["item", "cate", "brand", "shop", "seller"].map(|n| rows(&vm, n));
    let tokens = rows(&vm, "tokens");
    for p in [0usize, 1, 4] {
        let mut expected = Vec::new();
        for (k, table) in tables.iter().enumerate() {
            expected.extend_from_slice(&table[b.ids[k][p] as usize]);
        }
        for bag in &b.bags {
            let ids = &bag.ids[bag.offsets[p] as usize..bag.offsets[p + 1] as usize];
            let mut mean = [0.0f64; 3];
            for &id in ids {
                for (m, v) in mean.iter_mut().zip(&tokens[id as usize]) {
                    *m += v / ids.len() as f64;
                }
            }
            expected.extend_from_slice(&mean);
        }
        for (j, (got, want)) in feats[p].iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() < 1e-12,
                "position {p} column {j}: {got} vs {want}"
            );
        }
    }
    // The empty seller bag at position 1 is exactly zero; padding positions' bags too.
    assert_eq!(&feats[1][4 + 8 * 3..], &[0.0, 0.0, 0.0]);
    assert!(feats[4][4 + 4 * 3..].iter().all(|&v| v == 0.0));
    let t0 = &tokens[2];
    let t9 = &tokens[9];
    let title0 = &feats[0][16..19];
    for c in 0..3 {
        assert!((title0[c] - (2.0 * t0[c] + t9[c]) / 3.0).abs() < 1e-12);
    }
}

#[test]
fn variants_have_the_reference_widths_and_tables() {
    let expect = [
        (InputVariant::Full, 704, 6),
        (InputVariant::NoText, 384, 5),
        (InputVariant::NoSide, 128, 1),
    ];
    for (variant, width, tables) in expect {
        let cfg = EmbedderConfig {
            variant,
            ..EmbedderConfig::default()
        };
        assert_eq!(cfg.concat_dim(), width);
        assert_eq!(cfg.dense_params(512), width * 512 + 512);
        let vm = VarMap::new();
        let emb = build(variant, &vm);
        let out = emb.forward(&batch(&[2, 2], 2, 1)).unwrap();
        assert_eq!(out.dims(), &[2, 2, 5]);
        // `tables` embedding tables plus proj.weight and proj.bias.
        assert_eq!(vm.all_vars().len(), tables + 2, "{variant:?}");
    }
}

#[test]
fn ids_outside_the_vocabulary_and_broken_offsets_are_errors() {
    let vm = VarMap::new();
    let emb = build(InputVariant::Full, &vm);
    let mut b = batch(&[2], 2, 1);
    b.ids[2][1] = VOCAB.brands as u32;
    match emb.forward(&b) {
        Err(ModelError::IdOutOfRange {
            feature,
            id,
            position,
            ..
        }) => assert_eq!((feature, id, position), ("brand", 7, 1)),
        other => panic!(
            "expected IdOutOfRange, got {:?}",
            other.map(|t| t.dims().to_vec())
        ),
    }
    let mut b = batch(&[2], 2, 1);
    b.bags[3].offsets.pop();
    let err = emb.forward(&b).unwrap_err().to_string();
    assert!(err.contains("brand tokens bags"), "{err}");
    let mut b = batch(&[2], 2, 1);
    b.bags[0].ids.push(VOCAB.tokens as u32);
    *b.bags[0].offsets.last_mut().unwrap() += 1;
    assert!(matches!(
        emb.forward(&b),
        Err(ModelError::IdOutOfRange {
            feature: "title tokens",
            id: 17,
            ..
        })
    ));
}

#[test]
fn an_all_padding_batch_embeds_without_text() {
    let vm = VarMap::new();
    let emb = build(InputVariant::Full, &vm);
    let b = batch(&[0, 0], 2, 1);
    let f = emb.features(&b).unwrap();
    let text: f64 = f
        .narrow(1, 16, 15)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(text, 0.0);
}
