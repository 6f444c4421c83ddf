//! STUN codec (RFC 8489, compatible with RFC 5389): parse borrowing from the buffer, build messages.
//!
//! Parsing is strict about framing (magic cookie, 4-byte aligned length equal to the datagram,
//! attribute bounds) and checks FINGERPRINT when present. MESSAGE-INTEGRITY is verified over the
//! raw received bytes, never over a re-encoding (RFC 5769 pads with 0x20, which a re-encoding loses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

pub const MAGIC_COOKIE: u32 = 0x2112_a442;
pub const HEADER_LEN: usize = 20;
pub const BINDING: u16 = 0x001;

pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000a;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001c;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802a;
}

const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// RFC 8489 s.14.3 / s.14.8 / s.14.9: value limits in bytes.
const MAX_USERNAME: usize = 513;
const MAX_TEXT: usize = 763;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("datagram shorter than the 20-byte STUN header")]
    TooShort,
    #[error("first two bits not zero: not STUN")]
    NotStun,
    #[error("no magic cookie (RFC 3489 message), rejected")]
    NoMagicCookie,
    #[error("message length {0} is not a multiple of 4 or does not match the datagram")]
    BadLength(usize),
    #[error("attribute 0x{0:04x} runs past the end of the message")]
    AttributeOverflow(u16),
    #[error("attribute 0x{0:04x} has an invalid value")]
    BadAttribute(u16),
    #[error("attribute after FINGERPRINT")]
    FingerprintNotLast,
    #[error("FINGERPRINT does not match")]
    BadFingerprint,
    #[error("message would exceed 65535 bytes of attributes")]
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    pub fn random() -> TransactionId {
        TransactionId(rand::random())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    pub code: u16,
    pub reason: &'a str,
}

/// The typed attributes we understand. `build` writes them in field order; `parse` fills them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes<'a> {
    pub software: Option<&'a str>,
    pub username: Option<&'a str>,
    pub realm: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub xor_mapped_address: Option<SocketAddr>,
    pub priority: Option<u32>,
    pub use_candidate: bool,
    pub ice_controlling: Option<u64>,
    pub ice_controlled: Option<u64>,
    pub error_code: Option<ErrorCode<'a>>,
    /// Contents of an UNKNOWN-ATTRIBUTES attribute (empty = absent).
    pub unknown_attributes: Vec<u16>,
}

/// Keyed HMAC states for one password, cloned per message (saves re-keying per packet).
#[derive(Clone)]
pub struct IntegrityKey {
    sha1: Hmac<Sha1>,
    sha256: Hmac<Sha256>,
}

impl IntegrityKey {
    /// Short-term key: the password bytes (ICE passwords are ice-chars, SASLprep leaves them as is).
    pub fn new(key: &[u8]) -> IntegrityKey {
        // HMAC accepts keys of any length; the Result only exists for fixed-size MACs.
        IntegrityKey {
            sha1: <Hmac<Sha1> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length")),
            sha256: <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length")),
        }
    }
}

impl std::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrityKey(..)")
    }
}

/// A parsed message borrowing from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunMessage<'a> {
    pub class: Class,
    pub method: u16,
    pub transaction_id: TransactionId,
    pub attributes: Attributes<'a>,
    /// Comprehension-required (< 0x8000) attribute types we do not understand, for a 420.
    pub unknown_required: Vec<u16>,
    raw: &'a [u8],
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    integrity: Option<usize>,
    /// Offset and value length of MESSAGE-INTEGRITY-SHA256.
    integrity_sha256: Option<(usize, usize)>,
    fingerprint: bool,
}

/// RFC 7983 demux plus the magic cookie: cheap, for deciding whether to hand a datagram to `parse`.
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] < 4
        && buf[4..8] == MAGIC_COOKIE.to_be_bytes()
        && buf.len().is_multiple_of(4)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn text(typ: u16, v: &[u8], max: usize) -> Result<&str, StunError> {
    if v.len() > max {
        return Err(StunError::BadAttribute(typ));
    }
    std::str::from_utf8(v).map_err(|_| StunError::BadAttribute(typ))
}

fn fixed<const N: usize>(typ: u16, v: &[u8]) -> Result<[u8; N], StunError> {
    v.try_into().map_err(|_| StunError::BadAttribute(typ))
}

fn decode_xor_address(v: &[u8], txid: &TransactionId) -> Result<SocketAddr, StunError> {
    let bad = StunError::BadAttribute(attr::XOR_MAPPED_ADDRESS);
    if v.len() < 4 {
        return Err(bad);
    }
    let port = be16(v, 2) ^ (MAGIC_COOKIE >> 16) as u16;
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&txid.0);
    match (v[1], v.len()) {
        (0x01, 8) => {
            let mut a = [0u8; 4];
            for i in 0..4 {
                a[i] = v[4 + i] ^ mask[i];
            }
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        (0x02, 20) => {
            let mut a = [0u8; 16];
            for i in 0..16 {
                a[i] = v[4 + i] ^ mask[i];
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => Err(bad),
    }
}

fn encode_xor_address(addr: SocketAddr, txid: &TransactionId, out: &mut Vec<u8>) {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&txid.0);
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&[0, 0x01]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&[0, 0x02]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
}

impl<'a> StunMessage<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<StunMessage<'a>, StunError> {
        if buf.len() < HEADER_LEN {
            return Err(StunError::TooShort);
        }
        if buf[0] & 0xc0 != 0 {
            return Err(StunError::NotStun);
        }
        if buf[4..8] != MAGIC_COOKIE.to_be_bytes() {
            return Err(StunError::NoMagicCookie);
        }
        let len = be16(buf, 2) as usize;
        if !len.is_multiple_of(4) || HEADER_LEN + len != buf.len() {
            return Err(StunError::BadLength(len));
        }
        let t = be16(buf, 0);
        let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        };
        let method = (t & 0x000f) | ((t & 0x00e0) >> 1) | ((t & 0x3e00) >> 2);
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&buf[8..20]);
        let transaction_id = TransactionId(txid);

        let mut m = StunMessage {
            class,
            method,
            transaction_id,
            attributes: Attributes::default(),
            unknown_required: Vec::new(),
            raw: buf,
            integrity: None,
            integrity_sha256: None,
            fingerprint: false,
        };
        let mut seen_unknown_attrs = false;
        let mut off = HEADER_LEN;
        while off < buf.len() {
            if m.fingerprint {
                return Err(StunError::FingerprintNotLast);
            }
            if buf.len() - off < 4 {
                return Err(StunError::AttributeOverflow(0));
            }
            let typ = be16(buf, off);
            let vlen = be16(buf, off + 2) as usize;
            let padded = (vlen + 3) & !3;
            if buf.len() - off - 4 < padded {
                return Err(StunError::AttributeOverflow(typ));
            }
            let v = &buf[off + 4..off + 4 + vlen];
            let after_integrity = m.integrity.is_some() || m.integrity_sha256.is_some();
            let a = &mut m.attributes;
            match typ {
                attr::FINGERPRINT => {
                    let want = u32::from_be_bytes(fixed::<4>(typ, v)?);
                    if crc32fast::hash(&buf[..off]) ^ FINGERPRINT_XOR != want {
                        return Err(StunError::BadFingerprint);
                    }
                    m.fingerprint = true;
                }
                attr::MESSAGE_INTEGRITY_SHA256 => {
                    if !(16..=32).contains(&vlen) || !vlen.is_multiple_of(4) {
                        return Err(StunError::BadAttribute(typ));
                    }
                    if m.integrity_sha256.is_none() {
                        m.integrity_sha256 = Some((off, vlen));
                    }
                }
                // RFC 8489 s.14.5: everything else after an integrity attribute is ignored.
                _ if after_integrity => {}
                attr::MESSAGE_INTEGRITY => {
                    fixed::<20>(typ, v)?;
                    m.integrity = Some(off);
                }
                attr::USERNAME => {
                    let s = text(typ, v, MAX_USERNAME)?;
                    a.username.get_or_insert(s);
                }
                attr::SOFTWARE => {
                    let s = text(typ, v, MAX_TEXT)?;
                    a.software.get_or_insert(s);
                }
                attr::REALM => {
                    let s = text(typ, v, MAX_TEXT)?;
                    a.realm.get_or_insert(s);
                }
                attr::NONCE => {
                    let s = text(typ, v, MAX_TEXT)?;
                    a.nonce.get_or_insert(s);
                }
                attr::XOR_MAPPED_ADDRESS => {
                    let addr = decode_xor_address(v, &transaction_id)?;
                    a.xor_mapped_address.get_or_insert(addr);
                }
                attr::PRIORITY => {
                    let p = u32::from_be_bytes(fixed::<4>(typ, v)?);
                    a.priority.get_or_insert(p);
                }
                attr::USE_CANDIDATE => {
                    if vlen != 0 {
                        return Err(StunError::BadAttribute(typ));
                    }
                    a.use_candidate = true;
                }
                attr::ICE_CONTROLLING => {
                    let t = u64::from_be_bytes(fixed::<8>(typ, v)?);
                    a.ice_controlling.get_or_insert(t);
                }
                attr::ICE_CONTROLLED => {
                    let t = u64::from_be_bytes(fixed::<8>(typ, v)?);
                    a.ice_controlled.get_or_insert(t);
                }
                attr::ERROR_CODE => {
                    if vlen < 4 || v[0] != 0 || v[1] != 0 {
                        return Err(StunError::BadAttribute(typ));
                    }
                    let (class, number) = (v[2] & 0x07, v[3]);
                    if !(3..=6).contains(&class) || number > 99 {
                        return Err(StunError::BadAttribute(typ));
                    }
                    let reason = text(typ, &v[4..], MAX_TEXT)?;
                    a.error_code.get_or_insert(ErrorCode {
                        code: class as u16 * 100 + number as u16,
                        reason,
                    });
                }
                attr::UNKNOWN_ATTRIBUTES => {
                    if !vlen.is_multiple_of(2) {
                        return Err(StunError::BadAttribute(typ));
                    }
                    if !seen_unknown_attrs {
                        a.unknown_attributes = v.chunks_exact(2).map(|c| be16(c, 0)).collect();
                        seen_unknown_attrs = true;
                    }
                }
                // Understood (RFC 8489 s.14.1) but of no use to an ICE-lite agent.
                attr::MAPPED_ADDRESS => {}
                t if t < 0x8000 && !m.unknown_required.contains(&t) => {
                    m.unknown_required.push(t);
                }
                _ => {}
            }
            off += 4 + padded;
        }
        Ok(m)
    }

    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint
    }

    /// HMAC input: the raw bytes up to the integrity attribute, with the header length
    /// rewritten to end just after that attribute (RFC 8489 s.14.5).
    fn mac_input(&self, off: usize, vlen: usize, mac: &mut impl Mac) {
        let len = (off + 4 + vlen - HEADER_LEN) as u16;
        mac.update(&self.raw[..2]);
        mac.update(&len.to_be_bytes());
        mac.update(&self.raw[4..off]);
    }

    /// Verifies MESSAGE-INTEGRITY (HMAC-SHA1) in constant time; false when absent.
    pub fn verify_integrity(&self, key: &IntegrityKey) -> bool {
        let Some(off) = self.integrity else {
            return false;
        };
        let mut mac = key.sha1.clone();
        self.mac_input(off, 20, &mut mac);
        mac.verify_slice(&self.raw[off + 4..off + 24]).is_ok()
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 (possibly truncated) in constant time; false when absent.
    pub fn verify_integrity_sha256(&self, key: &IntegrityKey) -> bool {
        let Some((off, vlen)) = self.integrity_sha256 else {
            return false;
        };
        let mut mac = key.sha256.clone();
        self.mac_input(off, vlen, &mut mac);
        mac.verify_truncated_left(&self.raw[off + 4..off + 4 + vlen])
            .is_ok()
    }
}

/// Appends attributes in call order; `integrity` and `fingerprint` go last, in that order.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    txid: TransactionId,
    pad: u8,
    too_long: bool,
}

impl MessageBuilder {
    pub fn new(class: Class, method: u16, txid: TransactionId) -> MessageBuilder {
        let m = method & 0x0fff;
        let c = class.bits();
        let t = (m & 0x000f)
            | ((m & 0x0070) << 1)
            | ((m & 0x0f80) << 2)
            | ((c & 1) << 4)
            | ((c & 2) << 7);
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&t.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&txid.0);
        MessageBuilder {
            buf,
            txid,
            pad: 0,
            too_long: false,
        }
    }

    /// Padding byte value (RFC 8489 s.14: any value; RFC 5769's vectors use 0x20).
    pub fn padding(mut self, pad: u8) -> MessageBuilder {
        self.pad = pad;
        self
    }

    fn set_len(&mut self) {
        match u16::try_from(self.buf.len() - HEADER_LEN) {
            Ok(l) => self.buf[2..4].copy_from_slice(&l.to_be_bytes()),
            Err(_) => self.too_long = true,
        }
    }

    /// Any attribute, raw (also for tests that need unknown types).
    pub fn attribute(mut self, typ: u16, value: &[u8]) -> MessageBuilder {
        let Ok(vlen) = u16::try_from(value.len()) else {
            self.too_long = true;
            return self;
        };
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&vlen.to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend(std::iter::repeat_n(self.pad, pad));
        self.set_len();
        self
    }

    pub fn username(self, u: &str) -> MessageBuilder {
        self.attribute(attr::USERNAME, u.as_bytes())
    }
    pub fn software(self, s: &str) -> MessageBuilder {
        self.attribute(attr::SOFTWARE, s.as_bytes())
    }
    pub fn priority(self, p: u32) -> MessageBuilder {
        self.attribute(attr::PRIORITY, &p.to_be_bytes())
    }
    pub fn use_candidate(self) -> MessageBuilder {
        self.attribute(attr::USE_CANDIDATE, &[])
    }
    pub fn ice_controlling(self, tiebreaker: u64) -> MessageBuilder {
        self.attribute(attr::ICE_CONTROLLING, &tiebreaker.to_be_bytes())
    }
    pub fn ice_controlled(self, tiebreaker: u64) -> MessageBuilder {
        self.attribute(attr::ICE_CONTROLLED, &tiebreaker.to_be_bytes())
    }
    pub fn xor_mapped_address(self, addr: SocketAddr) -> MessageBuilder {
        let mut v = Vec::with_capacity(20);
        encode_xor_address(addr, &self.txid, &mut v);
        self.attribute(attr::XOR_MAPPED_ADDRESS, &v)
    }
    pub fn error_code(self, code: u16, reason: &str) -> MessageBuilder {
        let mut v = Vec::with_capacity(4 + reason.len());
        v.extend_from_slice(&[0, 0, (code / 100) as u8 & 0x07, (code % 100) as u8]);
        v.extend_from_slice(reason.as_bytes());
        self.attribute(attr::ERROR_CODE, &v)
    }
    pub fn unknown_attributes(self, types: &[u16]) -> MessageBuilder {
        let v: Vec<u8> = types.iter().flat_map(|t| t.to_be_bytes()).collect();
        self.attribute(attr::UNKNOWN_ATTRIBUTES, &v)
    }

    /// All typed attributes, in `Attributes` field order.
    pub fn attributes(mut self, a: &Attributes<'_>) -> MessageBuilder {
        if let Some(s) = a.software {
            self = self.software(s);
        }
        if let Some(s) = a.username {
            self = self.username(s);
        }
        if let Some(s) = a.realm {
            self = self.attribute(attr::REALM, s.as_bytes());
        }
        if let Some(s) = a.nonce {
            self = self.attribute(attr::NONCE, s.as_bytes());
        }
        if let Some(x) = a.xor_mapped_address {
            self = self.xor_mapped_address(x);
        }
        if let Some(p) = a.priority {
            self = self.priority(p);
        }
        if a.use_candidate {
            self = self.use_candidate();
        }
        if let Some(t) = a.ice_controlling {
            self = self.ice_controlling(t);
        }
        if let Some(t) = a.ice_controlled {
            self = self.ice_controlled(t);
        }
        if let Some(e) = a.error_code {
            self = self.error_code(e.code, e.reason);
        }
        if !a.unknown_attributes.is_empty() {
            self = self.unknown_attributes(&a.unknown_attributes);
        }
        self
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 over everything so far).
    pub fn integrity(mut self, key: &IntegrityKey) -> MessageBuilder {
        let off = self.buf.len();
        self.buf
            .extend_from_slice(&attr::MESSAGE_INTEGRITY.to_be_bytes());
        self.buf.extend_from_slice(&20u16.to_be_bytes());
        self.buf.extend_from_slice(&[0; 20]);
        self.set_len();
        let mut mac = key.sha1.clone();
        mac.update(&self.buf[..off]);
        let tag = mac.finalize().into_bytes();
        self.buf[off + 4..].copy_from_slice(&tag);
        self
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    pub fn integrity_sha256(mut self, key: &IntegrityKey) -> MessageBuilder {
        let off = self.buf.len();
        self.buf
            .extend_from_slice(&attr::MESSAGE_INTEGRITY_SHA256.to_be_bytes());
        self.buf.extend_from_slice(&32u16.to_be_bytes());
        self.buf.extend_from_slice(&[0; 32]);
        self.set_len();
        let mut mac = key.sha256.clone();
        mac.update(&self.buf[..off]);
        let tag = mac.finalize().into_bytes();
        self.buf[off + 4..].copy_from_slice(&tag);
        self
    }

    /// Appends FINGERPRINT; nothing may follow it.
    pub fn fingerprint(mut self) -> MessageBuilder {
        let off = self.buf.len();
        self.buf.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
        self.buf.extend_from_slice(&4u16.to_be_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.set_len();
        let crc = crc32fast::hash(&self.buf[..off]) ^ FINGERPRINT_XOR;
        self.buf[off + 4..].copy_from_slice(&crc.to_be_bytes());
        self
    }

    pub fn build(self) -> Result<Vec<u8>, StunError> {
        if self.too_long {
            return Err(StunError::TooLong);
        }
        Ok(self.buf)
    }
}
