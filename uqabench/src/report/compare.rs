//! The report's verdicts: paired bootstrap differences (`score::paired`) between runs. Which
//! pairs: every model against the prior baseline; every two models when there are two or
//! three; and any pair named with `uqa report --compare A,B`.

use serde::Serialize;

use crate::error::{QaError, Result};
use crate::qa::Task;
use crate::score::{PAIRED_SEED, PairedDiff, Prediction, paired_difference};

/// One comparison, A minus B.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    /// Questions compared.
    pub questions: usize,
    /// Set when the runs answered different question sets and the comparison uses the
    /// questions both answered, or could not be made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub paired: Option<PairedDiff>,
    pub verdict: String,
}

/// `short`'s rows found, in order, among `long`'s (matched by question and gold answer): the
/// matching rows of `long`, or `None` when some row of `short` has no match. A model's
/// predictions are the questions file minus the rows `uqa eval` could not ask (and cut by
/// `--limit`), so they are an ordered subset of a baseline's.
fn matching_rows(short: &[Prediction], long: &[Prediction]) -> Option<Vec<Prediction>> {
    let mut out = Vec::with_capacity(short.len());
    let mut rest = long.iter();
    for s in short {
        let found = rest.find(|l| l.question == s.question && l.answer == s.answer)?;
        out.push(found.clone());
    }
    Some(out)
}

/// Compares A with B on the questions both answered.
pub fn compare(name_a: &str, a: &[Prediction], name_b: &str, b: &[Prediction]) -> Comparison {
    let same = a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.question == y.question && x.answer == y.answer);
    let (a_rows, b_rows, note) = if same {
        (a.to_vec(), b.to_vec(), None)
    } else if let Some(b_sub) = (a.len() < b.len()).then(|| matching_rows(a, b)).flatten() {
        let note = format!(
            "on the {} questions {name_a} answered ({name_b} answered {})",
            a.len(),
            b.len()
        );
        (a.to_vec(), b_sub, Some(note))
    } else if let Some(a_sub) = (b.len() < a.len()).then(|| matching_rows(b, a)).flatten() {
        let note = format!(
            "on the {} questions {name_b} answered ({name_a} answered {})",
            b.len(),
            a.len()
        );
        (a_sub, b.to_vec(), Some(note))
    } else {
        let why = format!(
            "not comparable: the runs answered different questions ({} and {})",
            a.len(),
            b.len()
        );
        return Comparison {
            a: name_a.into(),
            b: name_b.into(),
            questions: 0,
            verdict: format!("{name_a} vs {name_b}: {why}"),
            note: Some(why),
            paired: None,
        };
    };
    match paired_difference(&a_rows, &b_rows, PAIRED_SEED) {
        Ok(p) => Comparison {
            a: name_a.into(),
            b: name_b.into(),
            questions: p.overall.n,
            verdict: p.verdict(name_a, name_b),
            note,
            paired: Some(p),
        },
        Err(e) => Comparison {
            a: name_a.into(),
            b: name_b.into(),
            questions: 0,
            verdict: format!("{name_a} vs {name_b}: {e}"),
            note: Some(e.to_string()),
            paired: None,
        },
    }
}

/// Which pairs to compare, as indices into `names`: each model against the prior baseline
/// (the run named `prior` that is not a model), all model pairs when there are two or three
/// models, then the named pairs (an unknown name is an error listing the known ones). No pair
/// twice.
pub fn pairs(
    names: &[String],
    is_model: &[bool],
    named: &[(String, String)],
) -> Result<Vec<(usize, usize)>> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let add = |p: (usize, usize), out: &mut Vec<(usize, usize)>| {
        if p.0 != p.1 && !out.contains(&p) && !out.contains(&(p.1, p.0)) {
            out.push(p);
        }
    };
    let models: Vec<usize> = (0..names.len()).filter(|&i| is_model[i]).collect();
    if let Some(prior) = (0..names.len()).find(|&i| !is_model[i] && names[i] == "prior") {
        for &m in &models {
            add((m, prior), &mut out);
        }
    }
    if (2..=3).contains(&models.len()) {
        for (k, &i) in models.iter().enumerate() {
            for &j in &models[k + 1..] {
                add((i, j), &mut out);
            }
        }
    }
    for (a, b) in named {
        let find = |n: &str| {
            names.iter().position(|x| x == n).ok_or_else(|| {
                QaError::Invalid(format!(
                    "--compare {a},{b}: no run named {n:?} (runs: {})",
                    names.join(", ")
                ))
            })
        };
        add((find(a)?, find(b)?), &mut out);
    }
    Ok(out)
}

/// The verdict lines and a per-sub-task table of the differences.
pub fn markdown(comparisons: &[Comparison]) -> String {
    let mut s = String::new();
    for c in comparisons {
        s.push_str(&format!("- {}", c.verdict));
        if let (Some(note), Some(_)) = (&c.note, &c.paired) {
            s.push_str(&format!(" ({note})"));
        }
        s.push('\n');
    }
    let cols: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
    s.push_str(&format!(
        "\nPer sub-task, A - B in points [95% CI]; * where the interval excludes zero.\n\n| A - B | {} | All |\n|---|{}---|\n",
        cols.join(" | "),
        "---|".repeat(cols.len())
    ));
    for c in comparisons {
        let Some(p) = &c.paired else { continue };
        let cell = |d: &crate::score::Difference| {
            format!(
                "{:+.2} [{:.2}, {:.2}]{}",
                d.diff + 0.0,
                d.ci95.0 + 0.0,
                d.ci95.1 + 0.0,
                if d.significant() { "*" } else { "" }
            )
        };
        let cells: Vec<String> = Task::ALL
            .iter()
            .map(|t| p.tasks.get(t).map_or("-".into(), cell))
            .collect();
        s.push_str(&format!(
            "| {} - {} | {} | {} |\n",
            c.a,
            c.b,
            cells.join(" | "),
            cell(&p.overall)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str, pred: &str) -> Prediction {
        Prediction {
            question: q.into(),
            prediction: pred.into(),
            answer: "a".into(),
            task: Some("DF".into()),
            input_tokens: None,
        }
    }

    #[test]
    fn a_model_skipping_questions_is_compared_on_the_ones_it_answered() {
        let baseline = vec![p("q1", "a"), p("q2", "x"), p("q3", "a")];
        let model = vec![p("q1", "x"), p("q3", "a")];
        let c = compare("model", &model, "prior", &baseline);
        // q1: model wrong, prior right; q3: both right -> -50 points on 2 questions.
        assert_eq!(c.questions, 2);
        assert_eq!(c.paired.as_ref().unwrap().overall.diff, -50.0);
        assert!(c.note.unwrap().contains("2 questions model answered"));
        let other = vec![p("q9", "a")];
        let c = compare("model", &model, "other", &other);
        assert!(c.paired.is_none() && c.verdict.contains("not comparable"));
    }

    #[test]
    fn pairs_are_models_against_prior_and_each_other() {
        let names: Vec<String> = ["m1", "m2", "prior", "history"].map(String::from).to_vec();
        let kinds = [true, true, false, false];
        assert_eq!(
            pairs(&names, &kinds, &[]).unwrap(),
            vec![(0, 2), (1, 2), (0, 1)]
        );
        let named = [("history".to_string(), "m1".to_string())];
        assert_eq!(
            pairs(&names, &kinds, &named).unwrap(),
            vec![(0, 2), (1, 2), (0, 1), (3, 0)]
        );
        let bad = [("m3".to_string(), "m1".to_string())];
        let err = pairs(&names, &kinds, &bad).unwrap_err().to_string();
        assert!(err.contains("no run named \"m3\""), "{err}");
        // Four models: only against the prior. A model named "prior" is not the baseline.
        let four: Vec<String> = ["a", "b", "c", "d", "prior"].map(String::from).to_vec();
        assert_eq!(
            pairs(&four, &[true, true, true, true, false], &[])
                .unwrap()
                .len(),
            4
        );
        assert!(pairs(&four[..2], &[true, true], &[]).unwrap() == vec![(0, 1)]);
        let fake = ["prior".to_string(), "m".to_string()];
        assert_eq!(pairs(&fake, &[true, true], &[]).unwrap(), vec![(0, 1)]);
    }
}
