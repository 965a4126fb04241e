//! Which tokens of a batch are real. One host-side `[B, S]` table covers everything the model has
//! seen for each row (cached prefix plus new tokens); from it come the attention bias (causal and
//! padding) and the position ids.
//!
//! Position ids count real tokens only (`cumsum(valid) - 1`, as Hugging Face `generate` does for
//! left padding), so a row gives the same outputs whether it is padded on the left, on the right
//! or not at all.

use candle_core::{DType, Device, Result, Tensor};

/// Validity of every token of a `[rows, len]` batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMask {
    rows: usize,
    len: usize,
    valid: Vec<bool>,
}

/// Where the padding of a batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Padding after the tokens (training batches).
    Right,
    /// Padding before the tokens (generation batches: every row ends at the last column).
    Left,
}

impl TokenMask {
    /// Every token real.
    pub fn full(rows: usize, len: usize) -> Self {
        TokenMask {
            rows,
            len,
            valid: vec![true; rows * len],
        }
    }

    /// Rows of the given lengths padded to the longest, on the given side.
    pub fn from_lengths(lengths: &[usize], padding: Padding) -> Self {
        let len = lengths.iter().copied().max().unwrap_or(0);
        let mut valid = Vec::with_capacity(lengths.len() * len);
        for &n in lengths {
            match padding {
                Padding::Right => valid.extend((0..len).map(|j| j < n)),
                Padding::Left => valid.extend((0..len).map(|j| j >= len - n)),
            }
        }
        TokenMask {
            rows: lengths.len(),
            len,
            valid,
        }
    }

    /// Flat indices (`row * len + position`) of the real tokens, in order.
    pub fn real_positions(&self) -> Vec<u32> {
        (0..self.valid.len() as u32)
            .filter(|&i| self.valid[i as usize])
            .collect()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_valid(&self, row: usize, col: usize) -> bool {
        self.valid[row * self.len + col]
    }

    /// Number of real tokens in a row.
    pub fn row_len(&self, row: usize) -> usize {
        self.valid[row * self.len..(row + 1) * self.len]
            .iter()
            .filter(|v| **v)
            .count()
    }

    /// Appends `cols` real tokens to every row (a decoding step).
    pub fn extend(&mut self, cols: usize) {
        let mut valid = Vec::with_capacity(self.rows * (self.len + cols));
        for r in 0..self.rows {
            valid.extend_from_slice(&self.valid[r * self.len..(r + 1) * self.len]);
            valid.extend(std::iter::repeat_n(true, cols));
        }
        self.len += cols;
        self.valid = valid;
    }

    /// Position ids `[rows * new]` of the last `new` columns: the count of real tokens before
    /// each one (padding gets 0).
    pub fn positions(&self, new: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.rows * new);
        for r in 0..self.rows {
            let row = &self.valid[r * self.len..(r + 1) * self.len];
            let mut count = 0u32;
            for (j, &v) in row.iter().enumerate() {
                if j >= self.len - new {
                    // A real token's index among real tokens; padding gets the next index,
                    // harmless since nothing attends to it.
                    out.push(count);
                }
                count += u32::from(v);
            }
        }
        out
    }

    /// Additive attention bias `[rows, 1, new, len]` for the last `new` columns as queries: 0
    /// where query `i` may see key `j` (`j` not after `i`, and `j` real), a large negative
    /// number elsewhere. A finite value keeps fully-masked rows (padding queries) finite.
    pub fn attention_bias(&self, new: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
        let (s, offset) = (self.len, self.len - new);
        let mut bias = Vec::with_capacity(self.rows * new * s);
        for r in 0..self.rows {
            let row = &self.valid[r * s..(r + 1) * s];
            for i in 0..new {
                let q = offset + i;
                bias.extend(
                    row.iter()
                        .enumerate()
                        .map(|(j, &v)| if v && j <= q { 0f32 } else { -1e9 }),
                );
            }
        }
        Tensor::from_vec(bias, (self.rows, 1, new, s), dev)?.to_dtype(dtype)
    }
}

/// Rows `[n_i, d]` padded with zeros to the longest on `padding`'s side and stacked,
/// `[B, max n_i, d]`, with their mask.
pub fn pad_rows(rows: &[Tensor], padding: Padding) -> Result<(Tensor, TokenMask)> {
    let lengths: Vec<usize> = rows.iter().map(|r| r.dim(0)).collect::<Result<_>>()?;
    let max = lengths.iter().copied().max().unwrap_or(0);
    let padded = rows
        .iter()
        .zip(&lengths)
        .map(|(row, &n)| {
            if n == max {
                return Ok(row.clone());
            }
            let pad = Tensor::zeros((max - n, row.dim(1)?), row.dtype(), row.device())?;
            match padding {
                Padding::Right => Tensor::cat(&[row, &pad], 0),
                Padding::Left => Tensor::cat(&[&pad, row], 0),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((
        Tensor::stack(&padded, 0)?,
        TokenMask::from_lengths(&lengths, padding),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_real_tokens_on_either_side() {
        let right = TokenMask::from_lengths(&[3, 1], Padding::Right);
        assert_eq!(right.positions(3), vec![0, 1, 2, 0, 1, 1]);
        let left = TokenMask::from_lengths(&[3, 1], Padding::Left);
        assert_eq!(left.positions(3), vec![0, 1, 2, 0, 0, 0]);
        let mut grown = left.clone();
        grown.extend(1);
        assert_eq!(grown.positions(1), vec![3, 1]);
        assert_eq!(grown.row_len(1), 2);
    }

    #[test]
    fn bias_is_causal_and_hides_padding() {
        let m = TokenMask::from_lengths(&[2, 1], Padding::Left);
        let b = m.attention_bias(2, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(b.dims(), &[2, 1, 2, 2]);
        let v: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        // row 0: [[0, -inf], [0, 0]]; row 1 (left-padded): key 0 hidden everywhere.
        assert_eq!(v[..4], [0.0, -1e9, 0.0, 0.0]);
        assert_eq!(v[4..], [-1e9, -1e9, -1e9, 0.0]);
    }
}
