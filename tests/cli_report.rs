//! `uqa report` on predictions built from real generated questions: an oracle scores 100, a
//! silent model 0, a half-right model about 50 with a bootstrap interval around it; reference
//! files without a task column are recognised from their Chinese wording; rows that cannot be
//! scored are counted per sub-task, never dropped silently, and empty gold answers are scored
//! as the reference does; bad lines are errors naming file and line. `uqa baseline` writes the
//! prior and history runs, and the report adds the prior row and paired verdicts.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use uqa_data::reader::SequenceFile;
use uqabench::qa::Task;

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
/// A tiny dataset in `dir/ds` with its questions written beside it (`qa_gen` adds flags).
fn tiny_questions(dir: &Path, qa_gen: &[&str]) -> std::path::PathBuf {
    let ds = dir.join("ds");
    let ds_arg = ds.to_str().unwrap();
    ok(&[
        "data",
        "synth",
        "--preset",
        "tiny",
        "--tokenizer",
        "builtin",
        "--out",
        ds_arg,
    ]);
    let mut args = vec!["qa-gen", "--data", ds_arg, "--eval-per-task", "40"];
    args.extend_from_slice(qa_gen);
    ok(&args);
    ds
}

fn questions(dir: &Path) -> Vec<(String, String, String)> {
    let ds = tiny_questions(dir, &[]);
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
    // The runs do not say which questions they answered: no baseline, and the report says so.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("No questions folder"), "{md}");
    assert!(printed.contains("note: No questions folder"), "{printed}");
    // Three models: each pair compared; the oracle beats the silent run by 100 points.
    assert!(
        printed.contains("oracle - silent = +100.00 points, 95% CI [100.00, 100.00]\n"),
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
    assert!(
        printed.contains("1 rows not scored, per sub-task: {\"unknown\": 1}"),
        "{printed}"
    );
    // No run gives an encoder size, so there is no scaling plot in either format.
    assert!(out.join("tasks.png").exists() && out.join("tasks.svg").exists());
    assert!(!out.join("scaling.png").exists() && !out.join("scaling.svg").exists());
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let s = &report["runs"][0]["scores"];
    // The empty gold answer is scored, and correct: "x" starts with "".
    assert_eq!(s["scored"], 281);
    assert_eq!(s["skipped"]["unknown_task"], 1);
    assert_eq!(report["runs"][0]["not_scored"]["unknown"], 1);
    let first_task = Task::recognise(&qs[0].0).unwrap().name();
    for t in ["DF", "MF", "IP", "AP", "LI", "SI", "IT"] {
        let n = if t == first_task { 41 } else { 40 };
        assert_eq!(s["tasks"][t]["n"], n, "{t}");
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

#[test]
fn baselines_join_the_report_with_distinct_answers_and_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let qs = questions(dir.path());
    let ds = dir.path().join("ds");
    let prior = dir.path().join("prior_run");
    let history = dir.path().join("history_run");
    ok(&[
        "baseline",
        "prior",
        "--qa",
        ds.to_str().unwrap(),
        "--out",
        prior.to_str().unwrap(),
    ]);
    // The dataset comes from qa.json.
    ok(&[
        "baseline",
        "history",
        "--qa",
        ds.to_str().unwrap(),
        "--out",
        history.to_str().unwrap(),
    ]);
    let read = |run: &Path| -> Vec<Value> {
        std::fs::read_to_string(run.join("predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    for run in [&prior, &history] {
        let rows = read(run);
        assert_eq!(rows.len(), qs.len());
        for (r, q) in rows.iter().zip(&qs) {
            assert_eq!(
                (r["question"].as_str(), r["answer"].as_str()),
                (Some(&*q.0), Some(&*q.1))
            );
        }
    }
    // A model run that records its questions file gets the prior row without --qa: here an
    // oracle on the first 100 questions.
    let model = write_run(
        dir.path(),
        "oracle",
        &qs[..100]
            .iter()
            .map(|q| json!({"question": q.0, "prediction": q.1, "answer": q.1, "task": q.2}))
            .collect::<Vec<_>>(),
        None,
    );
    let eval_file = ds.join("align_data_eval.arrow");
    std::fs::write(
        model.join("run.json"),
        json!({"name": "oracle", "questions": eval_file}).to_string(),
    )
    .unwrap();
    let out = dir.path().join("rep");
    let printed = ok(&[
        "report",
        "--out",
        out.to_str().unwrap(),
        model.to_str().unwrap(),
        history.to_str().unwrap(),
        "--compare",
        "history,prior",
    ]);
    assert!(printed.contains("| prior |"), "{printed}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let names: Vec<&str> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    // The history run was given, so only the prior is computed.
    assert_eq!(names, ["oracle", "history", "prior"]);
    let run = |name: &str| &report["runs"][names.iter().position(|n| *n == name).unwrap()];
    // The history rules reproduce the context tasks exactly.
    for t in ["DF", "MF", "LI"] {
        assert_eq!(run("history")["scores"]["tasks"][t]["prefix"], 100.0, "{t}");
    }
    // The prior gives one answer per template: far fewer distinct answers than the gold ones.
    let distinct = |name: &str, t: &str| run(name)["distinct_predictions"][t].as_u64().unwrap();
    let gold = |t: &str| run("prior")["distinct_answers"][t].as_u64().unwrap();
    assert!(distinct("prior", "IP") < gold("IP"), "{report}");
    assert_eq!(
        distinct("oracle", "All"),
        run("oracle")["distinct_answers"]["All"].as_u64().unwrap()
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in [
        "## Distinct predictions per sub-task",
        "## Questions not scored, per sub-task",
        "## Paired differences",
    ] {
        assert!(md.contains(section), "{section}: {md}");
    }
    // Verdicts: the one model against the prior (on the oracle's 100 questions), and the named
    // pair; the history run is a baseline, not a second model.
    let verdicts: Vec<&str> = report["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    assert!(
        verdicts[0].starts_with("oracle - prior = +"),
        "{verdicts:?}"
    );
    assert!(
        verdicts[1].starts_with("history - prior = +"),
        "{verdicts:?}"
    );
    assert_eq!(run("history")["kind"], "history");
    let vs_prior = &report["comparisons"][0];
    assert_eq!(vs_prior["questions"], 100);
    assert!(md.contains("oracle - prior = +"), "{md}");
}

/// Runs that answered another questions file than the evaluation one (here the validation
/// split) get baseline rows over that same file, so their verdicts compare like with like;
/// `uqa baseline --questions` answers a named file too.
#[test]
fn baselines_answer_the_questions_file_the_runs_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tiny_questions(dir.path(), &["--valid-per-task", "6"]);
    let valid_file = ds.join("align_data_valid.arrow");
    let valid: Vec<Value> = SequenceFile::open(&valid_file)
        .unwrap()
        .rows()
        .map(|r| {
            let v: Value = serde_json::from_str(r.text().unwrap()).unwrap();
            let answer = v[1]["content"].clone();
            json!({"question": v[0]["content"], "prediction": answer, "answer": answer,
                   "task": r.task().unwrap()})
        })
        .collect();
    let evaluation = SequenceFile::open(ds.join("align_data_eval.arrow")).unwrap();
    assert_ne!(valid.len(), evaluation.rows().count());
    let model = write_run(dir.path(), "oracle", &valid, None);
    std::fs::write(
        model.join("run.json"),
        json!({"name": "oracle", "questions": valid_file}).to_string(),
    )
    .unwrap();
    let out = dir.path().join("rep");
    ok(&[
        "report",
        "--out",
        out.to_str().unwrap(),
        model.to_str().unwrap(),
    ]);
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(
        report["questions"]
            .as_str()
            .unwrap()
            .ends_with("align_data_valid.arrow"),
        "{report}"
    );
    let prior = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "prior")
        .unwrap();
    assert_eq!(prior["scores"]["scored"], valid.len(), "{prior}");
    // Paired over every question: the same file on both sides.
    assert_eq!(report["comparisons"][0]["questions"], valid.len());

    let run = dir.path().join("prior_valid");
    ok(&[
        "baseline",
        "prior",
        "--qa",
        ds.to_str().unwrap(),
        "--questions",
        valid_file.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    let answered = std::fs::read_to_string(run.join("predictions.jsonl")).unwrap();
    assert_eq!(answered.lines().count(), valid.len());
}
