//! Activation checkpointing (PyTorch's `torch.utils.checkpoint`, Hugging Face's
//! `gradient_checkpointing`): a block runs forward without keeping its intermediate tensors,
//! and backward runs it again to get them. Only each block's input stays alive between the two
//! passes, so a step holds one block's activations at a time instead of all of them (at the
//! paper's scale, batch 4 x 512 positions, they were 2 GB of a 5 GB step), for one more
//! forward pass of compute.
//!
//! candle cannot attach a backward to ordinary ops, so the block is wrapped in a `CustomOp1`
//! over its input. Its backward re-runs the block on a fresh variable, back-propagates the
//! incoming gradient through that small graph, returns the input's gradient to candle and adds
//! the block's parameter gradients to a [`GradSink`] (candle's outer graph does not contain
//! the parameters, so they could not be returned). Dropout masks come from the seeded stream,
//! rewound to where the forward pass drew them, so the recomputed block is the same function.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, Var, bail};

use crate::grad_sink::GradSink;
use crate::layers::{dropout_stream, set_dropout_stream};

/// A block's forward pass, callable again in backward.
pub(crate) type BlockFn = Arc<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

/// `block(x)`, keeping none of the block's activations; `params` are the block's trainable
/// tensors, whose gradients go to `sink`. Falls back to a plain call when the input is not f32
/// on the CPU or the dropout stream is unseeded (a recomputation would draw other masks).
pub(crate) fn recompute_in_backward(
    block: BlockFn,
    x: &Tensor,
    params: Vec<Tensor>,
    sink: &GradSink,
) -> Result<Tensor> {
    let stream = dropout_stream();
    if !(x.device().is_cpu() && x.dtype() == DType::F32) || stream.is_none() {
        return block(x);
    }
    // Forward on a detached input: the graph built here dies with `y`; only its values stay.
    let y = block(&x.detach())?.contiguous()?;
    let out = y.flatten_all()?.to_vec1::<f32>()?;
    let op = Recompute {
        block,
        params,
        sink: sink.clone(),
        stream,
        out,
        shape: y.shape().clone(),
    };
    x.apply_op1_arc(Arc::new(Box::new(op)))
}

struct Recompute {
    block: BlockFn,
    params: Vec<Tensor>,
    sink: GradSink,
    /// The dropout stream when the forward pass started the block.
    stream: Option<(u64, u64)>,
    out: Vec<f32>,
    shape: Shape,
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "recompute-in-backward"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(self.out.clone()), self.shape.clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let input = Var::from_tensor(&x.detach())?;
        let resume = dropout_stream();
        set_dropout_stream(self.stream);
        let y = (self.block)(input.as_tensor());
        set_dropout_stream(resume);
        let y = y?;
        if y.shape() != &self.shape {
            bail!("recompute-in-backward: the block changed its output shape");
        }
        let grads = (y * grad.detach())?.sum_all()?.backward()?;
        for p in &self.params {
            if let Some(g) = grads.get(p) {
                self.sink.add_dense(p, g)?;
            }
        }
        Ok(grads.get(input.as_tensor()).cloned())
    }
}
