//! The human progress line of rank 0: rewritten in place on a terminal, one plain line per
//! step otherwise (logs, Slurm output files).

use std::io::IsTerminal;
use std::time::Instant;

use super::{EvalReport, Finished, Observer};
use crate::engine::{Rate, StepReport, Units};
use crate::error::Result;

pub struct Progress {
    units: Units,
    interactive: bool,
    started: Instant,
}

impl Progress {
    pub fn new(units: Units) -> Self {
        Self {
            units,
            interactive: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn line(&self, text: &str, last: bool) {
        match (self.interactive, last) {
            (true, false) => eprint!("\r\x1b[2K{text}"),
            (true, true) => eprintln!("\r\x1b[2K{text}"),
            (false, _) => eprintln!("{text}"),
        }
    }
}

impl Observer for Progress {
    fn step(&mut self, r: &StepReport) -> Result<()> {
        let seconds = r.seconds.max(1e-9);
        let rate = match self.units.rate {
            Rate::Samples(unit) => format!("{:.1} {unit}", r.global_samples / seconds),
            Rate::Inputs(unit) => format!("{:.0} {unit}", r.global_inputs / seconds),
        };
        self.line(
            &format!(
                "epoch {}/{} step {}/{} loss {:.4} lr {:.2e} |g| {:.3} {rate}",
                r.epoch + 1,
                r.epochs,
                r.step,
                r.total_steps,
                r.loss,
                r.lr,
                r.grad_norm
            ),
            false,
        );
        Ok(())
    }

    fn eval(&mut self, r: &EvalReport) -> Result<()> {
        self.line(&format!("{} eval: {}", r.label, r.metrics.summary()), true);
        Ok(())
    }

    fn finish(&mut self, r: &Finished) -> Result<()> {
        self.line(
            &format!(
                "{}: {} steps, loss {:.4} -> {:.4}, {:.1} s",
                r.stage,
                r.steps,
                r.first_loss,
                r.last_loss,
                self.started.elapsed().as_secs_f64()
            ),
            true,
        );
        Ok(())
    }
}
