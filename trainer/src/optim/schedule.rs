//! Learning-rate schedules: constant (the reference's), and linear warmup then cosine decay.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    #[default]
    Constant,
    /// Linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio * lr` at the last
    /// step.
    WarmupCosine {
        warmup_steps: u64,
        #[serde(default)]
        min_lr_ratio: f64,
    },
}

impl Schedule {
    /// Learning rate of step `step` (0-based) of `total` steps.
    pub fn lr(&self, base: f64, step: u64, total: u64) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::WarmupCosine {
                warmup_steps,
                min_lr_ratio,
            } => {
                if step < warmup_steps {
                    return base * (step + 1) as f64 / warmup_steps as f64;
                }
                let span = total.saturating_sub(warmup_steps).max(1) as f64;
                let progress = ((step - warmup_steps) as f64 / span).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                base * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = Schedule::WarmupCosine {
            warmup_steps: 10,
            min_lr_ratio: 0.1,
        };
        assert!((s.lr(1.0, 0, 110) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 9, 110) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 10, 110) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 60, 110) - 0.55).abs() < 1e-12);
        assert!((s.lr(1.0, 110, 110) - 0.1).abs() < 1e-12);
        assert_eq!(Schedule::Constant.lr(0.4, 77, 100), 0.4);
    }
}
