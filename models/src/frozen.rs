//! Ops against weights that do not train, whose backward computes only the input's gradient.
//!
//! candle's backward computes a gradient for every argument of every op on the path to a
//! variable, whether or not that argument can train. Behind a frozen LLM (the adapter and LoRA
//! strategies) that meant, for each of its projections, a weight-sized `x^T g` product per batch
//! row (candle's `Linear` broadcasts the weight over the batch, so the gradient is `[B, d_in,
//! d_out]`), kept in the gradient store until the whole backward pass had finished: at
//! SmolLM2-135M and 16 questions per step, about 9 GB and a third of the step's arithmetic for
//! numbers nobody reads. The same holds, smaller, for the RMS-norm scales, the rotary tables and
//! the attention mask.
//!
//! Here the forward result is computed with ordinary (device-generic, untracked) ops and handed
//! back through a `CustomOp1` over the input, whose backward is the input's gradient alone. When
//! the other operand can train, or the input needs no gradient (inference), the plain candle op
//! runs instead, so these functions are safe to use everywhere.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor, bail,
};

/// Whether `t` (a weight, a bias, a constant table) takes part in backward.
fn trains(t: &Tensor) -> bool {
    t.track_op()
}

/// `x @ w^T + b` over the last dimension of `x` (`w: [d_out, d_in]`, `b: [d_out]`), as one
/// matrix product over the flattened leading dimensions. With `w` and `b` frozen, backward
/// computes `g @ w` for `x` and nothing for the weights.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let Some((&d_in, lead)) = dims.split_last() else {
        bail!("linear: a scalar input");
    };
    let d_out = w.dim(0)?;
    let rows: usize = lead.iter().product();
    let flat = x.reshape((rows, d_in))?;
    let apply = |x: &Tensor| -> Result<Tensor> {
        let y = x.matmul(&w.t()?)?;
        match b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    };
    let frozen = !trains(w) && !b.is_some_and(trains);
    let y = if frozen && x.track_op() {
        let w = w.clone();
        input_grad_only(&flat, apply(&flat.detach())?, move |g| g.matmul(&w))?
    } else {
        apply(&flat)?
    };
    let mut out_dims = lead.to_vec();
    out_dims.push(d_out);
    y.reshape(out_dims)
}

/// `x * c` with `c` broadcast to `x`'s shape; with `c` frozen, backward computes `g * c` only.
pub fn broadcast_mul(x: &Tensor, c: &Tensor) -> Result<Tensor> {
    if trains(c) || !x.track_op() {
        return x.broadcast_mul(c);
    }
    let c = c.clone();
    let y = x.detach().broadcast_mul(&c)?;
    input_grad_only(x, y, move |g| g.broadcast_mul(&c))
}

/// `x + c` with `c` broadcast to `x`'s shape; with `c` frozen, backward passes `g` on to `x`
/// without building a gradient for `c`.
pub fn broadcast_add(x: &Tensor, c: &Tensor) -> Result<Tensor> {
    if trains(c) || !x.track_op() {
        return x.broadcast_add(c);
    }
    let y = x.detach().broadcast_add(c)?;
    input_grad_only(x, y, |g| Ok(g.clone()))
}

type InputGrad = Box<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

/// `y` (already computed from `x`'s values) as a result of `x` in the graph, with `dx = grad(g)`.
pub(crate) fn input_grad_only(
    x: &Tensor,
    y: Tensor,
    grad: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
) -> Result<Tensor> {
    let op = InputGradOnly {
        out: Mutex::new(Some(y.contiguous()?)),
        grad: Box::new(grad),
    };
    x.apply_op1_arc(Arc::new(Box::new(op)))
}

struct InputGradOnly {
    /// The forward result until the op's forward hands it to candle (taken, so the values are
    /// held once).
    out: Mutex<Option<Tensor>>,
    grad: InputGrad,
}

impl InputGradOnly {
    fn take(&self) -> Result<Tensor> {
        match self.out.lock().expect("frozen op lock").take() {
            Some(t) => Ok(t),
            None => bail!("frozen op: forward ran twice"),
        }
    }
}

impl CustomOp1 for InputGradOnly {
    fn name(&self) -> &'static str {
        "input-grad-only"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = self.take()?;
        let (storage, layout) = out.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((s.try_clone(layout)?, out.shape().clone())),
            _ => bail!("frozen op: the result is not on the CPU"),
        }
    }

    /// Untested here (no GPU on the build machines): hands back a device copy of the result.
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        let out = self.take()?;
        let (storage, layout) = out.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, out.shape().clone())),
            _ => bail!("frozen op: the result is not on the CUDA device"),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some((self.grad)(g)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
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
            .to_scalar()
            .unwrap()
    }

    /// Frozen ops give the plain ops' values and input gradients, and no gradient at all for
    /// the frozen operands.
    #[test]
    fn frozen_ops_match_plain_ops_and_leave_weights_without_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 4), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f64, 1.0, (5, 4), &dev).unwrap();
        let b = Tensor::randn(0f64, 1.0, 5, &dev).unwrap();
        let c = Tensor::randn(0f64, 1.0, (3, 5), &dev).unwrap();
        let up = Tensor::randn(0f64, 1.0, (2, 3, 5), &dev).unwrap();
        let frozen = |x: &Tensor| {
            let y = linear(x, &w, Some(&b))?;
            let y = broadcast_mul(&y, &c)?;
            broadcast_add(&y, &c)
        };
        let plain = |x: &Tensor| {
            let y = x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?;
            y.broadcast_mul(&c)?.broadcast_add(&c)
        };
        let yf = frozen(x.as_tensor()).unwrap();
        let yp = plain(x.as_tensor()).unwrap();
        assert!(max_diff(&yf, &yp) < 1e-12);
        let gf = (yf * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (yp * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let (dxf, dxp) = (
            gf.get(x.as_tensor()).unwrap(),
            gp.get(x.as_tensor()).unwrap(),
        );
        assert!(max_diff(dxf, dxp) < 1e-12);
        // Plain candle builds gradients for the constants (at their transposed or broadcast
        // views); the frozen ops build none, in any form.
        let constant_shaped = |g: &candle_core::backprop::GradStore| {
            let shapes: [&[usize]; 6] = [&[5, 4], &[4, 5], &[2, 4, 5], &[2, 5, 4], &[5], &[3, 5]];
            g.get_ids()
                .filter(|&&id| shapes.contains(&g.get_id(id).unwrap().dims()))
                .count()
        };
        assert!(constant_shaped(&gp) > 0);
        assert_eq!(constant_shaped(&gf), 0);
    }

    /// A trainable weight gets the plain op and its gradient; an untracked input gets no graph.
    #[test]
    fn trainable_weights_and_untracked_inputs_take_the_plain_path() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (2, 3, 4), &dev).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f64, 1.0, (5, 4), &dev).unwrap()).unwrap();
        let y = linear(&x, w.as_tensor(), None).unwrap();
        assert_eq!(y.dims(), &[2, 3, 5]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let expect = x
            .reshape((6, 4))
            .unwrap()
            .sum(0)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let gw = g.get(w.as_tensor()).unwrap();
        assert!(max_diff(gw, &expect.broadcast_as((5, 4)).unwrap()) < 1e-12);
        let frozen_w = w.as_tensor().detach();
        assert!(!linear(&x, &frozen_w, None).unwrap().track_op());
    }
}
