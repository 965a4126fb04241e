//! Bounds and parsers of numeric flags shared by several subcommands. Every numeric flag is
//! checked when it is parsed, so a bad value ends in clap's error naming the flag and the
//! allowed range before any work starts (issue 15), instead of a panic deep inside, an
//! allocation the machine cannot serve, or a loop that never ends.

use std::ops::RangeBounds;

use clap::builder::RangedU64ValueParser;

/// A `usize` flag within `range` (clap's `value_parser!(usize)` has no `.range()`); the error
/// names the flag, the value and the range.
pub fn usize_in(range: impl RangeBounds<u64>) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(range)
}

/// A `u64` flag within `range`.
pub fn u64_in(range: impl RangeBounds<u64>) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::new().range(range)
}

/// Most tokens generated per answer (`uqa eval`, `uqa quickstart`, `uqa bench generate`): the
/// context of the longest-context model we load (Qwen2's 32,768 positions). Generation has no
/// other bound when a model never emits a stop token.
pub const MAX_NEW_TOKENS: u64 = 32_768;

/// A finite number >= 0 (learning rates, clipping norms): NaN or infinity would only surface
/// as a non-finite loss after the model is built.
pub fn non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err("expected a finite number >= 0".into()),
        Err(e) => Err(format!("{e}; expected a finite number >= 0")),
    }
}

/// A probability in [0, 1) (dropout: 1 would drop everything and divide by zero).
pub fn fraction(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        Ok(_) => Err("expected a number in [0, 1)".into()),
        Err(e) => Err(format!("{e}; expected a number in [0, 1)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_outside_their_range_are_refused() {
        assert_eq!(non_negative("1.5"), Ok(1.5));
        assert_eq!(non_negative("0"), Ok(0.0));
        for bad in ["-1", "nan", "inf", "", "abc"] {
            assert!(non_negative(bad).is_err(), "{bad}");
        }
        assert_eq!(fraction("0"), Ok(0.0));
        for bad in ["1", "1.5", "-0.1", "nan", "inf", "1e30", ""] {
            assert!(fraction(bad).is_err(), "{bad}");
        }
    }
}
