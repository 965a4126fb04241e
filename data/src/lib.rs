//! uqa's data layer: the reference Arrow layout (REFERENCE.md section 2) read memory-mapped and
//! written atomically, the item catalog, the synthetic Taobao-like generator and the MovieLens
//! importer (both through one preprocessing pipeline), validation and statistics, the
//! distributed sampler and batch collation.
//!
//! Data flows `source -> RawCatalog + Vec<RawUser> -> preprocess -> write_dataset -> Dataset`.

pub mod assets;
pub mod atomic;
pub mod batch;
pub mod bench;
pub mod build;
pub mod catalog;
pub mod chat;
pub mod dataset;
pub mod error;
pub mod movielens;
pub mod preprocess;
pub mod reader;
pub mod rng;
pub mod sampler;
pub mod schema;
pub mod stats;
pub mod synth;
pub mod tokenizer;
pub mod validate;
pub mod writer;

pub use error::{DataError, Result};
