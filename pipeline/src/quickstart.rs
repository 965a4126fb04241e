//! The quickstart: the whole pipeline on embedded defaults, in minutes on a laptop CPU:
//! synthetic data -> questions -> Trm++ pre-training -> alignment to the tiny LLM (the trained
//! encoder, and the untrained one as the baseline) -> evaluation -> report with the prior and
//! history baselines and paired bootstrap verdicts. The training and evaluation stages run the
//! `uqa` executable (through `uqa launch` on several ranks) with the configs of
//! `configs/quickstart/` (embedded, written beside the outputs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use uqa_data::build::{TokenizerChoice, build_synthetic};
use uqa_data::dataset::DatasetMeta;
use uqa_data::synth::SynthSpec;
use uqabench::qa::{Lang, QaGenConfig, QaGenReport, generate};
use uqabench::report::{Report, Run, write_report};

use crate::uqa_exe::{UqaExe, overrides, set_path};
use crate::{PipelineError, Result};

const DATA_TOML: &str = include_str!("../../configs/quickstart/data.toml");
const PRETRAIN_TOML: &str = include_str!("../../configs/quickstart/pretrain_trmpp.toml");
const ALIGN_TOML: &str = include_str!("../../configs/quickstart/align_trmpp.toml");

/// The report's names of the two aligned models.
pub const TRAINED: &str = "Trm++ (trained)";
pub const UNTRAINED: &str = "Trm++ (untrained)";

/// What the quickstart runs (the `uqa quickstart` flags).
#[derive(Debug, Clone)]
pub struct Quickstart {
    /// Folder for every artefact (replaced if it exists).
    pub out: PathBuf,
    pub seed: u64,
    pub tokenizer: TokenizerChoice,
    /// Ranks of the pre-training, alignment and evaluation stages.
    pub nproc: usize,
    pub train_per_task: usize,
    pub train_windows: usize,
    pub eval_per_task: usize,
    pub max_new_tokens: usize,
    /// `KEY=VALUE` overrides of the pre-training and alignment configs.
    pub pretrain_set: Vec<String>,
    pub align_set: Vec<String>,
}

/// What the quickstart tells its caller as it goes.
pub enum Progress<'a> {
    /// Stage `index` of 6 starts.
    Stage {
        index: usize,
        what: String,
        elapsed: Duration,
    },
    /// The synthetic dataset is written.
    Dataset {
        dir: &'a Path,
        meta: &'a DatasetMeta,
    },
    /// The questions are written.
    Questions(&'a QaGenReport),
}

/// Where everything went, and the report.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    /// The report's files.
    pub written: Vec<PathBuf>,
    pub configs: PathBuf,
    pub data: PathBuf,
    pub questions: PathBuf,
    pub encoder: PathBuf,
    /// The aligned runs, `trained` then `untrained`.
    pub aligned: Vec<(String, PathBuf)>,
    pub elapsed: Duration,
}

impl Quickstart {
    /// Runs every stage; `uqa` is the executable the training and evaluation stages run.
    pub fn run(&self, uqa: &Path, mut progress: impl FnMut(Progress)) -> Result<Outcome> {
        let start = Instant::now();
        let exe = UqaExe {
            path: uqa.to_path_buf(),
            nproc: self.nproc,
        };
        let stage = |progress: &mut dyn FnMut(Progress), index: usize, what: String| {
            progress(Progress::Stage {
                index,
                what,
                elapsed: start.elapsed(),
            })
        };
        let out = &self.out;
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(|e| io(out, e))?;
        }
        let configs = out.join("configs");
        std::fs::create_dir_all(&configs).map_err(|e| io(&configs, e))?;
        let data_toml = write_config(&configs, "data.toml", DATA_TOML)?;
        let pretrain_toml = write_config(&configs, "pretrain_trmpp.toml", PRETRAIN_TOML)?;
        let align_toml = write_config(&configs, "align_trmpp.toml", ALIGN_TOML)?;

        let data = out.join("data");
        stage(
            &mut progress,
            1,
            format!(
                "synthetic data (configs/quickstart/data.toml, seed {}) -> {}",
                self.seed,
                data.display()
            ),
        );
        let spec = SynthSpec::from_toml_file(&data_toml)?;
        let corpus = uqabench::qa::corpus::tokenizer_corpus();
        let meta = build_synthetic(
            &data,
            &spec,
            "quickstart",
            self.seed,
            &self.tokenizer,
            &corpus,
            true,
        )?;
        progress(Progress::Dataset {
            dir: &data,
            meta: &meta,
        });

        let questions = out.join("qa");
        stage(
            &mut progress,
            2,
            format!(
                "questions for the seven sub-tasks -> {}",
                questions.display()
            ),
        );
        let qa = generate(
            &data,
            &questions,
            QaGenConfig {
                lang: Lang::Zh,
                seed: self.seed,
                train_per_task: self.train_per_task,
                eval_per_task: self.eval_per_task,
                train_windows: self.train_windows,
                valid_per_task: 0,
            },
        )?;
        progress(Progress::Questions(&qa));

        let encoder = out.join("encoder");
        stage(
            &mut progress,
            3,
            format!(
                "pre-training Trm++ on {} ranks -> {}",
                self.nproc,
                encoder.display()
            ),
        );
        let mut args = vec!["pretrain".into(), "--config".into(), shown(&pretrain_toml)];
        args.extend(set_path("data.dir", &data));
        args.extend(set_path("train.out", &encoder));
        args.extend(["--set".into(), format!("train.seed={}", self.seed)]);
        args.extend(overrides(&self.pretrain_set));
        exe.launch(&args)?;

        // The trained encoder's prompt and the untrained encoder's (same initial weights, no
        // pre-training): the comparison the quickstart exists to show.
        let mut aligned = Vec::new();
        for (i, (name, untrained)) in [("trained", false), ("untrained", true)].iter().enumerate() {
            let run = out.join(format!("align_{name}"));
            stage(
                &mut progress,
                4,
                format!(
                    "alignment ({}/2: {name} Trm++) on {} ranks -> {}",
                    i + 1,
                    self.nproc,
                    run.display()
                ),
            );
            let mut args = vec!["align".into(), "--config".into(), shown(&align_toml)];
            args.extend(set_path("data.dataset", &data));
            args.extend(set_path("data.qa_dir", &questions));
            args.extend(set_path("prompt.encoder", &encoder));
            args.extend(set_path("train.out", &run));
            args.extend(["--set".into(), format!("prompt.untrained={untrained}")]);
            args.extend(["--set".into(), format!("train.seed={}", self.seed)]);
            args.extend(overrides(&self.align_set));
            exe.launch(&args)?;
            aligned.push((name.to_string(), run));
        }
        for (i, ((name, run), shown_as)) in aligned.iter().zip([TRAINED, UNTRAINED]).enumerate() {
            stage(
                &mut progress,
                5,
                format!(
                    "evaluation ({}/2: {name}) on {} ranks -> {}",
                    i + 1,
                    self.nproc,
                    run.join("eval").display()
                ),
            );
            let args = [
                "eval".into(),
                "--run".into(),
                shown(run),
                "--name".into(),
                shown_as.to_string(),
                "--max-new-tokens".into(),
                self.max_new_tokens.to_string(),
            ];
            exe.launch(&args)?;
        }

        let report_dir = out.join("report");
        stage(
            &mut progress,
            6,
            format!("report -> {}", report_dir.display()),
        );
        let located = aligned
            .iter()
            .map(|(_, run)| Run::locate(&run.join("eval")))
            .collect::<uqabench::Result<Vec<_>>>()?;
        // The report adds the prior and history baselines of the same questions by itself.
        let (report, written) = write_report(&located, &report_dir)?;
        Ok(Outcome {
            report,
            written,
            configs,
            data,
            questions,
            encoder,
            aligned,
            elapsed: start.elapsed(),
        })
    }
}

fn io(path: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

fn write_config(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    uqa_data::atomic::write_atomic(&p, text.as_bytes())?;
    Ok(p)
}
