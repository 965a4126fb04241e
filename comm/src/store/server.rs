//! The store host: a listener thread plus one thread per client connection, sharing a map guarded
//! by a mutex and a condition variable (blocking `get`/`wait` sleep on it). Threads are cheap here:
//! one store serves one job, i.e. at most a few thousand ranks, each holding one connection.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{MAGIC, VERSION, op, status};
use crate::error::{CommError, Result};
use crate::wire::{Dec, Enc, MAX_KEY, read_frame, write_frame};

/// A client must say hello this quickly, so port scanners and stray connections do not pin threads.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    token: String,
    data: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
    stop: AtomicBool,
    /// Clones of client sockets, shut down on drop so their threads end.
    conns: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        // A panicking connection thread cannot leave the map half-updated (every update is one
        // insert), so a poisoned lock is still consistent.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running store; stops when dropped.
pub struct StoreServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl StoreServer {
    /// Listens on `addr` (`host:port`; port 0 picks a free one). `rank` is only for messages.
    pub fn bind(addr: &str, token: &str, rank: usize) -> Result<Self> {
        let bind_err = |source: io::Error| {
            if source.kind() == ErrorKind::AddrInUse {
                CommError::PortInUse {
                    addr: addr.to_string(),
                    rank,
                }
            } else {
                CommError::Bind {
                    addr: addr.to_string(),
                    rank,
                    source,
                }
            }
        };
        let resolved: Vec<SocketAddr> = addr.to_socket_addrs().map_err(bind_err)?.collect();
        let listener = TcpListener::bind(&resolved[..]).map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let shared = Arc::new(Shared {
            token: token.to_string(),
            data: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("uqa-store-accept".into())
            .spawn(move || accept_loop(listener, s))
            .map_err(bind_err)?;
        Ok(Self {
            addr: local,
            shared,
            accept: Some(accept),
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        // Wake the blocking accept() with a connection to ourselves.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for c in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // E.g. out of file descriptors: back off instead of spinning on the error.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if let Ok(clone) = stream.try_clone() {
            let mut conns = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns.retain(|c| c.peer_addr().is_ok());
            conns.push(clone);
        }
        let s = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("uqa-store-conn".into())
            .spawn(move || {
                let _ = serve(stream, &s);
            });
    }
}

/// Serves one client until it disconnects or breaks the protocol.
fn serve(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let hello = read_frame(&mut stream)?;
    let mut d = Dec(&hello);
    let magic = d.take(4)?;
    let version = d.u32()?;
    let token = d.string()?;
    let reject = if magic != MAGIC.as_slice() {
        Some("not a uqa store client".to_string())
    } else if version != VERSION {
        Some(format!(
            "protocol version {version}, store speaks {VERSION}"
        ))
    } else if token != shared.token {
        Some("job token mismatch (a rank of another job?)".to_string())
    } else {
        None
    };
    if let Some(msg) = reject {
        write_frame(
            &mut stream,
            &Enc::default().u8(status::ERROR).bytes(msg.as_bytes()).0,
        )?;
        return Ok(());
    }
    write_frame(&mut stream, &Enc::default().u8(status::OK).bytes(b"").0)?;
    stream.set_read_timeout(None)?;
    loop {
        let req = match read_frame(&mut stream) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let reply = handle(&req, shared).unwrap_or_else(|e| {
            Enc::default()
                .u8(status::ERROR)
                .bytes(e.to_string().as_bytes())
        });
        write_frame(&mut stream, &reply.0)?;
    }
}

fn key(d: &mut Dec<'_>) -> io::Result<String> {
    let k = d.string()?;
    if k.len() > MAX_KEY {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "key of {} bytes exceeds the limit of {MAX_KEY} bytes",
                k.len()
            ),
        ));
    }
    Ok(k)
}

fn handle(req: &[u8], shared: &Shared) -> io::Result<Enc> {
    let mut d = Dec(req);
    let ok = Enc::default().u8(status::OK);
    match d.u8()? {
        op::SET => {
            let k = key(&mut d)?;
            let v = d.bytes()?.to_vec();
            shared.data().insert(k, v);
            shared.changed.notify_all();
            Ok(ok)
        }
        op::GET => {
            let k = key(&mut d)?;
            let timeout = Duration::from_millis(d.u64()?);
            Ok(match wait_for(shared, &[k.as_str()], timeout) {
                Some(data) => ok.bytes(data.get(&k).map(Vec::as_slice).unwrap_or_default()),
                None => Enc::default().u8(status::TIMEOUT),
            })
        }
        op::ADD => {
            let k = key(&mut d)?;
            let delta = d.i64()?;
            let mut data = shared.data();
            let old = match data.get(&k) {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| {
                        io::Error::new(
                            ErrorKind::InvalidData,
                            format!("value of {k:?} is not an integer"),
                        )
                    })?,
            };
            let new = old.wrapping_add(delta);
            data.insert(k, new.to_string().into_bytes());
            drop(data);
            shared.changed.notify_all();
            Ok(ok.i64(new))
        }
        op::WAIT => {
            let n = d.u32()? as usize;
            let keys = (0..n.min(4096))
                .map(|_| key(&mut d))
                .collect::<io::Result<Vec<_>>>()?;
            let timeout = Duration::from_millis(d.u64()?);
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            Ok(match wait_for(shared, &refs, timeout) {
                Some(_) => ok,
                None => Enc::default().u8(status::TIMEOUT),
            })
        }
        op::CHECK => {
            let n = d.u32()? as usize;
            let keys = (0..n.min(4096))
                .map(|_| key(&mut d))
                .collect::<io::Result<Vec<_>>>()?;
            let data = shared.data();
            Ok(ok.u8(keys.iter().all(|k| data.contains_key(k)) as u8))
        }
        op::DELETE => {
            let k = key(&mut d)?;
            shared.data().remove(&k);
            Ok(ok)
        }
        other => Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("unknown store op {other}"),
        )),
    }
}

/// Blocks until all `keys` exist (returning the guarded map) or the timeout passes (None).
fn wait_for<'a>(
    shared: &'a Shared,
    keys: &[&str],
    timeout: Duration,
) -> Option<MutexGuard<'a, HashMap<String, Vec<u8>>>> {
    let deadline = Instant::now() + timeout;
    let mut data = shared.data();
    loop {
        if keys.iter().all(|k| data.contains_key(*k)) {
            return Some(data);
        }
        let now = Instant::now();
        if now >= deadline || shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        data = shared
            .changed
            .wait_timeout(data, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

impl std::fmt::Debug for StoreServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreServer")
            .field("addr", &self.addr)
            .finish()
    }
}
