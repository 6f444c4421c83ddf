//! parse(build(m)) == m for arbitrary typed attributes, with integrity and fingerprint.

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use relay_core::stun::{
    Attributes, Class, ErrorCode, IntegrityKey, MessageBuilder, StunMessage, TransactionId,
};

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error)
    ]
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(IpAddr::from(a), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(IpAddr::from(a), p)),
    ]
}

proptest! {
    #[test]
    fn parse_build_roundtrip(
        class in class(),
        method in 0u16..0x1000,
        txid in any::<[u8; 12]>(),
        username in proptest::option::of("[a-zA-Z0-9+/:]{0,64}"),
        software in proptest::option::of("\\PC{0,40}"),
        reason in "[ -~]{0,40}",
        code in proptest::option::of(300u16..700),
        xma in proptest::option::of(addr()),
        priority in proptest::option::of(any::<u32>()),
        use_candidate in any::<bool>(),
        controlling in proptest::option::of(any::<u64>()),
        controlled in proptest::option::of(any::<u64>()),
        unknown in proptest::collection::vec(any::<u16>(), 0..5),
        pad in any::<u8>(),
        pwd in "[a-zA-Z0-9]{1,32}",
    ) {
        let attrs = Attributes {
            software: software.as_deref(),
            username: username.as_deref(),
            realm: None,
            nonce: None,
            xor_mapped_address: xma,
            priority,
            use_candidate,
            ice_controlling: controlling,
            ice_controlled: controlled,
            error_code: code.map(|code| ErrorCode { code, reason: &reason }),
            unknown_attributes: unknown,
        };
        let key = IntegrityKey::new(pwd.as_bytes());
        let bytes = MessageBuilder::new(class, method, TransactionId(txid))
            .padding(pad)
            .attributes(&attrs)
            .integrity(&key)
            .fingerprint()
            .build()
            .unwrap();
        let m = StunMessage::parse(&bytes).unwrap();
        prop_assert_eq!(m.class, class);
        prop_assert_eq!(m.method, method);
        prop_assert_eq!(m.transaction_id, TransactionId(txid));
        prop_assert_eq!(&m.attributes, &attrs);
        prop_assert!(m.unknown_required.is_empty());
        prop_assert!(m.verify_integrity(&key));
        prop_assert!(m.has_fingerprint());
    }

    #[test]
    fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = StunMessage::parse(&data);
    }
}
