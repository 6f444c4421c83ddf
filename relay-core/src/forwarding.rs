//! Forwarding entries: what the fast path needs per relay endpoint (where a packet may come from,
//! where it goes), and the difference between two entry sets, which is all the daemon applies.

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use crate::component::Component;

/// What the fast path does with a packet whose source is not the expected one.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum MismatchPolicy {
    Drop,
    /// XDP_PASS to the daemon, which may re-latch (media handover).
    Userspace,
    Forward,
    /// The default after latching: dropped, unless the latched source has been silent for the
    /// handover interval (a NAT rebinding) or the learning window may still move the latch to a
    /// better match; the daemon decides those ([`crate::session::Sessions::latch_at`]).
    Handover,
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
pub struct EntryChanges {
    pub inserts: Vec<ForwardingEntry>,
    pub updates: Vec<ForwardingEntry>,
    pub removals: Vec<SocketAddr>,
}

impl EntryChanges {
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.updates.is_empty() && self.removals.is_empty()
    }
}

/// Diffs two entry sets by local endpoint. Output is sorted by local endpoint.
pub fn diff(old: &[ForwardingEntry], new: &[ForwardingEntry]) -> EntryChanges {
    let old: BTreeMap<SocketAddr, &ForwardingEntry> = old.iter().map(|e| (e.local, e)).collect();
    let new: BTreeMap<SocketAddr, &ForwardingEntry> = new.iter().map(|e| (e.local, e)).collect();
    let mut c = EntryChanges::default();
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
}
