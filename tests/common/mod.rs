//! Helpers shared by the binary-level tests: running `uqa`, the tiny dataset, reading
//! checkpoints, finding a rank's process. Each test crate uses a subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// `uqa ARGS...`, output captured.
pub fn uqa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(args)
        .output()
        .expect("run uqa")
}

/// `uqa ARGS...` on `ranks` processes: through `uqa launch --standalone` when more than one.
pub fn uqa_ranks(ranks: usize, args: &[String]) -> Output {
    let exe = env!("CARGO_BIN_EXE_uqa");
    let mut cmd = Command::new(exe);
    if ranks > 1 {
        cmd.args([
            "launch",
            "--standalone",
            "--nproc-per-node",
            &ranks.to_string(),
            "--",
            exe,
        ]);
    }
    cmd.args(args).output().expect("run uqa")
}

/// The output of a command that must have succeeded (its stderr and stdout shown if not).
pub fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

/// A committed test config, `configs/tests/NAME`.
pub fn config(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs/tests")
        .join(name)
        .display()
        .to_string()
}

/// The `tiny` synthetic preset with the built-in tokenizer, in `dir/tiny`.
pub fn tiny_data(dir: &Path) -> PathBuf {
    let ds = dir.join("tiny");
    ok(
        uqa(&[
            "data",
            "synth",
            "--preset",
            "tiny",
            "--tokenizer",
            "builtin",
            "--out",
            ds.to_str().unwrap(),
        ]),
        "uqa data synth",
    );
    ds
}

/// Tensors of a safetensors file (f32 only), by name.
pub fn read_safetensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(info["dtype"], "F32");
        let (a, b) = (
            info["data_offsets"][0].as_u64().unwrap() as usize,
            info["data_offsets"][1].as_u64().unwrap() as usize,
        );
        let values = data[a..b]
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.insert(name.clone(), values);
    }
    out
}

/// The checkpoint folder `latest` points at.
pub fn latest(out: &Path) -> PathBuf {
    let name = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    out.join("checkpoints").join(name.trim())
}

/// The parameters of a run's latest checkpoint.
pub fn final_weights(out: &Path) -> BTreeMap<String, Vec<f32>> {
    read_safetensors(&latest(out).join("model.safetensors"))
}

/// The largest absolute difference between two tensor sets with the same names, and where.
pub fn max_difference(
    a: &BTreeMap<String, Vec<f32>>,
    b: &BTreeMap<String, Vec<f32>>,
) -> (f32, String) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = (0.0f32, String::new());
    for (name, x) in a {
        for (p, q) in x.iter().zip(&b[name]) {
            let d = (p - q).abs();
            if d > worst.0 {
                worst = (d, name.clone());
            }
        }
    }
    worst
}

/// The pid of the `uqa pretrain` process of `rank` writing to `out` (not the launcher).
pub fn rank_pid(out: &Path, rank: usize) -> Option<i32> {
    let needle = out.display().to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("pretrain") || !cmdline.contains(&needle) || cmdline.contains("launch")
        {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if env
            .split(|&b| b == 0)
            .any(|kv| kv == format!("RANK={rank}").as_bytes())
        {
            return Some(pid);
        }
    }
    None
}
