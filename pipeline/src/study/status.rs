//! `uqa study status DIR`: where each element stands, read from its stage folders: finished
//! (the stage marker), started (the run's `resolved.toml` and `metrics.jsonl`: step, total
//! steps, last loss, an ETA from the recent step times), or not started.

use std::path::Path;

use serde::Deserialize;

use super::plan::STAGE_MARKER;
use super::spec::{Element, Study};
use crate::Result;

/// A training stage's state.
#[derive(Debug, Clone, PartialEq)]
pub enum StageState {
    NotStarted,
    /// Started and not finished (running, or stopped: a re-run resumes it).
    Started {
        step: u64,
        total_steps: Option<u64>,
        loss: Option<f64>,
        eta_seconds: Option<f64>,
    },
    Done {
        loss: Option<f64>,
    },
}

#[derive(Debug, Clone)]
pub struct ElementStatus {
    pub name: String,
    pub pretrain: (String, StageState),
    pub align: (String, StageState),
    pub evaluated: bool,
}

/// Every element of the study in `dir`, in the study's order.
pub fn status(dir: &Path) -> Result<Vec<ElementStatus>> {
    let study = Study::recorded(dir)?;
    Ok(study.elements.iter().map(|e| element(dir, e)).collect())
}

fn element(dir: &Path, e: &Element) -> ElementStatus {
    ElementStatus {
        name: e.name.clone(),
        pretrain: (e.pretrain.key.clone(), stage_state(&e.pretrain_dir(dir))),
        align: (e.align.key.clone(), stage_state(&e.align_dir(dir))),
        evaluated: e.eval_dir(dir).join(STAGE_MARKER).exists(),
    }
}

/// One line of `metrics.jsonl` (the fields status reads).
#[derive(Deserialize)]
struct StepLine {
    step: u64,
    #[serde(default)]
    loss: Option<f64>,
    #[serde(default)]
    step_seconds: Option<f64>,
}

#[derive(Deserialize)]
struct Resolved {
    resolved: ResolvedCounts,
}

#[derive(Deserialize)]
struct ResolvedCounts {
    total_steps: u64,
}

/// The state of the training run in `run`.
pub fn stage_state(run: &Path) -> StageState {
    if !run.exists() {
        return StageState::NotStarted;
    }
    // Step lines only (evaluation lines have no step time).
    let steps: Vec<StepLine> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<StepLine>(l).ok())
        .filter(|s| s.step_seconds.is_some())
        .collect();
    let loss = steps.last().and_then(|s| s.loss);
    if run.join(STAGE_MARKER).exists() {
        return StageState::Done { loss };
    }
    let total_steps = std::fs::read_to_string(run.join("resolved.toml"))
        .ok()
        .and_then(|t| toml::from_str::<Resolved>(&t).ok())
        .map(|r| r.resolved.total_steps);
    let step = steps.last().map_or(0, |s| s.step);
    // The mean of the last 20 logged step times, times the steps left.
    let recent: Vec<f64> = steps
        .iter()
        .rev()
        .take(20)
        .filter_map(|s| s.step_seconds)
        .collect();
    let eta_seconds = match (total_steps, recent.is_empty()) {
        (Some(total), false) => Some(
            recent.iter().sum::<f64>() / recent.len() as f64 * total.saturating_sub(step) as f64,
        ),
        _ => None,
    };
    StageState::Started {
        step,
        total_steps,
        loss,
        eta_seconds,
    }
}

impl std::fmt::Display for StageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loss = |l: &Option<f64>| l.map(|l| format!(", loss {l:.4}")).unwrap_or_default();
        match self {
            StageState::NotStarted => write!(f, "not started"),
            StageState::Done { loss: l } => write!(f, "done{}", loss(l)),
            StageState::Started {
                step,
                total_steps,
                loss: l,
                eta_seconds,
            } => {
                let total = total_steps.map(|t| format!("/{t}")).unwrap_or_default();
                let eta = eta_seconds
                    .map(|s| format!(", ETA {:.0} min", (s / 60.0).ceil()))
                    .unwrap_or_default();
                write!(f, "step {step}{total}{}{eta}", loss(l))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_run_reports_step_loss_and_eta_and_a_marked_one_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        assert_eq!(stage_state(&run), StageState::NotStarted);
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join("resolved.toml"),
            "[paths]\n\"train.out\" = \"x\"\n\n[resolved]\ntotal_steps = 100\nworld_size = 2\n",
        )
        .unwrap();
        let lines = [
            r#"{"step":1,"loss":7.5,"step_seconds":2.0,"epoch":0}"#,
            r#"{"step":2,"loss":7.0,"step_seconds":4.0,"epoch":0}"#,
            r#"{"step":2,"epoch":1,"eval":{"full":{}}}"#,
        ];
        std::fs::write(run.join("metrics.jsonl"), lines.join("\n")).unwrap();
        let state = stage_state(&run);
        // 98 steps left at the mean of 2 s and 4 s.
        assert_eq!(
            state,
            StageState::Started {
                step: 2,
                total_steps: Some(100),
                loss: Some(7.0),
                eta_seconds: Some(294.0),
            }
        );
        assert_eq!(state.to_string(), "step 2/100, loss 7.0000, ETA 5 min");
        std::fs::write(run.join(STAGE_MARKER), "{}").unwrap();
        assert_eq!(stage_state(&run).to_string(), "done, loss 7.0000");
    }
}
