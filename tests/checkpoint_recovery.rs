//! Relocatable, self-healing runs: a run folder moved or copied elsewhere resumes; a damaged newest
//! checkpoint (truncated, or one flipped bit) is named and skipped, the newest intact one is
//! loaded, and the run ends bit-identical to one never interrupted; with no intact checkpoint
//! left the run stops and names each damaged one.

mod common;

use common::*;

use std::path::Path;
use std::process::Output;

/// `uqa pretrain` on the tiny config, checkpointing every 2 steps, stopping after `steps`.
fn pretrain(data: &Path, out: &Path, steps: u64) -> Output {
    let sets = [
        format!("data.dir=\"{}\"", data.display()),
        format!("train.out=\"{}\"", out.display()),
        format!("train.max_steps={steps}"),
        "train.checkpoint_every=2".to_string(),
        "train.keep_checkpoints=3".to_string(),
    ];
    let mut args = vec![
        "pretrain".to_string(),
        "--config".into(),
        config("tiny_sasrec.toml"),
    ];
    for s in sets {
        args.extend(["--set".to_string(), s]);
    }
    uqa_ranks(1, &args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A run of 4 steps (checkpoints at steps 2 and 4) and the weights of an uninterrupted run of
/// 8 steps to compare resumed runs with.
fn setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let data = tiny_data(dir);
    let whole = dir.join("whole");
    ok(pretrain(&data, &whole, 8), "uninterrupted run");
    let reference = std::fs::read(latest(&whole).join("model.safetensors")).unwrap();
    let run = dir.join("run");
    ok(pretrain(&data, &run, 4), "first 4 steps");
    (data, run, reference)
}

fn final_model(out: &Path) -> Vec<u8> {
    std::fs::read(latest(out).join("model.safetensors")).unwrap()
}

#[test]
fn a_moved_run_resumes_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run, reference) = setup(dir.path());
    let moved = dir.path().join("elsewhere/moved-run");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&run, &moved).unwrap();
    resumes_bit_identical(&data, &moved, &reference);
}

/// Resuming `out` to 8 steps starts from its step-4 checkpoint, at its new path, and ends with
/// the uninterrupted run's weights.
fn resumes_bit_identical(data: &Path, out: &Path, reference: &[u8]) {
    let o = ok(pretrain(data, out, 8), "resume in the new place");
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "resumed from {}",
            out.join("checkpoints/step-00000004").display()
        )),
        "{err}"
    );
    assert!(
        final_model(out) == reference,
        "weights differ from the uninterrupted run"
    );
}

/// `cp -r from to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_copied_run_resumes_bit_identical_and_leaves_the_original_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run, reference) = setup(dir.path());
    let before = final_model(&run);
    let copy = dir.path().join("elsewhere/copied-run");
    copy_tree(&run, &copy);
    resumes_bit_identical(&data, &copy, &reference);
    assert!(
        latest(&run).ends_with("step-00000004") && final_model(&run) == before,
        "the original run folder changed"
    );
}

#[test]
fn a_truncated_newest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run, reference) = setup(dir.path());
    let model = run.join("checkpoints/step-00000004/model.safetensors");
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let o = ok(
        pretrain(&data, &run, 8),
        "resume past a truncated checkpoint",
    );
    let err = stderr(&o);
    assert!(
        err.contains("step-00000004 is damaged") && err.contains("model.safetensors"),
        "{err}"
    );
    assert!(err.contains("step-00000002 (step 2, epoch"), "{err}");
    assert!(
        final_model(&run) == reference,
        "weights differ from the uninterrupted run"
    );
}

#[test]
fn a_flipped_bit_is_caught_and_every_damaged_checkpoint_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run, reference) = setup(dir.path());
    let flip = |file: &Path| {
        let mut bytes = std::fs::read(file).unwrap();
        let at = bytes.len() - 7;
        bytes[at] ^= 0x10;
        std::fs::write(file, bytes).unwrap();
    };
    // One bit of the newest optimiser state: the file still parses, only its checksum differs.
    flip(&run.join("checkpoints/step-00000004/optimizer.safetensors"));
    let o = ok(pretrain(&data, &run, 8), "resume past a flipped bit");
    let err = stderr(&o);
    assert!(
        err.contains("step-00000004 is damaged") && err.contains("optimizer.safetensors: SHA-256"),
        "{err}"
    );
    assert!(
        final_model(&run) == reference,
        "weights differ from the uninterrupted run"
    );

    // Every checkpoint damaged: the run stops, names each, and loads nothing.
    let checkpoints: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
        .map(|e| e.path())
        .collect();
    for c in &checkpoints {
        flip(&c.join("model.safetensors"));
    }
    let o = pretrain(&data, &run, 12);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("no intact checkpoint"), "{err}");
    for c in &checkpoints {
        assert!(
            err.contains(&c.display().to_string()),
            "{} not named: {err}",
            c.display()
        );
    }
}
