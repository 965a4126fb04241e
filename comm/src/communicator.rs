//! The `Communicator` trait: the collectives data-parallel training needs, each with a timeout.
//! Backends implement the type-erased `*_buf` methods (object safe, one match on the data type,
//! which is also how NCCL and MPI take buffers); callers use the typed methods of
//! [`CommunicatorExt`], implemented for every communicator including `dyn Communicator`.

use std::time::Duration;

use crate::element::{BufMut, BufRef, Element};
use crate::error::Result;

/// Reduction applied element-wise across ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// Sum divided by the world size; floating-point types only.
    Avg,
    Max,
    Min,
}

/// Collective communication among the ranks of one job.
///
/// Every rank must call the same collectives in the same order with matching lengths (like NCCL
/// and MPI). A collective that does not finish within its timeout returns
/// [`CommError::Timeout`](crate::CommError::Timeout) naming the rank it was waiting for; after
/// any error the communicator refuses further collectives, since ranks may disagree on where they
/// are. Results of a reduction are bitwise identical on every rank.
pub trait Communicator: Send {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Backend name for logs and metrics ("tcp", "local", ...).
    fn backend(&self) -> &'static str;

    /// Reduces `buf` across ranks in place; every rank ends with the result.
    fn all_reduce_buf(&mut self, buf: BufMut<'_>, op: ReduceOp, timeout: Duration) -> Result<()>;

    /// Copies `root`'s `buf` to every rank.
    fn broadcast_buf(&mut self, buf: BufMut<'_>, root: usize, timeout: Duration) -> Result<()>;

    /// `recv` (length `world_size * send.len()`) receives rank i's `send` at block i.
    fn all_gather_buf(
        &mut self,
        send: BufRef<'_>,
        recv: BufMut<'_>,
        timeout: Duration,
    ) -> Result<()>;

    /// Reduces `send` (length `world_size * recv.len()`) across ranks; rank i receives block i.
    fn reduce_scatter_buf(
        &mut self,
        send: BufRef<'_>,
        recv: BufMut<'_>,
        op: ReduceOp,
        timeout: Duration,
    ) -> Result<()>;

    /// Returns once every rank has entered the barrier.
    fn barrier(&mut self, timeout: Duration) -> Result<()>;
}

/// Typed collectives over [`Element`] slices.
pub trait CommunicatorExt: Communicator {
    fn all_reduce<T: Element>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
        timeout: Duration,
    ) -> Result<()> {
        self.all_reduce_buf(T::buf_mut(buf), op, timeout)
    }

    fn broadcast<T: Element>(
        &mut self,
        buf: &mut [T],
        root: usize,
        timeout: Duration,
    ) -> Result<()> {
        self.broadcast_buf(T::buf_mut(buf), root, timeout)
    }

    fn all_gather<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        timeout: Duration,
    ) -> Result<()> {
        self.all_gather_buf(T::buf_ref(send), T::buf_mut(recv), timeout)
    }

    /// Convenience: gathers into a new vector.
    fn all_gather_vec<T: Element>(&mut self, send: &[T], timeout: Duration) -> Result<Vec<T>> {
        let mut out = vec![T::default(); send.len() * self.world_size()];
        self.all_gather(send, &mut out, timeout)?;
        Ok(out)
    }

    fn reduce_scatter<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
        timeout: Duration,
    ) -> Result<()> {
        self.reduce_scatter_buf(T::buf_ref(send), T::buf_mut(recv), op, timeout)
    }

    /// Gathers byte strings of different lengths (predictions, error messages): lengths first,
    /// then the payloads padded to the longest. Returns one vector per rank.
    fn all_gather_bytes(&mut self, send: &[u8], timeout: Duration) -> Result<Vec<Vec<u8>>> {
        let lens = self.all_gather_vec(&[send.len() as i64], timeout)?;
        let max = lens.iter().copied().max().unwrap_or(0) as usize;
        let mut padded = send.to_vec();
        padded.resize(max, 0);
        let all = self.all_gather_vec(&padded, timeout)?;
        Ok(lens
            .iter()
            .enumerate()
            // Lengths come from other ranks: clamp so a bug there cannot make us panic here.
            .map(|(i, &len)| all[i * max..i * max + (len.max(0) as usize).min(max)].to_vec())
            .collect())
    }
}

impl<C: Communicator + ?Sized> CommunicatorExt for C {}

/// Argument checks shared by all backends, so every backend rejects the same calls with the same
/// messages.
pub(crate) mod check {
    use super::ReduceOp;
    use crate::element::Element;
    use crate::error::{CommError, Result};

    fn invalid(op: &'static str, rank: usize, reason: String) -> CommError {
        CommError::InvalidArgument { op, rank, reason }
    }

    pub fn op<T: Element>(name: &'static str, rank: usize, op: ReduceOp) -> Result<()> {
        if op == ReduceOp::Avg && !T::FLOAT {
            return Err(invalid(
                name,
                rank,
                format!("Avg needs a floating-point type, got {:?}", T::DTYPE),
            ));
        }
        Ok(())
    }

    pub fn root(name: &'static str, rank: usize, root: usize, world: usize) -> Result<()> {
        if root >= world {
            return Err(invalid(
                name,
                rank,
                format!("root {root} is not below world size {world}"),
            ));
        }
        Ok(())
    }

    /// `big.len() == world * small.len()`.
    pub fn blocks(
        name: &'static str,
        rank: usize,
        small: usize,
        big: usize,
        world: usize,
    ) -> Result<()> {
        if small.checked_mul(world) != Some(big) {
            return Err(invalid(
                name,
                rank,
                format!("buffer of {big} elements is not {world} blocks of {small}"),
            ));
        }
        Ok(())
    }

    pub fn dtype_mismatch(name: &'static str, rank: usize) -> CommError {
        invalid(
            name,
            rank,
            "send and receive buffers have different element types".into(),
        )
    }
}

/// Dispatches a type-erased mutable buffer to a generic function.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_mut {
    ($buf:expr, $b:ident => $body:expr) => {
        match $buf {
            $crate::BufMut::U8($b) => $body,
            $crate::BufMut::I64($b) => $body,
            $crate::BufMut::F32($b) => $body,
            $crate::BufMut::F64($b) => $body,
        }
    };
}

/// Dispatches a (send, recv) pair of the same type; `$err` on a type mismatch.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_pair {
    ($send:expr, $recv:expr, $s:ident, $r:ident => $body:expr, $err:expr) => {
        match ($send, $recv) {
            ($crate::BufRef::U8($s), $crate::BufMut::U8($r)) => $body,
            ($crate::BufRef::I64($s), $crate::BufMut::I64($r)) => $body,
            ($crate::BufRef::F32($s), $crate::BufMut::F32($r)) => $body,
            ($crate::BufRef::F64($s), $crate::BufMut::F64($r)) => $body,
            _ => Err($err),
        }
    };
}

/// The part of a `Communicator` impl every backend writes the same way: identity, and the
/// type-erased collectives forwarded to the backend's generic `all_reduce_t`, `broadcast_t`,
/// `all_gather_t` and `reduce_scatter_t`. Used inside `impl Communicator for X { ... }` of a
/// type with `rank` and `world` fields; the backend adds its own `barrier`.
#[macro_export]
#[doc(hidden)]
macro_rules! typed_collectives {
    ($backend:literal) => {
        fn rank(&self) -> usize {
            self.rank
        }
        fn world_size(&self) -> usize {
            self.world
        }
        fn backend(&self) -> &'static str {
            $backend
        }
        fn all_reduce_buf(
            &mut self,
            buf: $crate::BufMut<'_>,
            op: $crate::ReduceOp,
            timeout: std::time::Duration,
        ) -> $crate::Result<()> {
            $crate::dispatch_mut!(buf, b => self.all_reduce_t(b, op, timeout))
        }
        fn broadcast_buf(
            &mut self,
            buf: $crate::BufMut<'_>,
            root: usize,
            timeout: std::time::Duration,
        ) -> $crate::Result<()> {
            $crate::dispatch_mut!(buf, b => self.broadcast_t(b, root, timeout))
        }
        fn all_gather_buf(
            &mut self,
            send: $crate::BufRef<'_>,
            recv: $crate::BufMut<'_>,
            timeout: std::time::Duration,
        ) -> $crate::Result<()> {
            let err = $crate::communicator::check::dtype_mismatch("all_gather", self.rank);
            $crate::dispatch_pair!(send, recv, s, r => self.all_gather_t(s, r, timeout), err)
        }
        fn reduce_scatter_buf(
            &mut self,
            send: $crate::BufRef<'_>,
            recv: $crate::BufMut<'_>,
            op: $crate::ReduceOp,
            timeout: std::time::Duration,
        ) -> $crate::Result<()> {
            let err = $crate::communicator::check::dtype_mismatch("reduce_scatter", self.rank);
            $crate::dispatch_pair!(send, recv, s, r => self.reduce_scatter_t(s, r, op, timeout), err)
        }
    };
}
