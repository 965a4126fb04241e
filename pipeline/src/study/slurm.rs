//! `uqa study run --slurm`: the study's unfinished stages as dependent Slurm jobs.
//!
//! - One job makes the dataset and the questions.
//! - One job array per training stage (pre-training, alignment) and one for evaluation. An
//!   array task's id is the index of the first element using the stage, so an element's
//!   alignment and evaluation line up with its pre-training: each alignment waits only for its
//!   own pre-training (`--dependency=aftercorr`), each evaluation for its own alignment. An
//!   alignment whose pre-training another element owns (two adapters over one encoder) waits
//!   for that one task (`afterok:JOB_TASK`) in an array of its own.
//! - Every task runs `uqa study stage DIR ID`, which runs the stage on every task of its
//!   allocation (`srun`) and marks it finished; the sbatch options in the study's `[slurm]`
//!   table (and `--sbatch`) size each allocation.
//! - `DIR/slurm/jobs.json` records every job submitted, with its tasks and dependency. A
//!   re-submit skips finished stages, and is refused while jobs of the study are still queued or
//!   running. The scripts and logs are in `DIR/slurm/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::plan::{PlannedStage, StageKind, now, plan};
use super::spec::{RECORD, Study, refused_sbatch_option};
use crate::{PipelineError, Result};

/// Every job submitted for the study, in `DIR/`.
pub const JOBS: &str = "slurm/jobs.json";

/// What a job must wait for: an earlier job of the same submission (by its index in it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Every task of the job, successfully.
    AfterOk { job: usize },
    /// The task with the same array index, successfully.
    AfterCorr { job: usize },
    /// One task of the job, successfully.
    AfterOkTask { job: usize, task: usize },
}

/// One job to submit: stages of one kind, an array of them or (for data and questions) one
/// job that runs them in order.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    pub stage: &'static str,
    /// (array task index, stage id); one job runs them in order when it is not an array.
    pub tasks: Vec<(usize, String)>,
    pub array: bool,
    pub needs: Vec<Need>,
}

/// Groups the unfinished stages into jobs, in submission order (a job's needs name earlier
/// ones). `finished` holds the ids of the finished stages.
pub fn group(stages: &[PlannedStage], finished: &BTreeSet<String>) -> Vec<JobPlan> {
    let todo: Vec<&PlannedStage> = stages
        .iter()
        .filter(|s| !finished.contains(&s.id))
        .collect();
    let mut jobs: Vec<JobPlan> = Vec::new();
    // Where each stage submitted now runs: (job, array task).
    let mut placed: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let first: Vec<(usize, String)> = todo
        .iter()
        .filter(|s| matches!(s.kind, StageKind::Data | StageKind::Questions))
        .map(|s| (0, s.id.clone()))
        .collect();
    let data_job = (!first.is_empty()).then(|| {
        jobs.push(JobPlan {
            stage: "data",
            tasks: first,
            array: false,
            needs: Vec::new(),
        });
        0
    });
    for kind in [StageKind::Pretrain, StageKind::Align, StageKind::Eval] {
        // Dependency -> the stages with it, in plan order.
        let mut groups: Vec<(Vec<Need>, Vec<&PlannedStage>)> = Vec::new();
        for stage in todo.iter().filter(|s| s.kind == kind) {
            let mut needs: Vec<Need> = data_job
                .map(|job| Need::AfterOk { job })
                .into_iter()
                .collect();
            if let Some(&(job, task)) = stage.needs.as_deref().and_then(|n| placed.get(n)) {
                needs.push(if task == stage.element {
                    Need::AfterCorr { job }
                } else {
                    Need::AfterOkTask { job, task }
                });
            }
            match groups.iter_mut().find(|(n, _)| *n == needs) {
                Some((_, members)) => members.push(stage),
                None => groups.push((needs, vec![stage])),
            }
        }
        for (needs, members) in groups {
            let job = jobs.len();
            for s in &members {
                placed.insert(&s.id, (job, s.element));
            }
            jobs.push(JobPlan {
                stage: kind.name(),
                tasks: members.iter().map(|s| (s.element, s.id.clone())).collect(),
                array: true,
                needs,
            });
        }
    }
    jobs
}

/// `--dependency`'s value for `needs`, given the ids of the jobs submitted so far.
pub fn dependency(needs: &[Need], ids: &[String]) -> Option<String> {
    let parts: Vec<String> = needs
        .iter()
        .map(|n| match *n {
            Need::AfterOk { job } => format!("afterok:{}", ids[job]),
            Need::AfterCorr { job } => format!("aftercorr:{}", ids[job]),
            Need::AfterOkTask { job, task } => format!("afterok:{}_{task}", ids[job]),
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// One submitted job, as recorded in `DIR/slurm/jobs.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubmittedJob {
    /// Which `uqa study run --slurm` of the study submitted it (1, 2, ...).
    pub submission: usize,
    pub stage: String,
    pub job_id: String,
    /// Array task index -> stage id; for the data job, its stages in order under index 0.
    pub tasks: Vec<(usize, String)>,
    pub array: bool,
    pub dependency: Option<String>,
    /// The sbatch command line (without the script) and the script.
    pub sbatch: Vec<String>,
    pub script: PathBuf,
    /// Seconds since the Unix epoch.
    pub submitted: f64,
}

/// How to submit.
#[derive(Debug, Clone)]
pub struct SlurmRun {
    /// The `uqa` the jobs run (on a cluster: on a filesystem every node sees).
    pub exe: PathBuf,
    /// sbatch options for every job, after the study's `[slurm]` ones (`--sbatch`).
    pub sbatch: Vec<String>,
    /// Print what would be submitted; submit and write nothing.
    pub dry_run: bool,
}

/// What `submit` did (or, in a dry run, would do).
#[derive(Debug)]
pub struct Submitted {
    /// The jobs, with ids (`$JOB1`, ... in a dry run).
    pub jobs: Vec<SubmittedJob>,
    /// Stages already finished, skipped.
    pub done: usize,
    pub total: usize,
}

/// Submits the study's unfinished stages into `dir` (created; the study recorded in it).
pub fn submit(study: &Study, dir: &Path, run: &SlurmRun) -> Result<Submitted> {
    for opt in &run.sbatch {
        if let Some(why) = refused_sbatch_option(opt) {
            return Err(PipelineError::Study {
                path: PathBuf::from("--sbatch"),
                reason: format!("`{opt}` {why}"),
            });
        }
    }
    let stages = plan(study, dir);
    let mut finished = BTreeSet::new();
    for s in &stages {
        if s.finished()? {
            finished.insert(s.id.clone());
        }
    }
    let jobs_path = dir.join(JOBS);
    let mut recorded = read_jobs(&jobs_path)?;
    if !run.dry_run {
        refuse_while_queued(dir, &recorded)?;
    }
    let plans = group(&stages, &finished);
    let submission = recorded.iter().map(|j| j.submission).max().unwrap_or(0) + 1;
    let slurm_dir = dir.join("slurm");
    let cwd = std::env::current_dir().map_err(|e| io(Path::new("."), e))?;
    if !run.dry_run && !plans.is_empty() {
        std::fs::create_dir_all(slurm_dir.join("logs")).map_err(|e| io(&slurm_dir, e))?;
        uqa_data::atomic::write_atomic(dir.join(RECORD), study.to_recorded_toml().as_bytes())?;
    }
    let mut ids: Vec<String> = Vec::new();
    let mut jobs = Vec::new();
    for (n, job) in plans.iter().enumerate() {
        let name = format!("{}-{}", job.stage, n + 1);
        let script = slurm_dir.join(format!("submission-{submission}-{name}.sbatch"));
        let log = slurm_dir.join("logs").join(if job.array {
            format!("{}-%A_%a.out", job.stage)
        } else {
            format!("{}-%j.out", job.stage)
        });
        let dependency = dependency(&job.needs, &ids);
        let mut sbatch = vec![
            "--parsable".to_string(),
            format!(
                "--job-name=uqa-study-{}-{}",
                study.file.study.name, job.stage
            ),
            format!("--chdir={}", cwd.display()),
            format!("--output={}", log.display()),
        ];
        if job.array {
            let indices: Vec<String> = job.tasks.iter().map(|(i, _)| i.to_string()).collect();
            sbatch.push(format!("--array={}", indices.join(",")));
        }
        if let Some(d) = &dependency {
            // A job whose dependency can never be met (a failed pre-training) is cancelled
            // instead of pending forever; a re-submit runs it again.
            sbatch.push(format!("--dependency={d}"));
            sbatch.push("--kill-on-invalid-dep=yes".into());
        }
        sbatch.extend(study.file.slurm.for_stage(job.stage));
        sbatch.extend(run.sbatch.iter().cloned());
        let job_id = if run.dry_run {
            format!("$JOB{}", n + 1)
        } else {
            uqa_data::atomic::write_atomic(
                &script,
                job_script(study, dir, &run.exe, job).as_bytes(),
            )?;
            sbatch_submit(&sbatch, &script)?
        };
        ids.push(job_id.clone());
        let submitted = SubmittedJob {
            submission,
            stage: job.stage.to_string(),
            job_id,
            tasks: job.tasks.clone(),
            array: job.array,
            dependency,
            sbatch,
            script,
            submitted: now(),
        };
        if !run.dry_run {
            // Recorded as soon as it is submitted: if a later sbatch fails, the queue check of
            // the next run still knows this job.
            recorded.push(submitted.clone());
            let json = serde_json::to_vec_pretty(&recorded).unwrap_or_default();
            uqa_data::atomic::write_atomic(&jobs_path, &json)?;
        }
        jobs.push(submitted);
    }
    Ok(Submitted {
        jobs,
        done: finished.len(),
        total: stages.len(),
    })
}

/// The batch script of one job: each array task runs its stage through `uqa study stage`.
fn job_script(study: &Study, dir: &Path, exe: &Path, job: &JobPlan) -> String {
    let exe = sh_quote(&exe.display().to_string());
    let dir = sh_quote(&dir.display().to_string());
    let mut s = format!(
        "#!/usr/bin/env bash\n# Written by `uqa study run --slurm`: study {}, {} stages{}.\n\
         # sbatch's options are on its command line (jobs.json records them).\nset -euo pipefail\n",
        study.file.study.name,
        job.stage,
        if job.array {
            ", one per array task"
        } else {
            ", in order"
        }
    );
    if job.array {
        s.push_str("case \"${SLURM_ARRAY_TASK_ID:-}\" in\n");
        for (index, id) in &job.tasks {
            s.push_str(&format!("  {index}) stage={} ;;\n", sh_quote(id)));
        }
        s.push_str(
            "  *) echo \"uqa study: no stage for array task ${SLURM_ARRAY_TASK_ID:-(none)}\" >&2; exit 1 ;;\nesac\n",
        );
        s.push_str(&format!("exec {exe} study stage {dir} \"$stage\"\n"));
    } else {
        for (_, id) in &job.tasks {
            s.push_str(&format!("{exe} study stage {dir} {}\n", sh_quote(id)));
        }
    }
    s
}

/// Runs `sbatch --parsable OPTIONS SCRIPT`; returns the job id.
fn sbatch_submit(options: &[String], script: &Path) -> Result<String> {
    let out = Command::new("sbatch")
        .args(options)
        .arg(script)
        .output()
        .map_err(|e| io(Path::new("sbatch"), e))?;
    if !out.status.success() {
        return Err(PipelineError::Stage {
            command: format!("sbatch {} {}", options.join(" "), script.display()),
            status: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    // `--parsable`: "JOBID" or "JOBID;CLUSTER".
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(PipelineError::Stage {
            command: format!("sbatch {} {}", options.join(" "), script.display()),
            status: format!("unexpected output {:?} (expected a job id)", text.trim()),
        });
    }
    Ok(id)
}

/// Reads `DIR/slurm/jobs.json` (empty when absent).
pub fn read_jobs(path: &Path) -> Result<Vec<SubmittedJob>> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(Vec::new());
    };
    serde_json::from_slice(&bytes).map_err(|e| PipelineError::Study {
        path: path.to_path_buf(),
        reason: format!("unreadable job record ({e})"),
    })
}

/// Refuses to submit while a job of an earlier submission is queued or running: its stages
/// would run twice.
fn refuse_while_queued(dir: &Path, recorded: &[SubmittedJob]) -> Result<()> {
    if recorded.is_empty() {
        return Ok(());
    }
    // %F: the array's job id (a job's own id when it is no array), as sbatch printed it.
    let out = Command::new("squeue")
        .args(["-h", "-o", "%F"])
        .output()
        .map_err(|e| io(Path::new("squeue"), e))?;
    if !out.status.success() {
        return Err(PipelineError::Stage {
            command: "squeue -h -o %F".into(),
            status: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let queued: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    let ours: Vec<&str> = recorded
        .iter()
        .map(|j| j.job_id.as_str())
        .filter(|id| queued.contains(*id))
        .collect();
    if ours.is_empty() {
        return Ok(());
    }
    Err(PipelineError::Study {
        path: dir.to_path_buf(),
        reason: format!(
            "jobs of this study are still queued or running ({}); wait for them, or cancel them \
             (scancel {}), then submit again",
            ours.join(", "),
            ours.join(" ")
        ),
    })
}

/// `s` in single quotes for bash.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn io(path: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(id: &str, kind: StageKind, needs: Option<&str>, element: usize) -> PlannedStage {
        PlannedStage {
            id: id.into(),
            kind,
            what: id.into(),
            dir: PathBuf::from(id),
            command: vec![id.into()],
            distributed: !matches!(kind, StageKind::Data | StageKind::Questions),
            needs: needs.map(String::from),
            element,
        }
    }

    /// Elements 0 and 1 share encoder `a` under two adapters; element 2 has encoder `b`.
    fn stages() -> Vec<PlannedStage> {
        use StageKind::*;
        vec![
            stage("data", Data, None, 0),
            stage("qa", Questions, Some("data"), 0),
            stage("pretrain/a", Pretrain, None, 0),
            stage("pretrain/b", Pretrain, None, 2),
            stage("align/a-x", Align, Some("pretrain/a"), 0),
            stage("align/a-x/eval", Eval, Some("align/a-x"), 0),
            stage("align/a-y", Align, Some("pretrain/a"), 1),
            stage("align/a-y/eval", Eval, Some("align/a-y"), 1),
            stage("align/b-x", Align, Some("pretrain/b"), 2),
            stage("align/b-x/eval", Eval, Some("align/b-x"), 2),
        ]
    }

    fn ids(tasks: &[(usize, String)]) -> Vec<(usize, &str)> {
        tasks.iter().map(|(i, s)| (*i, s.as_str())).collect()
    }

    /// Each job as (stage, array tasks, needs).
    type JobSummary<'a> = (&'a str, Vec<(usize, &'a str)>, Vec<Need>);

    fn summary(jobs: &[JobPlan]) -> Vec<JobSummary<'_>> {
        jobs.iter()
            .map(|j| (j.stage, ids(&j.tasks), j.needs.clone()))
            .collect()
    }

    #[test]
    fn each_alignment_waits_for_its_own_pretraining() {
        let jobs = group(&stages(), &BTreeSet::new());
        use Need::*;
        assert_eq!(
            summary(&jobs),
            vec![
                ("data", vec![(0, "data"), (0, "qa")], vec![]),
                (
                    "pretrain",
                    vec![(0, "pretrain/a"), (2, "pretrain/b")],
                    vec![AfterOk { job: 0 }]
                ),
                (
                    "align",
                    vec![(0, "align/a-x"), (2, "align/b-x")],
                    vec![AfterOk { job: 0 }, AfterCorr { job: 1 }]
                ),
                // The second adapter over encoder `a` waits for task 0 of the pre-training.
                (
                    "align",
                    vec![(1, "align/a-y")],
                    vec![AfterOk { job: 0 }, AfterOkTask { job: 1, task: 0 }]
                ),
                (
                    "eval",
                    vec![(0, "align/a-x/eval"), (2, "align/b-x/eval")],
                    vec![AfterOk { job: 0 }, AfterCorr { job: 2 }]
                ),
                // Each evaluation waits for its own alignment's array.
                (
                    "eval",
                    vec![(1, "align/a-y/eval")],
                    vec![AfterOk { job: 0 }, AfterCorr { job: 3 }]
                ),
            ]
        );
    }

    #[test]
    fn a_resubmit_submits_only_what_is_left_without_waiting_for_finished_stages() {
        let done: BTreeSet<String> = ["data", "qa", "pretrain/a", "align/a-x"]
            .map(String::from)
            .into();
        let jobs = group(&stages(), &done);
        use Need::*;
        assert_eq!(
            summary(&jobs),
            vec![
                ("pretrain", vec![(2, "pretrain/b")], vec![]),
                // a-y's pre-training is finished: no dependency.
                ("align", vec![(1, "align/a-y")], vec![]),
                ("align", vec![(2, "align/b-x")], vec![AfterCorr { job: 0 }]),
                ("eval", vec![(0, "align/a-x/eval")], vec![]),
                (
                    "eval",
                    vec![(1, "align/a-y/eval")],
                    vec![AfterCorr { job: 1 }]
                ),
                (
                    "eval",
                    vec![(2, "align/b-x/eval")],
                    vec![AfterCorr { job: 2 }]
                ),
            ]
        );
        let ids = ["11", "12", "13"].map(String::from).to_vec();
        assert_eq!(
            dependency(&jobs[2].needs, &ids).as_deref(),
            Some("aftercorr:11")
        );
        assert_eq!(dependency(&[], &ids), None);
        assert_eq!(
            dependency(&[AfterOk { job: 0 }, AfterOkTask { job: 1, task: 4 }], &ids).as_deref(),
            Some("afterok:11,afterok:12_4")
        );
    }

    #[test]
    fn scripts_quote_paths() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
