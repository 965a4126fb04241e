//! Stage 2: aligning a frozen encoder to an LLM through soft prompts (or fine-tuning on text
//! prompts, the baselines), as a [`Stage`] of the one training loop (`engine`): a micro-batch
//! is a slice of training questions (with their users' sequences for soft prompts), its labels
//! the answer tokens, its loss their summed cross-entropy.

pub mod config;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use uqa_comm::Runtime;
use uqa_data::batch::{SequenceBatch, collate};
use uqa_data::dataset::Dataset;
use uqa_models::llm::chat::EncodedChat;

pub use config::AlignJob;
pub use uqa_models::aligned::{
    AlignModel, AlignedSpec, EVAL_QUESTIONS, LlmSource, PromptConfig, QuestionSet, Render,
    Strategy, TRAIN_QUESTIONS, TextHistory, load_aligned, load_questions, text_history,
    title_vectors,
};

use crate::engine::{self, Rate, Run, Stage, Units};
use crate::error::{Result, TrainError};
use crate::observe::Telemetry;
use crate::optim::Params;
use crate::parallel::Replicas;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct AlignOutcome {
    pub steps: u64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub trainable_parameters: usize,
    pub checkpoint: Option<PathBuf>,
    pub resumed_from: Option<PathBuf>,
}

/// Alignment as one process or one rank of a launch, serving Prometheus metrics.
pub fn align(job: &AlignJob) -> Result<AlignOutcome> {
    let (runtime, telemetry, mut replicas) =
        engine::launch(&job.runtime, &job.metrics, &job.train)?;
    align_observed(job, &runtime, &mut replicas, &telemetry)
}

/// Alignment on given replicas (in-process ranks in tests), without a metrics endpoint.
pub fn align_with(job: &AlignJob, replicas: &mut Replicas) -> Result<AlignOutcome> {
    align_observed(job, &Runtime::single(), replicas, &Telemetry::disabled())
}

fn target_count(chat: &EncodedChat) -> usize {
    chat.targets.iter().filter(|t| **t).count()
}

/// Alignment on given replicas, reporting to `telemetry`.
pub fn align_observed(
    job: &AlignJob,
    runtime: &Runtime,
    replicas: &mut Replicas,
    telemetry: &Telemetry,
) -> Result<AlignOutcome> {
    let device = uqa_models::device::open(runtime.device.cuda_ordinal())?;
    let mut stage = AlignStage::new(job, replicas.rank(), &device)?;
    let run = Run {
        name: "aligned",
        train: &job.train,
        optim: &job.optim,
        config_hash: job.hash(),
        config_toml: job.to_toml(),
        runtime,
        paths: vec![
            ("data.dataset", job.data.dataset.clone()),
            ("data.qa_dir", job.data.qa_dir.clone()),
            ("train.out", job.train.out.clone()),
        ],
    };
    let trained = engine::train(&mut stage, &run, replicas, telemetry)?;
    Ok(AlignOutcome {
        steps: trained.steps,
        first_loss: trained.first_loss,
        last_loss: trained.last_loss,
        trainable_parameters: stage.params.numel(),
        checkpoint: trained.checkpoint,
        resumed_from: trained.resumed_from,
    })
}

/// The aligned model (frozen encoder, adapter, LLM) and its training questions.
pub struct AlignStage<'a> {
    job: &'a AlignJob,
    model: AlignModel,
    questions: QuestionSet,
    params: Params,
    llm_lr_scale: f64,
}

/// A micro-batch of questions: their chats and, for soft prompts, their users' sequences.
pub struct QuestionBatch {
    chats: Vec<EncodedChat>,
    sequences: Option<SequenceBatch>,
}

impl<'a> AlignStage<'a> {
    /// The aligned model on `device` (encoder, adapter and LLM), and the training questions.
    pub fn new(job: &'a AlignJob, rank: usize, device: &Device) -> Result<Self> {
        let ds = Dataset::open(&job.data.dataset)?;
        let model = uqa_models::aligned::build(&job.spec(), job.train.seed, &ds, device)?;
        let file = job.data.qa_dir.join(&job.data.train_file);
        let questions = load_questions(
            &job.prompt,
            &model,
            &ds,
            &file,
            Render::Training,
            job.data.max_questions,
        )?;
        if questions.is_empty() {
            return Err(TrainError::Invalid(format!(
                "{}: no training questions",
                file.display()
            )));
        }
        let params = Params::from_varmap(&model.trainable);
        let llm_lr_scale = match job.strategy {
            Strategy::Full { llm_lr } => llm_lr / job.optim.adamw.lr,
            _ => 1.0,
        };
        if rank == 0 {
            eprintln!(
                "align: {} questions, LLM {} ({} parameters), {} trainable parameters ({:?})",
                questions.len(),
                job.llm.source,
                model.model.lm.config().param_count(),
                params.numel(),
                job.strategy
            );
            let mut lengths: Vec<usize> = questions
                .chats
                .iter()
                .map(|c| model.model.input_tokens(c))
                .collect();
            lengths.sort_unstable();
            let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
            eprintln!(
                "align: LLM input tokens per question (text plus soft tokens): min {}, median {}, \
                 mean {mean:.1}, max {}; batches are padded to their longest question",
                lengths[0],
                lengths[lengths.len() / 2],
                lengths[lengths.len() - 1]
            );
        }
        Ok(Self {
            job,
            model,
            questions,
            params,
            llm_lr_scale,
        })
    }
}

impl Stage for AlignStage<'_> {
    type Batch = QuestionBatch;

    const UNITS: Units = Units {
        samples: "questions",
        inputs: "input_tokens",
        labels: "target_tokens",
        rate: Rate::Samples("q/s"),
    };

    fn params(&self) -> &Params {
        &self.params
    }

    fn rows(&self) -> usize {
        self.questions.len()
    }

    fn collate(&self, rows: &[usize]) -> Result<QuestionBatch> {
        let q = &self.questions;
        let chats = rows.iter().map(|&i| q.chats[i].clone()).collect();
        let sequences = self.model.model.user.is_some().then(|| {
            let file_rows: Vec<usize> = rows.iter().map(|&i| q.rows[i]).collect();
            collate(&q.file, &file_rows, self.job.data.max_len)
        });
        Ok(QuestionBatch { chats, sequences })
    }

    fn labels(&self, b: &QuestionBatch) -> usize {
        b.chats.iter().map(target_count).sum()
    }

    fn samples(&self, b: &QuestionBatch) -> usize {
        b.chats.len()
    }

    fn inputs(&self, b: &QuestionBatch) -> usize {
        b.chats
            .iter()
            .map(|c| self.model.model.input_tokens(c))
            .sum()
    }

    fn loss(&self, b: &QuestionBatch, _step: u64) -> Result<Tensor> {
        Ok(self
            .model
            .model
            .loss(b.sequences.as_ref(), &b.chats, &self.job.loss)?
            .sum)
    }

    fn lr_scale(&self, name: &str) -> f64 {
        if name.starts_with("llm.") {
            self.llm_lr_scale
        } else {
            1.0
        }
    }
}
