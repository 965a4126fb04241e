//! The reference adapter: `Linear(d_enc -> d_llm)` on every position, then the mean over valid
//! positions (dividing by the true length, not the padded one): one soft token.
//!
//! With `recent = k > 0` it also emits the states of the last `k` valid positions, each through a
//! second linear map, as `k` more soft tokens, oldest first. The mean summarises long-term
//! interest and dilutes the latest clicks by the history's length; a sequential recommender's own
//! user representation is its last state, which is what questions about recent and next clicks
//! (DF, AP, SI, IP) need. Rows shorter than `k` get zero tokens in front.
//!
//! With `hidden = h > 0` the pooled tokens come from a deep-sets pooling: the mean of
//! `GELU(Linear(d_enc -> h))` over the valid positions, then `GELU(Linear(h -> h))`. A linear mean
//! of `d_enc`-wide states can only hold `d_enc` numbers about the history; averaged nonlinear
//! features can approximate a histogram of what was clicked, and the layer after the mean can rank
//! it, which is what "the 3 values the user clicked most" (LI) asks for. `pooled = p` emits `p`
//! tokens from the pooled summary (1, the reference).

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::layers::torch_linear;

pub struct MeanPool {
    /// With `hidden = h`: `Linear(d_enc -> h)` + GELU before the mean, `Linear(h -> h)` + GELU
    /// after it.
    deep: Option<(Linear, Linear)>,
    /// To `pooled` soft tokens: `Linear(d_enc or h -> pooled * d_llm)`.
    proj: Linear,
    pooled: usize,
    recent: Option<(usize, Linear)>,
}

impl MeanPool {
    pub fn new(
        d_enc: usize,
        d_llm: usize,
        shape: MeanPoolShape,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let MeanPoolShape {
            pooled,
            recent,
            hidden,
        } = shape;
        // PyTorch's nn.Linear default, as the reference builds it.
        let (deep, proj) = match hidden {
            0 => (None, torch_linear(d_enc, pooled * d_llm, vb.pp("proj"))?),
            h => (
                Some((
                    torch_linear(d_enc, h, vb.pp("features"))?,
                    torch_linear(h, h, vb.pp("summary"))?,
                )),
                torch_linear(h, pooled * d_llm, vb.pp("proj"))?,
            ),
        };
        let recent = match recent {
            0 => None,
            k => Some((k, torch_linear(d_enc, d_llm, vb.pp("recent"))?)),
        };
        Ok(MeanPool {
            deep,
            proj,
            pooled,
            recent,
        })
    }

    /// Soft tokens per user: `pooled` + `recent`.
    pub fn tokens(&self) -> usize {
        self.pooled + self.recent.as_ref().map_or(0, |(k, _)| *k)
    }

    pub fn forward(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let b = states.dim(0)?;
        let m = mask.unsqueeze(D::Minus1)?;
        let count = m.sum_keepdim(1)?.clamp(1.0, f64::INFINITY)?;
        let mean_of = |y: &Tensor| y.broadcast_mul(&m)?.sum_keepdim(1)?.broadcast_div(&count);
        let pooled = match &self.deep {
            // The reference: the mean of a linear map (equal to the map of the mean).
            None => mean_of(&self.proj.forward(states)?)?,
            Some((features, summary)) => {
                let mean = mean_of(&features.forward(states)?.gelu()?)?;
                self.proj.forward(&summary.forward(&mean)?.gelu()?)?
            }
        };
        let pooled = pooled.reshape((b, self.pooled, ()))?;
        let Some((k, proj)) = &self.recent else {
            return Ok(pooled);
        };
        let recent = last_states(states, mask, *k)?;
        Tensor::cat(&[&pooled, &proj.forward(&recent)?], 1)
    }
}

/// The mean-pool adapter's shape (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeanPoolShape {
    pub pooled: usize,
    pub recent: usize,
    pub hidden: usize,
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
        let pool = MeanPool::new(
            1,
            3,
            MeanPoolShape {
                pooled: 1,
                recent: 2,
                hidden: 0,
            },
            vb,
        )
        .unwrap();
        assert_eq!(pool.tokens(), 3);
        assert_eq!(pool.forward(&states, &mask).unwrap().dims(), &[2, 3, 3]);
    }

    #[test]
    fn the_deep_pooling_averages_nonlinear_features_over_valid_positions_only() {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let shape = MeanPoolShape {
            pooled: 2,
            recent: 0,
            hidden: 4,
        };
        let pool = MeanPool::new(2, 3, shape, vb).unwrap();
        assert_eq!(pool.tokens(), 2);
        let states = Tensor::new(&[[[1f32, -2.], [0.5, 3.], [7., 7.]]], &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 0.]], &dev).unwrap();
        let out = pool.forward(&states, &mask).unwrap();
        assert_eq!(out.dims(), &[1, 2, 3]);
        let got: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        // By hand: GELU features of the two valid positions only, their mean, the summary layer,
        // then the projection to 2 tokens of width 3.
        let (features, summary) = pool.deep.as_ref().unwrap();
        let valid = states.narrow(1, 0, 2).unwrap();
        let mean = features
            .forward(&valid)
            .unwrap()
            .gelu()
            .unwrap()
            .mean_keepdim(1)
            .unwrap();
        let want: Vec<f32> = pool
            .proj
            .forward(&summary.forward(&mean).unwrap().gelu().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got.len(), 6);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
}
