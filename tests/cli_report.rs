//! `uqa report` on predictions built from real generated questions: an oracle scores 100, a
//! silent model 0, a half-right model about 50 with a bootstrap interval around it; reference
//! files without a task column are recognised from their Chinese wording; rows that cannot be
//! scored are counted, never dropped silently; bad lines are errors naming file and line.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use uqa_data::reader::SequenceFile;

fn uqa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args(args)
        .output()
        .expect("run uqa")
}

fn ok(args: &[&str]) -> String {
    let out = uqa(args);
    assert!(
        out.status.success(),
        "uqa {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (question, answer, task) of the evaluation questions of a tiny dataset.
fn questions(dir: &Path) -> Vec<(String, String, String)> {
    let ds = dir.join("ds");
    ok(&[
        "data",
        "synth",
        "--preset",
        "tiny",
        "--tokenizer",
        "builtin",
        "--out",
        ds.to_str().unwrap(),
    ]);
    ok(&[
        "qa-gen",
        "--data",
        ds.to_str().unwrap(),
        "--eval-per-task",
        "40",
    ]);
    let f = SequenceFile::open(ds.join("align_data_eval.arrow")).unwrap();
    f.rows()
        .map(|r| {
            let v: Value = serde_json::from_str(r.text().unwrap()).unwrap();
            (
                v[0]["content"].as_str().unwrap().to_string(),
                v[1]["content"].as_str().unwrap().to_string(),
                r.task().unwrap().to_string(),
            )
        })
        .collect()
}

fn write_run(dir: &Path, name: &str, rows: &[Value], params: Option<f64>) -> std::path::PathBuf {
    let run = dir.join(name);
    std::fs::create_dir_all(&run).unwrap();
    let lines: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(run.join("predictions.jsonl"), lines.join("\n") + "\n").unwrap();
    if let Some(p) = params {
        std::fs::write(
            run.join("run.json"),
            json!({"name": name, "encoder_params": p}).to_string(),
        )
        .unwrap();
    }
    run
}

#[test]
fn oracle_silent_and_half_right_runs_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let qs = questions(dir.path());
    assert_eq!(qs.len(), 7 * 40);
    let pred = |i: usize, q: &(String, String, String), mode: &str| {
        let p = match mode {
            "oracle" => format!("{}<|im_end|>", q.1),
            "silent" => String::new(),
            _ if i.is_multiple_of(2) => q.1.clone(),
            _ => "no idea".to_string(),
        };
        json!({"question": q.0, "prediction": p, "answer": q.1, "task": q.2, "input_tokens": 120 + i % 3})
    };
    let rows = |mode: &str| -> Vec<Value> {
        qs.iter()
            .enumerate()
            .map(|(i, q)| pred(i, q, mode))
            .collect()
    };
    let runs = [
        write_run(dir.path(), "oracle", &rows("oracle"), Some(3.2e6)),
        write_run(dir.path(), "silent", &rows("silent"), Some(2.5e7)),
        write_run(dir.path(), "half", &rows("half"), Some(1.2e9)),
    ];
    let out = dir.path().join("report");
    let mut args = vec!["report", "--out", out.to_str().unwrap()];
    args.extend(runs.iter().map(|r| r.to_str().unwrap()));
    let printed = ok(&args);
    assert!(
        printed.contains("| oracle | 100.00 | 100.00 |"),
        "{printed}"
    );
    assert!(printed.contains("| silent | 0.00 |"), "{printed}");

    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let half = &report["runs"][2]["scores"];
    let all = half["overall_micro"]["prefix"].as_f64().unwrap();
    assert!((all - 50.0).abs() < 1e-9, "{all}");
    let ci = &half["overall_micro"]["prefix_ci95"];
    assert!(
        ci[0].as_f64().unwrap() < 50.0 && ci[1].as_f64().unwrap() > 50.0,
        "{ci}"
    );
    assert_eq!(half["avg_input_tokens"].as_f64().unwrap().round(), 121.0);
    for f in [
        "report.md",
        "table2_micro.csv",
        "table2_macro.csv",
        "table7.csv",
        "tasks.svg",
        "scaling.svg",
        "tasks.png",
        "scaling.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    for f in ["tasks.png", "scaling.png"] {
        let png = std::fs::read(out.join(f)).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{f} is not a PNG");
        // IHDR first, with the plot's size: the bars are 860 wide, the scaling plot 640; both 420 high.
        assert_eq!(&png[12..16], b"IHDR", "{f}");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        let expected = if f == "tasks.png" { 860 } else { 640 };
        assert_eq!((width, height), (expected, 420), "{f}");
    }
    let csv = std::fs::read_to_string(out.join("table2_micro.csv")).unwrap();
    assert!(
        csv.starts_with("model,DF,MF,SU,IP,AP,Act,LI,SI,IT,Int,All\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 4);
}

#[test]
fn reference_files_without_task_are_recognised_and_skips_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let qs = questions(dir.path());
    let mut rows: Vec<Value> = qs
        .iter()
        .map(|q| json!({"question": q.0, "prediction": q.1, "answer": q.1}))
        .collect();
    rows.push(json!({"question": "What is the weather?", "prediction": "x", "answer": "y"}));
    rows.push(json!({"question": qs[0].0, "prediction": "x", "answer": ""}));
    let run = write_run(dir.path(), "ref", &rows, None);
    let out = dir.path().join("r");
    let printed = ok(&[
        "report",
        "--out",
        out.to_str().unwrap(),
        run.to_str().unwrap(),
    ]);
    assert!(printed.contains("2 rows not scored"), "{printed}");
    // No run gives an encoder size, so there is no scaling plot in either format.
    assert!(out.join("tasks.png").exists() && out.join("tasks.svg").exists());
    assert!(!out.join("scaling.png").exists() && !out.join("scaling.svg").exists());
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let s = &report["runs"][0]["scores"];
    assert_eq!(s["scored"], 280);
    assert_eq!(s["skipped"]["unknown_task"], 1);
    assert_eq!(s["skipped"]["empty_answer"], 1);
    for t in ["DF", "MF", "IP", "AP", "LI", "SI", "IT"] {
        assert_eq!(s["tasks"][t]["n"], 40, "{t}");
        assert_eq!(s["tasks"][t]["prefix"], 100.0, "{t}");
    }
}

#[test]
fn a_bad_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.jsonl");
    std::fs::write(
        &p,
        "{\"question\":\"q\",\"prediction\":\"a\",\"answer\":\"a\",\"task\":\"DF\"}\n{oops\n",
    )
    .unwrap();
    let out = uqa(&[
        "report",
        "--out",
        dir.path().join("r").to_str().unwrap(),
        p.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("p.jsonl: line 2"), "{err}");
    assert!(!dir.path().join("r").join("report.md").exists());
}
