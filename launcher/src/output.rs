//! Rank-prefixed output: every line a rank writes to stdout or stderr is copied to the launcher's
//! stdout or stderr as `[rank3]:line`, torchrun's format. Lines are written whole under the stream
//! lock, so ranks never interleave within a line.

use std::io::{BufRead, BufReader, Read, Write};
use std::thread::JoinHandle;

/// Which of the launcher's streams a pipe is copied to.
#[derive(Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Copies `pipe` line by line with the rank prefix until it closes.
pub fn forward(
    pipe: impl Read + Send + 'static,
    rank: usize,
    to: Stream,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("uqa-launch-out-{rank}"))
        .spawn(move || {
            let prefix = format!("[rank{rank}]:");
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::with_capacity(256);
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                // A closed launcher stdout (e.g. piped into `head`) must not stop the rank: keep
                // draining so it never blocks on a full pipe.
                let _ = match to {
                    Stream::Stdout => write_line(&mut std::io::stdout().lock(), &prefix, &line),
                    Stream::Stderr => write_line(&mut std::io::stderr().lock(), &prefix, &line),
                };
            }
        })
}

fn write_line(w: &mut impl Write, prefix: &str, line: &[u8]) -> std::io::Result<()> {
    w.write_all(prefix.as_bytes())?;
    w.write_all(line)?;
    w.flush()
}
