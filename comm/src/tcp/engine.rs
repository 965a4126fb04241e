//! Executes a ring [`Schedule`] over the two sockets of a rank (to the next rank, from the previous
//! one) in a single thread: both sockets are non-blocking, and the loop writes whatever the kernel
//! accepts, reads whatever has arrived (reducing it at once through a small scratch buffer that
//! stays in cache), and sleeps in `poll` only when neither direction can move. Sending and
//! receiving therefore overlap fully without threads, and the deadline is the poll timeout, so a
//! silent peer produces an error naming it instead of a hang.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::poll::{READ, WRITE, poll};
use super::schedule::Schedule;
use crate::element::{Element, as_bytes, as_bytes_mut};
use crate::error::CommError;

/// Bytes received per reduction pass: big enough to amortise syscalls, small enough for L2.
const SCRATCH_BYTES: usize = 256 << 10;

/// The two ring connections of one rank.
pub(crate) struct Links {
    pub rank: usize,
    pub world: usize,
    pub next_rank: usize,
    pub prev_rank: usize,
    /// We only write to `next` and only read from `prev`.
    pub next: TcpStream,
    pub prev: TcpStream,
}

/// Why the engine stopped waiting: the caller turns this into a diagnosis.
pub(crate) enum Stall {
    /// Nothing arrived from the previous rank before the deadline.
    Recv,
    /// The next rank did not drain our data before the deadline.
    Send,
}

pub(crate) enum EngineError {
    Timeout(Stall),
    Comm(CommError),
}

impl From<CommError> for EngineError {
    fn from(e: CommError) -> Self {
        Self::Comm(e)
    }
}

/// Runs `sched` on `buf`; `op` names the collective in errors.
pub(crate) fn run<T: Element>(
    links: &mut Links,
    buf: &mut [T],
    sched: &Schedule,
    op: &'static str,
    deadline: Instant,
) -> std::result::Result<(), EngineError> {
    let esz = size_of::<T>();
    let bytes = |r: &std::ops::Range<usize>| r.len() * esz;
    let max_reduce = sched
        .recvs
        .iter()
        .filter(|s| s.reduce.is_some())
        .map(|s| bytes(&s.range))
        .max()
        .unwrap_or(0);
    let mut scratch = vec![T::default(); max_reduce.min(SCRATCH_BYTES).div_ceil(esz)];
    let scratch_bytes = scratch.len() * esz;

    let (rank, world, next_rank, prev_rank) =
        (links.rank, links.world, links.next_rank, links.prev_rank);
    let closed = |peer| CommError::PeerClosed { op, peer, rank };
    let io = |peer, source| CommError::PeerIo {
        op,
        peer,
        rank,
        source,
    };

    // Progress: current step and bytes done within it (for reductions: bytes reduced; `fill`
    // counts bytes waiting in the scratch buffer, including a partial element).
    let (mut si, mut sdone) = (0usize, 0usize);
    let (mut ri, mut rdone, mut fill) = (0usize, 0usize, 0usize);
    loop {
        while si < sched.sends.len() && sdone == bytes(&sched.sends[si].range) {
            si += 1;
            sdone = 0;
        }
        while ri < sched.recvs.len() && rdone == bytes(&sched.recvs[ri].range) {
            ri += 1;
            rdone = 0;
        }
        if si == sched.sends.len() && ri == sched.recvs.len() {
            return Ok(());
        }
        let (mut want_send, mut want_recv, mut progress) = (false, false, false);
        if let Some(step) = sched.sends.get(si) {
            let len = bytes(&step.range);
            let avail = step.gate.map_or(len, |g| {
                step_done(g, ri, rdone, |i| bytes(&sched.recvs[i].range)).min(len)
            });
            if avail > sdone {
                want_send = true;
                match links
                    .next
                    .write(&as_bytes(&buf[step.range.clone()])[sdone..avail])
                {
                    Ok(0) => return Err(closed(next_rank).into()),
                    Ok(n) => {
                        sdone += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => progress = true,
                    Err(e) if is_reset(&e) => return Err(closed(next_rank).into()),
                    Err(e) => return Err(io(next_rank, e).into()),
                }
            }
        }
        if let Some(step) = sched.recvs.get(ri) {
            let len = bytes(&step.range);
            let allowed = step.gate.map_or(len, |h| {
                step_done(h, si, sdone, |i| bytes(&sched.sends[i].range)).min(len)
            });
            let target: Option<&mut [u8]> = match step.reduce {
                None if allowed > rdone => {
                    Some(&mut as_bytes_mut(&mut buf[step.range.clone()])[rdone..allowed])
                }
                Some(_) => {
                    let room = (scratch_bytes - fill).min(len - rdone - fill);
                    (room > 0).then(|| &mut as_bytes_mut(&mut scratch)[fill..fill + room])
                }
                None => None,
            };
            if let Some(target) = target {
                want_recv = true;
                match links.prev.read(target) {
                    Ok(0) => return Err(closed(prev_rank).into()),
                    Ok(n) => {
                        progress = true;
                        match step.reduce {
                            None => rdone += n,
                            Some((rop, div)) => {
                                fill += n;
                                let k = fill / esz;
                                if k > 0 {
                                    let start = step.range.start + rdone / esz;
                                    let dst = &mut buf[start..start + k];
                                    T::reduce(dst, &scratch[..k], rop);
                                    if div {
                                        T::div(dst, world);
                                    }
                                    rdone += k * esz;
                                    as_bytes_mut(&mut scratch).copy_within(k * esz..fill, 0);
                                    fill -= k * esz;
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => progress = true,
                    Err(e) if is_reset(&e) => return Err(closed(prev_rank).into()),
                    Err(e) => return Err(io(prev_rank, e).into()),
                }
            }
        }
        if progress {
            continue;
        }
        if !want_send && !want_recv {
            // Each direction waits for the other: a schedule bug, not a peer problem.
            return Err(CommError::InvalidArgument {
                op,
                rank,
                reason: format!(
                    "internal: ring schedule deadlocked at send step {si}, receive step {ri}"
                ),
            }
            .into());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(EngineError::Timeout(if want_recv {
                Stall::Recv
            } else {
                Stall::Send
            }));
        }
        let mut fds = Vec::with_capacity(2);
        if want_send {
            fds.push((links.next.as_raw_fd(), WRITE));
        }
        if want_recv {
            fds.push((links.prev.as_raw_fd(), READ));
        }
        poll(&fds, (deadline - now).min(Duration::from_secs(3600)))
            .map_err(|e| io(prev_rank, e))?;
    }
}

/// Bytes completed of step `g` when the current step is `cur` with `done` bytes.
fn step_done(g: usize, cur: usize, done: usize, len: impl Fn(usize) -> usize) -> usize {
    match g.cmp(&cur) {
        std::cmp::Ordering::Less => len(g),
        std::cmp::Ordering::Equal => done,
        std::cmp::Ordering::Greater => 0,
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}
