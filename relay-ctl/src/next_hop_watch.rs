//! The netlink side of next-hop resolution (rtnetlink): a task that dumps links, routes,
//! neighbours and rules into a [`NetSnapshot`] at start and again after every change the kernel
//! announces (link, route, neighbour and rule groups), and hands each snapshot to the daemon's
//! loop, which re-resolves the next-hop slots ([`crate::next_hop::NextHops`]).
//!
//! A burst of events (an ARP reply, a flapping link) costs one dump: events arriving within
//! [`SETTLE`] of each other are folded. A dump is a few kilobytes on a host with a handful of
//! routes, so a changed MAC reaches the fast path in milliseconds.

use std::{net::IpAddr, time::Duration};

use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle, IpVersion, MulticastGroup,
    packet_route::{
        link::LinkAttribute,
        neighbour::{NeighbourAddress, NeighbourAttribute},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType},
        rule::{RuleAction, RuleAttribute, RuleMessage},
    },
};
use tokio::sync::mpsc;

use crate::next_hop::{Link, Neighbour, NetSnapshot, Route, RouteKind, Rule};

/// Events closer together than this are answered with one dump.
const SETTLE: Duration = Duration::from_millis(5);
/// A dump also runs this often without events (a lost notification heals itself).
const REFRESH: Duration = Duration::from_secs(30);

/// Starts the watcher on the current tokio runtime; snapshots arrive on the receiver, the
/// first one right away. Fails only if the netlink socket cannot be opened.
pub fn spawn() -> std::io::Result<mpsc::Receiver<NetSnapshot>> {
    let (conn, handle, mut events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Ipv4Rule,
        MulticastGroup::Ipv6Rule,
    ])?;
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            match dump(&handle).await {
                Ok(snap) => {
                    if tx.send(snap).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "netlink dump for next hops failed; streams use the kernel FIB lookup")
                }
            }
            // Wait for a change (or the periodic refresh), then let a burst settle.
            if let Ok(None) = tokio::time::timeout(REFRESH, events.next()).await {
                tracing::warn!("netlink event socket closed; next hops are no longer kept current");
                return;
            }
            while let Ok(Some(_)) = tokio::time::timeout(SETTLE, events.next()).await {}
        }
    });
    Ok(rx)
}

/// Links, routes (local, main and default tables), neighbours and rules, both families.
pub async fn dump(handle: &Handle) -> Result<NetSnapshot, rtnetlink::Error> {
    let mut snap = NetSnapshot::default();
    let mut links = handle.link().get().execute();
    while let Some(m) = links.try_next().await? {
        let mut l = Link {
            ifindex: m.header.index,
            mac: None,
            mtu: 1500,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::Address(b) if b.len() == 6 => l.mac = b[..6].try_into().ok(),
                LinkAttribute::Mtu(v) => l.mtu = *v,
                _ => {}
            }
        }
        snap.links.push(l);
    }
    for msg in [
        rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let mut routes = handle.route().get(msg).execute();
        while let Some(m) = routes.try_next().await? {
            if let Some(r) = route(&m) {
                snap.routes.push(r);
            }
        }
    }
    let mut neighbours = handle.neighbours().get().execute();
    while let Some(m) = neighbours.try_next().await? {
        let mut addr = None;
        let mut lladdr = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                    addr = Some(IpAddr::V4(*v))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                    addr = Some(IpAddr::V6(*v))
                }
                NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                    lladdr = b[..6].try_into().ok()
                }
                _ => {}
            }
        }
        if let Some(addr) = addr {
            snap.neighbours.push(Neighbour {
                ifindex: m.header.ifindex,
                addr,
                lladdr,
                state: u16::from(m.header.state),
            });
        }
    }
    for v in [IpVersion::V4, IpVersion::V6] {
        let mut rules = handle.rule().get(v).execute();
        while let Some(m) = rules.try_next().await? {
            snap.rules.push(rule(&m));
        }
    }
    Ok(snap)
}

/// A rule, and whether it selects on anything besides its priority.
fn rule(m: &RuleMessage) -> Rule {
    let mut r = Rule {
        priority: 0,
        table: u32::from(m.header.table),
        selective: m.header.action != RuleAction::ToTable
            || m.header.dst_len != 0
            || m.header.src_len != 0
            || m.header.tos != 0,
    };
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => r.priority = *p,
            RuleAttribute::Table(t) => r.table = *t,
            // u32::MAX: no suppression (what the kernel reports for its own rules).
            RuleAttribute::Protocol(_)
            | RuleAttribute::SuppressPrefixLen(u32::MAX)
            | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
            _ => r.selective = true,
        }
    }
    r
}

/// A route of the tables the default rules consult; None for others (and cloned entries).
fn route(m: &RouteMessage) -> Option<Route> {
    let mut r = Route {
        table: u32::from(m.header.table),
        dst: match m.header.address_family {
            rtnetlink::packet_route::AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
            _ => IpAddr::from([0u8; 4]),
        },
        prefix_len: m.header.destination_prefix_length,
        kind: if m.header.kind == RouteType::Unicast {
            RouteKind::Unicast
        } else {
            RouteKind::Other
        },
        oif: None,
        gateway: None,
        priority: 0,
        mtu: None,
        complex: m.header.source_prefix_length != 0 || m.header.tos != 0,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Destination(d) => r.dst = addr(d)?,
            RouteAttribute::Gateway(g) => r.gateway = Some(addr(g)?),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Priority(p) => r.priority = *p,
            RouteAttribute::Metrics(ms) => {
                for x in ms {
                    if let RouteMetric::Mtu(v) = x {
                        r.mtu = Some(*v);
                    }
                }
            }
            // Paths the kernel picks per flow, nexthop objects, a gateway of the other family,
            // encapsulations: left to the FIB lookup.
            RouteAttribute::MultiPath(_)
            | RouteAttribute::NhId(_)
            | RouteAttribute::Via(_)
            | RouteAttribute::Encap(_) => r.complex = true,
            _ => {}
        }
    }
    Some(r)
}

fn addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::{
        route::{RouteHeader, RouteProtocol},
        rule::RuleHeader,
    };

    use super::*;

    fn rule_msg(table: u8, attrs: Vec<RuleAttribute>) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header = RuleHeader {
            table,
            action: RuleAction::ToTable,
            ..RuleHeader::default()
        };
        m.attributes = attrs;
        m
    }

    #[test]
    fn the_kernels_own_rules_are_not_policy_routing_and_a_selector_is() {
        // As a fresh namespace dumps them (kernel 6.18).
        let main = rule(&rule_msg(
            254,
            vec![
                RuleAttribute::Table(254),
                RuleAttribute::SuppressPrefixLen(u32::MAX),
                RuleAttribute::Protocol(RouteProtocol::Kernel),
                RuleAttribute::Priority(32766),
            ],
        ));
        assert_eq!(
            (main.priority, main.table, main.selective),
            (32766, 254, false)
        );
        let local = rule(&rule_msg(255, vec![RuleAttribute::Table(255)]));
        assert_eq!((local.priority, local.selective), (0, false));
        let fwmark = rule(&rule_msg(
            10,
            vec![RuleAttribute::Priority(100), RuleAttribute::FwMark(1)],
        ));
        assert!(fwmark.selective);
        let suppress = rule(&rule_msg(254, vec![RuleAttribute::SuppressPrefixLen(0)]));
        assert!(suppress.selective);
    }

    #[test]
    fn routes_carry_gateway_device_metric_and_mtu_and_multipath_is_complex() {
        let mut m = RouteMessage::default();
        m.header = RouteHeader {
            table: 254,
            destination_prefix_length: 24,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        m.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet("10.9.0.0".parse().unwrap())),
            RouteAttribute::Gateway(RouteAddress::Inet("10.0.0.1".parse().unwrap())),
            RouteAttribute::Oif(4),
            RouteAttribute::Priority(20),
            RouteAttribute::Metrics(vec![RouteMetric::Mtu(1400)]),
        ];
        let r = route(&m).unwrap();
        assert_eq!(r.dst, "10.9.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(
            (r.prefix_len, r.oif, r.priority, r.mtu, r.kind, r.complex),
            (24, Some(4), 20, Some(1400), RouteKind::Unicast, false)
        );
        assert_eq!(r.gateway, Some("10.0.0.1".parse().unwrap()));
        m.attributes.push(RouteAttribute::MultiPath(Vec::new()));
        assert!(route(&m).unwrap().complex);
        m.header.kind = RouteType::BlackHole;
        assert_eq!(route(&m).unwrap().kind, RouteKind::Other);
    }
}
