//! `uqa study run --local`: every stage of every element, in order, on this machine.
//!
//! The study folder holds `study.toml` (the study as run), `data/`, `qa/`, `pretrain/KEY/`,
//! `align/KEY/` and `align/KEY/eval/`. A stage that finished holds `study-stage.json`, the
//! command that made it: a re-run skips it. A stage folder without it was interrupted and runs
//! again, and the training stages resume from their newest intact checkpoint. A stage folder
//! made by another command (the study file changed) is refused rather than mixed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{RECORD, Study};
use crate::uqa_exe::{UqaExe, overrides, set_path};
use crate::{PipelineError, Result};

/// The marker of a finished stage, in its folder.
pub const STAGE_MARKER: &str = "study-stage.json";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Marker {
    command: Vec<String>,
}

/// What the runner tells its caller as it goes.
#[derive(Debug)]
pub enum StudyEvent<'a> {
    /// A stage starts: its number among the study's stages, what, where, the command.
    Running {
        index: usize,
        total: usize,
        what: &'a str,
        dir: &'a Path,
        command: &'a [String],
    },
    /// A stage had finished before: skipped.
    Done {
        index: usize,
        total: usize,
        what: &'a str,
        dir: &'a Path,
    },
}

/// One stage of the plan: what it is, its folder, and the `uqa` command that makes it.
struct PlannedStage {
    what: String,
    dir: PathBuf,
    command: Vec<String>,
    distributed: bool,
}

/// Runs the study into `dir`; returns how many stages ran (the others were done already).
/// With `dry_run`, only reports what it would run, and writes nothing.
pub fn run_local(
    study: &Study,
    dir: &Path,
    exe: &UqaExe,
    dry_run: bool,
    mut progress: impl FnMut(StudyEvent),
) -> Result<usize> {
    if !dry_run {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        uqa_data::atomic::write_atomic(dir.join(RECORD), study.to_recorded_toml().as_bytes())?;
    }
    let plan = plan(study, dir);
    let total = plan.len();
    let mut ran = 0;
    for (i, stage) in plan.iter().enumerate() {
        let index = i + 1;
        if finished(&stage.dir, &stage.command)? {
            progress(StudyEvent::Done {
                index,
                total,
                what: &stage.what,
                dir: &stage.dir,
            });
            continue;
        }
        progress(StudyEvent::Running {
            index,
            total,
            what: &stage.what,
            dir: &stage.dir,
            command: &stage.command,
        });
        if dry_run {
            ran += 1;
            continue;
        }
        if stage.distributed {
            exe.launch(&stage.command)?;
        } else {
            exe.once(&stage.command)?;
        }
        let marker = Marker {
            command: stage.command.clone(),
        };
        let json = serde_json::to_vec_pretty(&marker).unwrap_or_default();
        uqa_data::atomic::write_atomic(stage.dir.join(STAGE_MARKER), &json)?;
        ran += 1;
    }
    Ok(ran)
}

/// Whether `dir` holds a finished stage made by `command`; an error when another command made
/// it.
fn finished(dir: &Path, command: &[String]) -> Result<bool> {
    let path = dir.join(STAGE_MARKER);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(false);
    };
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| PipelineError::Study {
        path: path.clone(),
        reason: format!("unreadable stage marker ({e}); remove it to run the stage again"),
    })?;
    if marker.command != command {
        return Err(PipelineError::Study {
            path,
            reason: format!(
                "this stage was made by another command (`uqa {}`; now `uqa {}`): the study \
                 changed; remove {} to run it again",
                marker.command.join(" "),
                command.join(" "),
                dir.display()
            ),
        });
    }
    Ok(true)
}

/// The study's stages in the order they run: data, questions, each distinct pre-training, then
/// each distinct alignment followed by its evaluation.
fn plan(study: &Study, dir: &Path) -> Vec<PlannedStage> {
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
        what: "dataset".into(),
        dir: data.clone(),
        command: synth,
        distributed: false,
    });
    let q = &base.questions;
    stages.push(PlannedStage {
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
    });

    let mut seen = BTreeSet::new();
    for e in &study.elements {
        if !seen.insert(e.pretrain.key.clone()) {
            continue;
        }
        let out = e.pretrain_dir(dir);
        let mut cmd = vec![
            "pretrain".into(),
            "--config".into(),
            shown(&study.resolve(&base.pretrain)),
        ];
        cmd.extend(set_path("data.dir", &data));
        cmd.extend(set_path("train.out", &out));
        cmd.extend(metric_labels(study, &e.pretrain.key));
        cmd.extend(overrides(&e.pretrain.overrides));
        stages.push(PlannedStage {
            what: format!("pre-training {}", e.pretrain.key),
            dir: out,
            command: cmd,
            distributed: true,
        });
    }
    // Each alignment is evaluated right after it, so results come in as elements finish.
    let mut seen = BTreeSet::new();
    for e in &study.elements {
        if !seen.insert(e.align.key.clone()) {
            continue;
        }
        let out = e.align_dir(dir);
        let mut cmd = vec![
            "align".into(),
            "--config".into(),
            shown(&study.resolve(&base.align)),
        ];
        // The study's paths first: an axis that replaces the whole prompt (a text prompt)
        // drops the encoder with it.
        cmd.extend(set_path("data.dataset", &data));
        cmd.extend(set_path("data.qa_dir", &qa));
        cmd.extend(set_path("prompt.encoder", &e.pretrain_dir(dir)));
        cmd.extend(set_path("train.out", &out));
        cmd.extend(metric_labels(study, &e.align.key));
        cmd.extend(overrides(&e.align.overrides));
        stages.push(PlannedStage {
            what: format!("alignment {}", e.align.key),
            dir: out.clone(),
            command: cmd,
            distributed: true,
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
            what: format!("evaluation {}", e.name),
            dir: e.eval_dir(dir),
            command: cmd,
            distributed: true,
        });
    }
    stages
}

/// `--set metrics.labels = { study = ..., element = ... }`: every series of the stage's
/// Prometheus endpoint names the study and the stage (shared stages serve several elements).
fn metric_labels(study: &Study, key: &str) -> [String; 2] {
    [
        "--set".into(),
        format!(
            "metrics.labels = {{ study = {:?}, element = {key:?} }}",
            study.file.study.name
        ),
    ]
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

fn io(path: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}
