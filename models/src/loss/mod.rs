//! Training objectives: the chunked full-softmax next-item cross-entropy ("SL") and its pieces,
//! InfoNCE with in-batch and sampled negatives ("CL"), and the SASRec paper's sampled binary
//! cross-entropy; for answers, token-level unlikelihood beside the cross-entropy.

pub mod chunked;
mod chunked_cpu;
mod infonce;
mod next_item;
mod row_kernels;
mod sampled_bce;
mod unlikelihood;

pub use chunked::{
    DEFAULT_CHUNK, chunked_cross_entropy_sum, chunked_logsumexp, naive_cross_entropy_sum,
};
pub use infonce::{InfoNceConfig, InfoNceLoss, uniform_negatives};
pub use next_item::{
    ItemHead, LossSum, NextItemConfig, NextItemLoss, NextItemTargets, next_item_targets,
};
pub use sampled_bce::{SampledBceConfig, SampledBceLoss};
pub use unlikelihood::{AnswerLoss, Candidates, SpanTokens, unlikelihood_sum};
