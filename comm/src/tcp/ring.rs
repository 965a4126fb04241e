//! Forming the ring: every rank listens on an ephemeral port of the interface that reaches the
//! store, publishes `host:port` in the store, connects to the next rank and accepts the previous
//! one. Both connections open with a hello carrying the job token, the ranks and a byte-order
//! probe, so a stray process (another job reusing ports) is refused instead of corrupting data.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::engine::Links;
use super::poll::{READ, poll};
use crate::error::{CommError, Result};
use crate::store::Store;
use crate::wire::{Dec, Enc, read_frame, write_frame};

const MAGIC: &[u8; 4] = b"UQAR";
const VERSION: u32 = 1;

/// Builds the ring connections of `rank`. `timeout` is the overall budget (for messages).
pub(crate) fn form(
    store: &Store,
    rank: usize,
    world: usize,
    token: &str,
    timeout: Duration,
) -> Result<Links> {
    let deadline = Instant::now() + timeout;
    let next_rank = (rank + 1) % world;
    let prev_rank = (rank + world - 1) % world;
    let handshake = |peer: usize, reason: String| CommError::Handshake { rank, peer, reason };
    let timed_out = |peer: usize, what: &str| CommError::Timeout {
        op: "bootstrap",
        timeout,
        peer,
        rank,
        hint: format!("; {what}"),
    };

    let local_ip = store.local_addr().ip();
    let listener =
        TcpListener::bind(SocketAddr::new(local_ip, 0)).map_err(|source| CommError::Bind {
            addr: format!("{local_ip}:0"),
            rank,
            source,
        })?;
    let my_addr = listener
        .local_addr()
        .map_err(|e| handshake(prev_rank, e.to_string()))?;
    store.set(&format!("ring/{rank}"), my_addr.to_string().as_bytes())?;
    let next_addr = store
        .get(&format!("ring/{next_rank}"), remaining(deadline))
        .map_err(|e| match e {
            CommError::StoreTimeout { .. } => {
                timed_out(next_rank, "it never published its ring address")
            }
            other => other,
        })?;
    let next_addr = String::from_utf8_lossy(&next_addr).into_owned();

    // Connect and say hello without waiting for the answer: the peer may itself be busy connecting
    // to its own next rank, and waiting here would deadlock the whole ring.
    let mut next = connect(&next_addr, deadline).map_err(|e| match e.kind() {
        ErrorKind::TimedOut => timed_out(
            next_rank,
            &format!("cannot connect to it at {next_addr}: {e}"),
        ),
        _ => handshake(next_rank, format!("cannot connect to {next_addr}: {e}")),
    })?;
    next.set_write_timeout(Some(remaining(deadline)))
        .and_then(|()| write_frame(&mut next, &hello(token, rank, next_rank)))
        .map_err(|e| handshake(next_rank, format!("sending hello: {e}")))?;

    let prev = accept_prev(&listener, token, rank, prev_rank, deadline)?
        .ok_or_else(|| timed_out(prev_rank, "it never connected to us"))?;

    next.set_read_timeout(Some(remaining(deadline)))
        .map_err(|e| handshake(next_rank, e.to_string()))?;
    let ack = read_frame(&mut next).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            timed_out(next_rank, "it never accepted our connection")
        }
        _ => handshake(next_rank, format!("reading its answer: {e}")),
    })?;
    let mut d = Dec(&ack);
    if d.u8().map_err(|e| handshake(next_rank, e.to_string()))? != 0 {
        return Err(handshake(
            next_rank,
            format!("it refused us: {}", d.string().unwrap_or_default()),
        ));
    }
    for s in [&next, &prev] {
        s.set_nodelay(true)
            .and_then(|()| s.set_read_timeout(None))
            .and_then(|()| s.set_write_timeout(None))
            .and_then(|()| s.set_nonblocking(true))
            .map_err(|e| handshake(next_rank, e.to_string()))?;
    }
    Ok(Links {
        rank,
        world,
        next_rank,
        prev_rank,
        next,
        prev,
    })
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn hello(token: &str, from: usize, to: usize) -> Vec<u8> {
    let mut e = Enc::default();
    e.0.extend_from_slice(MAGIC);
    let mut e = e
        .u32(VERSION)
        .bytes(token.as_bytes())
        .u32(from as u32)
        .u32(to as u32);
    // Elements travel in native byte order; a peer with the other order must be refused.
    e.0.extend_from_slice(&1u32.to_ne_bytes());
    e.0
}

fn connect(addr: &str, deadline: Instant) -> io::Result<TcpStream> {
    let target = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "address resolves to nothing"))?;
    loop {
        match TcpStream::connect_timeout(&target, remaining(deadline).min(Duration::from_secs(2))) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::new(ErrorKind::TimedOut, e.to_string()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Accepts connections until the previous rank presents a valid hello; refuses others (with a
/// reason they can report). Returns None at the deadline.
fn accept_prev(
    listener: &TcpListener,
    token: &str,
    rank: usize,
    prev_rank: usize,
    deadline: Instant,
) -> Result<Option<TcpStream>> {
    let io_err = |e: io::Error| CommError::Handshake {
        rank,
        peer: prev_rank,
        reason: e.to_string(),
    };
    listener.set_nonblocking(true).map_err(io_err)?;
    loop {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).map_err(io_err)?;
                s.set_read_timeout(Some(remaining(deadline)))
                    .map_err(io_err)?;
                s.set_write_timeout(Some(remaining(deadline)))
                    .map_err(io_err)?;
                let Ok(frame) = read_frame(&mut s) else {
                    continue;
                };
                let verdict = check_hello(&frame, token, rank, prev_rank);
                let reply = match &verdict {
                    Ok(()) => Enc::default().u8(0).bytes(b""),
                    Err(why) => Enc::default().u8(1).bytes(why.as_bytes()),
                };
                if write_frame(&mut s, &reply.0).is_ok() && verdict.is_ok() {
                    return Ok(Some(s));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                poll(&[(listener.as_raw_fd(), READ)], deadline - now).map_err(io_err)?;
            }
            Err(e)
                if e.kind() == ErrorKind::Interrupted
                    || e.kind() == ErrorKind::ConnectionAborted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
}

fn check_hello(
    frame: &[u8],
    token: &str,
    rank: usize,
    prev_rank: usize,
) -> std::result::Result<(), String> {
    let mut d = Dec(frame);
    let bad = |e: io::Error| format!("malformed hello: {e}");
    if d.take(4).map_err(bad)? != MAGIC.as_slice() {
        return Err("not a uqa ring connection".into());
    }
    let version = d.u32().map_err(bad)?;
    if version != VERSION {
        return Err(format!(
            "ring protocol version {version}, expected {VERSION}"
        ));
    }
    if d.string().map_err(bad)? != token {
        return Err("job token mismatch (a rank of another job?)".into());
    }
    let (from, to) = (
        d.u32().map_err(bad)? as usize,
        d.u32().map_err(bad)? as usize,
    );
    if from != prev_rank || to != rank {
        return Err(format!(
            "rank {rank} expects rank {prev_rank}, got rank {from} addressing rank {to}"
        ));
    }
    if d.take(4).map_err(bad)? != 1u32.to_ne_bytes().as_slice() {
        return Err("peer has a different byte order".into());
    }
    Ok(())
}
