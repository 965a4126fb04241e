//! `poll(2)` over a few sockets: how the ring engine waits for "readable from prev or writable to
//! next" in one thread, with the collective's deadline as the timeout.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub(crate) const READ: i16 = libc::POLLIN;
pub(crate) const WRITE: i16 = libc::POLLOUT;

/// Waits until one of `fds` (fd, events) is ready or `timeout` passes; returns the number of
/// ready descriptors (0 on timeout). Interrupted waits count as "something may be ready".
pub(crate) fn poll(fds: &[(RawFd, i16)], timeout: Duration) -> io::Result<usize> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    // Round up so a sub-millisecond remainder does not spin with timeout 0.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfds` is a live, exclusively borrowed array of `pfds.len()` initialised pollfd
    // structs; poll only reads `fd`/`events` and writes `revents` within that array, and does not
    // retain the pointer after returning.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(1);
        }
        return Err(e);
    }
    Ok(n as usize)
}
