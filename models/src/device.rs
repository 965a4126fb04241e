//! The candle device a process computes on, opened once from the resolved runtime's device
//! (`uqa_comm::DeviceKind`, passed here as its CUDA ordinal so that models need no collectives).
//!
//! Open it once per process and pass clones: candle gives every `Device::new_cuda` call a device
//! of its own, and tensors of two such devices refuse to combine, even on one GPU.

pub use candle_core::Device;

use crate::error::{ModelError, Result};

/// The CPU for `None`, `cuda:ORDINAL` otherwise; an error naming `runtime.device` when this
/// build has no CUDA or the device does not open.
pub fn open(cuda_ordinal: Option<usize>) -> Result<Device> {
    let Some(ordinal) = cuda_ordinal else {
        return Ok(Device::Cpu);
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(ModelError::config(
            "runtime.device",
            format!(
                "cuda:{ordinal}: this build of uqa has no CUDA support (build with `--features cuda`)"
            ),
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        // candle appends a backtrace to driver errors: the first line says what happened.
        let e = e.to_string();
        let what = e.lines().next().unwrap_or_default().trim().to_string();
        ModelError::config(
            "runtime.device",
            format!("cuda:{ordinal} does not open: {what}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_opens_and_cuda_needs_a_cuda_build() {
        assert!(open(None).unwrap().is_cpu());
        if !candle_core::utils::cuda_is_available() {
            let e = open(Some(0)).unwrap_err().to_string();
            assert!(
                e.contains("runtime.device") && e.contains("no CUDA support"),
                "{e}"
            );
        }
    }
}
