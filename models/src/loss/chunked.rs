//! Full-softmax cross-entropy over a huge tied vocabulary without materialising the
//! `[N, V]` logits: `ce_i = logsumexp_v(h_i . w_v) - h_i . w_{y_i}`.
//!
//! The forward runs over vocabulary chunks with an online (running max, running sum)
//! log-sum-exp; the backward recomputes each chunk's logits and turns them into softmax
//! probabilities: `dh = sum_c (g * softmax_c) @ W_c - g w_y`, `dW_c = (g * softmax_c)^T @ h`,
//! `dw_y -= g h`. Peak extra memory is one `[N, chunk]` block, and the table-sized gradient is
//! built once (the target term is folded in rather than left to a separate gather, whose
//! backward would add another dense copy of the table).
//!
//! candle's public API cannot attach a backward to a tensor computed by other ops
//! (`BackpropOp` is crate-private), so [`ChunkedCe`] is a `CustomOp2` over `(h, W)` whose
//! forward hands back the values already computed with ordinary (device-generic, untracked)
//! tensor ops; only its `bwd` does real work. On the CPU the element-wise parts of both passes
//! run in fused kernels (`chunked_cpu`).

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, D, DType, Layout, Result, Shape, Storage, Tensor, bail,
};

use super::chunked_cpu;
use crate::grad_sink::GradSink;

/// Vocabulary rows per chunk when none is configured. At the paper's scale (N = 4 x 511 labelled
/// positions) a `[N, 2048]` fp32 block is 16 MiB: small enough for the allocator to recycle
/// between chunks instead of mapping (and page-faulting) fresh memory for every block.
pub const DEFAULT_CHUNK: usize = 2048;

/// `logsumexp(h @ W^T, dim 1)` for `h: [N, k]`, `W: [V, k]` -> `[N]`, differentiable with
/// respect to both, never holding more than `[N, chunk]` logits.
pub fn chunked_logsumexp(h: &Tensor, table: &Tensor, chunk: usize) -> Result<Tensor> {
    apply(h, table, None, chunk, None)
}

/// Sum over rows of the cross-entropy of `logits = h @ W^T` against `labels: [N]` (u32), in
/// chunks. Returns a scalar tensor; an empty `h` gives 0. With a `sink` that accepts the
/// table, the table's gradient is added into the sink rather than returned to candle.
pub fn chunked_cross_entropy_sum(
    h: &Tensor,
    table: &Tensor,
    labels: &Tensor,
    chunk: usize,
    sink: Option<&GradSink>,
) -> Result<Tensor> {
    if h.dim(0)? == 0 {
        return Tensor::zeros((), h.dtype(), h.device());
    }
    apply(h, table, Some(labels), chunk, sink)?.sum_all()
}

/// Per-row `lse_i` (no labels) or `lse_i - h_i . w_{y_i}` (labels), through [`ChunkedCe`].
fn apply(
    h: &Tensor,
    table: &Tensor,
    labels: Option<&Tensor>,
    chunk: usize,
    sink: Option<&GradSink>,
) -> Result<Tensor> {
    let chunk = chunk.max(1);
    let (hd, wd) = (h.detach(), table.detach());
    if wd.dim(0)? == 0 {
        bail!("chunked log-sum-exp over an empty vocabulary");
    }
    let lse = if chunked_cpu::supported(&hd) {
        chunked_cpu::forward_lse(&hd, &wd, chunk)?
    } else {
        chunked_cpu::generic::forward_lse(&hd, &wd, chunk)?
    };
    let (out, labels) = match labels {
        None => (lse.clone(), None),
        Some(l) => {
            let target = (&hd * wd.index_select(l, 0)?)?.sum(1)?;
            ((&lse - target)?.contiguous()?, Some(l.to_vec1::<u32>()?))
        }
    };
    let sink = sink
        .filter(|_| GradSink::accepts(table) && chunked_cpu::supported(&hd))
        .cloned();
    let op = ChunkedCe {
        chunk,
        lse,
        labels,
        out,
        sink,
    };
    h.apply_op2_arc(table, Arc::new(Box::new(op)))
}

/// The same sum through the full `[N, V]` logits: the plain reference the chunked path is
/// tested against (and a fast path for tiny vocabularies).
pub fn naive_cross_entropy_sum(h: &Tensor, table: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if h.dim(0)? == 0 {
        return Tensor::zeros((), h.dtype(), h.device());
    }
    let logp = candle_nn::ops::log_softmax(&h.matmul(&table.t()?)?, D::Minus1)?;
    let picked = logp.gather(&labels.unsqueeze(1)?, 1)?;
    picked.sum_all()?.neg()
}

/// The custom op carrying the chunked backward; see the module doc.
struct ChunkedCe {
    chunk: usize,
    /// Per-row log-sum-exp, `[N]`, needed by the backward.
    lse: Tensor,
    /// Targets, when the op is the cross-entropy rather than the bare log-sum-exp.
    labels: Option<Vec<u32>>,
    /// The forward result, already computed; `[N]`, contiguous.
    out: Tensor,
    /// Where the table's gradient goes instead of candle (f32 CPU tables only).
    sink: Option<GradSink>,
}

impl CustomOp2 for ChunkedCe {
    fn name(&self) -> &'static str {
        "chunked-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = &self.out;
        let storage = match out.dtype() {
            DType::F32 => CpuStorage::F32(out.to_vec1()?),
            DType::F64 => CpuStorage::F64(out.to_vec1()?),
            DType::BF16 => CpuStorage::BF16(out.to_vec1()?),
            DType::F16 => CpuStorage::F16(out.to_vec1()?),
            dt => bail!("chunked-cross-entropy: unsupported dtype {dt:?}"),
        };
        Ok((storage, out.shape().clone()))
    }

    /// Untested here (no GPU on the build machines): hands back a device copy of the result.
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (storage, layout) = self.out.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, self.out.shape().clone())),
            _ => bail!("chunked-cross-entropy: result is not on the CUDA device"),
        }
    }

    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The sink keys buffers by the table's id: `table` is the argument itself.
        let table = w;
        let (h, w) = (h.detach(), w.detach());
        let labels = self.labels.as_deref();
        if !table.track_op() {
            // A frozen table (the LLM's output head under the adapter or LoRA strategy).
            let gh = if chunked_cpu::supported(&h) {
                chunked_cpu::backward_input_only(&h, &w, &self.lse, grad, labels, self.chunk)?
            } else {
                chunked_cpu::generic::backward(&h, &w, &self.lse, grad, labels, self.chunk, false)?
                    .0
            };
            return Ok((Some(gh), None));
        }
        if let Some(sink) = &self.sink {
            let gh = sink.with_buffer(table, |buf| {
                chunked_cpu::backward_into(&h, &w, &self.lse, grad, labels, self.chunk, buf)
            })?;
            return Ok((Some(gh), None));
        }
        if chunked_cpu::supported(&h) {
            let (gh, gw) = chunked_cpu::backward(&h, &w, &self.lse, grad, labels, self.chunk)?;
            return Ok((Some(gh), Some(gw)));
        }
        chunked_cpu::generic::backward(&h, &w, &self.lse, grad, labels, self.chunk, true)
            .map(|(gh, gw)| (Some(gh), gw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_cpu_kernels_equal_the_generic_tensor_ops() {
        let dev = Device::Cpu;
        let h = Tensor::randn(0f64, 3.0, (7, 5), &dev).unwrap();
        let w = Tensor::randn(0f64, 1.0, (29, 5), &dev).unwrap();
        let g = Tensor::randn(0f64, 1.0, 7, &dev).unwrap();
        let a = chunked_cpu::forward_lse(&h, &w, 4).unwrap();
        let b = chunked_cpu::generic::forward_lse(&h, &w, 4).unwrap();
        let diff = |x: &Tensor, y: &Tensor| -> f64 {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert!(diff(&a, &b) < 1e-12);
        let labels = [3u32, 0, 28, 3, 7, 7, 1];
        for l in [None, Some(&labels[..])] {
            let (ha, wa) = chunked_cpu::backward(&h, &w, &a, &g, l, 4).unwrap();
            let (hb, wb) = chunked_cpu::generic::backward(&h, &w, &a, &g, l, 4, true).unwrap();
            assert!(diff(&ha, &hb) < 1e-12 && diff(&wa, &wb.unwrap()) < 1e-12);
            let hc = chunked_cpu::backward_input_only(&h, &w, &a, &g, l, 4).unwrap();
            let (hd, wd) = chunked_cpu::generic::backward(&h, &w, &a, &g, l, 4, false).unwrap();
            assert!(diff(&ha, &hc) < 1e-12 && diff(&ha, &hd) < 1e-12 && wd.is_none());
        }
    }
}
