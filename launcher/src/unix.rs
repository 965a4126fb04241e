//! The launcher's only contact with libc (and its only `unsafe`): recording SIGINT/SIGTERM for the
//! supervision loop to forward, signalling a rank's whole process group (a shell wrapper and its
//! children die together), and noticing a rank's exit without reaping it, so its pid, and hence its
//! process group id, cannot be reused before we have signalled the group for the last time.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

/// The last termination signal received and not yet handled (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    PENDING.store(sig, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to [`take_pending`] instead of killing the launcher.
pub fn install() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero `sigaction` is a valid value of this plain C struct (empty mask, no
        // flags); we then set a handler that is an `extern "C" fn(c_int)` doing only an atomic
        // store, which is async-signal-safe; `sigaction` reads our struct during the call only and
        // we pass a null pointer for the old action.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal received since the last call, if any.
pub fn take_pending() -> Option<i32> {
    match PENDING.swap(0, Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Sends `sig` to the process group led by `pid` (ranks are started as group leaders).
/// A group that no longer exists is not an error.
pub fn kill_group(pid: u32, sig: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // `-pid` must address a group we created: never 0 (our own group) or -1 (every process).
    if pid > 1 {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the caller keeps
        // the rank unreaped (a zombie at worst) until after its last signal, so the pid, and with
        // it the group id, cannot have been reused by an unrelated process.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

/// "SIGTERM" for 15, etc.; the number for unusual signals.
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}

/// Blocks until child `pid` exits and returns its status, leaving it a zombie (not reaped), so
/// its pid and process group id stay reserved until `Child::wait` reaps it. None if `pid` is not
/// (or no longer) our child.
pub fn wait_exit(pid: u32) -> Option<ExitStatus> {
    let id = libc::id_t::try_from(pid).ok()?;
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct; waitid writes
        // into the struct we exclusively borrow, for the duration of the call only. WNOWAIT
        // leaves the child waitable, so std's `Child::wait` still reaps it later. The si_status
        // accessor reads the union field waitid fills for the CLD_* codes it reports on success.
        let (rc, code, status) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT);
            (rc, info.si_code, if rc == 0 { info.si_status() } else { 0 })
        };
        if rc != 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        return Some(match code {
            libc::CLD_EXITED => ExitStatus::from_raw((status & 0xff) << 8),
            // Killed or dumped: a raw wait status holds the signal number in its low bits.
            _ => ExitStatus::from_raw(status & 0x7f),
        });
    }
}
