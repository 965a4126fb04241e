//! Rough timing of one Trm++ pre-training forward + backward (no optimiser) at the shape of
//! `../shared/bench/encoder_step.py`'s defaults: 4 layers, width 512, 4 heads, sequence 128,
//! batch 8, 100,000 items, full side info, bags of 8 tokens.
//! `cargo run -p uqa-models --example step_time --release [-- items seq batch]`

use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use uqa_data::batch::{BagColumn, SequenceBatch};
use uqa_data::schema::Vocab;
use uqa_models::{
    EmbedderConfig, EncoderConfig, FeatureEmbedder, NextItemConfig, NextItemLoss, TrmConfig,
    mask_tensor,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let items = *args.first().unwrap_or(&100_000) as u64;
    let (t, b) = (*args.get(1).unwrap_or(&128), *args.get(2).unwrap_or(&8));
    let vocab = Vocab {
        items,
        ..Vocab::REFERENCE
    };
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let emb = FeatureEmbedder::new(&EmbedderConfig::default(), &vocab, 512, vb.pp("emb"))?;
    let enc = EncoderConfig::Trmpp(TrmConfig::default()).build(vb.pp("enc"))?;
    let loss = NextItemLoss::new(&NextItemConfig::default(), 512, 128, vb.pp("head"))?;

    let mut seed = 1u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) % n) as u32
    };
    let mut batch = SequenceBatch {
        batch_size: b,
        seq_len: t,
        lengths: vec![t as u32; b],
        rows: (0..b).collect(),
        ..Default::default()
    };
    let sizes = [
        vocab.items,
        vocab.cates,
        vocab.brands,
        vocab.shops,
        vocab.sellers,
    ];
    for (k, col) in batch.ids.iter_mut().enumerate() {
        *col = (0..b * t).map(|_| 1 + next(sizes[k] - 1)).collect();
    }
    for bag in batch.bags.iter_mut() {
        *bag = BagColumn {
            ids: (0..b * t * 8).map(|_| next(vocab.tokens)).collect(),
            offsets: (0..=b * t).map(|p| (p * 8) as u32).collect(),
        };
    }
    let mask = mask_tensor(&batch, DType::F32, &dev)?;
    for step in 0..3 {
        let t0 = Instant::now();
        let x = emb.forward(&batch)?;
        let t1 = Instant::now();
        let h = enc.forward(&x, &mask, true)?;
        let t2 = Instant::now();
        let l = loss.forward(&h, emb.item_table(), &batch)?;
        let mean = l.mean()?;
        let t3 = Instant::now();
        let grads = mean.backward()?;
        let t4 = Instant::now();
        println!(
            "step {step}: loss {:.4} embed {:.3}s encoder {:.3}s loss {:.3}s backward {:.3}s total {:.3}s ({} grads)",
            mean.to_scalar::<f32>()?,
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t4 - t3).as_secs_f64(),
            (t4 - t0).as_secs_f64(),
            vm.all_vars()
                .iter()
                .filter(|v| grads.get(v.as_tensor()).is_some())
                .count(),
        );
    }
    Ok(())
}
