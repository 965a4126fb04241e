//! What `uqa bench scan` and `uqa bench sampler` measure (docs/BENCHMARKS.md, "Data layer"), as
//! library calls that return their figures; the binary parses flags and prints. The process
//! memory readings every benchmark reports live in [`memory`].

pub mod memory;
pub mod sampler;
pub mod scan;
