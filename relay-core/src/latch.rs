//! Latching (RFC 7362): how the peer address of a leg without ICE is learned.

use std::net::IpAddr;

/// How the peer address of a non-ICE leg is learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LatchMode {
    /// RFC 7362 restricted latching: only media from the signalled IP is latched.
    Restricted,
    /// RFC 7362 symmetric latching: the first source seen is latched, wherever it is.
    Symmetric,
    /// The peer does not send from where it receives: nothing is learned, anything is accepted.
    Asymmetric,
}

/// RFC 1918, RFC 6598 (CGN) and RFC 4193 (ULA) addresses, plus link-local: an endpoint signalling
/// one of these is behind a NAT or not reachable as signalled, so symmetric latching is needed.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// Latching mode for a leg, per the flags and what is known about the signalling path.
pub fn choose_mode(
    signalled: Option<IpAddr>,
    received_from: Option<IpAddr>,
    symmetric: bool,
    asymmetric: bool,
    trust_address: bool,
) -> LatchMode {
    if asymmetric {
        return LatchMode::Asymmetric;
    }
    if symmetric {
        return LatchMode::Symmetric;
    }
    let Some(sig) = signalled else {
        return LatchMode::Symmetric;
    };
    if is_private(sig) {
        return LatchMode::Symmetric;
    }
    match received_from {
        Some(src) if !trust_address && src != sig => LatchMode::Symmetric,
        _ => LatchMode::Restricted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_and_mode_choice() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "fd00::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["100.128.0.1", "8.8.8.8", "2001:db8::1", "172.32.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
        let pubip = Some("203.0.113.5".parse().unwrap());
        let other = Some("203.0.113.9".parse().unwrap());
        assert_eq!(
            choose_mode(pubip, pubip, false, false, false),
            LatchMode::Restricted
        );
        assert_eq!(
            choose_mode(pubip, other, false, false, false),
            LatchMode::Symmetric
        );
        assert_eq!(
            choose_mode(pubip, other, false, false, true),
            LatchMode::Restricted
        );
        assert_eq!(
            choose_mode(Some("10.0.0.2".parse().unwrap()), None, false, false, false),
            LatchMode::Symmetric
        );
        assert_eq!(
            choose_mode(pubip, None, true, false, false),
            LatchMode::Symmetric
        );
        assert_eq!(
            choose_mode(pubip, None, true, true, false),
            LatchMode::Asymmetric
        );
    }
}
