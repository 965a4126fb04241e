//! AdamW (Loshchilov and Hutter, decoupled weight decay) with fp32 moment state that is saved
//! and restored with checkpoints, which candle's own `AdamW` cannot do (DESIGN.md). The update
//! is one fused pass per parameter, in place on the parameter's storage, parallel over chunks.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{CpuStorage, Device, InplaceOp1, Layout, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::grads::{Grads, Params};
use super::zero::Shard;
use crate::error::{CandleContext, Result, TrainError};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate (the schedule scales it).
    pub lr: f64,
    #[serde(default = "default_betas")]
    pub betas: (f64, f64),
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
}

fn default_betas() -> (f64, f64) {
    (0.9, 0.999)
}
fn default_eps() -> f64 {
    1e-8
}

impl AdamWConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr = {} must be positive", self.lr));
        }
        let ok = |b: f64| (0.0..1.0).contains(&b);
        if !ok(self.betas.0) || !ok(self.betas.1) {
            return Err(format!("betas = {:?} must lie in [0, 1)", self.betas));
        }
        if self.eps <= 0.0 || self.weight_decay < 0.0 {
            return Err("eps must be positive and weight_decay non-negative".into());
        }
        Ok(())
    }
}

pub struct AdamW {
    /// The update's constants; the learning rate comes with each step (from the schedule).
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    /// Optimiser steps taken (the bias corrections use it).
    pub step: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Per-parameter learning-rate multipliers (parameter groups: alignment's full strategy
    /// trains the LLM at its own rate).
    lr_scale: Vec<f64>,
    /// ZeRO-1: the parameters whose moments this rank holds and updates (`None`: all of them;
    /// the others have empty buffers).
    shard: Option<Shard>,
}

/// One parameter's fused update, run in place on its storage.
struct Kernel<'a> {
    grad: &'a [f32],
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    decay: f32,
    bc1: f32,
    bc2: f32,
    grad_scale: f32,
}

const CHUNK: usize = 1 << 16;

impl InplaceOp1 for Kernel<'_> {
    fn name(&self) -> &'static str {
        "uqa-adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(values) = storage else {
            candle_core::bail!("AdamW: parameters must be f32");
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("AdamW: parameter is not contiguous");
        };
        self.apply(&mut values[a..b])
    }
}

impl Kernel<'_> {
    /// The update of the parameter values `p`, its moments and gradient alike in length.
    fn apply(&self, p: &mut [f32]) -> candle_core::Result<()> {
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if p.len() != self.grad.len() || m.len() != p.len() {
            candle_core::bail!("AdamW: {} values, {} gradients", p.len(), self.grad.len());
        }
        let (lr, b1, b2, eps, decay, bc1, bc2, scale) = (
            self.lr,
            self.b1,
            self.b2,
            self.eps,
            self.decay,
            self.bc1,
            self.bc2,
            self.grad_scale,
        );
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(self.grad.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for i in 0..p.len() {
                    let g = g[i] * scale;
                    m[i] = b1 * m[i] + (1.0 - b1) * g;
                    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                    let update = (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
                    p[i] = p[i] * decay - lr * update;
                }
            });
        Ok(())
    }

    /// The update of a parameter on another device: its values come to the host, take the
    /// same update as on the CPU (so results match the CPU's bit for bit) and go back. The
    /// moments and gradients already live on the host (`Grads`); a device-side kernel would
    /// save the two copies.
    fn apply_through_host(&self, var: &Var) -> candle_core::Result<()> {
        let mut host = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        self.apply(&mut host)?;
        var.set(&Tensor::from_vec(host, var.shape(), var.device())?)
    }
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &Params) -> Self {
        Self::with_shard(config, params, None)
    }

    /// An optimiser holding state only for the parameters `shard` gives this rank (all of them
    /// when `None`). Buffers of other parameters stay empty: they are never allocated, so the
    /// state takes about 1/world of the memory.
    pub fn with_shard(config: AdamWConfig, params: &Params, shard: Option<Shard>) -> Self {
        let owns = |i: usize| shard.as_ref().is_none_or(|s| s.owns(i));
        let zeros = || {
            params
                .vars
                .iter()
                .enumerate()
                .map(|(i, v)| vec![0.0f32; if owns(i) { v.elem_count() } else { 0 }])
                .collect()
        };
        Self {
            betas: config.betas,
            eps: config.eps,
            weight_decay: config.weight_decay,
            step: 0,
            m: zeros(),
            v: zeros(),
            lr_scale: vec![1.0; params.len()],
            shard,
        }
    }

    /// The ZeRO-1 partition, when the state is sharded.
    pub fn shard(&self) -> Option<&Shard> {
        self.shard.as_ref()
    }

    fn owns(&self, param: usize) -> bool {
        self.shard.as_ref().is_none_or(|s| s.owns(param))
    }

    /// Bytes of moment state this rank holds.
    pub fn state_bytes(&self) -> usize {
        self.m.iter().chain(&self.v).map(|b| b.len() * 4).sum()
    }

    /// Scales the learning rate of each parameter by `scale(name)`.
    pub fn with_lr_scales(mut self, params: &Params, scale: impl Fn(&str) -> f64) -> Self {
        self.lr_scale = params.names.iter().map(|n| scale(n)).collect();
        self
    }

    /// One update with learning rate `lr`, gradients multiplied by `grad_scale` (clipping).
    /// With a shard, only the owned parameters change: the caller broadcasts them from their
    /// owners (`Replicas::step_optimizer` does both).
    pub fn step(&mut self, params: &Params, grads: &Grads, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        for (i, var) in params.vars.iter().enumerate() {
            if !self.owns(i) {
                continue;
            }
            let lr = lr * self.lr_scale[i];
            let kernel = Kernel {
                grad: &grads.bufs[i],
                m: RefCell::new(&mut self.m[i]),
                v: RefCell::new(&mut self.v[i]),
                lr: lr as f32,
                b1: b1 as f32,
                b2: b2 as f32,
                eps: self.eps as f32,
                decay: (1.0 - lr * self.weight_decay) as f32,
                bc1: bc1 as f32,
                bc2: bc2 as f32,
                grad_scale: grad_scale as f32,
            };
            let done = if var.device().is_cpu() {
                var.as_tensor().inplace_op1(&kernel)
            } else {
                kernel.apply_through_host(var)
            };
            done.ctx(&format!("AdamW update of `{}`", params.names[i]))?;
        }
        Ok(())
    }

    /// Moment state as named tensors (`m.NAME`, `v.NAME`) for checkpoints: the owned
    /// parameters' only, with a shard.
    pub fn state_tensors(&self, params: &Params) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, (name, var)) in params.names.iter().zip(&params.vars).enumerate() {
            if !self.owns(i) {
                continue;
            }
            for (prefix, buf) in [("m", &self.m[i]), ("v", &self.v[i])] {
                let t =
                    Tensor::from_slice(buf, var.shape(), &Device::Cpu).ctx("optimizer state")?;
                out.insert(format!("{prefix}.{name}"), t);
            }
        }
        Ok(out)
    }

    /// Restore moment state saved by [`AdamW::state_tensors`].
    pub fn load_state(
        &mut self,
        params: &Params,
        state: &HashMap<String, Tensor>,
        step: u64,
    ) -> Result<()> {
        // Tensors of parameters this rank does not own mean another partition (world size,
        // model) wrote the state: refuse rather than silently drop them.
        let owned = (0..params.len()).filter(|&i| self.owns(i)).count();
        if state.len() != 2 * owned {
            return Err(TrainError::Invalid(format!(
                "optimizer state holds {} tensors, this rank's {} parameters need {}",
                state.len(),
                owned,
                2 * owned
            )));
        }
        for (i, (name, var)) in params.names.iter().zip(&params.vars).enumerate() {
            if !self.owns(i) {
                continue;
            }
            for (prefix, buf) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{name}");
                let t = state.get(&key).ok_or_else(|| {
                    TrainError::Invalid(format!("optimizer state has no `{key}`"))
                })?;
                if t.shape() != var.shape() {
                    return Err(TrainError::Invalid(format!(
                        "optimizer state `{key}` has shape {:?}, the parameter {:?}",
                        t.shape(),
                        var.shape()
                    )));
                }
                *buf = t
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .ctx("optimizer state")?;
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};

    /// Against a scalar transcription of the algorithm (PyTorch's AdamW docs) over 5 steps.
    #[test]
    fn matches_the_reference_algorithm() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let _w = vb
            .get_with_hints(3, "w", candle_nn::Init::Const(1.0))
            .unwrap();
        let params = Params::from_varmap(&map);
        let cfg = AdamWConfig {
            lr: 0.1,
            betas: (0.9, 0.99),
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut opt = AdamW::new(cfg, &params);
        let (mut p, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        for t in 1..=5 {
            let g = 0.5 * t as f64;
            let grads = Grads {
                bufs: vec![vec![g as f32; 3]],
            };
            opt.step(&params, &grads, 0.1, 1.0).unwrap();
            p *= 1.0 - 0.1 * 0.01;
            m = 0.9 * m + 0.1 * g;
            v = 0.99 * v + 0.01 * g * g;
            let mh = m / (1.0 - 0.9f64.powi(t));
            let vh = v / (1.0 - 0.99f64.powi(t));
            p -= 0.1 * mh / (vh.sqrt() + 1e-8);
        }
        let got = params.vars[0].as_tensor().to_vec1::<f32>().unwrap();
        for x in got {
            assert!((x as f64 - p).abs() < 1e-5, "{x} vs {p}");
        }
    }

    #[test]
    fn state_round_trips() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let _w = vb
            .get_with_hints((2, 2), "w", candle_nn::Init::Const(1.0))
            .unwrap();
        let params = Params::from_varmap(&map);
        let cfg = AdamWConfig {
            lr: 0.1,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut a = AdamW::new(cfg, &params);
        let grads = Grads {
            bufs: vec![vec![0.3, -0.2, 0.1, 0.0]],
        };
        a.step(&params, &grads, 0.1, 1.0).unwrap();
        let mut b = AdamW::new(cfg, &params);
        b.load_state(&params, &a.state_tensors(&params).unwrap(), a.step)
            .unwrap();
        assert_eq!(
            (a.m.clone(), a.v.clone(), a.step),
            (b.m.clone(), b.v.clone(), b.step)
        );
    }

    /// Each rank of a 2-way shard updates exactly its parameters, with the values of the
    /// unsharded optimiser, and holds and saves only their state.
    #[test]
    fn a_shard_updates_and_saves_only_its_parameters() {
        let cfg = AdamWConfig {
            lr: 0.1,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let make = || {
            let map = VarMap::new();
            let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
            vb.get_with_hints(4, "a", candle_nn::Init::Const(1.0))
                .unwrap();
            vb.get_with_hints(2, "b", candle_nn::Init::Const(-1.0))
                .unwrap();
            Params::from_varmap(&map)
        };
        let grads = Grads {
            bufs: vec![vec![0.3, -0.2, 0.1, 0.5], vec![0.7, -0.4]],
        };
        let values = |p: &Params| -> Vec<Vec<f32>> {
            p.vars
                .iter()
                .map(|v| v.as_tensor().to_vec1::<f32>().unwrap())
                .collect()
        };
        let full = make();
        let mut reference =
            AdamW::new(cfg, &full).with_lr_scales(&full, |n| if n == "b" { 0.5 } else { 1.0 });
        reference.step(&full, &grads, 0.1, 0.9).unwrap();
        for rank in 0..2 {
            let params = make();
            let before = values(&params);
            let shard = Shard::new(&params, rank, 2);
            assert_eq!(shard.owners, vec![0, 1]);
            let mut opt = AdamW::with_shard(cfg, &params, Some(shard))
                .with_lr_scales(&params, |n| if n == "b" { 0.5 } else { 1.0 });
            assert_eq!(opt.state_bytes(), 2 * 4 * [4, 2][rank]);
            opt.step(&params, &grads, 0.1, 0.9).unwrap();
            let after = values(&params);
            for i in 0..2 {
                let want = if i == rank {
                    &values(&full)[i]
                } else {
                    &before[i]
                };
                assert_eq!(&after[i], want, "rank {rank}, parameter {i}");
            }
            let state = opt.state_tensors(&params).unwrap();
            let name = ["a", "b"][rank];
            let mut keys: Vec<_> = state.keys().cloned().collect();
            keys.sort();
            assert_eq!(keys, vec![format!("m.{name}"), format!("v.{name}")]);
            // Its own shard loads; the whole state does not.
            let mut again = AdamW::with_shard(cfg, &params, Some(Shard::new(&params, rank, 2)));
            again.load_state(&params, &state, 1).unwrap();
            assert_eq!((&again.m, &again.v), (&opt.m, &opt.v));
            let whole = reference.state_tensors(&full).unwrap();
            let err = again
                .load_state(&params, &whole, 1)
                .unwrap_err()
                .to_string();
            assert!(err.contains("holds 4 tensors"), "{err}");
        }
    }
}
