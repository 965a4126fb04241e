//! Element types that collectives move: a sealed set of plain-old-data types, their type-erased
//! buffer views (what backends receive, so the `Communicator` trait stays object safe and maps
//! onto NCCL/MPI data types), the reductions, and the byte views the TCP backend sends.

use crate::communicator::ReduceOp;

/// Data type tag of a buffer, mirroring NCCL's and MPI's element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    U8,
    I64,
    F32,
    F64,
}

/// A mutable type-erased buffer.
#[derive(Debug)]
pub enum BufMut<'a> {
    U8(&'a mut [u8]),
    I64(&'a mut [i64]),
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
}

/// A shared type-erased buffer.
#[derive(Debug, Clone, Copy)]
pub enum BufRef<'a> {
    U8(&'a [u8]),
    I64(&'a [i64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl BufMut<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            Self::U8(_) => DType::U8,
            Self::I64(_) => DType::I64,
            Self::F32(_) => DType::F32,
            Self::F64(_) => DType::F64,
        }
    }
}

impl BufRef<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            Self::U8(_) => DType::U8,
            Self::I64(_) => DType::I64,
            Self::F32(_) => DType::F32,
            Self::F64(_) => DType::F64,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i64 {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// An element type collectives accept. Sealed: the byte views below are sound only for types
/// without padding and for which every bit pattern is a valid value.
pub trait Element:
    Copy + Default + Send + Sync + std::fmt::Debug + 'static + sealed::Sealed
{
    const DTYPE: DType;
    /// Whether `ReduceOp::Avg` is meaningful (floating point only).
    const FLOAT: bool;
    fn buf_mut(s: &mut [Self]) -> BufMut<'_>;
    fn buf_ref(s: &[Self]) -> BufRef<'_>;
    /// `dst[i] = dst[i] op src[i]`; `Avg` accumulates a sum (divided later by [`Element::div`]).
    fn reduce(dst: &mut [Self], src: &[Self], op: ReduceOp);
    /// Divides every element by `n` (the last step of an average).
    fn div(dst: &mut [Self], n: usize);
}

macro_rules! float_element {
    ($t:ty, $v:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$v;
            const FLOAT: bool = true;
            fn buf_mut(s: &mut [Self]) -> BufMut<'_> {
                BufMut::$v(s)
            }
            fn buf_ref(s: &[Self]) -> BufRef<'_> {
                BufRef::$v(s)
            }
            fn reduce(dst: &mut [Self], src: &[Self], op: ReduceOp) {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => {
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += *s)
                    }
                    // NaN wins, so a diverged rank is visible everywhere.
                    ReduceOp::Max => dst.iter_mut().zip(src).for_each(|(d, s)| {
                        if *s > *d || s.is_nan() {
                            *d = *s
                        }
                    }),
                    ReduceOp::Min => dst.iter_mut().zip(src).for_each(|(d, s)| {
                        if *s < *d || s.is_nan() {
                            *d = *s
                        }
                    }),
                }
            }
            fn div(dst: &mut [Self], n: usize) {
                let inv = 1.0 / n as $t;
                dst.iter_mut().for_each(|d| *d *= inv);
            }
        }
    };
}

macro_rules! int_element {
    ($t:ty, $v:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$v;
            const FLOAT: bool = false;
            fn buf_mut(s: &mut [Self]) -> BufMut<'_> {
                BufMut::$v(s)
            }
            fn buf_ref(s: &[Self]) -> BufRef<'_> {
                BufRef::$v(s)
            }
            fn reduce(dst: &mut [Self], src: &[Self], op: ReduceOp) {
                match op {
                    // Wrapping: integer sums are counters and hashes, never allowed to panic.
                    ReduceOp::Sum | ReduceOp::Avg => dst
                        .iter_mut()
                        .zip(src)
                        .for_each(|(d, s)| *d = d.wrapping_add(*s)),
                    ReduceOp::Max => dst.iter_mut().zip(src).for_each(|(d, s)| *d = (*d).max(*s)),
                    ReduceOp::Min => dst.iter_mut().zip(src).for_each(|(d, s)| *d = (*d).min(*s)),
                }
            }
            fn div(dst: &mut [Self], n: usize) {
                dst.iter_mut().for_each(|d| *d /= n as $t);
            }
        }
    };
}

float_element!(f32, F32);
float_element!(f64, F64);
int_element!(u8, U8);
int_element!(i64, I64);

/// The bytes of a slice of elements, in native byte order.
pub(crate) fn as_bytes<T: Element>(s: &[T]) -> &[u8] {
    // SAFETY: `T` is one of u8/i64/f32/f64 (sealed): no padding, so all
    // `size_of_val(s)` bytes are initialised; u8 has alignment 1; the returned slice borrows `s`,
    // so the memory outlives it and is not mutated meanwhile.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

/// Mutable bytes of a slice of elements; writing any bytes leaves valid elements.
pub(crate) fn as_bytes_mut<T: Element>(s: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`, plus: every bit pattern is a valid u8/i64/f32/f64, so arbitrary
    // writes through the byte view cannot create an invalid `T`; the exclusive borrow of `s` is
    // held for the lifetime of the returned slice, so there is no aliasing.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions() {
        let mut d = [1.0f32, 5.0, f32::NAN];
        f32::reduce(&mut d, &[2.0, 3.0, 1.0], ReduceOp::Max);
        assert_eq!(&d[..2], &[2.0, 5.0]);
        assert!(d[2].is_nan(), "NaN must survive max");
        let mut d = [1i64, 9];
        i64::reduce(&mut d, &[4, 2], ReduceOp::Min);
        assert_eq!(d, [1, 2]);
        let mut d = [250u8];
        u8::reduce(&mut d, &[10], ReduceOp::Sum);
        assert_eq!(d, [4]);
        let mut d = [3.0f64, 6.0];
        f64::div(&mut d, 3);
        assert_eq!(d, [1.0, 2.0]);
    }

    #[test]
    fn byte_views_round_trip() {
        let mut v = [1.5f32, -2.0];
        let bytes = as_bytes(&v).to_vec();
        assert_eq!(bytes.len(), 8);
        as_bytes_mut(&mut v).copy_from_slice(&[0; 8]);
        assert_eq!(v, [0.0, 0.0]);
        as_bytes_mut(&mut v).copy_from_slice(&bytes);
        assert_eq!(v, [1.5, -2.0]);
    }
}
