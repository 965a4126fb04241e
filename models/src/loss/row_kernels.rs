//! The per-row element work of the chunked cross-entropy on the CPU (`chunked_cpu.rs`): a row's
//! maximum, its sum of `exp(x - m)`, and `exp(x - l) * g` into a block. Written so that LLVM
//! vectorises them: sixteen independent accumulators per row (a float fold is otherwise a
//! serial chain, since IEEE addition does not reassociate), and for f32 an exponential built
//! from plain arithmetic instead of one libm `expf` call per element. At the paper's scale
//! (2,044 rows by 994,447 items) these loops are about a third of the loss's time with scalar
//! code (`perf`: 14% in `expf`, 17% in the folds around it).
//!
//! The results do not depend on the CPU: the lanes are in the source, Rust never fuses a
//! multiply and an add on its own, so the AVX2 and AVX-512 copies (chosen at run time) compute
//! exactly what the baseline copy does, only wider. f64 (the gradient checks) keeps libm's `exp`.

/// Independent accumulators per row; a multiple of every vector width used (4, 8, 16 floats).
const LANES: usize = 16;

/// The element kernels, per float type.
pub(super) trait RowKernels: Copy {
    /// The largest element (`-inf` for an empty row); NaN elements are skipped, like
    /// `f32::max`.
    fn row_max(row: &[Self]) -> Self;
    /// `sum_j exp(row[j] - m)`.
    fn row_sum_exp(row: &[Self], m: Self) -> Self;
    /// `out[j] = exp(row[j] - l) * g`.
    fn scaled_exp(out: &mut [Self], row: &[Self], l: Self, g: Self);
}

/// `e^x` for f32 to about 2 ulp, in arithmetic that vectorises (Cephes' `expf`): `x = n ln2 + r`
/// with `n = round(x / ln2)` and `|r| <= ln2 / 2`, a degree-6 polynomial for `e^r`, and `2^n`
/// put straight into the exponent bits. `x` is clamped to [-87, 88], so the result is a normal
/// float (the kernels only ever see `x <= 0`, where below -87 the true value is under 2^-125
/// and adds nothing next to the row's `e^0 = 1`). NaN stays NaN.
#[inline(always)]
pub(super) fn exp_f32(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n * LN2_HI` is exact for every n reached here.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 x 2^23 rounds to the nearest integer (ties to even).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    // n is an integer in [-126, 127] here (NaN converts to 0 and y is NaN already).
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn max_lanes(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut blocks = row.chunks_exact(LANES);
    for block in &mut blocks {
        for (a, &x) in acc.iter_mut().zip(block) {
            *a = a.max(x);
        }
    }
    let tail = blocks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    acc.into_iter().fold(tail, f32::max)
}

#[inline(always)]
fn sum_exp_lanes(row: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut blocks = row.chunks_exact(LANES);
    for block in &mut blocks {
        for (a, &x) in acc.iter_mut().zip(block) {
            *a += exp_f32(x - m);
        }
    }
    let tail: f32 = blocks.remainder().iter().map(|&x| exp_f32(x - m)).sum();
    acc.into_iter().sum::<f32>() + tail
}

#[inline(always)]
fn scaled_exp_map(out: &mut [f32], row: &[f32], l: f32, g: f32) {
    for (o, &x) in out.iter_mut().zip(row) {
        *o = exp_f32(x - l) * g;
    }
}

/// `fn $name(args) -> ret` running `$body` compiled for AVX-512, else AVX2, else
/// the baseline target, picked at run time (the detection is a cached atomic load).
macro_rules! dispatched {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn wide($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn mid($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { wide($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2, checked just above.
                    return unsafe { mid($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

dispatched!(max_f32(row: &[f32]) -> f32 = max_lanes);
dispatched!(sum_exp_f32(row: &[f32], m: f32) -> f32 = sum_exp_lanes);
dispatched!(scaled_exp_f32(out: &mut [f32], row: &[f32], l: f32, g: f32) -> () = scaled_exp_map);

impl RowKernels for f32 {
    fn row_max(row: &[f32]) -> f32 {
        max_f32(row)
    }
    fn row_sum_exp(row: &[f32], m: f32) -> f32 {
        sum_exp_f32(row, m)
    }
    fn scaled_exp(out: &mut [f32], row: &[f32], l: f32, g: f32) {
        scaled_exp_f32(out, row, l, g)
    }
}

impl RowKernels for f64 {
    fn row_max(row: &[f64]) -> f64 {
        row.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
    fn row_sum_exp(row: &[f64], m: f64) -> f64 {
        row.iter().map(|&x| (x - m).exp()).sum()
    }
    fn scaled_exp(out: &mut [f64], row: &[f64], l: f64, g: f64) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o = (x - l).exp() * g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error against f64's `exp` over the whole range the kernels use, on a fine grid.
    #[test]
    fn exp_f32_is_within_two_ulp_of_the_exact_value() {
        let mut worst = 0f64;
        let steps = 2_000_000;
        for i in 0..=steps {
            let x = -87.0 + 87.5 * i as f32 / steps as f32;
            let exact = (x as f64).exp();
            let rel = ((exp_f32(x) as f64 - exact) / exact).abs();
            worst = worst.max(rel);
        }
        // One ulp of f32 is 2^-23 relative at worst (1.19e-7).
        assert!(
            worst < 2.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(-1e30) > 0.0 && exp_f32(-1e30) < 1e-37);
    }

    /// Every dispatched copy against a plain f64 computation, at lengths around the lane count.
    #[test]
    fn row_kernels_match_a_plain_f64_computation() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 20.0 - 10.0
        };
        for len in [0, 1, 15, 16, 17, 33, 2048, 2051] {
            let row: Vec<f32> = (0..len).map(|_| next()).collect();
            let exact_max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(f32::row_max(&row), exact_max, "len {len}");
            let m = exact_max.max(0.0);
            let exact: f64 = row.iter().map(|&x| ((x - m) as f64).exp()).sum();
            let got = f32::row_sum_exp(&row, m) as f64;
            assert!(
                (got - exact).abs() <= 1e-6 * exact.max(1e-30),
                "len {len}: {got} vs {exact}"
            );
            let mut out = vec![0f32; len];
            f32::scaled_exp(&mut out, &row, m, -0.5);
            for (o, &x) in out.iter().zip(&row) {
                let e = ((x - m) as f64).exp() * -0.5;
                assert!(
                    (*o as f64 - e).abs() <= 3e-7 * e.abs(),
                    "len {len}: {o} vs {e}"
                );
            }
        }
        // The copy the dispatch picks on this CPU computes exactly what the baseline copy does.
        let row: Vec<f32> = (0..2051).map(|_| next()).collect();
        assert_eq!(max_f32(&row).to_bits(), max_lanes(&row).to_bits());
        assert_eq!(
            sum_exp_f32(&row, 10.0).to_bits(),
            sum_exp_lanes(&row, 10.0).to_bits()
        );
        let (mut a, mut b) = (vec![0f32; row.len()], vec![0f32; row.len()]);
        scaled_exp_f32(&mut a, &row, 10.0, 0.25);
        scaled_exp_map(&mut b, &row, 10.0, 0.25);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_eq!(f32::row_max(&[1.0, f32::NAN, 3.0]), 3.0);
        assert!(f32::row_sum_exp(&[0.0, f32::NAN], 0.0).is_nan());
    }
}
