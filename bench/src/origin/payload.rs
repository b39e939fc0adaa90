//! The bytes the origin sends as bodies, served from one reusable block per shard.
//!
//! A body is a periodic sequence: `/size/N` and `/chunked/N` send the *pattern*, whose
//! byte `i` is `(i % 251) as u8` ([`pattern_byte`]; 251 is prime, so a shifted or
//! dropped range changes any digest), and `GET /` sends
//! [`DEFAULT_BODY_UNIT`](super::config::DEFAULT_BODY_UNIT) repeated. A [`Cycle`] holds
//! enough whole periods that a slice of up to [`SLICE_MAX`] bytes can start at any phase,
//! so a body of any length (1 GiB included) is written straight from the block. The block
//! is a [`Bytes`], so the h2c mode hands out slices of it as DATA frames without copying
//! ([`Cycle::bytes`]).

use bytes::Bytes;

/// The pattern's period.
pub const PATTERN_PERIOD: u64 = 251;

/// Byte `i` of the pattern body sent by `/size/N` and `/chunked/N`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % PATTERN_PERIOD) as u8
}

/// The first `len` bytes of the pattern (for tests and clients that check bodies).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(pattern_byte).collect()
}

/// The longest slice a [`Cycle`] hands out at once.
pub const SLICE_MAX: usize = 64 << 10;

/// A periodic byte sequence that can be sliced at any offset without copying.
#[derive(Debug)]
pub struct Cycle {
    block: Bytes,
    period: usize,
}

impl Cycle {
    /// The sequence that repeats `unit` (which must not be empty; an empty unit is
    /// treated as a single zero byte).
    pub fn repeating(unit: &[u8]) -> Cycle {
        let unit: &[u8] = if unit.is_empty() { &[0] } else { unit };
        let periods = SLICE_MAX.div_ceil(unit.len()) + 1;
        Cycle {
            block: Bytes::from(unit.repeat(periods)),
            period: unit.len(),
        }
    }

    /// The pattern sequence (see [`pattern_byte`]).
    pub fn pattern() -> Cycle {
        Cycle::repeating(&pattern(PATTERN_PERIOD as usize))
    }

    /// Bytes `offset..offset + len` of the sequence, `len` capped at [`SLICE_MAX`].
    pub fn slice(&self, offset: u64, len: usize) -> &[u8] {
        let phase = (offset % self.period as u64) as usize;
        &self.block[phase..phase + len.min(SLICE_MAX)]
    }

    /// The same bytes as [`Cycle::slice`], as a shared handle on the block (no copy).
    pub fn bytes(&self, offset: u64, len: usize) -> Bytes {
        let phase = (offset % self.period as u64) as usize;
        self.block.slice(phase..phase + len.min(SLICE_MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_match_the_sequence() {
        let c = Cycle::pattern();
        for off in [0u64, 1, 250, 251, 1 << 30, u64::MAX - SLICE_MAX as u64] {
            let s = c.slice(off, SLICE_MAX);
            assert_eq!(s.len(), SLICE_MAX);
            for (k, &b) in s.iter().enumerate().step_by(97) {
                assert_eq!(b, pattern_byte(off + k as u64));
            }
        }
        let h = Cycle::repeating(b"hello, world\n");
        assert_eq!(h.slice(13, 5), b"hello");
        assert_eq!(h.slice(7, 6), b"world\n");
        assert_eq!(Cycle::repeating(b"").slice(3, 2), &[0, 0]);
        assert_eq!(&h.bytes(7, 6)[..], b"world\n");
        assert_eq!(&c.bytes(1 << 30, 300)[..], c.slice(1 << 30, 300));
    }
}
