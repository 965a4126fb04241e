//! The history baseline: each question answered by a fixed rule over the context sequence the
//! encoder reads, with the answer rules of `qa-gen` (`qa::rules`). It shows how much of each
//! sub-task the context alone determines, the headroom a model reading users can aim for.
//!
//! DF, MF and LI are defined on the context (docs/TASKS.md), so the rules reproduce their gold
//! answers exactly and score 100%. IP, AP, SI and IT ask about the held-out future; the rules
//! extrapolate from the most recent clicks.

use uqa_data::catalog::ItemCatalog;

use crate::qa::rules::{count_text, last_k, nth_recent, top_k, trajectory};
use crate::qa::templates::{Attr, Question};

/// Recent clicks whose most frequent item (IP) or value (AP) is the guess for the next click.
pub const NEXT_WINDOW: usize = 5;
/// Recent clicks whose most frequent value is the guess for the short-term interest (SI).
pub const RECENT_WINDOW: usize = 10;
/// The interest-transfer guess (IT) applies the trajectory rule to the last ninth of the
/// context (at least this many clicks): the held-out tail is a tenth of a whole sequence, about
/// a ninth of its context.
pub const TRANSFER_MIN_WINDOW: usize = 3;

fn last(clicks: &[u32], n: usize) -> &[u32] {
    &clicks[clicks.len().saturating_sub(n)..]
}

/// The rule's answer to `question` from `context` (oldest first); `None` when the context is
/// too short for the question.
pub fn history_answer(
    catalog: &ItemCatalog,
    context: &[u32],
    question: &Question,
) -> Option<String> {
    match question {
        Question::NthRecent { attr, n } => nth_recent(catalog, context, *attr, *n),
        Question::LastK { attr, k } => last_k(catalog, context, *attr, *k),
        Question::CountValue { attr, value } => {
            Some(count_text(catalog, context, *attr, value).to_string())
        }
        Question::HistoryLength => Some(context.len().to_string()),
        // The most clicked item of the last few, ties to the most recent: with no repeat, the
        // last item.
        Question::NextTitle => top_k(catalog, last(context, NEXT_WINDOW), Attr::Title, 1),
        Question::NextAttr { attr } => top_k(catalog, last(context, NEXT_WINDOW), *attr, 1),
        Question::Top3 { attr } => top_k(catalog, context, *attr, 3),
        Question::RecentTop { attr } => top_k(catalog, last(context, RECENT_WINDOW), *attr, 1),
        Question::Transfer { attr } => {
            let window = last(context, context.len().div_ceil(9).max(TRANSFER_MIN_WINDOW));
            // A window whose favourite never changes has no trajectory: widen to the whole
            // context, then settle for the window's favourite.
            trajectory(catalog, window, *attr)
                .or_else(|| trajectory(catalog, context, *attr))
                .or_else(|| top_k(catalog, window, *attr, 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uqa_data::catalog::ItemAttrs;

    /// Items 1..=9; item k has category c(k mod 3), brand b(k) and title t(k).
    fn catalog() -> ItemCatalog {
        let mut c = ItemCatalog::with_padding();
        for k in 0..3 {
            c.cates.push(format!("c{k}"), &[]);
        }
        for k in 1..=9u32 {
            c.brands.push(format!("b{k}"), &[]);
            c.shops.push(format!("s{k}"), &[]);
            c.sellers.push(format!("p{k}"), &[]);
            c.titles.push(format!("t{k}"), &[]);
            c.items.push(ItemAttrs {
                cate: 1 + k % 3,
                brand: k,
                shop: k,
                seller: k,
            });
        }
        c
    }

    fn ask(context: &[u32], q: Question) -> Option<String> {
        history_answer(&catalog(), context, &q)
    }

    #[test]
    fn context_tasks_are_the_exact_rules() {
        let ctx = [1, 2, 4, 5, 7, 3];
        let attr = Attr::Category;
        assert_eq!(
            ask(&ctx, Question::NthRecent { attr, n: 2 }),
            Some("c1".into())
        );
        assert_eq!(
            ask(
                &ctx,
                Question::LastK {
                    attr: Attr::Title,
                    k: 3
                }
            ),
            Some("t5; t7; t3".into())
        );
        // Items 1, 4, 7 have category c1.
        let count = Question::CountValue {
            attr,
            value: "c1".into(),
        };
        assert_eq!(ask(&ctx, count), Some("3".into()));
        assert_eq!(ask(&ctx, Question::HistoryLength), Some("6".into()));
        // c1 x3, c2 x2 (items 2, 5), c0 x1 (item 3).
        assert_eq!(
            ask(&ctx, Question::Top3 { attr }),
            Some("c1; c2; c0".into())
        );
        assert_eq!(ask(&ctx[..2], Question::Top3 { attr }), None);
    }

    #[test]
    fn future_tasks_extrapolate_from_recent_clicks() {
        // The last five clicks: 2 8 2 9 3 -> item 2 twice.
        let ctx = [1, 1, 1, 1, 2, 8, 2, 9, 3];
        assert_eq!(ask(&ctx, Question::NextTitle), Some("t2".into()));
        // No repeat among the last five: the latest.
        assert_eq!(
            ask(&[1, 2, 3, 4, 5, 6], Question::NextTitle),
            Some("t6".into())
        );
        // Last five categories: c2 c2 c2 c0 c0 -> c2.
        let attr = Attr::Category;
        assert_eq!(ask(&ctx, Question::NextAttr { attr }), Some("c2".into()));
        // Short-term interest over the last ten (here all nine): c1 x4, c2 x3, c0 x2.
        assert_eq!(ask(&ctx, Question::RecentTop { attr }), Some("c1".into()));
        // Transfer over the last 3 (9 / 9 rounds up to 1, at least 3): brands b2 -> b9 -> b3.
        assert_eq!(
            ask(&ctx, Question::Transfer { attr: Attr::Brand }),
            Some("b2 -> b9 -> b3".into())
        );
        // One category over the window (c0): the whole context's thirds, c1 | c2 | c0.
        let flat = [1, 4, 7, 1, 2, 2, 5, 8, 9, 9, 9, 9];
        assert_eq!(
            ask(&flat, Question::Transfer { attr }),
            Some("c1 -> c2 -> c0".into())
        );
    }
}
