//! The question side of the built-in tokenizer's training text: every question wording in both
//! languages, the CTR questions and answers, list and trajectory separators and numbers. The
//! dataset's tokenizer is trained before any question exists; adding these texts lets its merges
//! cover the templates, so a question is a few tokens instead of one per byte.

use super::ctr;
use super::templates::{Attr, LIST_SEPARATOR, Lang, Question, TRAJECTORY_SEPARATOR};

/// Copies of each template in the corpus. Byte-pair merges are learnt from frequency; every
/// question is asked hundreds of times, so its wording weighs like a frequent entity.
const TEMPLATE_WEIGHT: usize = 64;

/// Every question template, rendered for each attribute, with placeholder values where a question
/// embeds one.
pub fn question_texts() -> Vec<String> {
    let attrs = [Attr::Title, Attr::Category, Attr::Brand, Attr::Shop];
    let mut questions = vec![Question::HistoryLength, Question::NextTitle];
    for attr in attrs {
        for n in 1..=3 {
            questions.push(Question::NthRecent { attr, n });
        }
        for k in 2..=3 {
            questions.push(Question::LastK { attr, k });
        }
    }
    for attr in Attr::ENTITIES {
        questions.push(Question::CountValue {
            attr,
            value: String::new(),
        });
        questions.push(Question::NextAttr { attr });
        questions.push(Question::Top3 { attr });
        questions.push(Question::RecentTop { attr });
        questions.push(Question::Transfer { attr });
    }
    let mut out = Vec::new();
    for lang in [Lang::Zh, Lang::En] {
        out.extend(questions.iter().map(|q| q.render(lang)));
        out.push(ctr::question(lang, ""));
        let (yes, no) = ctr::answers(lang);
        out.push(yes.to_string());
        out.push(no.to_string());
    }
    out
}

/// The texts to add to a dataset's own (catalog) texts when training its built-in tokenizer.
pub fn tokenizer_corpus() -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..TEMPLATE_WEIGHT {
        out.extend(question_texts());
        out.push(format!("a{LIST_SEPARATOR}b{TRAJECTORY_SEPARATOR}c"));
    }
    // Counts (MF answers) and ordinals, each number as it is written in an answer.
    out.extend((0..1000).map(|n| n.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qa::Task;

    #[test]
    fn every_task_has_a_template_in_both_languages() {
        let texts = question_texts();
        for task in Task::ALL {
            assert!(
                texts.iter().any(|t| Task::recognise(t) == Some(task)),
                "no Chinese template of {task}"
            );
        }
        assert!(texts.iter().any(|t| t.starts_with("What is the brand")));
        assert!(tokenizer_corpus().len() > texts.len() * TEMPLATE_WEIGHT);
    }
}
