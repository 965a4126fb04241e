//! Training telemetry in one place: a JSONL metrics log (one object per logged step or
//! evaluation) and a progress line on interactive terminals. Values arrive already reduced
//! across ranks; only rank 0 holds a real sink, the other ranks a silent one.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Result, TrainError};

pub struct MetricsLog {
    file: Option<(PathBuf, File)>,
    interactive: bool,
}

impl MetricsLog {
    /// Append to `path` (a resumed run continues its log).
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(Self {
            file: Some((path.to_path_buf(), file)),
            interactive: std::io::stderr().is_terminal(),
        })
    }

    /// A sink that records nothing (ranks other than 0).
    /// A run's log: rank 0 saves the resolved config beside its outputs and appends to
    /// `metrics.jsonl`; the other ranks log nothing.
    pub fn for_run(lead: bool, out: &Path, config_toml: &str) -> Result<Self> {
        if !lead {
            return Ok(Self::silent());
        }
        uqa_data::atomic::write_atomic(out.join("config.toml"), config_toml.as_bytes())?;
        Self::open(&out.join("metrics.jsonl"))
    }

    pub fn silent() -> Self {
        Self {
            file: None,
            interactive: false,
        }
    }

    pub fn record(&mut self, value: &Value) -> Result<()> {
        if let Some((path, f)) = &mut self.file {
            writeln!(f, "{value}").map_err(|e| TrainError::io(path, e))?;
        }
        Ok(())
    }

    /// A human line: rewritten in place on a terminal, printed as a line otherwise.
    pub fn progress(&self, line: &str, final_line: bool) {
        if self.file.is_none() {
            return;
        }
        if self.interactive && !final_line {
            eprint!("\r\x1b[2K{line}");
        } else if self.interactive {
            eprintln!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}
