//! Training objectives: the chunked full-softmax next-item cross-entropy ("SL") and its pieces,
//! and InfoNCE with in-batch and sampled negatives ("CL").

pub mod chunked;
mod chunked_cpu;
mod infonce;
mod next_item;

pub use chunked::{
    DEFAULT_CHUNK, chunked_cross_entropy_sum, chunked_logsumexp, naive_cross_entropy_sum,
};
pub use infonce::{InfoNceConfig, InfoNceLoss, uniform_negatives};
pub use next_item::{LossSum, NextItemConfig, NextItemLoss, NextItemTargets, next_item_targets};
