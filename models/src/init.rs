//! Seeded parameter initialisation. candle's CPU random generator cannot be seeded
//! (`Device::Cpu.set_seed` is an error in candle 0.11), so a `VarMap` initialises differently on
//! every run. [`seeded_var_builder`] creates each variable from our own generator instead,
//! seeded by the run's seed and the variable's name: the same seed gives the same weights,
//! whatever order the model creates them in. The distributions are candle's `Init` ones.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use uqa_data::rng::Rng;

struct SeededInit {
    map: VarMap,
    seed: u64,
}

/// FNV-1a: a stable hash of the variable name (std's hasher may change between releases).
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn sample(init: Init, shape: &Shape, rng: &mut Rng) -> Vec<f32> {
    let n = shape.elem_count();
    let normal = |rng: &mut Rng, mean: f64, std: f64| (mean + std * rng.normal()) as f32;
    let uniform = |rng: &mut Rng, lo: f64, up: f64| (lo + (up - lo) * rng.uniform()) as f32;
    match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Randn { mean, stdev } => (0..n).map(|_| normal(rng, mean, stdev)).collect(),
        Init::Uniform { lo, up } => (0..n).map(|_| uniform(rng, lo, up)).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => (0..n).map(|_| normal(rng, 0.0, std)).collect(),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n).map(|_| uniform(rng, -bound, bound)).collect()
                }
            }
        }
    }
}

impl SimpleBackend for SeededInit {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.map.data().lock().expect("var map lock");
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("variable `{name}`: shape {:?}, requested {s:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let mut rng = Rng::derive(self.seed, name_hash(name));
        let values = sample(h, &s, &mut rng);
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.map.data().lock().expect("var map lock");
        match data.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no variable `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map
            .data()
            .lock()
            .expect("var map lock")
            .contains_key(name)
    }
}

/// A `VarBuilder` that creates variables in `map` with weights drawn from `seed`.
pub fn seeded_var_builder(
    map: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededInit {
            map: map.clone(),
            seed,
        }),
        dtype,
        device.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_regardless_of_creation_order() {
        let make = |seed: u64, order: [&str; 2]| {
            let map = VarMap::new();
            let vb = seeded_var_builder(&map, seed, DType::F32, &Device::Cpu);
            for name in order {
                vb.get_with_hints(
                    (3, 4),
                    name,
                    Init::Randn {
                        mean: 0.0,
                        stdev: 0.02,
                    },
                )
                .unwrap();
            }
            let data = map.data().lock().unwrap();
            data["w1"].as_tensor().to_vec2::<f32>().unwrap()
        };
        assert_eq!(make(1, ["w1", "w2"]), make(1, ["w2", "w1"]));
        assert_ne!(make(1, ["w1", "w2"]), make(2, ["w1", "w2"]));
        let w = make(3, ["w1", "w2"]);
        let mean: f32 = w.iter().flatten().sum::<f32>() / 12.0;
        assert!(mean.abs() < 0.02 && w.iter().flatten().all(|x| x.abs() < 0.2));
    }

    #[test]
    fn kaiming_uniform_matches_candles_bound() {
        let map = VarMap::new();
        let vb = seeded_var_builder(&map, 0, DType::F32, &Device::Cpu);
        let w = vb
            .get_with_hints((64, 100), "w", candle_nn::init::DEFAULT_KAIMING_UNIFORM)
            .unwrap();
        let bound = (3.0f64).sqrt() * candle_nn::init::NonLinearity::ReLU.gain() / 10.0;
        let v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| (x.abs() as f64) <= bound));
        assert!(v.iter().any(|x| (x.abs() as f64) > 0.9 * bound));
    }
}
