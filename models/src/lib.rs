//! uqa-models: the models of the pre-training stage on candle.
//!
//! - [`embedder`]: feature fusion (mean-pooled embedding bags, concatenation, projection);
//! - [`encoder`]: the [`Encoder`] trait and the sequence encoders (Trm++, SASRec, HSTU,
//!   GRU4Rec, Mamba4Rec);
//! - [`loss`]: the chunked, tied next-item cross-entropy and InfoNCE;
//! - [`pretrain`]: the three assembled into the pre-training model;
//! - [`adapter`]: encoder states to soft-prompt tokens (mean pool, Q-Former);
//! - [`llm`]: the Qwen2 / Llama causal LM that takes soft prompts;
//! - [`soft_prompt`]: encoder + adapter + LM, the model of alignment and evaluation.
//!
//! Model code has no collectives; the trainer wraps models for data parallelism. Every module
//! uses differentiable candle ops only (see DESIGN.md "Known traps" and `layers`).

pub mod adapter;
pub mod aligned;
pub mod checkpoint;
pub mod device;
pub mod embedder;
pub mod encoder;
pub mod error;
pub mod frozen;
pub mod grad_sink;
pub mod init;
mod layers;
pub mod llm;
pub mod loss;
pub mod pretrain;
mod recompute;
pub mod soft_prompt;

pub use embedder::{EmbedderConfig, FeatureEmbedder, InputVariant, mask_tensor};
pub use encoder::{
    BlockLayout, Encoder, EncoderConfig, Gru4Rec, Gru4RecConfig, Hstu, HstuConfig, Mamba4Rec,
    Mamba4RecConfig, Positions, Sasrec, SasrecConfig, TrmConfig, TrmPlusPlus,
};
pub use error::{ModelError, Result};
pub use grad_sink::{GradSink, gather_rows};
pub use init::seeded_var_builder;
pub use layers::seed_dropout;
pub use loss::{
    InfoNceConfig, InfoNceLoss, ItemHead, LossSum, NextItemConfig, NextItemLoss, SampledBceConfig,
    SampledBceLoss,
};
pub use pretrain::{ObjectiveConfig, ParamCount, PretrainConfig, PretrainModel};
