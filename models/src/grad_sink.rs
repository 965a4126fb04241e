//! Gradients gathered outside candle's autograd, into one f32 buffer per parameter: embedding
//! tables (below) and the parameters of blocks whose activations are recomputed in backward
//! (`recompute`), which candle's outer graph never sees.
//!
//! Through candle's backward, a table looked up with `index_select` gets a gradient built as a
//! table of zeros plus an `index_add` copy (two table-sized allocations), and a table used twice
//! (the item table: input lookup and tied output logits) gets a third one for the sum. At the
//! paper's 994,447 items those transient copies were 1.5 GB of a step's peak. With a
//! [`GradSink`], the lookups ([`gather_rows`]) and the chunked cross-entropy write their
//! table gradients straight into the sink's buffer, in place, and hand candle no gradient for
//! the table; the trainer collects the buffer with [`GradSink::take`] beside the
//! `GradStore`. Without a sink every op behaves as plain candle (what the gradient checks test).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, TensorId, bail};

/// Shared, per-parameter f32 gradient buffers (parameter-sized, allocated at the first write).
#[derive(Clone, Default)]
pub struct GradSink {
    buffers: Arc<Mutex<HashMap<TensorId, Vec<f32>>>>,
}

impl std::fmt::Debug for GradSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradSink").finish_non_exhaustive()
    }
}

impl GradSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `table` can send its gradient here (f32 on the CPU).
    pub fn accepts(table: &Tensor) -> bool {
        table.device().is_cpu() && table.dtype() == DType::F32
    }

    /// Run `f` on `table`'s gradient buffer (zeros when new).
    pub fn with_buffer<R>(&self, table: &Tensor, f: impl FnOnce(&mut [f32]) -> R) -> R {
        let mut map = self.buffers.lock().expect("table gradient sink lock");
        let buf = map
            .entry(table.id())
            .or_insert_with(|| vec![0.0; table.elem_count()]);
        f(buf)
    }

    /// `grad[ids[i]] += rows[i]` for the `[ids.len(), dim]` row-major `rows`.
    pub fn add_rows(&self, table: &Tensor, ids: &[u32], rows: &[f32]) {
        let dim = table.elem_count() / table.dim(0).unwrap_or(1).max(1);
        self.with_buffer(table, |buf| {
            for (&id, row) in ids.iter().zip(rows.chunks_exact(dim)) {
                let at = id as usize * dim;
                for (g, &x) in buf[at..at + dim].iter_mut().zip(row) {
                    *g += x;
                }
            }
        })
    }

    /// `grad[param] += g` for a gradient `g` shaped like `param`.
    pub fn add_dense(&self, param: &Tensor, g: &Tensor) -> Result<()> {
        if g.elem_count() != param.elem_count() {
            bail!(
                "gradient sink: a gradient of {} values for a parameter of {}",
                g.elem_count(),
                param.elem_count()
            );
        }
        let g = g.to_dtype(DType::F32)?.flatten_all()?.contiguous()?;
        let (storage, layout) = g.storage_and_layout();
        let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        else {
            bail!("gradient sink: the gradient is not a contiguous CPU tensor");
        };
        let values = &cpu.as_slice::<f32>()?[start..end];
        self.with_buffer(param, |buf| {
            for (b, &x) in buf.iter_mut().zip(values) {
                *b += x;
            }
        });
        Ok(())
    }

    /// The accumulated gradient of `table`, leaving none behind.
    pub fn take(&self, table: &Tensor) -> Option<Vec<f32>> {
        self.buffers
            .lock()
            .expect("table gradient sink lock")
            .remove(&table.id())
    }

    /// Whether no gradient is pending.
    pub fn is_empty(&self) -> bool {
        self.buffers
            .lock()
            .expect("table gradient sink lock")
            .is_empty()
    }
}

/// `table[ids]`, `[ids.len(), dim]`: through the sink when given and the table allows it,
/// else candle's `index_select`.
pub fn gather_rows(table: &Tensor, ids: &[u32], sink: Option<&GradSink>) -> Result<Tensor> {
    match sink {
        Some(sink) if GradSink::accepts(table) && !ids.is_empty() => {
            let op = SinkGather {
                ids: ids.to_vec(),
                sink: sink.clone(),
            };
            table.apply_op1_arc(Arc::new(Box::new(op)))
        }
        _ => {
            let idx = Tensor::from_slice(ids, ids.len(), table.device())?;
            table.index_select(&idx, 0)
        }
    }
}

/// A row gather whose backward scatters into the sink instead of returning a dense gradient.
struct SinkGather {
    ids: Vec<u32>,
    sink: GradSink,
}

impl CustomOp1 for SinkGather {
    fn name(&self) -> &'static str {
        "sink-gather"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, dim) = layout.shape().dims2()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("sink-gather: the table must be contiguous");
        };
        let table = &storage.as_slice::<f32>()?[start..end];
        let mut out = Vec::with_capacity(self.ids.len() * dim);
        for &id in &self.ids {
            let id = id as usize;
            if id >= rows {
                bail!("sink-gather: id {id} outside a table of {rows} rows");
            }
            out.extend_from_slice(&table[id * dim..(id + 1) * dim]);
        }
        Ok((CpuStorage::F32(out), Shape::from((self.ids.len(), dim))))
    }

    fn bwd(&self, table: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.to_dtype(DType::F32)?.contiguous()?;
        let (storage, layout) = grad.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("sink-gather: non-contiguous gradient");
        };
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            bail!("sink-gather: gradient not on the CPU");
        };
        self.sink
            .add_rows(table, &self.ids, &cpu.as_slice::<f32>()?[start..end]);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The same loss through the sink and through `index_select`: equal table gradients, and
    /// candle sees none for the table when the sink takes it.
    #[test]
    fn sink_gradients_equal_candles_dense_ones() {
        let dev = Device::Cpu;
        let table = Var::randn(0f32, 1.0, (6, 3), &dev).unwrap();
        let ids = [4u32, 1, 4, 0];
        let weights = Tensor::randn(0f32, 1.0, (4, 3), &dev).unwrap();
        let loss = |sink: Option<&GradSink>| {
            (gather_rows(&table, &ids, sink).unwrap() * &weights)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let dense = loss(None).backward().unwrap();
        let dense: Vec<f32> = dense
            .get(&table)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let sink = GradSink::new();
        let store = loss(Some(&sink)).backward().unwrap();
        assert!(store.get(&table).is_none());
        let got = sink.take(&table).unwrap();
        assert!(sink.is_empty());
        for (a, b) in got.iter().zip(&dense) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert_eq!(got[2 * 3..4 * 3], [0.0; 6]); // rows 2 and 3 untouched
    }

    #[test]
    fn out_of_range_ids_are_errors() {
        let table = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let err = gather_rows(&table, &[2], Some(&GradSink::new())).unwrap_err();
        assert!(err.to_string().contains("id 2"), "{err}");
    }
}
