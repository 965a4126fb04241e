//! Optimisation: parameters and flat gradient buffers, AdamW with saved state, schedules,
//! clipping by the global norm, ZeRO-1 partitioning.

pub mod adamw;
pub mod grads;
pub mod schedule;
pub mod zero;

pub use adamw::{AdamW, AdamWConfig};
pub use grads::{Grads, Params, clip_factor, with_f32};
pub use schedule::Schedule;
pub use zero::{Shard, partition};
