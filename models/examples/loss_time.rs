//! Timing of the chunked tied cross-entropy alone: forward and backward for `n` rows against a
//! `[items, 128]` table. `cargo run -p uqa-models --example loss_time [-- items n chunk]`

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use uqa_models::loss::chunked_cross_entropy_sum;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (v, n) = (
        *args.first().unwrap_or(&100_000),
        *args.get(1).unwrap_or(&1016),
    );
    let chunk = *args.get(2).unwrap_or(&uqa_models::loss::DEFAULT_CHUNK);
    let dev = Device::Cpu;
    let h = Var::from_tensor(&Tensor::randn(0f32, 0.1, (n, 128), &dev)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (v, 128), &dev)?)?;
    let labels = Tensor::from_vec((0..n as u32).map(|i| i * 7 % v as u32).collect(), n, &dev)?;
    for _ in 0..3 {
        let t0 = Instant::now();
        let loss = chunked_cross_entropy_sum(h.as_tensor(), w.as_tensor(), &labels, chunk, None)?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        let _ = grads.get(w.as_tensor()).map(|g| g.dtype() == DType::F32);
        println!(
            "loss {:.4} forward {:.3}s backward {:.3}s",
            loss.to_scalar::<f32>()? / n as f32,
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64()
        );
    }
    Ok(())
}
