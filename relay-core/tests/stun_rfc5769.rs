//! RFC 5769 test vectors (copy of shared/vectors/rfc5769.txt, so CI needs nothing outside the repo).

use std::net::SocketAddr;

use relay_core::stun::{self, Class, IntegrityKey, MessageBuilder, StunError, StunMessage};

const VECTORS: &str = include_str!("stun_vectors/rfc5769.txt");
const PWD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

fn vector(name: &str) -> Vec<u8> {
    let mut lines = VECTORS.lines().skip_while(|l| !l.starts_with(name)).skip(1);
    let mut hex = String::new();
    for l in lines.by_ref() {
        if l.trim().is_empty() || l.starts_with('#') {
            break;
        }
        hex.extend(l.chars().filter(|c| c.is_ascii_hexdigit()));
    }
    assert!(!hex.is_empty(), "vector {name} missing");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn sample_request_2_1_parses_and_verifies_over_space_padding() {
    let raw = vector("REQUEST_2_1=");
    assert_eq!(raw.len(), 108);
    let m = StunMessage::parse(&raw).unwrap();
    assert_eq!(m.class, Class::Request);
    assert_eq!(m.method, stun::BINDING);
    assert_eq!(m.attributes.software, Some("STUN test client"));
    assert_eq!(m.attributes.username, Some("evtj:h6vY"));
    assert_eq!(m.attributes.priority, Some(0x6e0001ff));
    assert_eq!(m.attributes.ice_controlled, Some(0x932ff9b151263b36));
    assert!(m.has_fingerprint());
    assert!(m.verify_integrity(&IntegrityKey::new(PWD)));
    assert!(!m.verify_integrity(&IntegrityKey::new(b"wrong")));
    // The padding trap: re-encoding with zero padding changes the HMAC input.
    let rebuilt = MessageBuilder::new(Class::Request, stun::BINDING, m.transaction_id)
        .attributes(&m.attributes)
        .integrity(&IntegrityKey::new(PWD))
        .fingerprint()
        .build()
        .unwrap();
    assert_ne!(rebuilt[64..76], raw[64..76]);
    // ...and with the vector's 0x20 padding (attribute order of the vector) it is byte-exact.
    let exact = MessageBuilder::new(Class::Request, stun::BINDING, m.transaction_id)
        .padding(0x20)
        .software("STUN test client")
        .priority(0x6e0001ff)
        .ice_controlled(0x932ff9b151263b36)
        .username("evtj:h6vY")
        .integrity(&IntegrityKey::new(PWD))
        .fingerprint()
        .build()
        .unwrap();
    assert_eq!(exact, raw);
}

fn check_response(name: &str, len: usize, addr: &str) {
    let raw = vector(name);
    assert_eq!(raw.len(), len);
    let m = StunMessage::parse(&raw).unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    assert_eq!(m.class, Class::Success);
    assert_eq!(m.attributes.software, Some("test vector"));
    assert_eq!(m.attributes.xor_mapped_address, Some(addr));
    assert!(m.verify_integrity(&IntegrityKey::new(PWD)));
    // Success responses are what we produce: rebuild byte-exact (vector pads with 0x20).
    let built = MessageBuilder::new(Class::Success, stun::BINDING, m.transaction_id)
        .padding(0x20)
        .software("test vector")
        .xor_mapped_address(addr)
        .integrity(&IntegrityKey::new(PWD))
        .fingerprint()
        .build()
        .unwrap();
    assert_eq!(built, raw);
}

#[test]
fn sample_ipv4_response_2_2_roundtrips_byte_exact() {
    check_response("RESPONSE_IPV4_2_2=", 80, "192.0.2.1:32853");
}

#[test]
fn sample_ipv6_response_2_3_roundtrips_byte_exact() {
    check_response(
        "RESPONSE_IPV6_2_3=",
        92,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
    );
}

#[test]
fn long_term_request_2_4_parses_and_verifies() {
    let raw = vector("REQUEST_LTC_2_4=");
    assert_eq!(raw.len(), 116);
    let m = StunMessage::parse(&raw).unwrap();
    assert_eq!(
        m.attributes.username,
        Some("\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}")
    );
    assert_eq!(m.attributes.realm, Some("example.org"));
    assert_eq!(m.attributes.nonce, Some("f//499k954d6OL34oL9FSTvy64sA"));
    assert!(!m.has_fingerprint());
    // MD5("<user>:example.org:TheMatrIX"), computed with md5sum (no md5 dependency needed).
    let key: Vec<u8> = (0..16)
        .map(|i| {
            u8::from_str_radix(&"e8ca7ad59d5eb0518e312911d2dab2a9"[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect();
    assert!(m.verify_integrity(&IntegrityKey::new(&key)));
}

#[test]
fn corrupted_vector_fails_fingerprint_and_integrity() {
    let mut raw = vector("REQUEST_2_1=");
    raw[30] ^= 1; // inside SOFTWARE
    assert_eq!(StunMessage::parse(&raw), Err(StunError::BadFingerprint));
    // Fix the fingerprint up: integrity must still catch the change.
    let n = raw.len();
    let crc = crc32(&raw[..n - 8]) ^ 0x5354_554e;
    raw[n - 4..].copy_from_slice(&crc.to_be_bytes());
    let m = StunMessage::parse(&raw).unwrap();
    assert!(!m.verify_integrity(&IntegrityKey::new(PWD)));
}

fn crc32(b: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the crate the codec uses.
    let mut c = !0u32;
    for &x in b {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}
