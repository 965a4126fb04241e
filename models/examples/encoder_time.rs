//! Forward + backward time of one encoder at its default (reference) size on random inputs.
//! `cargo run -p uqa-models --release --example encoder_time -- KIND [batch seq]`
//! with KIND one of trmpp, sasrec, hstu, gru4rec, mamba4rec.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use uqa_models::EncoderConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.first().map(String::as_str).unwrap_or("trmpp");
    let b: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let t: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(128);
    let cfg: EncoderConfig = serde_json::from_str(&format!(r#"{{"kind": "{kind}"}}"#))?;
    let vm = VarMap::new();
    let enc = cfg.build(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
    println!("{kind}: {} parameters", enc.param_count());
    let x = Tensor::randn(0f32, 1.0, (b, t, cfg.width()), &Device::Cpu)?;
    let mask = Tensor::ones((b, t), DType::F32, &Device::Cpu)?;
    for _ in 0..2 {
        let t0 = Instant::now();
        let y = enc.forward(&x, &mask, true)?;
        let t1 = Instant::now();
        let _grads = y.sqr()?.mean_all()?.backward()?;
        let t2 = Instant::now();
        println!(
            "B {b} T {t}: forward {:.3}s backward {:.3}s",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64()
        );
    }
    Ok(())
}
