//! Shared test helpers: a deterministic tiny batch generator and a finite-difference gradient
//! checker over every variable of a `VarMap`.
#![allow(dead_code)] // each test binary uses a subset

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use uqa_data::batch::{BagColumn, SequenceBatch};
use uqa_data::schema::Vocab;

/// Small vocabularies: every table is a handful of rows.
pub const VOCAB: Vocab = Vocab {
    items: 23,
    cates: 5,
    brands: 7,
    shops: 6,
    sellers: 6,
    tokens: 17,
};

/// A tiny deterministic generator (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    pub fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| self.unit()).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

/// A right-padded batch with the given lengths, padded to `t`: random entity ids (>= 1) and
/// bags of 0..=3 tokens at valid positions, zeros and empty bags at padding.
pub fn batch(lengths: &[u32], t: usize, seed: u64) -> SequenceBatch {
    let mut rng = Rng(seed);
    let b = lengths.len();
    let sizes = [
        VOCAB.items,
        VOCAB.cates,
        VOCAB.brands,
        VOCAB.shops,
        VOCAB.sellers,
    ];
    let mut ids: [Vec<u32>; 5] = Default::default();
    let mut bags: [BagColumn; 5] = Default::default();
    for bag in &mut bags {
        bag.offsets.push(0);
    }
    for (r, &len) in lengths.iter().enumerate() {
        for p in 0..t {
            let valid = p < len as usize;
            for (k, col) in ids.iter_mut().enumerate() {
                col.push(if valid {
                    1 + rng.below(sizes[k] - 1) as u32
                } else {
                    0
                });
            }
            for bag in &mut bags {
                if valid {
                    for _ in 0..rng.below(4) {
                        bag.ids.push(rng.below(VOCAB.tokens) as u32);
                    }
                }
                bag.offsets.push(bag.ids.len() as u32);
            }
        }
        let _ = r;
    }
    SequenceBatch {
        batch_size: b,
        seq_len: t,
        lengths: lengths.to_vec(),
        rows: (0..b).collect(),
        ids,
        bags,
        timestamps: None,
    }
}

/// The same rows padded to a longer `t`.
pub fn repad(batch: &SequenceBatch, t: usize) -> SequenceBatch {
    let old = batch.seq_len;
    let mut out = batch.clone();
    out.seq_len = t;
    for (k, col) in batch.ids.iter().enumerate() {
        out.ids[k] = col
            .chunks(old)
            .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(0, t - old)))
            .collect();
    }
    for (k, bag) in batch.bags.iter().enumerate() {
        let mut offsets = vec![0u32];
        for r in 0..batch.batch_size {
            offsets.extend_from_slice(&bag.offsets[r * old + 1..(r + 1) * old + 1]);
            let last = *offsets.last().unwrap();
            offsets.extend(std::iter::repeat_n(last, t - old));
        }
        out.bags[k].offsets = offsets;
    }
    out
}

/// Named variables of a var map, sorted by name.
pub fn named_vars(vm: &VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Parameters whose gradient is zero by construction. A softmax attention's key bias `b_k` adds
/// `q . b_k` to every logit of a query's row, and softmax is invariant to adding a constant to a
/// row (masked logits stay masked), so the loss does not depend on it.
fn zero_by_construction(name: &str) -> bool {
    name.ends_with(".k.bias")
}

/// Checks the gradient of the scalar `loss()` with respect to every variable of `vm` (f64)
/// against central finite differences at `per_var` coordinates, and that every variable gets
/// a gradient at all (the symptom of candle's gradient-dropping fused ops is a missing entry).
/// Variables whose name contains one of `may_be_zero` (parts unused by design) may have an
/// all-zero or no gradient. Returns the number of coordinates compared.
pub fn gradcheck(
    vm: &VarMap,
    loss: &dyn Fn() -> Tensor,
    per_var: usize,
    may_be_zero: &[&str],
) -> usize {
    let vars = named_vars(vm);
    assert!(!vars.is_empty());
    for (name, var) in &vars {
        assert_eq!(
            var.dtype(),
            DType::F64,
            "{name} must be f64 for a gradient check"
        );
    }
    let grads = loss().backward().unwrap();
    let mut rng = Rng(7);
    let mut compared = 0;
    for (name, var) in &vars {
        let may_skip = may_be_zero.iter().any(|z| name.contains(z));
        let Some(grad) = grads.get(var.as_tensor()) else {
            assert!(may_skip, "no gradient reached `{name}`");
            continue;
        };
        let g: Vec<f64> = grad.flatten_all().unwrap().to_vec1().unwrap();
        let norm: f64 = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        if zero_by_construction(name) {
            // Exactly zero in exact arithmetic; what is left is rounding, so whether it comes
            // out as 0.0 or 1e-17 must decide nothing.
            assert!(
                norm <= 1e-9,
                "gradient of `{name}` should vanish, has norm {norm:e}"
            );
        } else if !may_skip {
            assert!(norm > 0.0, "gradient of `{name}` is identically zero");
        }
        let shape = var.shape().clone();
        let base: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
        // Coordinates with a non-zero gradient first (they are the informative ones).
        let mut coords: Vec<usize> = (0..g.len()).filter(|&i| g[i] != 0.0).collect();
        if coords.is_empty() {
            coords = (0..g.len()).collect();
        }
        for _ in 0..per_var.min(coords.len()) {
            let i = coords[rng.below(coords.len() as u64) as usize];
            let eps = 1e-6;
            let eval = |delta: f64| -> f64 {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, &shape, &Device::Cpu).unwrap())
                    .unwrap();
                loss().to_scalar::<f64>().unwrap()
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(base.clone(), &shape, &Device::Cpu).unwrap())
                .unwrap();
            let analytic = g[i];
            let tol = 1e-7 + 1e-5 * analytic.abs().max(numeric.abs());
            assert!(
                (analytic - numeric).abs() <= tol,
                "`{name}`[{i}]: analytic {analytic:.10e} vs numeric {numeric:.10e}"
            );
            compared += 1;
        }
    }
    compared
}

/// A batch of some rows of `batch`, in the given order.
#[allow(dead_code)]
pub fn select_rows(batch: &SequenceBatch, rows: &[usize]) -> SequenceBatch {
    let t = batch.seq_len;
    let mut out = batch.clone();
    out.batch_size = rows.len();
    out.lengths = rows.iter().map(|&r| batch.lengths[r]).collect();
    out.rows = rows.iter().map(|&r| batch.rows[r]).collect();
    for (k, col) in batch.ids.iter().enumerate() {
        out.ids[k] = rows
            .iter()
            .flat_map(|&r| col[r * t..(r + 1) * t].iter().copied())
            .collect();
    }
    for (k, bag) in batch.bags.iter().enumerate() {
        let mut ids = Vec::new();
        let mut offsets = vec![0u32];
        for &r in rows {
            for p in r * t..(r + 1) * t {
                let (a, b) = (bag.offsets[p] as usize, bag.offsets[p + 1] as usize);
                ids.extend_from_slice(&bag.ids[a..b]);
                offsets.push(ids.len() as u32);
            }
        }
        out.bags[k] = BagColumn { ids, offsets };
    }
    out.timestamps = batch.timestamps.as_ref().map(|ts| {
        rows.iter()
            .flat_map(|&r| ts[r * t..(r + 1) * t].iter().copied())
            .collect()
    });
    out
}
