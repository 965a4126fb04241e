//! Naming the silent rank after a collective timed out, shared by the backends whose transport
//! cannot say it (the ring only knows its neighbour; MPI and NCCL know nothing). Ranks that timed
//! out report to the rendezvous store; the ranks that never report within a short window are the
//! silent ones.

use std::time::Duration;

use crate::store::Store;

/// How long ranks that timed out wait for each other's reports before naming the silent ones.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);

/// What the store says about a timed-out collective.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Diagnosis {
    /// Every rank reported a timeout in the same collective: nobody is simply late.
    AllTimedOut,
    /// These ranks never reported (never reached the collective, or died).
    Silent(Vec<usize>),
    /// The store is gone or failed: no diagnosis.
    Unknown,
}

/// Reports this rank's timeout in collective `seq` and waits up to [`WINDOW`] for the others.
pub(crate) fn diagnose(store: &Store, op: &str, seq: u64, rank: usize, world: usize) -> Diagnosis {
    let store = store
        .with_prefix(&format!("stall/{seq}/"))
        .with_op_timeout(WINDOW);
    if store.set(&rank.to_string(), op.as_bytes()).is_err() {
        return Diagnosis::Unknown;
    }
    let keys: Vec<String> = (0..world).map(|r| r.to_string()).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    if store.wait(&refs, WINDOW).is_ok() {
        return Diagnosis::AllTimedOut;
    }
    // A rank is silent only if the store says so; if the store itself is gone (its host
    // exited), there is no diagnosis to add.
    let mut silent = Vec::new();
    for (r, key) in keys.iter().enumerate() {
        match store.check(&[key]) {
            Ok(true) => {}
            Ok(false) => silent.push(r),
            Err(_) => return Diagnosis::Unknown,
        }
    }
    if silent.is_empty() {
        // Everyone reported between the wait and the checks.
        Diagnosis::AllTimedOut
    } else {
        Diagnosis::Silent(silent)
    }
}
