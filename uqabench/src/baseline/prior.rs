//! The prior baseline: every evaluation question gets the answer most often given in training
//! to questions of the same template and attribute, never looking at the user. What it scores
//! is what the answer distribution alone is worth; a model must beat it to show it reads users.

use std::collections::HashMap;

use serde::Serialize;

use super::questions::QaRow;
use crate::qa::Task;
use crate::qa::parse::template_key;

/// Where a prior answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorSource {
    /// The most frequent training answer of the question's template key.
    Key,
    /// The key never occurs in training: the most frequent training answer of the sub-task.
    Task,
    /// Nothing of the sub-task in training: an empty answer.
    Nothing,
}

/// Most frequent training answers per (task, template key) and per task.
#[derive(Debug, Clone, Default)]
pub struct Prior {
    by_key: HashMap<(Option<Task>, String), String>,
    by_task: HashMap<Option<Task>, String>,
}

/// The most frequent answer; ties go to the lexicographically smallest, so the prior does not
/// depend on the order of the training file.
fn most_frequent(counts: HashMap<&str, usize>) -> String {
    counts
        .into_iter()
        .min_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)))
        .map(|(answer, _)| answer.to_string())
        .unwrap_or_default()
}

impl Prior {
    /// Counts the training answers.
    pub fn fit(train: &[QaRow]) -> Self {
        let mut by_key: HashMap<(Option<Task>, String), HashMap<&str, usize>> = HashMap::new();
        let mut by_task: HashMap<Option<Task>, HashMap<&str, usize>> = HashMap::new();
        for r in train {
            *by_key
                .entry((r.task, template_key(&r.question)))
                .or_default()
                .entry(&r.answer)
                .or_default() += 1;
            *by_task
                .entry(r.task)
                .or_default()
                .entry(&r.answer)
                .or_default() += 1;
        }
        Prior {
            by_key: by_key
                .into_iter()
                .map(|(k, c)| (k, most_frequent(c)))
                .collect(),
            by_task: by_task
                .into_iter()
                .map(|(k, c)| (k, most_frequent(c)))
                .collect(),
        }
    }

    /// The prior's answer to `question` of `task`, and where it came from.
    pub fn answer(&self, question: &str, task: Option<Task>) -> (String, PriorSource) {
        if let Some(a) = self.by_key.get(&(task, template_key(question))) {
            return (a.clone(), PriorSource::Key);
        }
        match self.by_task.get(&task) {
            Some(a) => (a.clone(), PriorSource::Task),
            None => (String::new(), PriorSource::Nothing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qa::templates::{Attr, Lang, Question};

    fn row(q: &Question, answer: &str) -> QaRow {
        QaRow {
            row: 0,
            question: q.render(Lang::Zh),
            answer: answer.into(),
            task_name: Some(q.task().name().into()),
            task: Some(q.task()),
            context: vec![],
        }
    }

    #[test]
    fn answers_by_template_then_task_with_smallest_answer_on_ties() {
        let brand = Question::NextAttr { attr: Attr::Brand };
        let shop = Question::NextAttr { attr: Attr::Shop };
        let count = |v: &str| Question::CountValue {
            attr: Attr::Category,
            value: v.into(),
        };
        let train = vec![
            row(&brand, "b2"),
            row(&brand, "b1"),
            row(&brand, "b2"),
            row(&shop, "s9"),
            row(&shop, "s3"),
            // Count questions share one key whatever their value: "2" twice, "5" once.
            row(&count("红"), "2"),
            row(&count("蓝"), "5"),
            row(&count("绿"), "2"),
        ];
        let prior = Prior::fit(&train);
        let ask = |q: &Question| prior.answer(&q.render(Lang::Zh), Some(q.task()));
        // b2 twice against b1 once.
        assert_eq!(ask(&brand), ("b2".into(), PriorSource::Key));
        // s3 and s9 once each: the smaller.
        assert_eq!(ask(&shop), ("s3".into(), PriorSource::Key));
        // A value never seen in training still finds its template.
        assert_eq!(ask(&count("紫")), ("2".into(), PriorSource::Key));
        // No category question in training: the most frequent AP answer (b2, 2 of 5).
        let cate = Question::NextAttr {
            attr: Attr::Category,
        };
        assert_eq!(ask(&cate), ("b2".into(), PriorSource::Task));
        assert_eq!(
            ask(&Question::NextTitle),
            (String::new(), PriorSource::Nothing)
        );
    }
}
