#![no_main]
//! Parser must never panic; a parsed message re-verifies and the agent handles anything.

use libfuzzer_sys::fuzz_target;
use relay_core::creds::Credentials;
use relay_core::ice::{Component, IceLiteAgent};
use relay_core::stun::{IntegrityKey, StunMessage, is_stun};

fuzz_target!(|data: &[u8]| {
    let _ = is_stun(data);
    if let Ok(m) = StunMessage::parse(data) {
        let key = IntegrityKey::new(b"pwd");
        let _ = m.verify_integrity(&key);
        let _ = m.verify_integrity_sha256(&key);
    }
    let mut agent = IceLiteAgent::new(Credentials::new("ufrag", "pwd"), 2);
    let now = std::time::Instant::now();
    let addr = "127.0.0.1:9".parse().expect("literal address");
    let _ = agent.handle_stun(now, Component::Rtp, addr, addr, data);
});
