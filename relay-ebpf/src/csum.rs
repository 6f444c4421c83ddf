//! Internet checksum arithmetic (RFC 1071, RFC 1624) shared by the relay and the bench's
//! generator. Words are read in native order from network-order bytes, which the sum permits.

/// One's-complement sum of 16-bit words, folded; byte order independent (RFC 1071).
#[inline(always)]
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Sum of the 16-bit words of `b`, each complemented with `invert` (a value being removed).
#[inline(always)]
pub fn words<const N: usize>(b: &[u8; N], invert: bool) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < N {
        let w = u16::from_ne_bytes([b[i], b[i + 1]]);
        s += u64::from(if invert { !w } else { w });
        i += 2;
    }
    s
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with `delta` = sum of ~m + m'.
#[inline(always)]
pub fn update(check: u16, delta: u64) -> u16 {
    !fold(u64::from(!check) + delta)
}

/// The `delta` for a UDP checksum whose ports change from `old` to `new` (network order).
#[inline(always)]
pub fn ports_delta(old: (u16, u16), new: (u16, u16)) -> u64 {
    u64::from(!old.0) + u64::from(!old.1) + u64::from(new.0) + u64::from(new.1)
}
