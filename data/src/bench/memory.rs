//! Process and machine memory as Linux reports it (`/proc`), for benchmarks: peak resident set,
//! its heap and file-backed parts, and whether an estimate fits the machine at all.

/// Peak resident set size of this process so far, in MB (VmHWM); 0 where `/proc` is missing.
pub fn peak_rss_mb() -> f64 {
    status_field_mb("VmHWM:")
}

/// Current resident memory split into anonymous (heap) and file-backed (mapped files) MB.
pub fn rss_split_mb() -> (f64, f64) {
    (status_field_mb("RssAnon:"), status_field_mb("RssFile:"))
}

fn status_field_mb(name: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The machine's memory in bytes (MemTotal), if the kernel says.
pub fn mem_total_bytes() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()?;
    Some(kb * 1024.0)
}

/// Refuses a benchmark whose memory estimate (a lower bound) exceeds the machine's memory,
/// naming `what` asked for it. Each size setting can be in range while several large ones
/// together ask for more than the machine has, and the allocation would end in the OOM killer's
/// SIGKILL instead of an error.
pub fn check_fits(bytes: f64, what: &str) -> Result<(), String> {
    match mem_total_bytes() {
        Some(total) if bytes > total => Err(format!(
            "{what}: need at least {:.1} GB of memory, more than this machine's {:.1} GB",
            bytes / 1e9,
            total / 1e9
        )),
        _ => Ok(()),
    }
}
