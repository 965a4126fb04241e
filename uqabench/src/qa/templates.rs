//! Question wording, in Chinese (the reference's language; every Chinese template contains the
//! reference's recognition fragment verbatim, tested) and in English. docs/TASKS.md lists each
//! template with its answer rule.

use serde::{Deserialize, Serialize};

use super::task::Task;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    Zh,
    En,
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zh" => Ok(Lang::Zh),
            "en" => Ok(Lang::En),
            other => Err(format!("unknown language {other:?} (expected zh or en)")),
        }
    }
}

/// Item attributes questions ask about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attr {
    Title,
    Category,
    Brand,
    Shop,
}

impl Attr {
    /// Attributes for questions about single values (everything but titles is also countable).
    pub const ENTITIES: [Attr; 3] = [Attr::Category, Attr::Brand, Attr::Shop];

    fn zh(self) -> &'static str {
        match self {
            Attr::Title => "标题",
            Attr::Category => "类目",
            Attr::Brand => "品牌",
            Attr::Shop => "店铺",
        }
    }

    fn en(self) -> &'static str {
        match self {
            Attr::Title => "title",
            Attr::Category => "category",
            Attr::Brand => "brand",
            Attr::Shop => "shop",
        }
    }

    fn en_plural(self) -> &'static str {
        match self {
            Attr::Title => "titles",
            Attr::Category => "categories",
            Attr::Brand => "brands",
            Attr::Shop => "shops",
        }
    }
}

/// What a question asks, with its parameters; rendered in either language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// DF: the attribute of the `n`-th most recent click (n = 1 is the latest).
    NthRecent { attr: Attr, n: usize },
    /// DF: the attribute of each of the last `k` clicks, oldest first.
    LastK { attr: Attr, k: usize },
    /// MF: how many clicks have `attr` equal to `value`.
    CountValue { attr: Attr, value: String },
    /// MF: the length of the click history.
    HistoryLength,
    /// IP: the title of the next click.
    NextTitle,
    /// AP: the attribute of the next click.
    NextAttr { attr: Attr },
    /// LI: the three values of `attr` the user clicked most, most first.
    Top3 { attr: Attr },
    /// SI: the most frequent value of `attr` in the recent window.
    RecentTop { attr: Attr },
    /// IT: how the favoured value of `attr` moved over the recent window.
    Transfer { attr: Attr },
}

fn zh_ordinal(n: usize) -> String {
    format!("倒数第{n}")
}

fn en_ordinal(n: usize) -> &'static str {
    match n {
        1 => "most recently",
        2 => "second most recently",
        _ => "third most recently",
    }
}

impl Question {
    pub fn task(&self) -> Task {
        match self {
            Question::NthRecent { .. } | Question::LastK { .. } => Task::DF,
            Question::CountValue { .. } | Question::HistoryLength => Task::MF,
            Question::NextTitle => Task::IP,
            Question::NextAttr { .. } => Task::AP,
            Question::Top3 { .. } => Task::LI,
            Question::RecentTop { .. } => Task::SI,
            Question::Transfer { .. } => Task::IT,
        }
    }

    pub fn render(&self, lang: Lang) -> String {
        match lang {
            Lang::Zh => self.zh(),
            Lang::En => self.en(),
        }
    }

    fn zh(&self) -> String {
        match self {
            Question::NthRecent { attr, n } => {
                format!("用户{}次浏览的商品的{}是什么？", zh_ordinal(*n), attr.zh())
            }
            Question::LastK { attr, k } => format!(
                "用户最近{k}次（从1开始计数）浏览的商品的{}按时间顺序依次是什么？",
                attr.zh()
            ),
            Question::CountValue { attr, value } => {
                format!("用户浏览过的{}为「{value}」的商品有多少个？", attr.zh())
            }
            Question::HistoryLength => "用户的浏览序列长度是多少？".to_string(),
            Question::NextTitle => "用户下一个可能点击的商品的标题是什么？".to_string(),
            Question::NextAttr { attr } => {
                format!("用户下一个可能点击的商品的{}是什么？", attr.zh())
            }
            Question::Top3 { attr } => {
                format!(
                    "用户最感兴趣的3个{}是什么？请按兴趣从高到低排列。",
                    attr.zh()
                )
            }
            Question::RecentTop { attr } => format!("用户近期最感兴趣的{}是什么？", attr.zh()),
            Question::Transfer { attr } => {
                format!("用户对{}偏好的转移路径是什么？", attr.zh())
            }
        }
    }

    fn en(&self) -> String {
        match self {
            Question::NthRecent { attr, n } => format!(
                "What is the {} of the item the user clicked {}?",
                attr.en(),
                en_ordinal(*n)
            ),
            Question::LastK { attr, k } => format!(
                "What are the {} of the last {k} items the user clicked, oldest first?",
                attr.en_plural()
            ),
            Question::CountValue { attr, value } => format!(
                "How many times has the user clicked items whose {} is \"{value}\"?",
                attr.en()
            ),
            Question::HistoryLength => "How many items has the user clicked?".to_string(),
            Question::NextTitle => {
                "What is the title of the next item the user is likely to click?".to_string()
            }
            Question::NextAttr { attr } => {
                format!(
                    "What is the {} of the next item the user is likely to click?",
                    attr.en()
                )
            }
            Question::Top3 { attr } => format!(
                "Which 3 {} is the user most interested in, from most to least?",
                attr.en_plural()
            ),
            Question::RecentTop { attr } => {
                format!(
                    "Which {} is the user most interested in recently?",
                    attr.en()
                )
            }
            Question::Transfer { attr } => {
                format!(
                    "How has the user's {} preference changed recently?",
                    attr.en()
                )
            }
        }
    }
}

/// Separator of list answers (DF last-k, LI) and of trajectory steps (IT).
pub const LIST_SEPARATOR: &str = "; ";
pub const TRAJECTORY_SEPARATOR: &str = " -> ";

#[cfg(test)]
mod tests {
    use super::*;

    fn all_questions() -> Vec<Question> {
        let mut q = Vec::new();
        for attr in [Attr::Title, Attr::Category, Attr::Brand, Attr::Shop] {
            q.push(Question::NthRecent { attr, n: 2 });
            q.push(Question::LastK { attr, k: 3 });
        }
        for attr in Attr::ENTITIES {
            q.push(Question::CountValue {
                attr,
                value: "x".into(),
            });
            q.push(Question::NextAttr { attr });
            q.push(Question::Top3 { attr });
            q.push(Question::RecentTop { attr });
            q.push(Question::Transfer { attr });
        }
        q.push(Question::HistoryLength);
        q.push(Question::NextTitle);
        q
    }

    /// Every Chinese template is recognised as its own task by the reference's rules.
    #[test]
    fn chinese_templates_carry_the_reference_fragments() {
        for q in all_questions() {
            let text = q.render(Lang::Zh);
            assert_eq!(Task::recognise(&text), Some(q.task()), "{text}");
        }
    }

    #[test]
    fn english_templates_are_distinct_and_unrecognised_by_the_chinese_rules() {
        let texts: Vec<String> = all_questions().iter().map(|q| q.render(Lang::En)).collect();
        for t in &texts {
            assert_eq!(Task::recognise(t), None, "{t}");
        }
        let unique: std::collections::HashSet<_> = texts.iter().collect();
        assert_eq!(unique.len(), texts.len());
    }
}
