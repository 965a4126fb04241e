//! The reference adapter: `Linear(d_enc -> d_llm)` on every position, then the mean over valid
//! positions (dividing by the true length, not the padded one): one soft token.
//!
//! With `recent = k > 0` it also emits the states of the last `k` valid positions, each through a
//! second linear map, as `k` more soft tokens, oldest first. The mean summarises long-term
//! interest and dilutes the latest clicks by the history's length; a sequential recommender's own
//! user representation is its last state, which is what questions about recent and next clicks
//! (DF, AP, SI, IP) need. Rows shorter than `k` get zero tokens in front.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::layers::torch_linear;

pub struct MeanPool {
    proj: Linear,
    recent: Option<(usize, Linear)>,
}

impl MeanPool {
    pub fn new(d_enc: usize, d_llm: usize, recent: usize, vb: VarBuilder<'_>) -> Result<Self> {
        // PyTorch's nn.Linear default, as the reference builds it.
        let proj = torch_linear(d_enc, d_llm, vb.pp("proj"))?;
        let recent = match recent {
            0 => None,
            k => Some((k, torch_linear(d_enc, d_llm, vb.pp("recent"))?)),
        };
        Ok(MeanPool { proj, recent })
    }

    /// Soft tokens per user: 1 + `recent`.
    pub fn tokens(&self) -> usize {
        1 + self.recent.as_ref().map_or(0, |(k, _)| *k)
    }

    pub fn forward(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let y = self.proj.forward(states)?;
        let m = mask.unsqueeze(D::Minus1)?;
        let count = m.sum_keepdim(1)?.clamp(1.0, f64::INFINITY)?;
        let mean = y.broadcast_mul(&m)?.sum_keepdim(1)?.broadcast_div(&count)?;
        let Some((k, proj)) = &self.recent else {
            return Ok(mean);
        };
        let recent = last_states(states, mask, *k)?;
        Tensor::cat(&[&mean, &proj.forward(&recent)?], 1)
    }
}

/// The states of each row's last `k` valid positions `[B, k, d]`, oldest first; batches are
/// right-padded, so row `b`'s valid positions are `0..len_b`. Missing positions (rows shorter
/// than `k`) are zeros.
fn last_states(states: &Tensor, mask: &Tensor, k: usize) -> Result<Tensor> {
    let (b, t, d) = states.dims3()?;
    let lengths: Vec<f32> = mask.to_dtype(DType::F32)?.sum(1)?.to_vec1()?;
    let mut index = Vec::with_capacity(b * k);
    let mut keep = Vec::with_capacity(b * k);
    for (row, len) in lengths.iter().enumerate() {
        let len = *len as usize;
        for j in 0..k {
            // Slot j holds position len - k + j.
            let pos = (len + j).checked_sub(k);
            index.push((row * t + pos.unwrap_or(0)) as u32);
            keep.push(if pos.is_some() { 1f32 } else { 0.0 });
        }
    }
    let dev = states.device();
    let index = Tensor::from_vec(index, b * k, dev)?;
    let keep = Tensor::from_vec(keep, (b, k, 1), dev)?.to_dtype(states.dtype())?;
    states
        .reshape((b * t, d))?
        .index_select(&index, 0)?
        .reshape((b, k, d))?
        .broadcast_mul(&keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    #[test]
    fn recent_tokens_are_the_last_valid_states_oldest_first() {
        let dev = Device::Cpu;
        // Two rows of T = 4, d = 1: state value = position + 10 * row; lengths 3 and 1.
        let states = Tensor::new(
            &[[[0f32], [1.], [2.], [3.]], [[10.], [11.], [12.], [13.]]],
            &dev,
        )
        .unwrap();
        let mask = Tensor::new(&[[1f32, 1., 1., 0.], [1., 0., 0., 0.]], &dev).unwrap();
        let got: Vec<Vec<Vec<f32>>> = last_states(&states, &mask, 2).unwrap().to_vec3().unwrap();
        assert_eq!(
            got,
            vec![vec![vec![1.], vec![2.]], vec![vec![0.], vec![10.]]]
        );

        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let pool = MeanPool::new(1, 3, 2, vb).unwrap();
        assert_eq!(pool.tokens(), 3);
        assert_eq!(pool.forward(&states, &mask).unwrap().dims(), &[2, 3, 3]);
    }
}
