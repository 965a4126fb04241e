//! Parity with independent PyTorch implementations through committed golden fixtures
//! (`tests/fixtures/*.json`, written by `scripts/gen_fixtures.py`): the forward pass of every
//! encoder, and loss plus every parameter gradient of a whole Trm++ pre-training model. All in
//! f64, compared at valid positions to 1e-9.

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Deserialize;
use uqa_data::batch::{BagColumn, SequenceBatch};
use uqa_data::schema::Vocab;
use uqa_models::{EncoderConfig, PretrainConfig, PretrainModel};

#[derive(Deserialize)]
struct Array {
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl Array {
    fn tensor(&self) -> Tensor {
        Tensor::from_vec(self.data.clone(), self.shape.as_slice(), &Device::Cpu).unwrap()
    }
}

#[derive(Deserialize)]
struct EncoderFixture {
    config: EncoderConfig,
    weights: HashMap<String, Array>,
    lengths: Vec<usize>,
    x: Array,
    y: Array,
    timestamps: Option<Vec<i64>>,
}

fn read<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Loads every fixture weight into the var map, and checks that no variable was left out.
fn load(vm: &mut VarMap, weights: &HashMap<String, Array>) {
    for (name, w) in weights {
        vm.set_one(name, w.tensor())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let ours = vm.data().lock().unwrap().len();
    assert_eq!(
        ours,
        weights.len(),
        "fixture and model disagree on the variables"
    );
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
        .to_scalar()
        .unwrap()
}

fn check_encoder(name: &str) {
    let fx: EncoderFixture = read(name);
    let mut vm = VarMap::new();
    let enc = fx
        .config
        .build(VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu))
        .unwrap();
    load(&mut vm, &fx.weights);
    let x = fx.x.tensor();
    let (b, t, _) = x.dims3().unwrap();
    let mask: Vec<f64> = (0..b * t)
        .map(|k| f64::from(k % t < fx.lengths[k / t]))
        .collect();
    let mask = Tensor::from_vec(mask, (b, t), &Device::Cpu).unwrap();
    let y = enc
        .forward_timed(&x, &mask, fx.timestamps.as_deref(), false)
        .unwrap();
    let want = fx.y.tensor();
    for (r, &len) in fx.lengths.iter().enumerate() {
        let d = max_diff(&y.i((r, ..len)).unwrap(), &want.i((r, ..len)).unwrap());
        assert!(d < 1e-9, "{name}: row {r} differs from PyTorch by {d}");
    }
    // The fixture must be non-trivial: outputs far from the inputs.
    assert!(max_diff(&y, &x) > 0.1, "{name}: output equals input");
}

#[test]
fn trmpp_matches_pytorch() {
    check_encoder("trmpp");
}

#[test]
fn sasrec_matches_pytorch_transformer_encoder_layers() {
    check_encoder("sasrec");
}

#[test]
fn hstu_matches_the_official_formulation_with_position_and_time_bias() {
    check_encoder("hstu");
}

#[test]
fn hstu_reference_compat_matches_the_reference_quirks() {
    check_encoder("hstu_compat");
}

#[test]
fn gru4rec_matches_pytorch_gru() {
    check_encoder("gru4rec");
}

#[test]
fn mamba4rec_matches_the_reference_selective_scan() {
    check_encoder("mamba4rec");
}

#[derive(Deserialize)]
struct Bag {
    ids: Vec<u32>,
    offsets: Vec<u32>,
}

#[derive(Deserialize)]
struct PretrainFixture {
    config: PretrainConfig,
    vocab: Vocab,
    lengths: Vec<u32>,
    seq_len: usize,
    ids: Vec<Vec<u32>>,
    bags: Vec<Bag>,
    weights: HashMap<String, Array>,
    grads: HashMap<String, Array>,
    loss_sum: f64,
    count: usize,
}

#[test]
fn trmpp_pretraining_loss_and_gradients_match_pytorch() {
    let fx: PretrainFixture = read("pretrain_trmpp");
    let b = fx.lengths.len();
    let mut batch = SequenceBatch {
        batch_size: b,
        seq_len: fx.seq_len,
        lengths: fx.lengths.clone(),
        rows: (0..b).collect(),
        ..Default::default()
    };
    for (k, col) in fx.ids.iter().enumerate() {
        batch.ids[k] = col.clone();
    }
    for (k, bag) in fx.bags.iter().enumerate() {
        batch.bags[k] = BagColumn {
            ids: bag.ids.clone(),
            offsets: bag.offsets.clone(),
        };
    }
    let mut vm = VarMap::new();
    let model = PretrainModel::new(
        &fx.config,
        &fx.vocab,
        VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu),
    )
    .unwrap();
    load(&mut vm, &fx.weights);
    let loss = model.loss(&batch, false, 0).unwrap();
    assert_eq!(loss.count, fx.count);
    let sum: f64 = loss.sum.to_scalar().unwrap();
    assert!(
        (sum - fx.loss_sum).abs() < 1e-9 * fx.loss_sum.abs(),
        "{sum} vs {}",
        fx.loss_sum
    );
    let grads = loss.mean().unwrap().backward().unwrap();
    let vars = vm.data().lock().unwrap();
    for (name, want) in &fx.grads {
        let got = grads
            .get(vars[name].as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let d = max_diff(got, &want.tensor());
        assert!(d < 1e-9, "gradient of {name} differs from PyTorch by {d}");
    }
}
