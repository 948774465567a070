//! LEB128 varints (7 bits a byte, low bits first, high bit = "more follows") and zig-zag.
//!
//! Decoding is strict: a varint must be minimal (no trailing `0x80 .. 0x00` padding) and fit in
//! 64 bits, so every value has exactly one encoding and garbage is caught early.

/// Appends `v` as a varint (1 to 10 bytes).
#[inline]
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Why a varint did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VarintError {
    /// The bytes ended in the middle of it.
    #[error("block data ends in the middle of an event")]
    Truncated,
    /// It does not fit in 64 bits.
    #[error("varint does not fit in 64 bits")]
    Overflow,
    /// It has needless trailing zero groups.
    #[error("varint is not minimally encoded")]
    Overlong,
}

/// Reads a varint at `*pos`, advancing `*pos` past it.
#[inline]
pub(crate) fn get(buf: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    // One and two bytes inline (sizes up to 16 KiB, most distances): the rest, and every
    // error, in `get_slow`, which decides them all the same way.
    let p = *pos;
    if let Some(&b0) = buf.get(p) {
        if b0 < 0x80 {
            *pos = p + 1;
            return Ok(b0 as u64);
        }
        if let Some(&b1) = buf.get(p + 1) {
            if b1.wrapping_sub(1) < 0x7f {
                *pos = p + 2;
                return Ok((b0 & 0x7f) as u64 | (b1 as u64) << 7);
            }
        }
    }
    get_slow(buf, pos)
}

#[cold]
#[inline(never)]
fn get_slow(buf: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let mut v = 0u64;
    let mut shift = 0u32;
    let mut i = *pos;
    loop {
        let b = *buf.get(i).ok_or(VarintError::Truncated)?;
        i += 1;
        if shift == 63 && b > 1 {
            return Err(VarintError::Overflow);
        }
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            if b == 0 && shift > 0 {
                return Err(VarintError::Overlong);
            }
            *pos = i;
            return Ok(v);
        }
        shift += 7;
    }
}

/// Maps signed to unsigned so small magnitudes stay small: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let enc = |v| {
            let mut out = Vec::new();
            put(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
        assert_eq!(*enc(u64::MAX).last().unwrap(), 1);
    }

    #[test]
    fn strict_decoding() {
        let dec = |b: &[u8]| get(b, &mut 0);
        assert_eq!(dec(&[0x80, 0x01]), Ok(128));
        assert_eq!(dec(&[0x80, 0x00]), Err(VarintError::Overlong));
        assert_eq!(dec(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(dec(&[]), Err(VarintError::Truncated));
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(dec(&max), Ok(u64::MAX));
        max[9] = 0x02;
        assert_eq!(dec(&max), Err(VarintError::Overflow));
        max[9] = 0x81;
        assert_eq!(dec(&max), Err(VarintError::Overflow));
    }

    #[test]
    fn zigzag_known_values() {
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
    }

    proptest! {
        #[test]
        fn round_trip(v: u64, s: i64) {
            let mut out = Vec::new();
            put(&mut out, v);
            let mut pos = 0;
            prop_assert_eq!(get(&out, &mut pos), Ok(v));
            prop_assert_eq!(pos, out.len());
            prop_assert_eq!(unzigzag(zigzag(s)), s);
        }
    }
}
