//! Answer rules: given a user's context window (the history the encoder reads) and future window
//! (the clicks that follow), draw one question of a task and compute its gold answer. A `None`
//! means the windows cannot support that task (too short, too few distinct values, a zero
//! count), never a made-up answer.

use std::collections::HashMap;

use uqa_data::catalog::ItemCatalog;
use uqa_data::rng::Rng;

use super::task::Task;
use super::templates::{Attr, LIST_SEPARATOR, Question, TRAJECTORY_SEPARATOR};

/// A question with its gold answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QaPair {
    pub question: Question,
    pub answer: String,
}

/// The value of `attr` for `item`: a key identifying it (entity id, or item id for titles) and
/// its text.
fn value(catalog: &ItemCatalog, item: u32, attr: Attr) -> (u32, &str) {
    let a = catalog.attrs(item);
    match attr {
        Attr::Title => (item, catalog.titles.text(item as usize)),
        Attr::Category => (a.cate, catalog.cates.text(a.cate as usize)),
        Attr::Brand => (a.brand, catalog.brands.text(a.brand as usize)),
        Attr::Shop => (a.shop, catalog.shops.text(a.shop as usize)),
    }
}

/// Values of `attr` over `clicks` ranked by count (descending), ties broken by the more recent
/// last click. Returns (key, count) pairs.
pub fn ranked(catalog: &ItemCatalog, clicks: &[u32], attr: Attr) -> Vec<(u32, usize)> {
    let mut stats: HashMap<u32, (usize, usize)> = HashMap::new();
    for (pos, &item) in clicks.iter().enumerate() {
        let e = stats.entry(value(catalog, item, attr).0).or_insert((0, 0));
        e.0 += 1;
        e.1 = pos;
    }
    let mut v: Vec<(u32, (usize, usize))> = stats.into_iter().collect();
    v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(b.1.1.cmp(&a.1.1)));
    v.into_iter().map(|(k, (c, _))| (k, c)).collect()
}

fn text_of(catalog: &ItemCatalog, attr: Attr, key: u32) -> &str {
    match attr {
        Attr::Title => catalog.titles.text(key as usize),
        Attr::Category => catalog.cates.text(key as usize),
        Attr::Brand => catalog.brands.text(key as usize),
        Attr::Shop => catalog.shops.text(key as usize),
    }
}

// The answer of each template over a window of clicks. `draw` computes gold answers with them;
// the history baseline applies the same functions to the context alone.

/// DF: `attr` of the `n`-th most recent click (n = 1 is the latest).
pub fn nth_recent(catalog: &ItemCatalog, clicks: &[u32], attr: Attr, n: usize) -> Option<String> {
    let i = clicks.len().checked_sub(n).filter(|_| n > 0)?;
    Some(value(catalog, clicks[i], attr).1.to_string())
}

/// DF: `attr` of each of the last `k` clicks, oldest first.
pub fn last_k(catalog: &ItemCatalog, clicks: &[u32], attr: Attr, k: usize) -> Option<String> {
    let start = clicks.len().checked_sub(k).filter(|_| k > 0)?;
    Some(
        clicks[start..]
            .iter()
            .map(|&i| value(catalog, i, attr).1)
            .collect::<Vec<_>>()
            .join(LIST_SEPARATOR),
    )
}

/// MF: clicks whose `attr` has the text `text` (a question names its value by text).
pub fn count_text(catalog: &ItemCatalog, clicks: &[u32], attr: Attr, text: &str) -> usize {
    clicks
        .iter()
        .filter(|&&i| value(catalog, i, attr).1 == text)
        .count()
}

/// LI (k = 3) and SI (k = 1): the `k` values of `attr` with most clicks, most first, ties to
/// the more recent last click; `None` when fewer than `k` distinct values occur.
pub fn top_k(catalog: &ItemCatalog, clicks: &[u32], attr: Attr, k: usize) -> Option<String> {
    let top = ranked(catalog, clicks, attr);
    if top.len() < k || k == 0 {
        return None;
    }
    Some(
        top[..k]
            .iter()
            .map(|(key, _)| text_of(catalog, attr, *key))
            .collect::<Vec<_>>()
            .join(LIST_SEPARATOR),
    )
}

/// IT: the clicks cut in three equal parts, the top value of each (ties: more recent),
/// consecutive repeats merged; `None` below three clicks or two steps.
pub fn trajectory(catalog: &ItemCatalog, clicks: &[u32], attr: Attr) -> Option<String> {
    if clicks.len() < 3 {
        return None;
    }
    let mut steps: Vec<u32> = Vec::new();
    for s in 0..3 {
        let part = &clicks[s * clicks.len() / 3..(s + 1) * clicks.len() / 3];
        let (key, _) = *ranked(catalog, part, attr).first()?;
        if steps.last() != Some(&key) {
            steps.push(key);
        }
    }
    if steps.len() < 2 {
        return None;
    }
    Some(
        steps
            .iter()
            .map(|&k| text_of(catalog, attr, k))
            .collect::<Vec<_>>()
            .join(TRAJECTORY_SEPARATOR),
    )
}

fn pick<T: Copy>(rng: &mut Rng, options: &[T]) -> T {
    options[rng.below(options.len() as u64) as usize]
}

/// Draw a question of `task` for the windows, with its answer.
pub fn draw(
    task: Task,
    catalog: &ItemCatalog,
    context: &[u32],
    future: &[u32],
    rng: &mut Rng,
) -> Option<QaPair> {
    let all_attrs = [Attr::Title, Attr::Category, Attr::Brand, Attr::Shop];
    let (question, answer) = match task {
        Task::DF => {
            if context.len() < 3 {
                return None;
            }
            let attr = pick(rng, &all_attrs);
            if rng.chance(0.5) {
                let n = rng.range(1, 3) as usize;
                (
                    Question::NthRecent { attr, n },
                    nth_recent(catalog, context, attr, n)?,
                )
            } else {
                let k = rng.range(2, 3) as usize;
                (
                    Question::LastK { attr, k },
                    last_k(catalog, context, attr, k)?,
                )
            }
        }
        Task::MF => {
            if context.is_empty() {
                return None;
            }
            if rng.chance(0.2) {
                (Question::HistoryLength, context.len().to_string())
            } else {
                let attr = pick(rng, &Attr::ENTITIES);
                let probe = context[rng.below(context.len() as u64) as usize];
                let (key, text) = value(catalog, probe, attr);
                let count = context
                    .iter()
                    .filter(|&&i| value(catalog, i, attr).0 == key)
                    .count();
                let q = Question::CountValue {
                    attr,
                    value: text.to_string(),
                };
                (q, count.to_string())
            }
        }
        Task::IP => {
            let next = *future.first()?;
            (
                Question::NextTitle,
                catalog.titles.text(next as usize).to_string(),
            )
        }
        Task::AP => {
            let next = *future.first()?;
            let attr = pick(rng, &Attr::ENTITIES);
            (
                Question::NextAttr { attr },
                value(catalog, next, attr).1.to_string(),
            )
        }
        Task::LI => {
            let attr = pick(rng, &Attr::ENTITIES);
            (Question::Top3 { attr }, top_k(catalog, context, attr, 3)?)
        }
        Task::SI => {
            let attr = pick(rng, &Attr::ENTITIES);
            (
                Question::RecentTop { attr },
                top_k(catalog, future, attr, 1)?,
            )
        }
        Task::IT => {
            if future.len() < 3 {
                return None;
            }
            let attr = pick(rng, &Attr::ENTITIES);
            (
                Question::Transfer { attr },
                trajectory(catalog, future, attr)?,
            )
        }
    };
    Some(QaPair { question, answer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uqa_data::catalog::ItemAttrs;

    /// Items 1..=6: categories c1 (items 1-3), c2 (4-5), c3 (6); brands b1..b6 = item id.
    fn catalog() -> ItemCatalog {
        let mut c = ItemCatalog::with_padding();
        for k in 1..=3 {
            c.cates.push(format!("c{k}"), &[]);
        }
        for k in 1..=6 {
            c.brands.push(format!("b{k}"), &[]);
            c.shops.push(format!("s{k}"), &[]);
            c.sellers.push(format!("p{k}"), &[]);
            let cate = match k {
                1..=3 => 1,
                4 | 5 => 2,
                _ => 3,
            };
            c.items.push(ItemAttrs {
                cate,
                brand: k,
                shop: k,
                seller: k,
            });
            c.titles.push(format!("t{k}"), &[]);
        }
        c
    }

    fn draw_until(
        task: Task,
        context: &[u32],
        future: &[u32],
        want: impl Fn(&Question) -> bool,
    ) -> QaPair {
        let c = catalog();
        let mut rng = Rng::new(0);
        for _ in 0..1000 {
            if let Some(qa) = draw(task, &c, context, future, &mut rng)
                && want(&qa.question)
            {
                return qa;
            }
        }
        panic!("no {task} question of the wanted kind drawn");
    }

    #[test]
    fn df_answers_are_the_latest_clicks_in_order() {
        let ctx = [1, 4, 6, 2];
        let qa = draw_until(Task::DF, &ctx, &[], |q| {
            matches!(
                q,
                Question::LastK {
                    attr: Attr::Title,
                    k: 3
                }
            )
        });
        assert_eq!(qa.answer, "t4; t6; t2");
        let qa = draw_until(Task::DF, &ctx, &[], |q| {
            matches!(
                q,
                Question::NthRecent {
                    attr: Attr::Category,
                    n: 2
                }
            )
        });
        assert_eq!(qa.answer, "c3");
    }

    #[test]
    fn mf_counts_matching_clicks_and_never_zero() {
        let ctx = [1, 2, 4, 3, 6];
        for _ in 0..50 {
            let qa = draw_until(Task::MF, &ctx, &[], |q| {
                matches!(
                    q,
                    Question::CountValue {
                        attr: Attr::Category,
                        ..
                    }
                )
            });
            let Question::CountValue { value, .. } = &qa.question else {
                unreachable!()
            };
            let expected = match value.as_str() {
                "c1" => "3",
                "c2" | "c3" => "1",
                other => panic!("{other}"),
            };
            assert_eq!(qa.answer, expected);
        }
        let qa = draw_until(Task::MF, &ctx, &[], |q| *q == Question::HistoryLength);
        assert_eq!(qa.answer, "5");
    }

    #[test]
    fn li_ranks_by_count_then_recency() {
        // c1 x3, c2 x2, c3 x2 with c3 clicked last: c1, c3, c2.
        let ctx = [1, 4, 2, 5, 3, 6, 6];
        let qa = draw_until(Task::LI, &ctx, &[], |q| {
            matches!(
                q,
                Question::Top3 {
                    attr: Attr::Category
                }
            )
        });
        assert_eq!(qa.answer, "c1; c3; c2");
        let c = catalog();
        let mut rng = Rng::new(1);
        assert!(
            draw(Task::LI, &c, &[1, 2, 4], &[], &mut rng).is_none_or(|qa| !matches!(
                qa.question,
                Question::Top3 {
                    attr: Attr::Category
                }
            ))
        );
    }

    #[test]
    fn future_tasks_read_the_future_window() {
        let ctx = [1, 2, 3];
        let fut = [4, 1, 5, 6, 6, 6];
        let ip = draw_until(Task::IP, &ctx, &fut, |_| true);
        assert_eq!(ip.answer, "t4");
        let si = draw_until(Task::SI, &ctx, &fut, |q| {
            matches!(
                q,
                Question::RecentTop {
                    attr: Attr::Category
                }
            )
        });
        assert_eq!(si.answer, "c3");
        // Thirds [4,1] [5,6] [6,6] -> categories c2/c1 (tie, latest c1), c2/c3 (tie, latest c3), c3.
        let it = draw_until(Task::IT, &ctx, &fut, |q| {
            matches!(
                q,
                Question::Transfer {
                    attr: Attr::Category
                }
            )
        });
        assert_eq!(it.answer, "c1 -> c3");
        assert!(draw(Task::IP, &catalog(), &ctx, &[], &mut Rng::new(0)).is_none());
    }
}
