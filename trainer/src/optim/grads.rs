//! Parameters in a fixed order and their gradients as flat fp32 buffers. Gradients leave
//! candle's `GradStore` once per micro-step and are summed here, so accumulation, the
//! data-parallel all-reduce and the optimiser all work on plain slices in a deterministic order.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Storage, Tensor, Var};
use candle_nn::VarMap;
use rayon::prelude::*;

use uqa_models::GradSink;

use crate::error::{CandleContext, Result, TrainError};

/// The trainable variables, sorted by name (the order every rank agrees on).
#[derive(Debug, Clone)]
pub struct Params {
    pub names: Vec<String>,
    pub vars: Vec<Var>,
}

impl Params {
    pub fn from_varmap(map: &VarMap) -> Self {
        let data = map.data().lock().expect("var map lock");
        let mut named: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, vars) = named.into_iter().unzip();
        Self { names, vars }
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }
}

/// Run `f` on the tensor's values as a contiguous f32 slice (copying only when the tensor is
/// not a contiguous CPU f32 tensor).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(values)), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&values[a..b]));
        }
    }
    let copy = t
        .flatten_all()
        .and_then(|x| x.to_dtype(candle_core::DType::F32))
        .and_then(|x| x.to_vec1::<f32>())
        .ctx("reading a tensor")?;
    Ok(f(&copy))
}

/// One flat buffer per parameter. Between steps the buffers are released, not zeroed: the
/// next micro-step's gradients are moved in one parameter at a time while candle's `GradStore`
/// gives them up, so gradients are held once, not twice (what lets the 1.2B preset step in
/// 24 GB: parameters, one copy of the gradients and the two moments).
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    pub bufs: Vec<Vec<f32>>,
}

impl Grads {
    pub fn zeros(params: &Params) -> Self {
        Self {
            bufs: params
                .vars
                .iter()
                .map(|v| vec![0.0; v.elem_count()])
                .collect(),
        }
    }

    /// Empty buffers, filled by the first [`Grads::add`].
    pub fn released(params: &Params) -> Self {
        Self {
            bufs: vec![Vec::new(); params.len()],
        }
    }

    /// Free the buffers; the next [`Grads::add`] starts from zero.
    pub fn release(&mut self) {
        for b in &mut self.bufs {
            *b = Vec::new();
        }
    }

    /// Zeros for the parameters no micro-step filled (a rank whose share of a batch was empty
    /// still all-reduces and steps like the others).
    pub fn fill_missing(&mut self, params: &Params) {
        for (buf, var) in self.bufs.iter_mut().zip(&params.vars) {
            if buf.len() != var.elem_count() {
                *buf = vec![0.0; var.elem_count()];
            }
        }
    }

    /// Add this micro-step's gradients, dropping each from `store` once copied, and the table
    /// gradients gathered by `sink` (moved, not copied, when the buffer is empty). A parameter
    /// with no gradient is an error: the traps in DESIGN.md (ops without backward) make silent
    /// zero gradients the bug to catch.
    pub fn add(
        &mut self,
        params: &Params,
        mut store: GradStore,
        sink: Option<&GradSink>,
    ) -> Result<()> {
        for ((name, var), buf) in params.names.iter().zip(&params.vars).zip(&mut self.bufs) {
            let from_sink = sink.and_then(|s| s.take(var));
            let from_store = store.remove(var);
            if from_sink.is_none() && from_store.is_none() {
                return Err(TrainError::Invalid(format!(
                    "parameter `{name}` received no gradient (an op without backward upstream?)"
                )));
            }
            if let Some(g) = from_sink {
                if buf.len() != g.len() {
                    *buf = g;
                } else {
                    add_into(buf, &g);
                }
            }
            if let Some(g) = from_store {
                with_f32(&g, |s| {
                    if buf.len() != s.len() {
                        buf.clear();
                        buf.extend_from_slice(s);
                    } else {
                        add_into(buf, s);
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Global L2 norm over all buffers (in f64): not finite exactly when some gradient is not.
    /// Blocks of fixed size are summed in parallel and their sums added in order, so the
    /// result does not depend on the number of threads.
    pub fn norm(&self) -> f64 {
        let blocks: Vec<f64> = self
            .bufs
            .iter()
            .flat_map(|b| b.chunks(NORM_BLOCK))
            .collect::<Vec<_>>()
            .par_iter()
            .map(|block| sum_of_squares(block))
            .collect();
        blocks.into_iter().sum::<f64>().sqrt()
    }
}

/// Elements per block of [`Grads::norm`].
const NORM_BLOCK: usize = 1 << 16;

/// `sum x^2` in f64 over eight independent accumulators: a single running sum is a serial
/// chain of dependent additions that does not vectorise (a scalar loop over 81 M gradients
/// took most of the optimiser phase).
fn sum_of_squares(xs: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut lanes = xs.chunks_exact(8);
    for lane in &mut lanes {
        for (a, &x) in acc.iter_mut().zip(lane) {
            *a += x as f64 * x as f64;
        }
    }
    let tail: f64 = lanes.remainder().iter().map(|&x| x as f64 * x as f64).sum();
    acc.into_iter().sum::<f64>() + tail
}

fn add_into(buf: &mut [f32], g: &[f32]) {
    for (b, x) in buf.iter_mut().zip(g) {
        *b += x;
    }
}

/// The factor that scales gradients to `max_norm` when their norm exceeds it (1 otherwise, and
/// always 1 when `max_norm` is 0, i.e. clipping off).
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The blocked norm equals a plain f64 sum and is the same bits with 1 thread or 2.
    #[test]
    fn the_norm_is_exact_and_independent_of_the_thread_count() {
        let grads = Grads {
            bufs: vec![
                (0..3 * NORM_BLOCK + 5)
                    .map(|i| ((i % 97) as f32 - 48.0) * 1e-3)
                    .collect(),
                vec![],
                vec![3.0, -4.0, 0.5],
            ],
        };
        let plain: f64 = grads
            .bufs
            .iter()
            .flatten()
            .map(|&x| x as f64 * x as f64)
            .sum::<f64>()
            .sqrt();
        let on = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| grads.norm())
        };
        let (one, two) = (on(1), on(2));
        assert!((one - plain).abs() <= 1e-12 * plain, "{one} vs {plain}");
        assert_eq!(one.to_bits(), two.to_bits());
        let mut bad = grads.clone();
        bad.bufs[2][1] = f32::NAN;
        assert!(!bad.norm().is_finite());
    }

    #[test]
    fn gradients_accumulate_in_name_order_and_missing_ones_are_errors() {
        let map = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let b = vb
            .get_with_hints(2, "b", candle_nn::Init::Const(1.0))
            .unwrap();
        let a = vb
            .get_with_hints(3, "a", candle_nn::Init::Const(2.0))
            .unwrap();
        let params = Params::from_varmap(&map);
        assert_eq!(params.names, vec!["a", "b"]);
        for mut grads in [Grads::zeros(&params), Grads::released(&params)] {
            for _ in 0..2 {
                let loss = ((a.sqr().unwrap().sum_all().unwrap()) + b.sum_all().unwrap()).unwrap();
                grads.add(&params, loss.backward().unwrap(), None).unwrap();
            }
            assert_eq!(grads.bufs[0], vec![8.0; 3]); // 2 x d(a^2)/da = 2 x 2a
            assert_eq!(grads.bufs[1], vec![2.0; 2]);
            assert!((grads.norm() - (3.0f64 * 64.0 + 2.0 * 4.0).sqrt()).abs() < 1e-9);
            grads.release();
            assert!(grads.bufs.iter().all(Vec::is_empty));
            grads.fill_missing(&params);
            assert_eq!(grads.bufs, vec![vec![0.0; 3], vec![0.0; 2]]);
        }
        let mut grads = Grads::released(&params);
        let only_a = a.sum_all().unwrap().backward().unwrap();
        let err = grads.add(&params, only_a, None).unwrap_err().to_string();
        assert!(err.contains("`b` received no gradient"), "{err}");
    }

    #[test]
    fn clipping_scales_to_the_limit_only_above_it() {
        assert_eq!(clip_factor(3.0, 0.0), 1.0);
        assert_eq!(clip_factor(1.0, 1.5), 1.0);
        assert!((clip_factor(3.0, 1.5) * 3.0 - 1.5).abs() < 1e-5);
    }
}
