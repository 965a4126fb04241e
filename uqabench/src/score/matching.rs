//! How one prediction is judged against its gold answer. Three rules, always labelled:
//!
//! - `prefix` (the reference's headline rule): correct iff the prediction starts with the gold
//!   answer, byte for byte (case- and space-sensitive).
//! - `normalized`: the same prefix test after normalising both sides (Unicode lowercase,
//!   full-width ASCII folded to half-width, whitespace runs collapsed, leading/trailing spaces
//!   and punctuation trimmed, list separators unified).
//! - `partial`: list-aware credit in [0, 1]. For answers that are lists (DF last-k, LI top-3,
//!   IT trajectories) the credit is the share of gold elements matched: by position for DF and
//!   IT (order is the answer), as a set for LI (the set matters more than the ranking). Other
//!   answers get the `normalized` credit.

use crate::qa::Task;
use crate::qa::templates::{LIST_SEPARATOR, TRAJECTORY_SEPARATOR};

/// The reference's rule.
pub fn prefix_match(prediction: &str, gold: &str) -> bool {
    prediction.starts_with(gold)
}

/// Fold full-width ASCII forms (common in Chinese output) to ASCII, lowercase, collapse spaces.
pub fn normalize(s: &str) -> String {
    let folded: String = s
        .chars()
        .map(|c| match c {
            '；' | '，' | '、' => ';',
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            c => c,
        })
        .flat_map(char::to_lowercase)
        .collect();
    let collapsed = folded.split_whitespace().collect::<Vec<_>>().join(" ");
    let trimmed = collapsed.trim_matches(|c: char| c.is_whitespace() || is_edge_punctuation(c));
    // Unify list separators: "a;b", "a ; b" and "a; b" compare equal.
    trimmed
        .split(';')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

fn is_edge_punctuation(c: char) -> bool {
    matches!(
        c,
        '.' | '。' | '!' | '！' | '"' | '\'' | '“' | '”' | '「' | '」' | ':' | '：'
    )
}

/// Like the reference's rule, an empty (normalised) gold answer is matched by any prediction.
pub fn normalized_match(prediction: &str, gold: &str) -> bool {
    normalize(prediction).starts_with(&normalize(gold))
}

fn split_list(s: &str, task: Task) -> Vec<String> {
    let sep = if task == Task::IT {
        TRAJECTORY_SEPARATOR.trim()
    } else {
        LIST_SEPARATOR.trim()
    };
    normalize(s)
        .split(sep)
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// Partial credit in [0, 1].
pub fn partial_credit(prediction: &str, gold: &str, task: Task) -> f64 {
    let is_list = matches!(task, Task::DF | Task::LI | Task::IT)
        && (gold.contains(LIST_SEPARATOR.trim()) || gold.contains(TRAJECTORY_SEPARATOR.trim()));
    if !is_list {
        return f64::from(u8::from(normalized_match(prediction, gold)));
    }
    let g = split_list(gold, task);
    // Only the first line of a generated answer is the answer.
    let p = split_list(prediction.lines().next().unwrap_or(""), task);
    if g.is_empty() {
        return 0.0;
    }
    let hits = match task {
        Task::LI => g.iter().filter(|x| p.contains(x)).count(),
        _ => g.iter().zip(&p).filter(|(a, b)| a == b).count(),
    };
    hits as f64 / g.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_exact_and_case_sensitive() {
        assert!(prefix_match("Kavo phone<|im_end|>", "Kavo phone"));
        assert!(!prefix_match("kavo phone", "Kavo phone"));
        assert!(!prefix_match(" Kavo phone", "Kavo phone"));
        // The reference's `prediction.startswith("")` is true: an empty gold is always matched.
        assert!(prefix_match("anything", ""));
        assert!(prefix_match("", ""));
    }

    #[test]
    fn normalization_forgives_case_space_width_and_separators() {
        assert!(normalized_match(" kavo  PHONE.", "Kavo phone"));
        assert!(normalized_match("Ａｂｃ；d", "abc; d"));
        assert!(normalized_match("「品牌A」", "品牌A"));
        assert!(!normalized_match("Kavo", "Kavo phone"));
        assert!(normalized_match("x", ""));
    }

    #[test]
    fn partial_credit_is_positional_for_df_and_it_and_set_based_for_li() {
        assert_eq!(partial_credit("a; b; c", "a; b; c", Task::DF), 1.0);
        assert!((partial_credit("a; c; b", "a; b; c", Task::DF) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(partial_credit("c; a; b", "a; b; c", Task::LI), 1.0);
        assert!((partial_credit("a; x", "a; b; c", Task::LI) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(partial_credit("A -> B", "A -> B -> C", Task::IT), 2.0 / 3.0);
        assert_eq!(partial_credit("3", "3", Task::MF), 1.0);
        assert_eq!(partial_credit("4", "3", Task::MF), 0.0);
    }
}
