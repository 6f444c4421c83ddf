// Shared fixtures; included by the session_* and sdp_* test files with `mod`.
#![allow(dead_code)]

use relay_core::creds::Credentials;
use relay_core::session::{Config, Sessions};

pub fn sessions() -> Sessions {
    sessions_with_range(30000, 30099)
}

pub fn sessions_with_range(min: u16, max: u16) -> Sessions {
    let config = Config {
        interfaces: vec![
            "pub/192.0.2.1!203.0.113.1".parse().unwrap(),
            "priv/10.0.0.1".parse().unwrap(),
            "v6/2001:db8::1".parse().unwrap(),
        ],
        port_min: min,
        port_max: max,
    };
    let mut n = 0;
    // Deterministic credentials so golden output is exact.
    Sessions::with_credentials(config, move || {
        n += 1;
        Credentials::new(
            format!("ufrag{n:03}"),
            format!("password{n:03}password{n:03}"),
        )
    })
    .unwrap()
}

/// Joins lines with CRLF, as most SIP devices send.
pub fn crlf(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}
