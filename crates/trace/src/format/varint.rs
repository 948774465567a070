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

/// The varint at the start of `w` (eight bytes of the buffer, the first in the low byte),
/// decoded without a branch: its value, its length in bytes, and whether it is one [`get`]
/// accepts as it is. `false` when it does not end within the eight bytes or is not minimal;
/// then [`get`] decides, by the same rules (a varint that ends within eight bytes holds at
/// most 56 bits, so it never overflows). The value and length are meaningless when `false`.
///
/// For the decoder's fast path: a length found from the stop bits, not by a branch per byte,
/// so that varints of mixed lengths cost no mispredicted branch.
#[inline(always)]
pub(crate) fn from_word(w: u64) -> (u64, usize, bool) {
    // The high bit of each byte clear: the bytes that end a varint. The first is its last.
    let stops = !w & 0x8080_8080_8080_8080;
    // 7 + 8k for a varint of k + 1 bytes; 64 (no end) is clamped and refused below.
    let t = stops.trailing_zeros().min(63);
    let groups = w & (u64::MAX >> (63 - t)) & 0x7f7f_7f7f_7f7f_7f7f;
    // The 7-bit groups packed together: pairs, then quads, then all eight.
    let x = (groups & 0x007f_007f_007f_007f) | (groups & 0x7f00_7f00_7f00_7f00) >> 1;
    let x = (x & 0x0000_3fff_0000_3fff) | (x & 0x3fff_0000_3fff_0000) >> 2;
    let v = (x & 0x0000_0000_0fff_ffff) | (x & 0x0fff_ffff_0000_0000) >> 4;
    let last = (w >> (t - 7)) as u8;
    let ok = (stops != 0) & ((last != 0) | (t == 7));
    (v, (t as usize + 1) / 8, ok)
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

    /// `from_word` on the first eight bytes of `bytes` (at least eight): what `get` says, and
    /// refused only where `get` refuses or the varint runs past the eight bytes.
    fn check_word(bytes: &[u8]) -> Result<(), TestCaseError> {
        let w: [u8; 8] = bytes[..8].try_into().unwrap();
        let (v, len, ok) = from_word(u64::from_le_bytes(w));
        let mut pos = 0;
        let got = get(bytes, &mut pos);
        if ok {
            prop_assert_eq!(got, Ok(v));
            prop_assert_eq!(pos, len);
        } else {
            let ends = w.iter().any(|b| b & 0x80 == 0);
            prop_assert!(got.is_err() || !ends, "{:02x?} refused, get: {:?}", w, got);
        }
        Ok(())
    }

    #[test]
    fn words_decode_as_get_does() {
        check_word(&[0x80, 0x01, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(from_word(0x01_80), (128, 2, true));
        assert_eq!(from_word(0x7f), (127, 1, true));
        assert!(!from_word(0x00_80).2, "overlong");
        assert!(
            !from_word(0x8080_8080_8080_8080).2,
            "does not end within eight bytes"
        );
        assert_eq!(
            from_word(0x7fff_ffff_ffff_ffff),
            (0x00ff_ffff_ffff_ffff, 8, true)
        );
    }

    proptest! {
        #[test]
        fn words_agree_with_get(bytes in proptest::collection::vec(any::<u8>(), 8..12), v: u64, shift in 0u32..64) {
            check_word(&bytes)?;
            let mut enc = Vec::new();
            put(&mut enc, v >> shift);
            enc.extend_from_slice(&bytes);
            check_word(&enc)?;
        }

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
