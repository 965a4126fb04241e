//! The seven UQABench sub-tasks, their groups, and how the reference recognises them from the
//! wording of a (Chinese) question.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Task {
    /// Direct feature: attributes of the most recent clicks.
    DF,
    /// Match feature: how often the history matches a value.
    MF,
    /// Item prediction: the title of the next click.
    IP,
    /// Attribute prediction: an attribute of the next click.
    AP,
    /// Long-term interest: the top 3 values of an attribute over the history.
    LI,
    /// Short-term interest: the most frequent value in the recent (held-out) window.
    SI,
    /// Interest transfer: how the favoured value moved over the recent window.
    IT,
}

/// The paper's three groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Group {
    SequenceUnderstanding,
    ActionPrediction,
    InterestPerception,
}

impl Task {
    pub const ALL: [Task; 7] = [
        Task::DF,
        Task::MF,
        Task::IP,
        Task::AP,
        Task::LI,
        Task::SI,
        Task::IT,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::DF => "DF",
            Task::MF => "MF",
            Task::IP => "IP",
            Task::AP => "AP",
            Task::LI => "LI",
            Task::SI => "SI",
            Task::IT => "IT",
        }
    }

    pub fn parse(s: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == s)
    }

    pub fn group(self) -> Group {
        match self {
            Task::DF | Task::MF => Group::SequenceUnderstanding,
            Task::IP | Task::AP => Group::ActionPrediction,
            Task::LI | Task::SI | Task::IT => Group::InterestPerception,
        }
    }

    /// Whether the answer comes from the held-out future rather than the history.
    pub fn uses_future(self) -> bool {
        matches!(self, Task::IP | Task::AP | Task::SI | Task::IT)
    }

    /// The reference's recognition: Chinese fragments tested in this order (REFERENCE.md
    /// section 5). `None` when no fragment matches.
    pub fn recognise(question: &str) -> Option<Task> {
        const RULES: [(Task, &[&str]); 7] = [
            (Task::DF, &["次浏览的商品的", "次（从1开始计数）浏览的"]),
            (Task::MF, &["长度是多少？", "的商品有多少个"]),
            (Task::IP, &["下一个可能点击的商品的标题是什么"]),
            (Task::AP, &["用户下一个可能点击的商品的"]),
            (Task::LI, &["用户最感兴趣的3个"]),
            (Task::SI, &["用户近期最感兴趣的"]),
            (Task::IT, &["偏好的转移路径是什么"]),
        ];
        RULES
            .iter()
            .find(|(_, fragments)| fragments.iter().any(|f| question.contains(f)))
            .map(|(t, _)| *t)
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
