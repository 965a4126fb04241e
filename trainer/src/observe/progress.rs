//! The human progress line of rank 0. On a terminal: an `indicatif` bar with the step, loss,
//! throughput and ETA, redrawn in place. Otherwise (log files, Slurm output): one plain line on
//! the first step, every `every` steps and on the last, so logs stay short and greppable.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{EvalReport, Finished, Observer};
use crate::engine::{Rate, StepReport, Units};
use crate::error::Result;

pub struct Progress {
    units: Units,
    every: u64,
    /// The bar, on a terminal (created at the first step, when the run's length is known).
    bar: Option<ProgressBar>,
    interactive: bool,
    started: Instant,
}

impl Progress {
    /// Plain lines every `every` steps when stderr is not a terminal.
    pub fn new(units: Units, every: u64) -> Self {
        Self {
            units,
            every: every.max(1),
            bar: None,
            interactive: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn summary(&self, r: &StepReport) -> String {
        let seconds = r.seconds.max(1e-9);
        let rate = match self.units.rate {
            Rate::Samples(unit) => format!("{:.1} {unit}", r.global_samples / seconds),
            Rate::Inputs(unit) => format!("{:.0} {unit}", r.global_inputs / seconds),
        };
        format!(
            "epoch {}/{} loss {:.4} lr {:.2e} |g| {:.3} {rate}",
            r.epoch + 1,
            r.epochs,
            r.loss,
            r.lr,
            r.grad_norm
        )
    }

    /// A finished line: above the bar on a terminal, plain otherwise.
    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Observer for Progress {
    fn step(&mut self, r: &StepReport) -> Result<()> {
        if !self.interactive {
            if r.step == 1 || r.step.is_multiple_of(self.every) || r.step == r.total_steps {
                eprintln!("step {}/{} {}", r.step, r.total_steps, self.summary(r));
            }
            return Ok(());
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar =
                ProgressBar::with_draw_target(Some(r.total_steps), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:24} {pos}/{len} steps {msg} [{elapsed_precise}, ETA {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            // A resumed run starts where its checkpoint left off; the ETA counts from here.
            bar.set_position(r.step - 1);
            bar.reset_eta();
            bar
        });
        bar.set_position(r.step);
        let msg = self.summary(r);
        if let Some(bar) = &self.bar {
            bar.set_message(msg);
        }
        Ok(())
    }

    fn eval(&mut self, r: &EvalReport) -> Result<()> {
        self.line(&format!("{} eval: {}", r.label, r.metrics.summary()));
        Ok(())
    }

    fn finish(&mut self, r: &Finished) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!(
            "{}: {} steps, loss {:.4} -> {:.4}, {:.1} s",
            r.stage,
            r.steps,
            r.first_loss,
            r.last_loss,
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
