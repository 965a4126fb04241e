//! Call headers: before the data of every collective, each rank sends a small description of the
//! call it is making (sequence number, collective, reduction or root, length, element type) to the
//! next rank and checks the one from the previous rank. Equal neighbours around the whole ring
//! mean all ranks agree, so a rank calling another collective, length or type fails with a message
//! saying so instead of silently exchanging garbage (NCCL and gloo would hang or corrupt).

use std::ops::Range;

use super::schedule::{RecvStep, Schedule, SendStep};
use crate::communicator::ReduceOp;
use crate::element::DType;

const OPS: [&str; 5] = [
    "all_reduce",
    "broadcast",
    "all_gather",
    "reduce_scatter",
    "barrier",
];
const DTYPES: [DType; 4] = [DType::U8, DType::I64, DType::F32, DType::F64];
const REDUCE: [ReduceOp; 4] = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min];

/// Number of i64 words in a header.
pub(crate) const WORDS: usize = 5;

/// The collective-specific argument of a call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    None,
    Reduce(ReduceOp),
    Root(usize),
}

/// Encodes a call as `[seq, op, arg, len, dtype]`.
pub(crate) fn encode(seq: i64, op: &str, arg: Arg, len: usize, dtype: DType) -> [i64; WORDS] {
    let op = OPS.iter().position(|o| *o == op).unwrap_or(OPS.len()) as i64;
    let arg = match arg {
        Arg::None => 0,
        Arg::Reduce(r) => REDUCE.iter().position(|x| *x == r).unwrap_or(0) as i64,
        Arg::Root(r) => r as i64,
    };
    let dtype = DTYPES
        .iter()
        .position(|d| *d == dtype)
        .unwrap_or(DTYPES.len()) as i64;
    [seq, op, arg, len as i64, dtype]
}

/// Human-readable form of a header, e.g. `all_reduce(Sum) #3 on 1024 x F32`.
pub(crate) fn describe(h: &[i64]) -> String {
    let op = OPS
        .get(h[1] as usize)
        .copied()
        .unwrap_or("unknown collective");
    let arg = match op {
        "all_reduce" | "reduce_scatter" => REDUCE
            .get(h[2] as usize)
            .map(|r| format!("({r:?})"))
            .unwrap_or_default(),
        "broadcast" => format!("(root {})", h[2]),
        _ => String::new(),
    };
    let dtype = DTYPES
        .get(h[4] as usize)
        .map(|d| format!("{d:?}"))
        .unwrap_or_else(|| "?".into());
    format!("{op}{arg} #{} on {} x {dtype}", h[0], h[3])
}

/// The exchange on a buffer of `2 * WORDS`: send ours (first half), receive prev's (second half).
pub(crate) fn schedule() -> Schedule {
    let (mine, theirs): (Range<usize>, Range<usize>) = (0..WORDS, WORDS..2 * WORDS);
    Schedule {
        sends: vec![SendStep {
            range: mine,
            gate: None,
        }],
        recvs: vec![RecvStep {
            range: theirs,
            reduce: None,
            gate: None,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_calls() {
        let h = encode(3, "all_reduce", Arg::Reduce(ReduceOp::Max), 10, DType::F32);
        assert_eq!(describe(&h), "all_reduce(Max) #3 on 10 x F32");
        let h = encode(0, "broadcast", Arg::Root(2), 7, DType::U8);
        assert_eq!(describe(&h), "broadcast(root 2) #0 on 7 x U8");
        assert_ne!(
            encode(1, "all_gather", Arg::None, 4, DType::I64),
            encode(1, "all_gather", Arg::None, 4, DType::F64)
        );
    }
}
