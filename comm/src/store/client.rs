//! The store client: one TCP connection per rank, requests serialised by a mutex so the store can
//! be shared by reference. Blocking operations (`get`, `wait`) wait on the server, which always
//! answers by the deadline; the socket timeout adds a margin on top so a dead server is noticed too.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{MAGIC, VERSION, op, status};
use crate::error::{CommError, Result};
use crate::wire::{Dec, Enc, MAX_FRAME, MAX_KEY, read_frame, write_frame};

/// Slack for the network on top of a server-side wait.
const MARGIN: Duration = Duration::from_secs(5);
/// Room in a frame for the op, key and length fields around a value.
const MAX_VALUE: usize = MAX_FRAME - MAX_KEY - 64;

struct Conn {
    addr: String,
    rank: usize,
    stream: Mutex<TcpStream>,
    local: SocketAddr,
}

/// A connection to the rendezvous store. Cheap to clone (clones share the connection); a prefix
/// namespaces keys, e.g. per restart so a restarted gang never reads a previous attempt's keys.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Conn>,
    prefix: String,
    /// Timeout of the non-blocking operations (set, add, check, delete).
    op_timeout: Duration,
}

impl Store {
    /// Connects to `addr`, retrying until `timeout` (rank 0 may not listen yet), and presents the
    /// job token. `rank` only labels errors.
    pub fn connect(addr: &str, token: &str, rank: usize, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let unreachable = |last: String| CommError::StoreUnreachable {
            addr: addr.to_string(),
            rank,
            timeout,
            last_error: last,
        };
        let mut backoff = Duration::from_millis(2);
        let mut stream = loop {
            // Try every address the name resolves to: `localhost` may list ::1 before
            // 127.0.0.1 while the store listens on only one of them.
            let attempt = addr.to_socket_addrs().and_then(|addrs| {
                let mut last = io::Error::new(ErrorKind::NotFound, "address resolves to nothing");
                for a in addrs {
                    let left = deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1));
                    match TcpStream::connect_timeout(&a, left.min(Duration::from_secs(2))) {
                        Ok(s) => return Ok(s),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            });
            match attempt {
                Ok(s) => break s,
                Err(e) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(unreachable(e.to_string()));
                    }
                    std::thread::sleep(backoff.min(deadline - now));
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
            }
        };
        let io_err = |source: io::Error| CommError::StoreIo {
            op: "connect",
            addr: addr.to_string(),
            rank,
            source,
        };
        stream.set_nodelay(true).map_err(io_err)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        stream.set_read_timeout(Some(left)).map_err(io_err)?;
        stream.set_write_timeout(Some(left)).map_err(io_err)?;
        let mut hello = Enc::default();
        hello.0.extend_from_slice(MAGIC);
        let hello = hello.u32(VERSION).bytes(token.as_bytes()).u32(rank as u32);
        let reply = write_frame(&mut stream, &hello.0).and_then(|()| read_frame(&mut stream));
        let reply = match reply {
            Ok(r) => r,
            Err(e) if is_timeout(&e) => {
                return Err(unreachable(format!("no answer to hello: {e}")));
            }
            Err(e) => return Err(unreachable(format!("connection dropped during hello: {e}"))),
        };
        let mut d = Dec(&reply);
        if d.u8().map_err(io_err)? != status::OK {
            return Err(CommError::StoreRejected {
                addr: addr.to_string(),
                rank,
                reason: d.string().unwrap_or_default(),
            });
        }
        let local = stream.local_addr().map_err(io_err)?;
        Ok(Self {
            conn: Arc::new(Conn {
                addr: addr.to_string(),
                rank,
                stream: Mutex::new(stream),
                local,
            }),
            prefix: String::new(),
            op_timeout: timeout.max(Duration::from_secs(1)),
        })
    }

    /// A view whose keys are prefixed with `prefix` (appended to any existing prefix).
    pub fn with_prefix(&self, prefix: &str) -> Self {
        Self {
            prefix: format!("{}{prefix}", self.prefix),
            ..self.clone()
        }
    }

    /// Timeout of `set`, `add`, `check` and `delete`.
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// The address of our end of the store connection: the local interface that reaches the
    /// master, which is the one other ranks can reach us on too.
    pub fn local_addr(&self) -> SocketAddr {
        self.conn.local
    }

    pub fn addr(&self) -> &str {
        &self.conn.addr
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        if value.len() > MAX_VALUE {
            return Err(CommError::MessageTooLarge {
                what: "store value",
                size: value.len(),
                max: MAX_VALUE,
            });
        }
        let k = self.key(key)?;
        let req = Enc::default().u8(op::SET).bytes(k.as_bytes()).bytes(value);
        self.call("set", &k, req, self.op_timeout).map(drop)
    }

    /// Blocks until `key` exists, at most `timeout`.
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let k = self.key(key)?;
        let req = Enc::default()
            .u8(op::GET)
            .bytes(k.as_bytes())
            .u64(millis(timeout));
        let reply = self.call("get", &k, req, timeout)?;
        Dec(&reply)
            .bytes()
            .map(<[u8]>::to_vec)
            .map_err(|e| self.op_err("get", &k, e.to_string()))
    }

    /// Adds `delta` to the integer at `key` (absent = 0) and returns the new value. The value is
    /// stored as decimal text, so `get` returns e.g. `b"7"`.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let k = self.key(key)?;
        let req = Enc::default().u8(op::ADD).bytes(k.as_bytes()).i64(delta);
        let reply = self.call("add", &k, req, self.op_timeout)?;
        Dec(&reply)
            .i64()
            .map_err(|e| self.op_err("add", &k, e.to_string()))
    }

    /// Blocks until every key exists, at most `timeout`.
    pub fn wait(&self, keys: &[&str], timeout: Duration) -> Result<()> {
        let (label, req) = self.keys_req(op::WAIT, keys)?;
        self.call("wait", &label, req.u64(millis(timeout)), timeout)
            .map(drop)
    }

    /// Whether every key exists, without blocking.
    pub fn check(&self, keys: &[&str]) -> Result<bool> {
        let (label, req) = self.keys_req(op::CHECK, keys)?;
        let reply = self.call("check", &label, req, self.op_timeout)?;
        Ok(Dec(&reply)
            .u8()
            .map_err(|e| self.op_err("check", &label, e.to_string()))?
            == 1)
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let k = self.key(key)?;
        self.call(
            "delete",
            &k,
            Enc::default().u8(op::DELETE).bytes(k.as_bytes()),
            self.op_timeout,
        )
        .map(drop)
    }

    fn key(&self, key: &str) -> Result<String> {
        let k = format!("{}{key}", self.prefix);
        if k.len() > MAX_KEY {
            return Err(CommError::MessageTooLarge {
                what: "store key",
                size: k.len(),
                max: MAX_KEY,
            });
        }
        Ok(k)
    }

    fn keys_req(&self, code: u8, keys: &[&str]) -> Result<(String, Enc)> {
        let full = keys
            .iter()
            .map(|k| self.key(k))
            .collect::<Result<Vec<_>>>()?;
        let mut req = Enc::default().u8(code).u32(full.len() as u32);
        for k in &full {
            req = req.bytes(k.as_bytes());
        }
        Ok((full.join(","), req))
    }

    fn op_err(&self, op: &'static str, key: &str, reason: String) -> CommError {
        CommError::StoreOp {
            op,
            key: key.to_string(),
            addr: self.conn.addr.clone(),
            rank: self.conn.rank,
            reason,
        }
    }

    /// Sends one request and returns the payload after an OK status.
    fn call(&self, op: &'static str, key: &str, req: Enc, timeout: Duration) -> Result<Vec<u8>> {
        let timeout_err = || CommError::StoreTimeout {
            op,
            key: key.to_string(),
            addr: self.conn.addr.clone(),
            rank: self.conn.rank,
            timeout,
        };
        let io_err = |source: io::Error| {
            if is_timeout(&source) {
                timeout_err()
            } else {
                CommError::StoreIo {
                    op,
                    addr: self.conn.addr.clone(),
                    rank: self.conn.rank,
                    source,
                }
            }
        };
        let mut stream = self.conn.stream.lock().unwrap_or_else(|p| p.into_inner());
        let sock_timeout = Some(timeout + MARGIN);
        stream.set_read_timeout(sock_timeout).map_err(io_err)?;
        stream.set_write_timeout(sock_timeout).map_err(io_err)?;
        write_frame(&mut *stream, &req.0).map_err(io_err)?;
        let reply = read_frame(&mut *stream).map_err(io_err)?;
        drop(stream);
        let mut d = Dec(&reply);
        match d.u8().map_err(io_err)? {
            status::OK => Ok(d.0.to_vec()),
            status::TIMEOUT => Err(timeout_err()),
            _ => Err(self.op_err(op, key, d.string().unwrap_or_default())),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("addr", &self.conn.addr)
            .field("rank", &self.conn.rank)
            .field("prefix", &self.prefix)
            .finish()
    }
}
