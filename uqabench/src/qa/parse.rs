//! Reading a rendered question back: which template and parameters produced it, and its
//! template key (the wording with the user-specific value removed). Baselines need both: the
//! prior groups training answers by key, the history baseline recomputes an answer from the
//! parameters.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::templates::{Attr, Lang, Question};

/// Stands in for the value of a count question in its key.
pub const VALUE_PLACEHOLDER: &str = "{value}";

/// Every question without an embedded value, in both languages, by its exact text. Larger
/// `n` and `k` than `qa-gen` draws are listed too, so files from other generators with longer
/// windows still parse.
fn fixed_questions() -> &'static HashMap<String, (Question, Lang)> {
    static TABLE: OnceLock<HashMap<String, (Question, Lang)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let all = [Attr::Title, Attr::Category, Attr::Brand, Attr::Shop];
        let mut qs = vec![Question::HistoryLength, Question::NextTitle];
        for attr in all {
            // English ordinals stop at "third"; beyond it the wording would repeat.
            qs.extend((1..=3).map(|n| Question::NthRecent { attr, n }));
            qs.extend((2..=9).map(|k| Question::LastK { attr, k }));
        }
        for attr in Attr::ENTITIES {
            qs.push(Question::NextAttr { attr });
            qs.push(Question::Top3 { attr });
            qs.push(Question::RecentTop { attr });
            qs.push(Question::Transfer { attr });
        }
        let mut table = HashMap::new();
        for lang in [Lang::Zh, Lang::En] {
            for q in &qs {
                table.entry(q.render(lang)).or_insert((q.clone(), lang));
            }
        }
        table
    })
}

/// The count template around its value: (prefix, suffix) per attribute and language.
fn count_templates() -> &'static [(Attr, Lang, String, String)] {
    static TABLE: OnceLock<Vec<(Attr, Lang, String, String)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut out = Vec::new();
        for lang in [Lang::Zh, Lang::En] {
            for attr in Attr::ENTITIES {
                let text = Question::CountValue {
                    attr,
                    value: VALUE_PLACEHOLDER.into(),
                }
                .render(lang);
                let (prefix, suffix) = text
                    .split_once(VALUE_PLACEHOLDER)
                    .expect("the count template embeds its value");
                out.push((attr, lang, prefix.to_string(), suffix.to_string()));
            }
        }
        out
    })
}

impl Question {
    /// The question and language that render exactly to `text`; `None` for other wordings.
    pub fn parse(text: &str) -> Option<(Question, Lang)> {
        if let Some(found) = fixed_questions().get(text) {
            return Some(found.clone());
        }
        count_templates()
            .iter()
            .find(|(_, _, prefix, suffix)| {
                text.len() >= prefix.len() + suffix.len()
                    && text.starts_with(prefix.as_str())
                    && text.ends_with(suffix.as_str())
            })
            .map(|(attr, lang, prefix, suffix)| {
                let value = &text[prefix.len()..text.len() - suffix.len()];
                let q = Question::CountValue {
                    attr: *attr,
                    value: value.to_string(),
                };
                (q, *lang)
            })
    }
}

/// The question's template and attribute (and `n` / `k`), without any user-specific value:
/// questions of one key differ only in whose history they ask about. Count questions embed a
/// value (Chinese 「value」, English "value"), replaced by [`VALUE_PLACEHOLDER`]; every other
/// template is fully determined by its parameters, so the text is its own key. Wordings of
/// other generators fall back to removing every 「…」 and "…" span.
pub fn template_key(text: &str) -> String {
    match Question::parse(text) {
        Some((Question::CountValue { attr, .. }, lang)) => Question::CountValue {
            attr,
            value: VALUE_PLACEHOLDER.into(),
        }
        .render(lang),
        Some(_) => text.to_string(),
        None => strip_quoted(text),
    }
}

/// `text` with the inside of each 「…」 and "…" span replaced by the placeholder; an unclosed
/// quote is kept as it is.
fn strip_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = rest
            .char_indices()
            .find(|(_, c)| *c == '「' || *c == '"')
            .map(|(i, c)| (i, if c == '「' { '」' } else { '"' }, c.len_utf8()));
        let Some((open, close, width)) = next else {
            out.push_str(rest);
            return out;
        };
        let inner = &rest[open + width..];
        let Some(end) = inner.find(close) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..open + width]);
        out.push_str(VALUE_PLACEHOLDER);
        out.push(close);
        rest = &inner[end + close.len_utf8()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rendered_question_parses_back_to_itself() {
        let mut qs = vec![Question::HistoryLength, Question::NextTitle];
        for attr in [Attr::Title, Attr::Category, Attr::Brand, Attr::Shop] {
            qs.push(Question::NthRecent { attr, n: 3 });
            qs.push(Question::LastK { attr, k: 2 });
        }
        for attr in Attr::ENTITIES {
            qs.push(Question::CountValue {
                attr,
                value: "Kavo「x」 \"y\"".into(),
            });
            qs.push(Question::NextAttr { attr });
            qs.push(Question::Top3 { attr });
            qs.push(Question::RecentTop { attr });
            qs.push(Question::Transfer { attr });
        }
        for lang in [Lang::Zh, Lang::En] {
            for q in &qs {
                assert_eq!(Question::parse(&q.render(lang)), Some((q.clone(), lang)));
            }
        }
        assert_eq!(Question::parse("What is the weather?"), None);
    }

    #[test]
    fn keys_drop_count_values_and_keep_everything_else() {
        let count = |value: &str, attr, lang| {
            template_key(
                &Question::CountValue {
                    attr,
                    value: value.into(),
                }
                .render(lang),
            )
        };
        assert_eq!(
            count("红色", Attr::Brand, Lang::Zh),
            count("Kavo", Attr::Brand, Lang::Zh)
        );
        assert_eq!(
            count("红色", Attr::Brand, Lang::Zh),
            "用户浏览过的品牌为「{value}」的商品有多少个？"
        );
        assert_eq!(
            count("Kavo", Attr::Shop, Lang::En),
            "How many times has the user clicked items whose shop is \"{value}\"?"
        );
        assert_ne!(
            count("x", Attr::Brand, Lang::Zh),
            count("x", Attr::Shop, Lang::Zh)
        );
        let nth = |n| {
            template_key(
                &Question::NthRecent {
                    attr: Attr::Brand,
                    n,
                }
                .render(Lang::Zh),
            )
        };
        assert_ne!(nth(1), nth(2));
        let q = Question::Top3 { attr: Attr::Shop }.render(Lang::En);
        assert_eq!(template_key(&q), q);
    }

    #[test]
    fn unknown_wordings_lose_their_quoted_values() {
        assert_eq!(
            template_key("买过「苹果」和「华为」吗？"),
            "买过「{value}」和「{value}」吗？"
        );
        assert_eq!(
            template_key("Has the user clicked \"Kavo\"?"),
            "Has the user clicked \"{value}\"?"
        );
        assert_eq!(template_key("half 「open"), "half 「open");
    }
}
