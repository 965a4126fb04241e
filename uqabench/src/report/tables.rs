//! The paper's Table 2 (accuracy per sub-task, per group, overall) and Table 7 (average input
//! tokens) layouts, several runs side by side, as Markdown, CSV and JSON.

use serde::Serialize;

use crate::qa::{Group, Task};
use crate::score::{Accuracy, ScoreReport};

/// Which average fills the group and overall columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Averaging {
    Micro,
    Macro,
}

/// Which matching rule a table reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Prefix,
    Normalized,
    Partial,
}

impl Rule {
    pub fn pick(self, a: &Accuracy) -> f64 {
        match self {
            Rule::Prefix => a.prefix,
            Rule::Normalized => a.normalized,
            Rule::Partial => a.partial,
        }
    }
}

/// Table 2's columns, in the paper's order.
pub const COLUMNS: [&str; 11] = [
    "DF", "MF", "SU", "IP", "AP", "Act", "LI", "SI", "IT", "Int", "All",
];

/// One run's row of Table 2; `None` where the run has no sample.
pub fn table2_row(s: &ScoreReport, avg: Averaging, rule: Rule) -> Vec<Option<f64>> {
    let task = |t: Task| s.tasks.get(&t).map(|a| rule.pick(a));
    let groups = match avg {
        Averaging::Micro => &s.groups_micro,
        Averaging::Macro => &s.groups_macro,
    };
    let group = |g: Group| groups.get(&g).filter(|a| a.n > 0).map(|a| rule.pick(a));
    let overall = match avg {
        Averaging::Micro => &s.overall_micro,
        Averaging::Macro => &s.overall_macro,
    };
    vec![
        task(Task::DF),
        task(Task::MF),
        group(Group::SequenceUnderstanding),
        task(Task::IP),
        task(Task::AP),
        group(Group::ActionPrediction),
        task(Task::LI),
        task(Task::SI),
        task(Task::IT),
        group(Group::InterestPerception),
        (overall.n > 0).then(|| rule.pick(overall)),
    ]
}

fn cell(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |x| format!("{x:.2}"))
}

/// Markdown Table 2 for `runs` (name, scores).
pub fn table2_markdown(runs: &[(String, ScoreReport)], avg: Averaging, rule: Rule) -> String {
    let mut s = format!(
        "| model | {} |\n|---|{}\n",
        COLUMNS.join(" | "),
        "---|".repeat(COLUMNS.len())
    );
    for (name, r) in runs {
        let cells: Vec<String> = table2_row(r, avg, rule).into_iter().map(cell).collect();
        s.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    s
}

pub fn table2_csv(runs: &[(String, ScoreReport)], avg: Averaging, rule: Rule) -> String {
    let mut s = format!("model,{}\n", COLUMNS.join(","));
    for (name, r) in runs {
        let cells: Vec<String> = table2_row(r, avg, rule)
            .into_iter()
            .map(|v| v.map_or(String::new(), |x| format!("{x:.4}")))
            .collect();
        s.push_str(&format!("{},{}\n", csv_field(name), cells.join(",")));
    }
    s
}

/// Table 7: average LLM input tokens per question.
pub fn table7_markdown(runs: &[(String, ScoreReport)]) -> String {
    let mut s = "| model | avg input tokens | questions |\n|---|---|---|\n".to_string();
    for (name, r) in runs {
        let t = r.avg_input_tokens.map_or("-".into(), |t| format!("{t:.2}"));
        s.push_str(&format!("| {name} | {t} | {} |\n", r.scored));
    }
    s
}

pub fn table7_csv(runs: &[(String, ScoreReport)]) -> String {
    let mut s = "model,avg_input_tokens,questions\n".to_string();
    for (name, r) in runs {
        let t = r
            .avg_input_tokens
            .map_or(String::new(), |t| format!("{t:.4}"));
        s.push_str(&format!("{},{t},{}\n", csv_field(name), r.scored));
    }
    s
}

/// A table of counts: one row per (name, counts), one column per label.
pub fn counts_markdown(columns: &[String], rows: &[(String, Vec<usize>)]) -> String {
    let mut s = format!(
        "| model | {} |\n|---|{}\n",
        columns.join(" | "),
        "---|".repeat(columns.len())
    );
    for (name, counts) in rows {
        let cells: Vec<String> = counts.iter().map(usize::to_string).collect();
        s.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
