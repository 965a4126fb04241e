//! The two passes of the chunked cross-entropy (`chunked.rs`): fused CPU kernels, and the same
//! computations in plain tensor ops (`generic`) for other devices and dtypes. The logits of a
//! chunk always come from candle's (multi-threaded) matmul; on the CPU the element-wise work
//! that follows is one row-parallel pass over the block in place, instead of candle's
//! max / sub / exp / sum / mul sequence, each of which allocates and walks the whole
//! `[N, chunk]` block. Used for f32 and f64 on the CPU.

use candle_core::{D, DType, Result, Storage, Tensor, WithDType, bail};
use num_traits::Float;
use rayon::prelude::*;

use super::row_kernels::RowKernels;

/// Whether the fused kernels handle tensors like `t`.
pub(super) fn supported(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// Online log-sum-exp of `h @ W^T` over vocabulary chunks -> `[N]`.
pub(super) fn forward_lse(h: &Tensor, w: &Tensor, chunk: usize) -> Result<Tensor> {
    match h.dtype() {
        DType::F32 => forward_lse_t::<f32>(h, w, chunk),
        _ => forward_lse_t::<f64>(h, w, chunk),
    }
}

fn forward_lse_t<T: WithDType + Float + RowKernels>(
    h: &Tensor,
    w: &Tensor,
    chunk: usize,
) -> Result<Tensor> {
    let n = h.dim(0)?;
    let v = w.dim(0)?;
    // Running max and running sum of exp(z - max), per row.
    let mut state = vec![(T::neg_infinity(), T::zero()); n];
    for c0 in (0..v).step_by(chunk) {
        let c = chunk.min(v - c0);
        let z = h.matmul(&w.narrow(0, c0, c)?.t()?)?;
        with_slice(&z, |z: &[T]| {
            state
                .par_iter_mut()
                .zip(z.par_chunks(c))
                .for_each(|((m, s), row)| {
                    let mc = T::row_max(row);
                    let m_new = Float::max(*m, mc);
                    let sc = T::row_sum_exp(row, m_new);
                    *s = *s * (*m - m_new).exp() + sc;
                    *m = m_new;
                })
        })?;
    }
    let lse: Vec<T> = state.into_iter().map(|(m, s)| m + s.ln()).collect();
    Tensor::from_vec(lse, n, h.device())
}

/// `g_i * softmax` of one chunk: `p[i, j] = exp(z[i, j] - lse_i) * g_i` for `z = h @ W_c^T`.
fn scaled_probs_t<T: WithDType + Float + RowKernels>(
    h: &Tensor,
    wc: &Tensor,
    lse: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    let z = h.matmul(&wc.t()?)?;
    let (n, c) = z.dims2()?;
    let lse = lse.flatten_all()?.to_vec1::<T>()?;
    let g = g.flatten_all()?.to_vec1::<T>()?;
    let mut p = vec![T::zero(); n * c];
    with_slice(&z, |z: &[T]| {
        p.par_chunks_mut(c)
            .zip(z.par_chunks(c))
            .zip(lse.par_iter().zip(g.par_iter()))
            .for_each(|((out, row), (&l, &gi))| {
                T::scaled_exp(out, row, l, gi);
            })
    })?;
    Tensor::from_vec(p, (n, c), h.device())
}

/// The float types of the fused kernels.
pub(super) trait Elem:
    WithDType + Float + RowKernels + std::ops::SubAssign + std::ops::AddAssign
{
}
impl<T: WithDType + Float + RowKernels + std::ops::SubAssign + std::ops::AddAssign> Elem for T {}

/// The whole backward of the chunked cross-entropy on the CPU: `(dh, dW)` for upstream
/// gradient `g: [N]`. `dW` is assembled in one host buffer (chunk blocks added in, then the
/// target term subtracted in place), so the table-sized gradient exists exactly once.
pub(super) fn backward(
    h: &Tensor,
    w: &Tensor,
    lse: &Tensor,
    g: &Tensor,
    labels: Option<&[u32]>,
    chunk: usize,
) -> Result<(Tensor, Tensor)> {
    let (v, k) = w.dims2()?;
    let dev = h.device();
    if h.dtype() == DType::F32 {
        let mut gw = vec![0f32; v * k];
        let gh = backward_into(h, w, lse, g, labels, chunk, &mut gw)?;
        Ok((gh, Tensor::from_vec(gw, (v, k), dev)?))
    } else {
        let mut gw = vec![0f64; v * k];
        let gh = backward_into(h, w, lse, g, labels, chunk, &mut gw)?;
        Ok((gh, Tensor::from_vec(gw, (v, k), dev)?))
    }
}

/// The backward with `dW` added into `gw` (`[V * k]`, row-major) in place; returns `dh`.
pub(super) fn backward_into<T: Elem>(
    h: &Tensor,
    w: &Tensor,
    lse: &Tensor,
    g: &Tensor,
    labels: Option<&[u32]>,
    chunk: usize,
    gw: &mut [T],
) -> Result<Tensor> {
    backward_with(h, w, lse, g, labels, chunk, Some(gw))
}

/// `dh` alone, for a frozen table: the `[V, k]` gradient is neither built nor allocated.
pub(super) fn backward_input_only(
    h: &Tensor,
    w: &Tensor,
    lse: &Tensor,
    g: &Tensor,
    labels: Option<&[u32]>,
    chunk: usize,
) -> Result<Tensor> {
    match h.dtype() {
        DType::F32 => backward_with::<f32>(h, w, lse, g, labels, chunk, None),
        _ => backward_with::<f64>(h, w, lse, g, labels, chunk, None),
    }
}

fn backward_with<T: Elem>(
    h: &Tensor,
    w: &Tensor,
    lse: &Tensor,
    g: &Tensor,
    labels: Option<&[u32]>,
    chunk: usize,
    mut gw: Option<&mut [T]>,
) -> Result<Tensor> {
    let (v, k) = w.dims2()?;
    if let Some(gw) = &gw
        && gw.len() != v * k
    {
        bail!(
            "chunked-cross-entropy: gradient buffer of {} for a [{v}, {k}] table",
            gw.len()
        );
    }
    let mut gh = h.zeros_like()?;
    for c0 in (0..v).step_by(chunk) {
        let c = chunk.min(v - c0);
        let wc = w.narrow(0, c0, c)?;
        let p = scaled_probs_t::<T>(h, &wc, lse, g)?;
        gh = (gh + p.matmul(&wc)?)?;
        if let Some(gw) = gw.as_deref_mut() {
            let block = p.t()?.matmul(h)?;
            with_slice(&block, |b: &[T]| {
                for (o, &x) in gw[c0 * k..(c0 + c) * k].iter_mut().zip(b) {
                    *o += x;
                }
            })?;
        }
    }
    if let Some(labels) = labels {
        // Minus the one-hot target: dh_i -= g_i w_{y_i}, dw_{y_i} -= g_i h_i.
        if let Some(gw) = gw {
            let gv = g.to_vec1::<T>()?;
            let hv = h.to_vec2::<T>()?;
            for ((&y, &gi), hi) in labels.iter().zip(&gv).zip(&hv) {
                let row = &mut gw[y as usize * k..(y as usize + 1) * k];
                for (o, &x) in row.iter_mut().zip(hi) {
                    *o -= gi * x;
                }
            }
        }
        let idx = Tensor::from_slice(labels, labels.len(), h.device())?;
        gh = (gh - w.index_select(&idx, 0)?.broadcast_mul(&g.unsqueeze(1)?)?)?;
    }
    Ok(gh)
}

/// Runs `f` on the elements of a contiguous CPU tensor where they are, without copying them
/// out (copying a `[N, chunk]` block per chunk was a large share of the loss's time).
fn with_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        bail!("chunked-logsumexp: expected a contiguous CPU tensor");
    };
    Ok(f(&cpu.as_slice::<T>()?[start..end]))
}

/// The same two computations through plain tensor ops (any device, any float dtype).
pub(super) mod generic {
    use super::*;

    pub fn forward_lse(h: &Tensor, w: &Tensor, chunk: usize) -> Result<Tensor> {
        let v = w.dim(0)?;
        let mut state: Option<(Tensor, Tensor)> = None;
        for c0 in (0..v).step_by(chunk) {
            let z = h.matmul(&w.narrow(0, c0, chunk.min(v - c0))?.t()?)?;
            let mc = z.max_keepdim(D::Minus1)?;
            let sc = z.broadcast_sub(&mc)?.exp()?.sum_keepdim(D::Minus1)?;
            state = Some(match state {
                None => (mc, sc),
                Some((m, s)) => {
                    let m_new = m.maximum(&mc)?;
                    let s = ((s * (m - &m_new)?.exp()?)? + (sc * (mc - &m_new)?.exp()?)?)?;
                    (m_new, s)
                }
            });
        }
        match state {
            Some((m, s)) => (m + s.log()?)?.squeeze(1)?.contiguous(),
            None => candle_core::bail!("chunked log-sum-exp over an empty vocabulary"),
        }
    }

    /// [`super::backward`] in tensor ops; `dW` only when `table_grad`.
    pub fn backward(
        h: &Tensor,
        w: &Tensor,
        lse: &Tensor,
        g: &Tensor,
        labels: Option<&[u32]>,
        chunk: usize,
        table_grad: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (v, k) = w.dims2()?;
        let mut gh = h.zeros_like()?;
        // Filled in place chunk by chunk: concatenating blocks would hold dW twice.
        let mut gw = table_grad
            .then(|| Tensor::zeros((v, k), w.dtype(), w.device()))
            .transpose()?;
        for c0 in (0..v).step_by(chunk) {
            let wc = w.narrow(0, c0, chunk.min(v - c0))?;
            let p = scaled_probs(h, &wc, lse, g)?;
            gh = (gh + p.matmul(&wc)?)?;
            if let Some(gw) = &gw {
                gw.slice_set(&p.t()?.matmul(h)?, 0, c0)?;
            }
        }
        if let Some(labels) = labels {
            let idx = Tensor::from_slice(labels, labels.len(), h.device())?;
            let g = g.unsqueeze(1)?;
            gh = (gh - w.index_select(&idx, 0)?.broadcast_mul(&g)?)?;
            if let Some(t) = gw {
                gw = Some(t.index_add(&idx, &h.broadcast_mul(&g)?.neg()?, 0)?);
            }
        }
        Ok((gh, gw))
    }

    pub fn scaled_probs(h: &Tensor, wc: &Tensor, lse: &Tensor, g: &Tensor) -> Result<Tensor> {
        h.matmul(&wc.t()?)?
            .broadcast_sub(&lse.unsqueeze(1)?)?
            .exp()?
            .broadcast_mul(&g.unsqueeze(1)?)
    }
}
