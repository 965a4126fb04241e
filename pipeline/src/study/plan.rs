//! A study's stages in the order they run, each the `uqa` command that makes its folder. The
//! local runner runs them one after the other; the Slurm submitter groups them into dependent
//! job arrays. Both mark a finished stage the same way, so a study started one way can be
//! finished the other.
//!
//! The study folder holds `study.toml` (the study as run), `data/`, `qa/`, `pretrain/KEY/`,
//! `align/KEY/` and `align/KEY/eval/`. A stage that finished holds `study-stage.json`: the
//! command that made it and when it ran. A stage folder without it was interrupted and runs
//! again; the training stages resume from their newest intact checkpoint. A stage folder made by
//! another command (the study file changed) is refused rather than mixed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::spec::Study;
use crate::uqa_exe::{overrides, set_path};
use crate::{PipelineError, Result};

/// The marker of a finished stage, in its folder.
pub const STAGE_MARKER: &str = "study-stage.json";

/// What a stage makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StageKind {
    Data,
    Questions,
    Pretrain,
    Align,
    Eval,
}

impl StageKind {
    /// The name of the stage in job names, logs and `[slurm]` keys.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Data => "data",
            StageKind::Questions => "questions",
            StageKind::Pretrain => "pretrain",
            StageKind::Align => "align",
            StageKind::Eval => "eval",
        }
    }
}

/// One stage of the plan.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// Its folder relative to the study folder (`data`, `qa`, `pretrain/KEY`, `align/KEY`,
    /// `align/KEY/eval`), which names it: `uqa study stage DIR ID` runs it.
    pub id: String,
    pub kind: StageKind,
    /// For people: "pre-training KEY".
    pub what: String,
    pub dir: PathBuf,
    /// The `uqa` arguments that make it.
    pub command: Vec<String>,
    /// Runs on every rank (training, evaluation) rather than once (data, questions).
    pub distributed: bool,
    /// The stage it needs besides the data and questions every later stage needs: an
    /// alignment needs its pre-training, an evaluation its alignment.
    pub needs: Option<String>,
    /// The index of the first element of the study that uses this stage. An element's
    /// pre-training, alignment and evaluation share it when the element is the first to use
    /// each, which lines up Slurm's array tasks for `--dependency=aftercorr`.
    pub element: usize,
}

/// What a stage marker records.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    pub command: Vec<String>,
    /// Seconds since the Unix epoch when the stage started and finished (absent in markers of
    /// studies run before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<f64>,
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Reads the marker of a finished stage in `dir`, if any.
pub fn read_marker(dir: &Path) -> Result<Option<Marker>> {
    let path = dir.join(STAGE_MARKER);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| PipelineError::Study {
            path,
            reason: format!("unreadable stage marker ({e}); remove it to run the stage again"),
        })
}

impl PlannedStage {
    /// Whether the stage's folder holds a finished stage made by its command; an error when
    /// another command made it.
    pub fn finished(&self) -> Result<bool> {
        let Some(marker) = read_marker(&self.dir)? else {
            return Ok(false);
        };
        if marker.command != self.command {
            return Err(PipelineError::Study {
                path: self.dir.join(STAGE_MARKER),
                reason: format!(
                    "this stage was made by another command (`uqa {}`; now `uqa {}`): the \
                     study changed; remove {} to run it again",
                    marker.command.join(" "),
                    self.command.join(" "),
                    self.dir.display()
                ),
            });
        }
        Ok(true)
    }

    /// Marks the stage finished (it started at `started`, seconds since the epoch).
    pub fn mark_finished(&self, started: f64) -> Result<()> {
        let marker = Marker {
            command: self.command.clone(),
            started: Some(started),
            finished: Some(now()),
        };
        let json = serde_json::to_vec_pretty(&marker).unwrap_or_default();
        uqa_data::atomic::write_atomic(self.dir.join(STAGE_MARKER), &json)?;
        Ok(())
    }
}

/// The study's stages in the order they run: data, questions, each distinct pre-training, then
/// each distinct alignment followed by its evaluation (so results come in as elements finish).
pub fn plan(study: &Study, dir: &Path) -> Vec<PlannedStage> {
    let base = &study.file.base;
    let data = dir.join("data");
    let qa = dir.join("qa");
    let mut stages = Vec::new();

    let mut synth: Vec<String> = vec!["data".into(), "synth".into()];
    match (&base.data.preset, &base.data.config) {
        (Some(preset), _) => synth.extend(["--preset".into(), preset.clone()]),
        (None, Some(config)) => {
            synth.extend(["--config".into(), shown(&study.resolve(config))]);
        }
        (None, None) => unreachable!("checked when the study was read"),
    }
    synth.extend([
        "--seed".into(),
        base.data.seed.to_string(),
        "--tokenizer".into(),
        base.data.tokenizer.clone(),
        "--out".into(),
        shown(&data),
        "--force".into(),
    ]);
    stages.push(PlannedStage {
        id: "data".into(),
        kind: StageKind::Data,
        what: "dataset".into(),
        dir: data.clone(),
        command: synth,
        distributed: false,
        needs: None,
        element: 0,
    });
    let q = &base.questions;
    stages.push(PlannedStage {
        id: "qa".into(),
        kind: StageKind::Questions,
        what: "questions".into(),
        dir: qa.clone(),
        command: [
            "qa-gen",
            "--data",
            &shown(&data),
            "--out",
            &shown(&qa),
            "--lang",
            &q.lang,
            "--seed",
            &base.data.seed.to_string(),
            "--train-per-task",
            &q.train_per_task.to_string(),
            "--eval-per-task",
            &q.eval_per_task.to_string(),
        ]
        .map(String::from)
        .to_vec(),
        distributed: false,
        needs: Some("data".into()),
        element: 0,
    });

    let mut seen = BTreeSet::new();
    for (index, e) in study.elements.iter().enumerate() {
        if !seen.insert(e.pretrain.key.clone()) {
            continue;
        }
        let out = e.pretrain_dir(dir);
        let cmd = training_command(
            study,
            "pretrain",
            &base.pretrain,
            &[("data.dir", &data), ("train.out", &out)],
            &e.pretrain.key,
            &e.pretrain.overrides,
        );
        stages.push(PlannedStage {
            id: format!("pretrain/{}", e.pretrain.key),
            kind: StageKind::Pretrain,
            what: format!("pre-training {}", e.pretrain.key),
            dir: out,
            command: cmd,
            distributed: true,
            needs: None,
            element: index,
        });
    }
    let mut seen = BTreeSet::new();
    for (index, e) in study.elements.iter().enumerate() {
        if !seen.insert(e.align.key.clone()) {
            continue;
        }
        let out = e.align_dir(dir);
        let cmd = training_command(
            study,
            "align",
            &base.align,
            &[
                ("data.dataset", &data),
                ("data.qa_dir", &qa),
                ("prompt.encoder", &e.pretrain_dir(dir)),
                ("train.out", &out),
            ],
            &e.align.key,
            &e.align.overrides,
        );
        let align_id = format!("align/{}", e.align.key);
        stages.push(PlannedStage {
            id: align_id.clone(),
            kind: StageKind::Align,
            what: format!("alignment {}", e.align.key),
            dir: out.clone(),
            command: cmd,
            distributed: true,
            needs: Some(format!("pretrain/{}", e.pretrain.key)),
            element: index,
        });
        let mut cmd = vec![
            "eval".into(),
            "--run".into(),
            shown(&out),
            "--name".into(),
            e.name.clone(),
            "--max-new-tokens".into(),
            base.eval.max_new_tokens.to_string(),
        ];
        if base.eval.limit > 0 {
            cmd.extend(["--limit".into(), base.eval.limit.to_string()]);
        }
        stages.push(PlannedStage {
            id: format!("{align_id}/eval"),
            kind: StageKind::Eval,
            what: format!("evaluation {}", e.name),
            dir: e.eval_dir(dir),
            command: cmd,
            distributed: true,
            needs: Some(align_id),
            element: index,
        });
    }
    stages
}

/// `uqa VERB --config CONFIG` with the study's paths, then the Prometheus labels, then the
/// stage's axis overrides. The paths come first, so that an axis that replaces a whole table (a
/// text prompt replaces `prompt`, and the encoder with it) wins. `--set metrics.labels = {
/// study = ..., element = KEY }`: every series of the stage's endpoint names the study and the
/// stage (shared stages serve several elements).
fn training_command(
    study: &Study,
    verb: &str,
    config: &Path,
    paths: &[(&str, &Path)],
    key: &str,
    axis_overrides: &[String],
) -> Vec<String> {
    let mut cmd = vec![
        verb.to_string(),
        "--config".into(),
        shown(&study.resolve(config)),
    ];
    for (field, path) in paths {
        cmd.extend(set_path(field, path));
    }
    cmd.extend([
        "--set".into(),
        format!(
            "metrics.labels = {{ study = {:?}, element = {key:?} }}",
            study.file.study.name
        ),
    ]);
    cmd.extend(overrides(axis_overrides));
    cmd
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}
