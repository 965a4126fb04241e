//! The gradients of a step do not depend on how the global batch is split. For every encoder
//! and for alignment, 1, 2 and 4 ranks (in-process, joined by `LocalComm`) and gradient
//! accumulation must give the same loss and the same global gradient norm at every step, and
//! the same weights after plain SGD steps, within 1e-6 relative.
//!
//! Plain SGD, not AdamW: Adam divides by the gradients' own scale, so weights after AdamW would
//! hide a gradient off by a constant factor (the world size, say); the gradient norm and SGD's
//! weights do not. `a_gradient_scaled_by_the_world_size_is_caught` shows the check has teeth.
//!
//! Dropout is off in these configs: its masks are seeded per micro-batch, so they legitimately
//! differ between splits.

mod common;

use common::*;

use std::path::Path;
use std::time::Duration;

use candle_core::{Device, Tensor};
use uqa_comm::{Communicator, LocalComm};
use uqa_data::sampler::SamplerState;
use uqa_trainer::PretrainJob;
use uqa_trainer::align::{AlignJob, AlignStage};
use uqa_trainer::config::TrainConfig;
use uqa_trainer::engine::{Stage, accumulate};
use uqa_trainer::optim::Grads;
use uqa_trainer::parallel::Replicas;
use uqa_trainer::plan::BatchPlan;
use uqa_trainer::pretrain::PretrainStage;

const STEPS: usize = 3;
const SGD_LR: f64 = 0.1;
const TOLERANCE: f64 = 1e-6;
/// Weights below this in both runs are rounding noise (see `compare`).
const NOISE: f32 = 1e-6;

/// What rank 0 saw: the loss and gradient norm of every step, and the final weights.
#[derive(Debug)]
struct Trace {
    losses: Vec<f64>,
    norms: Vec<f64>,
    weights: Vec<(String, Vec<f32>)>,
}

/// `STEPS` plain SGD steps of the stages `make` builds on `world` in-process ranks, with
/// `grad_accum` micro-steps each. `fault` multiplies the summed gradients by the world size
/// (the bug the check must catch).
fn sgd_trace<S: Stage>(
    make: &(dyn Fn(usize) -> S + Sync),
    train: &TrainConfig,
    world: usize,
    grad_accum: usize,
    fault: bool,
) -> Trace {
    let train = TrainConfig {
        grad_accum,
        ..train.clone()
    };
    let comms = LocalComm::group(world);
    std::thread::scope(|scope| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let train = &train;
                scope.spawn(move || {
                    let rank = comm.rank();
                    let mut replicas =
                        Replicas::with_comm(Box::new(comm), 1.0, Duration::from_secs(60));
                    let stage = make(rank);
                    let plan = BatchPlan::new(stage.rows(), rank, world, train).unwrap();
                    let params = stage.params().clone();
                    let mut grads = Grads::released(&params);
                    let mut trace = Trace {
                        losses: vec![],
                        norms: vec![],
                        weights: vec![],
                    };
                    let start = SamplerState {
                        epoch: 0,
                        position: 0,
                    };
                    let steps = plan.sampler.batches(start, plan.per_rank, false);
                    for (step, rows) in steps.take(STEPS).enumerate() {
                        let batches: Vec<S::Batch> = rows
                            .chunks(plan.micro)
                            .map(|r| stage.collate(r).unwrap())
                            .collect();
                        let acc =
                            accumulate(&stage, &batches, step as u64, &mut grads, &mut replicas)
                                .unwrap();
                        if fault {
                            for b in &mut grads.bufs {
                                b.iter_mut().for_each(|g| *g *= world as f32);
                            }
                        }
                        trace.losses.push(acc.loss);
                        trace.norms.push(grads.norm());
                        for (var, g) in params.vars.iter().zip(&grads.bufs) {
                            let g = Tensor::from_slice(g, var.shape(), var.device()).unwrap();
                            let next = (var.as_tensor() - (g * SGD_LR).unwrap()).unwrap();
                            var.set(&next).unwrap();
                        }
                        grads.release();
                    }
                    trace.weights = params
                        .names
                        .iter()
                        .zip(&params.vars)
                        .map(|(n, v)| {
                            let flat = v.as_tensor().flatten_all().unwrap();
                            (n.clone(), flat.to_vec1::<f32>().unwrap())
                        })
                        .collect();
                    trace
                })
            })
            .collect();
        let mut traces: Vec<Trace> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        traces.swap_remove(0)
    })
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// `Err` naming the first value that differs by more than `TOLERANCE` relative.
fn compare(reference: &Trace, other: &Trace) -> Result<(), String> {
    for step in 0..STEPS {
        let (a, b) = (reference.losses[step], other.losses[step]);
        if relative(a, b) > TOLERANCE {
            return Err(format!("loss of step {}: {a} vs {b}", step + 1));
        }
        let (a, b) = (reference.norms[step], other.norms[step]);
        if relative(a, b) > TOLERANCE {
            return Err(format!("gradient norm of step {}: {a} vs {b}", step + 1));
        }
    }
    for ((name, a), (_, b)) in reference.weights.iter().zip(&other.weights) {
        // Zero up to rounding in both runs (the key bias of softmax attention: softmax ignores
        // a constant added to a row, so its gradient is zero by construction and what remains
        // is summation-order noise): compared in absolute terms.
        let largest = a.iter().chain(b).fold(0.0f32, |m, x| m.max(x.abs()));
        if largest < NOISE {
            continue;
        }
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>();
        let norm = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
        if diff.sqrt() > TOLERANCE * norm.sqrt().max(1e-12) {
            return Err(format!(
                "`{name}` after {STEPS} SGD steps: relative L2 difference {:.3e}",
                diff.sqrt() / norm.sqrt().max(1e-12)
            ));
        }
    }
    Ok(())
}

/// Every split of the global batch against one process without accumulation.
fn check_splits<S: Stage>(what: &str, make: &(dyn Fn(usize) -> S + Sync), train: &TrainConfig) {
    let reference = sgd_trace(make, train, 1, 1, false);
    assert!(
        reference.norms.iter().all(|n| *n > 0.0),
        "{what}: zero gradients prove nothing: {reference:?}"
    );
    for (world, accum) in [(2, 1), (4, 1), (1, 2), (2, 2)] {
        let other = sgd_trace(make, train, world, accum, false);
        if let Err(e) = compare(&reference, &other) {
            panic!("{what}: {world} ranks x {accum} micro-steps differ from 1 process: {e}");
        }
    }
}

fn pretrain_job(data: &Path, encoder: &str) -> PretrainJob {
    let sets = vec![
        format!("data.dir=\"{}\"", data.display()),
        "train.out=\"unused\"".to_string(),
        format!("model.encoder={encoder}"),
    ];
    PretrainJob::load(Path::new(&config("tiny_sasrec.toml")), &sets).unwrap()
}

const ENCODERS: [(&str, &str); 5] = [
    (
        "sasrec",
        "{kind = \"sasrec\", layers = 1, width = 32, heads = 2, ffn = 64, dropout = 0.0, max_len = 50}",
    ),
    (
        "trmpp",
        "{kind = \"trmpp\", layers = 1, width = 32, heads = 2, dropout = 0.0}",
    ),
    (
        "hstu",
        "{kind = \"hstu\", layers = 1, width = 32, heads = 2, linear_dim = 32, attention_dim = 32, dropout = 0.0, max_len = 50}",
    ),
    (
        "gru4rec",
        "{kind = \"gru4rec\", layers = 1, width = 32, hidden = 32, dropout = 0.0}",
    ),
    (
        "mamba4rec",
        "{kind = \"mamba4rec\", layers = 1, width = 32, dropout = 0.0}",
    ),
];

#[test]
fn every_encoder_has_the_same_gradients_on_any_split() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    for (name, encoder) in ENCODERS {
        let job = pretrain_job(&data, encoder);
        let make = |rank: usize| PretrainStage::new(&job, rank, &Device::Cpu).unwrap();
        check_splits(name, &make, &job.train);
    }
}

#[test]
fn alignment_has_the_same_gradients_on_any_split() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let (qa, encoder) = (dir.path().join("qa"), dir.path().join("enc"));
    let qa_gen = [
        "qa-gen",
        "--data",
        data.to_str().unwrap(),
        "--out",
        qa.to_str().unwrap(),
    ];
    ok(uqa(&qa_gen), "qa-gen");
    let pretrain = [
        "pretrain",
        "--config",
        &config("tiny_sasrec.toml"),
        "--set",
        &format!("data.dir=\"{}\"", data.display()),
        "--set",
        &format!("train.out=\"{}\"", encoder.display()),
        "--set",
        "train.max_steps=2",
    ];
    ok(uqa(&pretrain), "pretrain");
    // Both strategies: the adapter alone, and the adapter with the LLM (full fine-tuning).
    for strategy in ["{kind = \"adapter\"}", "{kind = \"full\", llm_lr = 1e-3}"] {
        let sets = vec![
            format!("data.dataset=\"{}\"", data.display()),
            format!("data.qa_dir=\"{}\"", qa.display()),
            format!("prompt.encoder=\"{}\"", encoder.display()),
            "train.out=\"unused\"".to_string(),
            format!("strategy={strategy}"),
        ];
        let job = AlignJob::load(Path::new(&config("tiny_align.toml")), &sets).unwrap();
        let make = |rank: usize| AlignStage::new(&job, rank, &Device::Cpu).unwrap();
        check_splits(&format!("alignment {strategy}"), &make, &job.train);
    }
}

#[test]
fn a_gradient_scaled_by_the_world_size_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let job = pretrain_job(&data, ENCODERS[0].1);
    let make = |rank: usize| PretrainStage::new(&job, rank, &Device::Cpu).unwrap();
    let reference = sgd_trace(&make, &job.train, 1, 1, false);
    let scaled = sgd_trace(&make, &job.train, 2, 1, true);
    let err = compare(&reference, &scaled).expect_err("a gradient twice too large must differ");
    assert!(err.contains("gradient norm of step 1"), "{err}");
}
