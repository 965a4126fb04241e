//! `uqa study run --local`: every stage of every element, in order, on this machine; and
//! `uqa study stage DIR ID`, one stage, as a Slurm job runs it (`slurm`). A finished stage is
//! skipped, an interrupted one resumes (`plan` has the folder's layout and markers).

use std::path::Path;

use super::plan::{PlannedStage, now, plan};
use super::spec::{RECORD, Study};
use crate::uqa_exe::UqaExe;
use crate::{PipelineError, Result};

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
        if stage.finished()? {
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
        run_one(stage, exe, false)?;
        ran += 1;
    }
    Ok(ran)
}

/// Runs the stage `id` of the study recorded in `dir` (`uqa study stage`): skipped when
/// finished; a distributed stage runs on every task of the Slurm allocation it is in (`srun`),
/// else as `exe` says. Returns whether it ran.
pub fn run_stage(dir: &Path, id: &str, exe: &UqaExe) -> Result<bool> {
    let study = Study::recorded(dir)?;
    let stages = plan(&study, dir);
    let Some(stage) = stages.iter().find(|s| s.id == id) else {
        return Err(PipelineError::Study {
            path: dir.to_path_buf(),
            reason: format!(
                "no stage `{id}` in this study (its stages: {})",
                stages
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    if stage.finished()? {
        return Ok(false);
    }
    let in_slurm_job = std::env::var_os("SLURM_JOB_ID").is_some();
    run_one(stage, exe, in_slurm_job)?;
    Ok(true)
}

fn run_one(stage: &PlannedStage, exe: &UqaExe, srun: bool) -> Result<()> {
    let started = now();
    match (stage.distributed, srun) {
        (true, true) => exe.srun(&stage.command)?,
        (true, false) => exe.launch(&stage.command)?,
        (false, _) => exe.once(&stage.command)?,
    }
    stage.mark_finished(started)
}

fn io(path: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}
