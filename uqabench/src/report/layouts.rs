//! The paper's Tables 3 to 6 from a study's elements, with seeds aggregated:
//! - Table 3: side information x objectives;
//! - Table 4: adapters x strategies;
//! - Table 5: sizes, with the power law of accuracy against encoder parameters, its exponent and
//!   a bootstrap interval of it;
//! - Table 6: sequence lengths.
//!
//! Each cell holds the elements that agree on the table's axes and on every other axis, over all
//! their seeds. Its accuracy is the overall micro prefix accuracy (Table 2's "All"): per question,
//! the mean credit over the cell's seeds; then the mean over questions. Every element of a study
//! answers the same question list, so one bootstrap draws questions (within each sub-task,
//! keeping its size, as the report's intervals do) and recomputes every cell and every fit from
//! the same draw. Intervals therefore cover question sampling, and the seeds' spread when there
//! are several.

use std::collections::BTreeMap;

use serde::Serialize;
use uqa_data::rng::Rng;

use super::plots::fit_power_law;
use crate::error::{QaError, Result};
use crate::qa::Task;
use crate::score::aggregate::percentile;
use crate::score::matching::prefix_match;
use crate::score::{Prediction, classify};

/// The layouts: table, row axis, column axis.
pub const LAYOUTS: [(&str, &str, Option<&str>); 4] = [
    ("Table 3", "side_info", Some("objectives")),
    ("Table 4", "adapters", Some("strategies")),
    ("Table 5", "sizes", None),
    ("Table 6", "lengths", None),
];

/// The row axis of the layout that aggregates every element over its seeds.
pub const SEEDS_AXIS: &str = "element";

/// One finished element: its axis values (axis, value), seed, encoder size and predictions.
#[derive(Debug, Clone)]
pub struct ElementRun {
    pub name: String,
    pub values: Vec<(String, String)>,
    pub seed: u64,
    pub encoder_params: Option<f64>,
    pub rows: Vec<Prediction>,
}

/// One cell of a layout.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cell {
    /// The values of the axes the layout does not lay out (" / "-joined; empty when none).
    pub group: String,
    pub row: String,
    pub col: Option<String>,
    pub seeds: usize,
    pub questions: usize,
    pub accuracy: f64,
    pub ci95: (f64, f64),
    pub encoder_params: Option<f64>,
}

/// `accuracy = a * params^exponent` over one group's sizes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PowerFit {
    pub group: String,
    pub a: f64,
    pub exponent: f64,
    /// Bootstrap 95% interval of the exponent (draws where a fit exists).
    pub exponent_ci95: (f64, f64),
    pub points: usize,
}

/// One of the paper's tables, as far as the study's elements fill it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Layout {
    pub table: String,
    pub row_axis: String,
    pub col_axis: Option<String>,
    pub cells: Vec<Cell>,
    pub fits: Vec<PowerFit>,
    /// Why a fit is missing, for example.
    pub notes: Vec<String>,
}

/// Per-question prefix credit of one element, and the question's sub-task.
fn credits(e: &ElementRun) -> Vec<(Option<Task>, f64)> {
    e.rows
        .iter()
        .map(|p| match classify(p) {
            Ok(s) => (
                Some(s.task),
                f64::from(u8::from(prefix_match(&s.prediction, &s.answer))),
            ),
            Err(_) => (None, 0.0),
        })
        .collect()
}

/// The layouts the elements' axes call for, each cell with a bootstrap interval (`resamples`
/// draws from `seed`). An error when two elements answered different question lists.
pub fn layouts(elements: &[ElementRun], resamples: usize, seed: u64) -> Result<Vec<Layout>> {
    let Some(first) = elements.first() else {
        return Ok(Vec::new());
    };
    let credit: Vec<Vec<(Option<Task>, f64)>> = elements.iter().map(credits).collect();
    for (e, c) in elements.iter().zip(&credit) {
        let same = e.rows.len() == first.rows.len()
            && e.rows
                .iter()
                .zip(&first.rows)
                .all(|(a, b)| a.answer == b.answer && a.question == b.question);
        if !same {
            return Err(QaError::Invalid(format!(
                "elements `{}` and `{}` answered different question lists ({} and {} rows): \
                 a study's tables compare the same questions",
                first.name,
                e.name,
                c.len(),
                first.rows.len()
            )));
        }
    }
    // Questions by sub-task: the strata of the bootstrap (unscorable rows are left out, as in
    // the report).
    let mut strata: BTreeMap<Task, Vec<usize>> = BTreeMap::new();
    for (i, (task, _)) in credit[0].iter().enumerate() {
        if let Some(t) = task {
            strata.entry(*t).or_default().push(i);
        }
    }
    let questions: usize = strata.values().map(Vec::len).sum();
    let has_axis = |axis: &str| {
        elements
            .iter()
            .any(|e| e.values.iter().any(|(a, _)| a == axis))
    };
    let value = |values: &[(String, String)], axis: &str| {
        values
            .iter()
            .find(|(a, _)| a == axis)
            .map(|(_, v)| v.clone())
    };

    // Each layout: its table, row and column axes, and every element's values as the layout
    // sees them.
    let own: Vec<Vec<(String, String)>> = elements.iter().map(|e| e.values.clone()).collect();
    type Values = Vec<Vec<(String, String)>>;
    let mut specs: Vec<(&str, &str, Option<&str>, Values)> = Vec::new();
    for (table, row_axis, col_axis) in LAYOUTS {
        // A table whose row axis the study lacks lays out its column axis alone.
        match (has_axis(row_axis), col_axis.filter(|c| has_axis(c))) {
            (true, col) => specs.push((table, row_axis, col, own.clone())),
            (false, Some(col)) => specs.push((table, col, None, own.clone())),
            (false, None) => {}
        }
    }
    // With several seeds, every element (Table 2's and Table 7's rows, one per seed in the
    // report) also aggregated over its seeds: one row per combination of axis values.
    let mut combos: Vec<&[(String, String)]> = own.iter().map(Vec::as_slice).collect();
    combos.sort();
    combos.dedup();
    if combos.len() < elements.len() {
        let joined = own
            .iter()
            .map(|v| {
                let name = v
                    .iter()
                    .map(|(_, x)| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" / ");
                // A study without axes has one element, seeded several times.
                let name = if name.is_empty() { "base".into() } else { name };
                vec![(SEEDS_AXIS.to_string(), name)]
            })
            .collect();
        specs.push(("Elements over seeds", SEEDS_AXIS, None, joined));
    }

    let mut out = Vec::new();
    for (table, row_axis, col_axis, values) in specs {
        // (group, row, col) -> members (indices into elements).
        let mut cells: BTreeMap<(String, String, Option<String>), Vec<usize>> = BTreeMap::new();
        let mut order: Vec<(String, String, Option<String>)> = Vec::new();
        for (i, vals) in values.iter().enumerate() {
            let group = vals
                .iter()
                .filter(|(a, _)| a != row_axis && Some(a.as_str()) != col_axis)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join(" / ");
            let key = (
                group,
                value(vals, row_axis).unwrap_or_default(),
                col_axis.and_then(|c| value(vals, c)),
            );
            if !cells.contains_key(&key) {
                order.push(key.clone());
            }
            cells.entry(key).or_default().push(i);
        }
        // Rows and columns in their values' natural order: l32 before l128, 3.2M before 13M.
        order.sort_by(|a, b| {
            (a.0.as_str(), natural(&a.1), a.2.as_deref().map(natural))
                .partial_cmp(&(b.0.as_str(), natural(&b.1), b.2.as_deref().map(natural)))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        // Per cell, per question: the mean credit over the cell's seeds.
        let means: Vec<Vec<f64>> = order
            .iter()
            .map(|k| {
                let members = &cells[k];
                (0..credit[0].len())
                    .map(|q| {
                        members.iter().map(|&m| credit[m][q].1).sum::<f64>() / members.len() as f64
                    })
                    .collect()
            })
            .collect();
        let params: Vec<Option<f64>> = order
            .iter()
            .map(|k| {
                let ps: Vec<f64> = cells[k]
                    .iter()
                    .filter_map(|&m| elements[m].encoder_params)
                    .collect();
                (!ps.is_empty()).then(|| ps.iter().sum::<f64>() / ps.len() as f64)
            })
            .collect();
        let points: Vec<f64> = means.iter().map(|m| accuracy(m, &strata)).collect();
        let fit_groups: Vec<String> = if row_axis == "sizes" {
            let mut g: Vec<String> = order.iter().map(|k| k.0.clone()).collect();
            g.dedup();
            g
        } else {
            Vec::new()
        };
        let fit_of = |accs: &[f64], group: &str| -> Option<(f64, f64, usize)> {
            let pts: Vec<(f64, f64)> = order
                .iter()
                .enumerate()
                .filter(|(_, k)| k.0 == group)
                .filter_map(|(i, _)| params[i].map(|p| (p, accs[i])))
                .collect();
            fit_power_law(&pts).map(|(a, b)| (a, b, pts.len()))
        };

        // One bootstrap for every cell and fit of the layout.
        let mut rng = Rng::new(seed);
        let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); order.len()];
        let mut exponents: Vec<Vec<f64>> = vec![Vec::new(); fit_groups.len()];
        for _ in 0..resamples {
            let picked: BTreeMap<Task, Vec<usize>> = strata
                .iter()
                .map(|(t, idx)| {
                    let pick = (0..idx.len())
                        .map(|_| idx[rng.below(idx.len() as u64) as usize])
                        .collect();
                    (*t, pick)
                })
                .collect();
            let accs: Vec<f64> = means.iter().map(|m| accuracy(m, &picked)).collect();
            for (k, a) in accs.iter().enumerate() {
                draws[k].push(*a);
            }
            for (g, group) in fit_groups.iter().enumerate() {
                if let Some((_, b, _)) = fit_of(&accs, group) {
                    exponents[g].push(b);
                }
            }
        }
        let interval = |mut d: Vec<f64>, point: f64| {
            if d.is_empty() {
                return (point, point);
            }
            d.sort_by(f64::total_cmp);
            (percentile(&d, 0.025), percentile(&d, 0.975))
        };
        let cells_out: Vec<Cell> = order
            .iter()
            .zip(draws)
            .enumerate()
            .map(|(i, (k, d))| Cell {
                group: k.0.clone(),
                row: k.1.clone(),
                col: k.2.clone(),
                seeds: cells[k].len(),
                questions,
                accuracy: points[i],
                ci95: interval(d, points[i]),
                encoder_params: params[i],
            })
            .collect();
        let mut fits = Vec::new();
        let mut notes = Vec::new();
        for (g, group) in fit_groups.iter().enumerate() {
            match fit_of(&points, group) {
                Some((a, b, n)) => fits.push(PowerFit {
                    group: group.clone(),
                    a,
                    exponent: b,
                    exponent_ci95: interval(std::mem::take(&mut exponents[g]), b),
                    points: n,
                }),
                None => notes.push(format!(
                    "{table}{}: no power-law fit (it needs two sizes with encoder parameter \
                     counts and accuracy above 0)",
                    if group.is_empty() {
                        String::new()
                    } else {
                        format!(" ({group})")
                    }
                )),
            }
        }
        out.push(Layout {
            table: table.to_string(),
            row_axis: row_axis.to_string(),
            col_axis: col_axis.map(String::from),
            cells: cells_out,
            fits,
            notes,
        });
    }
    Ok(out)
}

/// A value's sort key: its text before the first number, that number (times 1e3, 1e6 or 1e9
/// for a K, M or B/G suffix) and the rest; values without a number sort by their text.
fn natural(v: &str) -> (String, f64, String) {
    let start = v.find(|c: char| c.is_ascii_digit());
    let Some(start) = start else {
        return (v.to_string(), f64::NEG_INFINITY, String::new());
    };
    let digits = v[start..]
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(v.len(), |n| start + n);
    let number: f64 = v[start..digits].parse().unwrap_or(0.0);
    let rest = &v[digits..];
    let scale = match rest.chars().next() {
        Some('K' | 'k') => 1e3,
        Some('M') => 1e6,
        Some('B' | 'G') => 1e9,
        _ => 1.0,
    };
    (v[..start].to_string(), number * scale, rest.to_string())
}

/// Mean credit in percent over the questions `picked` (per sub-task, with repeats).
fn accuracy(credit: &[f64], picked: &BTreeMap<Task, Vec<usize>>) -> f64 {
    let n: usize = picked.values().map(Vec::len).sum();
    if n == 0 {
        return 0.0;
    }
    let sum: f64 = picked.values().flatten().map(|&q| credit[q]).sum();
    100.0 * sum / n as f64
}

fn cell_text(c: &Cell) -> String {
    format!("{:.2} [{:.2}, {:.2}]", c.accuracy, c.ci95.0, c.ci95.1)
}

/// The layouts as Markdown: one table per layout and group, rows by the row axis, columns by
/// the column axis.
pub fn markdown(layouts: &[Layout]) -> String {
    let mut s = String::new();
    for l in layouts {
        let mut groups: Vec<&str> = l.cells.iter().map(|c| c.group.as_str()).collect();
        groups.dedup();
        for group in groups {
            let cells: Vec<&Cell> = l.cells.iter().filter(|c| c.group == group).collect();
            let seeds = cells.iter().map(|c| c.seeds).max().unwrap_or(1);
            let by = match &l.col_axis {
                Some(c) => format!("{} x {c}", l.row_axis),
                None => l.row_axis.clone(),
            };
            s.push_str(&format!(
                "### {}: {by}{}\n\nOverall accuracy (%, prefix match, micro) [bootstrap 95% CI \
                 over questions], {} questions, {seeds} seed{} per cell at most.\n\n",
                l.table,
                if group.is_empty() {
                    String::new()
                } else {
                    format!(" ({group})")
                },
                cells.first().map_or(0, |c| c.questions),
                if seeds == 1 { "" } else { "s" },
            ));
            let mut rows: Vec<&str> = cells.iter().map(|c| c.row.as_str()).collect();
            dedup_keep_order(&mut rows);
            match &l.col_axis {
                Some(col_axis) => {
                    let mut cols: Vec<&str> =
                        cells.iter().filter_map(|c| c.col.as_deref()).collect();
                    dedup_keep_order(&mut cols);
                    s.push_str(&format!(
                        "| {} \\ {col_axis} | {} |\n",
                        l.row_axis,
                        cols.join(" | ")
                    ));
                    s.push_str(&format!("|---|{}\n", "---|".repeat(cols.len())));
                    for r in &rows {
                        let line: Vec<String> = cols
                            .iter()
                            .map(|c| {
                                cells
                                    .iter()
                                    .find(|x| x.row == *r && x.col.as_deref() == Some(*c))
                                    .map_or("missing".to_string(), |x| cell_text(x))
                            })
                            .collect();
                        s.push_str(&format!("| {r} | {} |\n", line.join(" | ")));
                    }
                }
                None => {
                    s.push_str(&format!(
                        "| {} | encoder parameters | accuracy [95% CI] | seeds |\n|---|---|---|---|\n",
                        l.row_axis
                    ));
                    for c in &cells {
                        let params = c
                            .encoder_params
                            .map_or("-".to_string(), |p| format!("{:.2}M", p / 1e6));
                        s.push_str(&format!(
                            "| {} | {params} | {} | {} |\n",
                            c.row,
                            cell_text(c),
                            c.seeds
                        ));
                    }
                }
            }
            for f in l.fits.iter().filter(|f| f.group == group) {
                s.push_str(&format!(
                    "\nPower law over {} sizes: accuracy = {:.3} x params^{:.4}; exponent 95% CI \
                     [{:.4}, {:.4}] (the paper: accuracy grows with size, a positive exponent).\n",
                    f.points, f.a, f.exponent, f.exponent_ci95.0, f.exponent_ci95.1
                ));
            }
            s.push('\n');
        }
        for n in &l.notes {
            s.push_str(&format!("Note: {n}\n\n"));
        }
    }
    s
}

/// The layouts' cells as CSV (one line per cell) and the fits (one line per fit).
pub fn csv(layouts: &[Layout]) -> String {
    let mut s = String::from(
        "table,row_axis,col_axis,group,row,col,encoder_params,seeds,questions,accuracy,ci_low,ci_high\n",
    );
    for l in layouts {
        for c in &l.cells {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{:.4},{:.4},{:.4}\n",
                csv_field(&l.table),
                csv_field(&l.row_axis),
                csv_field(l.col_axis.as_deref().unwrap_or("")),
                csv_field(&c.group),
                csv_field(&c.row),
                csv_field(c.col.as_deref().unwrap_or("")),
                c.encoder_params
                    .map_or(String::new(), |p| format!("{p:.0}")),
                c.seeds,
                c.questions,
                c.accuracy,
                c.ci95.0,
                c.ci95.1
            ));
        }
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

fn dedup_keep_order(v: &mut Vec<&str>) {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|x| seen.insert(*x));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` questions of task DF whose first `right` get the right answer.
    fn rows(n: usize, right: usize) -> Vec<Prediction> {
        (0..n)
            .map(|i| Prediction {
                question: format!("q{i}"),
                prediction: if i < right { "yes".into() } else { "no".into() },
                answer: "yes".into(),
                task: Some("DF".into()),
                input_tokens: None,
            })
            .collect()
    }

    fn element(values: &[(&str, &str)], seed: u64, params: f64, right: usize) -> ElementRun {
        ElementRun {
            name: format!("{values:?}/{seed}"),
            values: values
                .iter()
                .map(|(a, v)| (a.to_string(), v.to_string()))
                .collect(),
            seed,
            encoder_params: Some(params),
            rows: rows(100, right),
        }
    }

    #[test]
    fn cells_average_seeds_and_sizes_fit_a_power_law() {
        let es = vec![
            element(&[("sizes", "small")], 0, 1e6, 20),
            element(&[("sizes", "small")], 1, 1e6, 30),
            element(&[("sizes", "big")], 0, 1e7, 40),
            element(&[("sizes", "big")], 1, 1e7, 40),
        ];
        let ls = layouts(&es, 200, 7).unwrap();
        assert_eq!(ls.len(), 2);
        // The elements over their seeds: the same cells, by element.
        let over = &ls[1];
        assert_eq!(
            (over.table.as_str(), over.row_axis.as_str()),
            ("Elements over seeds", SEEDS_AXIS)
        );
        let rows: Vec<(&str, usize, f64)> = over
            .cells
            .iter()
            .map(|c| (c.row.as_str(), c.seeds, c.accuracy))
            .collect();
        assert_eq!(rows, [("big", 2, 40.0), ("small", 2, 25.0)]);
        let l = &ls[0];
        assert_eq!(l.table, "Table 5");
        let small = l.cells.iter().find(|c| c.row == "small").unwrap();
        assert_eq!((small.row.as_str(), small.seeds), ("small", 2));
        assert!((small.accuracy - 25.0).abs() < 1e-9, "{small:?}");
        assert!(small.ci95.0 < 25.0 && small.ci95.1 > 25.0, "{small:?}");
        // 40% at 10x the parameters of 25%: exponent log10(40/25) = 0.204.
        let f = &l.fits[0];
        assert!(
            (f.exponent - (40.0f64 / 25.0).log10()).abs() < 1e-9,
            "{f:?}"
        );
        assert!(
            f.exponent_ci95.0 < f.exponent && f.exponent < f.exponent_ci95.1,
            "{f:?}"
        );
        let md = markdown(&ls);
        assert!(md.contains("### Table 5: sizes"), "{md}");
        assert!(md.contains("| small | 1.00M | 25.00 ["), "{md}");
        assert!(md.contains("Power law over 2 sizes"), "{md}");
        assert!(md.contains("### Elements over seeds: element"), "{md}");
        assert_eq!(csv(&ls).lines().count(), 5);
    }

    #[test]
    fn two_axes_make_a_grid_and_other_axes_a_group() {
        let es = vec![
            element(
                &[
                    ("encoders", "trmpp"),
                    ("adapters", "mlp"),
                    ("strategies", "adapter"),
                ],
                0,
                1e6,
                10,
            ),
            element(
                &[
                    ("encoders", "trmpp"),
                    ("adapters", "qformer"),
                    ("strategies", "adapter"),
                ],
                0,
                1e6,
                20,
            ),
            element(
                &[
                    ("encoders", "trmpp"),
                    ("adapters", "mlp"),
                    ("strategies", "full"),
                ],
                0,
                1e6,
                30,
            ),
        ];
        let ls = layouts(&es, 50, 1).unwrap();
        // One seed each: no aggregate over seeds.
        assert!(ls.iter().all(|l| l.row_axis != SEEDS_AXIS));
        let md = markdown(&ls);
        assert!(
            md.contains("### Table 4: adapters x strategies (trmpp)"),
            "{md}"
        );
        assert!(
            md.contains("| adapters \\ strategies | adapter | full |"),
            "{md}"
        );
        assert!(md.contains("| qformer | 20.00 ["), "{md}");
        assert!(md.contains("| missing |"), "{md}");
    }

    #[test]
    fn rows_come_in_the_natural_order_of_their_values() {
        let es = vec![
            element(&[("sizes", "1.2B")], 0, 1.2e9, 30),
            element(&[("sizes", "13M")], 0, 13e6, 20),
            element(&[("sizes", "3.2M")], 0, 3.2e6, 10),
        ];
        let ls = layouts(&es, 10, 1).unwrap();
        let rows: Vec<&str> = ls[0].cells.iter().map(|c| c.row.as_str()).collect();
        assert_eq!(rows, ["3.2M", "13M", "1.2B"]);
        let mut lengths = vec!["l256", "l32", "l128", "l64", "full"];
        lengths.sort_by(|a, b| natural(a).partial_cmp(&natural(b)).unwrap());
        assert_eq!(lengths, ["full", "l32", "l64", "l128", "l256"]);
    }

    #[test]
    fn different_question_lists_are_refused() {
        let mut b = element(&[("lengths", "l64")], 0, 1e6, 10);
        b.rows.pop();
        let es = vec![element(&[("lengths", "l32")], 0, 1e6, 10), b];
        let e = layouts(&es, 10, 1).unwrap_err().to_string();
        assert!(e.contains("different question lists"), "{e}");
    }
}
