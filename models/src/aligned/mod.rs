//! A soft-prompt model as an alignment run describes it: the run's model sections (`spec`), the
//! model built from them with the frozen parts loaded from their sources and the trained
//! variables from the run's checkpoint (`build`), and the question files rendered for it
//! (`questions`). Alignment trains it (`uqa_trainer::align`); evaluation loads it
//! (`uqa_evaluator`) without depending on training.

pub mod build;
pub mod questions;
pub mod spec;

pub use build::{AlignModel, LlmParts, build, encoder_config, load_aligned, load_llm};
pub use questions::{
    QuestionSet, Render, TextHistory, load_questions, text_history, title_vectors,
};
pub use spec::{
    AlignData, AlignedSpec, EVAL_QUESTIONS, LlmSource, PromptConfig, Strategy, TRAIN_QUESTIONS,
    TinyShape,
};
