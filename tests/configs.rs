//! Every committed experiment config loads (strict TOML, validated: pre-training, alignment and
//! dataset specs), and the Table 5 presets
//! have the sizes the paper names (parameters without embedding tables).

use std::path::Path;

use uqa_data::schema::Vocab;
use uqa_data::synth::SynthSpec;
use uqa_trainer::{AlignJob, PretrainJob};

fn configs(dir: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(dir);
    let mut v: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_experiment_config_loads() {
    let mut n = 0;
    for dir in [
        "pretrain",
        "movielens",
        "tests",
        "quickstart",
        "bench",
        "paper",
    ] {
        for p in configs(dir) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let loaded: Result<(), String> = if name.contains("align") {
                AlignJob::load(&p, &[]).map(drop).map_err(|e| e.to_string())
            } else if name.ends_with("data.toml") {
                SynthSpec::from_toml_file(&p)
                    .map(drop)
                    .map_err(|e| e.to_string())
            } else {
                PretrainJob::load(&p, &[])
                    .map(drop)
                    .map_err(|e| e.to_string())
            };
            loaded.unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 16, "{n} configs");
}

#[test]
fn table5_presets_have_the_papers_sizes() {
    let nominal = [
        ("3_2m", 3.2e6),
        ("13m", 13e6),
        ("25m", 25e6),
        ("57m", 57e6),
        ("85m", 85e6),
        ("303m", 303e6),
        ("680m", 680e6),
        ("1_2b", 1.2e9),
    ];
    for (name, size) in nominal {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("configs/pretrain/trmpp_{name}.toml"));
        let job = PretrainJob::load(&p, &[]).unwrap();
        // The paper counts the encoder: embedding tables, fusion and head are excluded.
        let encoder = job.model.encoder.param_count() as f64;
        assert!(
            (encoder / size - 1.0).abs() < 0.1,
            "{name}: {encoder} encoder parameters"
        );
        // With fusion and head (the `dense` count printed at start-up) it stays close.
        let dense = job.model.param_count(&Vocab::REFERENCE).dense as f64;
        assert!(
            dense > encoder && dense < encoder + 2.0e6,
            "{name}: {dense}"
        );
    }
}
