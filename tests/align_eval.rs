//! Stages 2 and 3 through the CLI on the tiny preset: `uqa align` with each strategy keeps
//! only what it trained in its checkpoints; 2 ranks align to the same weights as 1 process;
//! `uqa eval` on 2 ranks answers every question once, in the original order, exactly as one
//! process does; bad inputs fail with the file named.

mod common;

use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use uqa_testkit::{Category, skip};

/// Dataset, questions and a briefly pre-trained encoder under `dir`.
struct Fixture {
    data: PathBuf,
    qa: PathBuf,
    encoder: PathBuf,
}

fn fixture(dir: &Path) -> Fixture {
    fixture_with(dir, "builtin")
}

/// The fixture with a given `--tokenizer` choice (`builtin`, or the path of a tokenizer.json).
fn fixture_with(dir: &Path, tokenizer: &str) -> Fixture {
    let data = dir.join("tiny");
    let qa = dir.join("qa");
    let encoder = dir.join("enc");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(
        uqa(&[
            "data",
            "synth",
            "--preset",
            "tiny",
            "--tokenizer",
            tokenizer,
            "--out",
            &s(&data),
        ]),
        "synth",
    );
    ok(
        uqa(&["qa-gen", "--data", &s(&data), "--out", &s(&qa)]),
        "qa-gen",
    );
    ok(
        uqa(&[
            "pretrain",
            "--config",
            &config("tiny_sasrec.toml"),
            "--set",
            &format!("data.dir=\"{}\"", data.display()),
            "--set",
            &format!("train.out=\"{}\"", encoder.display()),
            "--set",
            "train.max_steps=4",
        ]),
        "pretrain",
    );
    Fixture { data, qa, encoder }
}

/// `uqa align` (under `uqa launch` when `ranks > 1`) with the tiny config and overrides.
fn align(ranks: usize, f: &Fixture, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = ["align", "--config", &config("tiny_align.toml")]
        .map(String::from)
        .to_vec();
    let sets = [
        format!("data.dataset=\"{}\"", f.data.display()),
        format!("data.qa_dir=\"{}\"", f.qa.display()),
        format!("prompt.encoder=\"{}\"", f.encoder.display()),
        format!("train.out=\"{}\"", out.display()),
    ];
    for s in sets.iter().map(String::as_str).chain(extra.iter().copied()) {
        args.push("--set".into());
        args.push(s.to_string());
    }
    uqa_ranks(ranks, &args)
}

/// `uqa eval` of the first 40 questions (under `uqa launch` when `ranks > 1`).
fn eval(ranks: usize, run: &Path, out: &Path) -> Output {
    let args = [
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--limit",
        "40",
        "--batch-size",
        "8",
        "--max-new-tokens",
        "6",
    ];
    uqa_ranks(ranks, &args.map(String::from))
}

fn loss_line(stdout: &[u8]) -> (f64, f64) {
    let s = String::from_utf8_lossy(stdout);
    let line = s
        .lines()
        .find(|l| l.contains("alignment finished"))
        .unwrap()
        .to_string();
    let nums: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.parse().ok())
        .collect();
    (nums[1], nums[2])
}

#[test]
fn strategies_train_what_they_name_and_two_ranks_equal_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());

    // Adapter only: the checkpoint holds the adapter and nothing of the LLM or the encoder.
    let adapter = dir.path().join("adapter");
    let o = ok(
        align(1, &f, &adapter, &["train.max_steps=6"]),
        "align adapter",
    );
    let (first, last) = loss_line(&o.stdout);
    assert!(last < first, "loss did not fall: {first} -> {last}");
    let w = final_weights(&adapter);
    assert!(
        w.keys().all(|k| k.starts_with("adapter.")),
        "{:?}",
        w.keys()
    );
    assert!(
        std::fs::read_to_string(adapter.join("config.toml"))
            .unwrap()
            .contains("[strategy]")
    );

    // Full: adapter plus every LLM tensor; LoRA: adapter plus rank-8 q/v branches.
    let full = dir.path().join("full");
    ok(
        align(
            1,
            &f,
            &full,
            &[
                "train.max_steps=2",
                "strategy={kind = \"full\", llm_lr = 1e-4}",
            ],
        ),
        "align full",
    );
    let w = final_weights(&full);
    assert!(w.contains_key("llm.model.embed_tokens.weight"));
    assert!(w.keys().any(|k| k.starts_with("adapter.")));
    let lora = dir.path().join("lora");
    ok(
        align(
            1,
            &f,
            &lora,
            &["train.max_steps=2", "strategy={kind = \"lora\"}"],
        ),
        "align lora",
    );
    let w = final_weights(&lora);
    let branches: Vec<&String> = w.keys().filter(|k| k.starts_with("lora.")).collect();
    assert_eq!(branches.len(), 2 * 2 * 2, "{branches:?}"); // 2 layers x (q, v) x (A, B)
    assert!(
        branches
            .iter()
            .all(|k| k.contains("q_proj") || k.contains("v_proj"))
    );
    assert_eq!(
        w["lora.model.layers.0.self_attn.q_proj.lora_A"].len(),
        8 * 128
    );

    // Data parallel: 2 ranks with the same global batch end where 1 process does.
    let two = dir.path().join("adapter2");
    let o = ok(
        align(2, &f, &two, &["train.max_steps=6"]),
        "align on 2 ranks",
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("[rank1]:"));
    let (diff, _) = max_difference(&final_weights(&adapter), &final_weights(&two));
    assert!(diff < 1e-4, "2 ranks differ from 1 by {diff}");

    // Evaluation: 2 ranks answer every question once, in order, as 1 process does.
    let (e1, e2) = (dir.path().join("e1"), dir.path().join("e2"));
    ok(eval(1, &adapter, &e1), "eval on 1 rank");
    let o = ok(eval(2, &adapter, &e2), "eval on 2 ranks");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("| DF |")
            || String::from_utf8_lossy(&o.stdout).contains("DF")
    );
    let read = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p.join("predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (p1, p2) = (read(&e1), read(&e2));
    assert_eq!(p1.len(), 40);
    assert_eq!(p1, p2, "2-rank predictions differ from 1-rank ones");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(e2.join("eval.json")).unwrap()).unwrap();
    assert_eq!(summary["world_size"], 2);
    assert_eq!(summary["answered"], 40);
    // The questions file is recorded (eval.json and run.json), so reports find its baselines.
    let questions = summary["questions_file"].as_str().unwrap();
    assert!(
        Path::new(questions).is_absolute() && questions.ends_with("align_data_eval.arrow"),
        "{questions}"
    );
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(e2.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["questions"], questions);
    for p in &p1 {
        assert!(
            p["task"].is_string()
                && p["answer"].is_string()
                && p["input_tokens"].as_u64().unwrap() > 1
        );
    }
    // The questions come back in the file's order: the first matches qa-gen's first row.
    let report = uqa(&[
        "report",
        e2.to_str().unwrap(),
        "--out",
        dir.path().join("rep").to_str().unwrap(),
    ]);
    ok(report, "report");
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("rep").join("report.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[1..], ["prior", "history"], "{names:?}");
    assert!(
        report["comparisons"][0]["verdict"]
            .as_str()
            .unwrap()
            .contains(" - prior = "),
        "{report}"
    );
}

#[test]
fn bad_inputs_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    // An encoder run without checkpoints.
    let empty = dir.path().join("empty_run");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(f.encoder.join("config.toml"), empty.join("config.toml")).unwrap();
    let o = align(
        1,
        &f,
        &dir.path().join("x"),
        &[&format!("prompt.encoder=\"{}\"", empty.display())],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("empty_run") && err.contains("no checkpoint"),
        "{err}"
    );

    // A text prompt cannot use the adapter strategy.
    let o = align(
        1,
        &f,
        &dir.path().join("y"),
        &["prompt={kind = \"text\", last_k = 20}"],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("strategy.kind"));

    // An LLM folder of an unsupported architecture.
    let llm = dir.path().join("gpt2");
    std::fs::create_dir_all(&llm).unwrap();
    std::fs::write(
        llm.join("config.json"),
        r#"{"architectures": ["GPT2LMHeadModel"], "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "rms_norm_eps": 1e-6}"#,
    )
    .unwrap();
    let o = align(
        1,
        &f,
        &dir.path().join("z"),
        &[&format!("llm.source=\"{}\"", llm.display())],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("config.json") && err.contains("GPT2LMHeadModel"),
        "{err}"
    );

    // Evaluating a folder that is not an alignment run.
    let o = uqa(&["eval", "--run", f.encoder.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("config.toml"));
}

#[test]
fn a_real_gguf_llm_is_one_flag_away() {
    let gguf = uqa_data::assets::cache_dir().join("llm/smollm2-135m-instruct-q4_1.gguf");
    if !gguf.exists() {
        let reason = format!(
            "{} is not cached; run scripts/fetch-assets.sh llm",
            gguf.display()
        );
        return skip(Category::Gguf, "a_real_gguf_llm_is_one_flag_away", reason);
    }
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    let run = dir.path().join("smollm");
    let source = format!("llm.source=\"{}\"", gguf.display());
    let o = ok(
        align(
            1,
            &f,
            &run,
            &[&source, "train.max_steps=2", "train.batch_size=2"],
        ),
        "align SmolLM2 (adapter strategy)",
    );
    let s = String::from_utf8_lossy(&o.stderr);
    assert!(
        s.contains("smollm2") && s.contains("trainable parameters"),
        "{s}"
    );
    // Only the adapter trained: a 32 -> 576 linear map.
    let w = final_weights(&run);
    assert_eq!(w["adapter.proj.weight"].len(), 32 * 576);
    assert_eq!(w.len(), 2);
    let out = dir.path().join("e");
    let o = Command::new(env!("CARGO_BIN_EXE_uqa"))
        .args([
            "eval",
            "--run",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--limit",
            "4",
            "--max-new-tokens",
            "4",
        ])
        .output()
        .unwrap();
    ok(o, "eval SmolLM2");
    let lines = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);

    // The adapter trained for SmolLM2's width (576) cannot serve the tiny LLM (128).
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let swapped = config.replace(&gguf.display().to_string(), "tiny");
    assert_ne!(swapped, config);
    std::fs::write(run.join("config.toml"), swapped).unwrap();
    let o = uqa(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`adapter.proj.") && err.contains("another LLM"),
        "{err}"
    );
}

fn mean_input_tokens(eval_dir: &Path) -> f64 {
    let rows: Vec<Value> = std::fs::read_to_string(eval_dir.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.iter()
        .map(|r| r["input_tokens"].as_f64().unwrap())
        .sum::<f64>()
        / rows.len() as f64
}

#[test]
fn text_baselines_and_the_q_former_align_and_report_their_input_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    let mut tokens = BTreeMap::new();
    let encoder = format!("{}", f.encoder.display());
    let cases: [(&str, Vec<String>); 5] = [
        ("soft1", vec![]),
        (
            "soft4",
            vec![format!(
                "prompt={{kind = \"soft\", encoder = \"{encoder}\", adapter = {{kind = \"q_former\", queries = 4, heads = 4}}}}"
            )],
        ),
        (
            "text5",
            vec![
                "prompt={kind = \"text\", last_k = 5}".into(),
                "strategy={kind = \"lora\"}".into(),
            ],
        ),
        (
            "text10",
            vec![
                "prompt={kind = \"text\", last_k = 10}".into(),
                "strategy={kind = \"lora\"}".into(),
            ],
        ),
        (
            "rella10",
            vec![
                "prompt={kind = \"text\", last_k = 10, retrieval = true}".into(),
                "strategy={kind = \"full\", llm_lr = 1e-4}".into(),
            ],
        ),
    ];
    for (name, extra) in &cases {
        let run = dir.path().join(name);
        let mut sets: Vec<&str> = vec!["train.max_steps=1", "data.max_text_len=1024"];
        sets.extend(extra.iter().map(String::as_str));
        ok(align(1, &f, &run, &sets), &format!("align {name}"));
        let w = final_weights(&run);
        match *name {
            "soft4" => assert_eq!(w["adapter.queries"].len(), 4 * 128),
            "text5" | "text10" => assert!(w.keys().all(|k| k.starts_with("lora."))),
            "rella10" => assert!(w.keys().all(|k| k.starts_with("llm."))),
            _ => assert!(w.keys().all(|k| k.starts_with("adapter."))),
        }
        let e = dir.path().join(format!("{name}_eval"));
        let o = Command::new(env!("CARGO_BIN_EXE_uqa"))
            .args([
                "eval",
                "--run",
                run.to_str().unwrap(),
                "--out",
                e.to_str().unwrap(),
                "--limit",
                "14",
                "--max-new-tokens",
                "2",
            ])
            .output()
            .unwrap();
        ok(o, &format!("eval {name}"));
        tokens.insert(*name, mean_input_tokens(&e));
    }
    // Same questions: 16 soft tokens cost 3 more than 1, and text histories cost more per click.
    assert!(
        (tokens["soft4"] - tokens["soft1"] - 3.0).abs() < 1e-9,
        "{tokens:?}"
    );
    assert!(tokens["text5"] > tokens["soft1"], "{tokens:?}");
    assert!(tokens["text10"] > tokens["text5"] + 5.0, "{tokens:?}");
    // Retrieval picks other clicks but as many of them.
    assert!(
        (tokens["rella10"] - tokens["text10"]).abs() < tokens["text10"] * 0.5,
        "{tokens:?}"
    );
}

#[test]
fn ctr_mode_scores_yes_no_over_all_ranks_together() {
    // "Yes" and "No" must be real tokens: the built-in word-level vocabulary only knows the
    // dataset's own words.
    let Some(tokenizer) = uqa_data::tokenizer::default_tokenizer_path() else {
        let reason =
            "CTR mode needs the real Qwen2 tokenizer; run scripts/fetch-assets.sh tokenizer";
        return skip(
            Category::Tokenizer,
            "ctr_mode_scores_yes_no_over_all_ranks_together",
            reason,
        );
    };
    let dir = tempfile::tempdir().unwrap();
    // The tokenizer just found, by path: one that does not load fails `uqa data synth`, and so
    // this test.
    let f = fixture_with(dir.path(), tokenizer.to_str().unwrap());
    let qa = dir.path().join("ctr_qa");
    let o = ok(
        uqa(&[
            "qa-gen",
            "--data",
            f.data.to_str().unwrap(),
            "--out",
            qa.to_str().unwrap(),
            "--lang",
            "en",
            "--ctr-users",
            "30",
            "--train-per-task",
            "10",
            "--eval-per-task",
            "5",
        ]),
        "qa-gen --ctr-users",
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("CTR"));
    let run = dir.path().join("ctr");
    let qa_set = format!("data.qa_dir=\"{}\"", qa.display());
    ok(
        align(
            1,
            &f,
            &run,
            &[
                &qa_set,
                "data.train_file=\"ctr_data_train.arrow\"",
                "data.eval_file=\"ctr_data_eval.arrow\"",
                "train.max_steps=3",
            ],
        ),
        "align on CTR questions",
    );
    let exe = env!("CARGO_BIN_EXE_uqa");
    let (e1, e2) = (dir.path().join("c1"), dir.path().join("c2"));
    ok(
        Command::new(exe)
            .args([
                "eval",
                "--ctr",
                "--run",
                run.to_str().unwrap(),
                "--out",
                e1.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "eval --ctr",
    );
    let o = ok(
        Command::new(exe)
            .args([
                "launch",
                "--standalone",
                "--nproc-per-node",
                "2",
                "--",
                exe,
                "eval",
                "--ctr",
                "--run",
                run.to_str().unwrap(),
                "--out",
                e2.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "eval --ctr on 2 ranks",
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("AUC"));
    let read = |p: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("ctr.json")).unwrap()).unwrap()
    };
    let (m1, m2) = (read(&e1), read(&e2));
    assert_eq!(m1["metrics"]["n"], 60);
    assert_eq!(m1["metrics"]["positives"], 30);
    let auc = m1["metrics"]["auc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc));
    // The global AUC from 2 ranks' gathered scores is the 1-process one.
    let auc2 = m2["metrics"]["auc"].as_f64().unwrap();
    assert!((auc - auc2).abs() < 1e-6, "{auc} vs {auc2}");
    assert_eq!(m2["world_size"], 2);
    let lines = std::fs::read_to_string(e2.join("ctr_predictions.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 60);

    // A file whose answers are not yes/no is refused in CTR mode, naming the file.
    let o = Command::new(exe)
        .args([
            "eval",
            "--ctr",
            "--run",
            run.to_str().unwrap(),
            "--questions",
            f.qa.join("align_data_eval.arrow").to_str().unwrap(),
            "--out",
            dir.path().join("c3").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("align_data_eval.arrow") && err.contains("yes/no"),
        "{err}"
    );
}

#[test]
fn evaluation_refuses_mismatched_runs_and_counts_unaskable_questions() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    let run = dir.path().join("run");
    ok(align(1, &f, &run, &["train.max_steps=1"]), "align");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let eval = |out: &str| {
        Command::new(env!("CARGO_BIN_EXE_uqa"))
            .args([
                "eval",
                "--run",
                run.to_str().unwrap(),
                "--out",
                dir.path().join(out).to_str().unwrap(),
                "--limit",
                "10",
                "--max-new-tokens",
                "2",
            ])
            .output()
            .unwrap()
    };

    // Questions longer than the context: skipped with their reason, never truncated; when none
    // is left the run fails naming the file.
    std::fs::write(
        run.join("config.toml"),
        config.replace("max_text_len = 128", "max_text_len = 8"),
    )
    .unwrap();
    let o = eval("short");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("align_data_eval.arrow")
            && err.contains("10 skipped")
            && err.contains("context limit"),
        "{err}"
    );

    // A checkpoint of another adapter.
    let qformer = config.replace(
        "kind = \"mean_pool\"",
        "kind = \"q_former\"\nqueries = 4\nheads = 4",
    );
    assert_ne!(qformer, config, "{config}");
    std::fs::write(run.join("config.toml"), qformer).unwrap();
    let o = eval("other");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("model.safetensors") && err.contains("another adapter"),
        "{err}"
    );

    // The untouched run evaluates.
    std::fs::write(run.join("config.toml"), &config).unwrap();
    ok(eval("fine"), "eval");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("fine/eval.json")).unwrap())
            .unwrap();
    assert_eq!(
        summary["answered"].as_u64().unwrap() + summary["skipped"].as_array().unwrap().len() as u64,
        10
    );
}
