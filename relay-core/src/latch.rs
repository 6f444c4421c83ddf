//! Forwarding entries the XDP program needs, latching policy (RFC 7362) and entry-set diffs.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// What the fast path does with a packet whose source is not the expected one.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum MismatchPolicy {
    Drop,
    /// XDP_PASS to the daemon, which may re-latch (media handover).
    Userspace,
    Forward,
}

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

/// RTP or RTCP (component 1 or 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Rtp,
    Rtcp,
}

/// Identifies one media stream (one m= line of one call) across re-offers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct StreamId(pub u64);

/// Where a packet goes after rewriting: sent from a relay socket to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rewrite {
    pub from: SocketAddr,
    pub to: SocketAddr,
}

/// One entry of the XDP stream table, keyed by `local`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ForwardingEntry {
    /// Relay bind address and port the packet arrives on.
    pub local: SocketAddr,
    /// Only this source is expected; None accepts any source.
    pub expected_source: Option<SocketAddr>,
    pub mismatch: MismatchPolicy,
    pub stream: StreamId,
    pub component: Component,
    pub rewrite: Rewrite,
    /// For a muxed ingress port whose egress is demuxed: where RTCP (RFC 5761 s.4) goes instead.
    pub rtcp_rewrite: Option<Rewrite>,
}

/// What the daemon must change in the map to go from one entry set to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub inserts: Vec<ForwardingEntry>,
    pub updates: Vec<ForwardingEntry>,
    pub removals: Vec<SocketAddr>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.updates.is_empty() && self.removals.is_empty()
    }
}

/// Diffs two entry sets by local endpoint. Output is sorted by local endpoint.
pub fn diff(old: &[ForwardingEntry], new: &[ForwardingEntry]) -> Changes {
    let old: BTreeMap<SocketAddr, &ForwardingEntry> = old.iter().map(|e| (e.local, e)).collect();
    let new: BTreeMap<SocketAddr, &ForwardingEntry> = new.iter().map(|e| (e.local, e)).collect();
    let mut c = Changes::default();
    for (k, n) in &new {
        match old.get(k) {
            None => c.inserts.push(**n),
            Some(o) if o != n => c.updates.push(**n),
            Some(_) => {}
        }
    }
    c.removals = old
        .keys()
        .filter(|k| !new.contains_key(k))
        .copied()
        .collect();
    c
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

    fn e(local: &str, to: &str) -> ForwardingEntry {
        ForwardingEntry {
            local: local.parse().unwrap(),
            expected_source: None,
            mismatch: MismatchPolicy::Forward,
            stream: StreamId(1),
            component: Component::Rtp,
            rewrite: Rewrite {
                from: "10.0.0.1:2000".parse().unwrap(),
                to: to.parse().unwrap(),
            },
            rtcp_rewrite: None,
        }
    }

    #[test]
    fn diff_finds_inserts_updates_removals() {
        let old = [
            e("10.0.0.1:1000", "1.1.1.1:5"),
            e("10.0.0.1:1002", "1.1.1.1:6"),
        ];
        let new = [
            e("10.0.0.1:1000", "1.1.1.1:7"),
            e("10.0.0.1:1004", "1.1.1.1:8"),
        ];
        let c = diff(&old, &new);
        assert_eq!(c.inserts, vec![new[1]]);
        assert_eq!(c.updates, vec![new[0]]);
        assert_eq!(c.removals, vec!["10.0.0.1:1002".parse().unwrap()]);
        assert!(diff(&new, &new).is_empty());
    }

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
