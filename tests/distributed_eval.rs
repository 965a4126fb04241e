//! The encoder's evaluation is data-parallel: every rank scores a share of the users. On 1, 2
//! and 3 in-process ranks it must give the same metrics, to the bit, on every rank, and so
//! must a run whose users do not divide evenly between the ranks.

mod common;

use common::*;

use std::path::Path;
use std::time::Duration;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use uqa_comm::LocalComm;
use uqa_data::dataset::Dataset;
use uqa_models::{PretrainModel, seeded_var_builder};
use uqa_trainer::PretrainJob;
use uqa_trainer::eval::{RankingMetrics, evaluate};
use uqa_trainer::parallel::Replicas;

fn metrics_on(world: usize, job: &PretrainJob, max_users: usize) -> Vec<RankingMetrics> {
    let ds = Dataset::open(&job.data.dir).unwrap();
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, job.train.seed, DType::F32, &Device::Cpu);
    let model = PretrainModel::new(&job.model, &ds.meta.vocab, vb).unwrap();
    let cfg = uqa_trainer::config::EvalConfig {
        max_users,
        // Small batches: several rounds, and ranks with no user in the last one.
        batch_size: 7,
        ..job.eval.clone()
    };
    let comms = LocalComm::group(world);
    std::thread::scope(|scope| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let (model, ds, cfg) = (&model, &ds, &cfg);
                scope.spawn(move || {
                    let mut replicas =
                        Replicas::with_comm(Box::new(comm), 1.0, Duration::from_secs(60));
                    evaluate(
                        model,
                        ds,
                        cfg,
                        job.data.max_len,
                        job.train.seed,
                        &mut replicas,
                    )
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn evaluation_gives_the_same_bits_on_any_number_of_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let sets = vec![
        format!("data.dir=\"{}\"", data.display()),
        "train.out=\"unused\"".to_string(),
        "model.encoder={kind = \"trmpp\", layers = 1, width = 32, heads = 2, dropout = 0.0}"
            .to_string(),
    ];
    let job = PretrainJob::load(Path::new(&config("tiny_sasrec.toml")), &sets).unwrap();
    for max_users in [0, 50] {
        let single = metrics_on(1, &job, max_users).remove(0);
        assert!(single.users > 0);
        assert!(single.sampled_negatives > 0);
        assert!(single.full[&50].hr > 0.0, "{single:?}");
        for world in [2, 3] {
            for (rank, m) in metrics_on(world, &job, max_users).iter().enumerate() {
                assert_eq!(
                    m, &single,
                    "{world} ranks, rank {rank}, max_users {max_users}"
                );
            }
        }
    }
}
