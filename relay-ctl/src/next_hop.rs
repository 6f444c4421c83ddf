//! Next hops from the control plane: where frames to a stream's destination leave (egress
//! device, source and destination MAC, MTU), resolved from the kernel's routes, neighbours and
//! links as netlink reports them, so the fast path needs no per-packet FIB lookup.
//!
//! Pure: [`resolve`] answers for one destination from a [`NetSnapshot`]; [`NextHops`] gives
//! each (destination, egress) in use a slot of the fast path's next-hop array and says which
//! slots changed when a new snapshot arrives. The netlink I/O is in `next_hop_watch`.
//!
//! What the daemon does not follow is left to the kernel FIB lookup (the slot stays
//! unresolved, the program counts `fib_lookup`): policy routing rules, multipath and
//! non-unicast routes and other paths it does not copy, neighbours not (or no longer) valid, devices the fast path does not own.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use relay_common::stream::NextHop;

/// A device as netlink reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    Unicast,
    /// Local, broadcast, blackhole, unreachable, prohibit, ...: nothing to forward to.
    Other,
}

/// A route of the local, main or default table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub table: u32,
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub kind: RouteKind,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// The metric (lower wins).
    pub priority: u32,
    /// RTAX_MTU, when the route sets one.
    pub mtu: Option<u32>,
    /// Multipath (the kernel picks a path per flow), a nexthop object, a gateway of the other
    /// family, an encapsulation, a source or TOS selector: paths the daemon does not copy.
    pub complex: bool,
}

/// A neighbour (ARP / NDP) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub lladdr: Option<[u8; 6]>,
    /// NUD_* bits.
    pub state: u16,
}

/// NUD states whose link-layer address the kernel itself sends to (NUD_VALID).
pub const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

pub const RT_TABLE_DEFAULT: u32 = 253;
pub const RT_TABLE_MAIN: u32 = 254;
pub const RT_TABLE_LOCAL: u32 = 255;

/// One rule of the routing policy database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    pub table: u32,
    /// Any selector besides the priority (from, to, iif, oif, fwmark, ports, ...).
    pub selective: bool,
}

impl Rule {
    /// The rules every namespace starts with: local (0), main (32766), default (32767).
    fn is_default(&self) -> bool {
        !self.selective
            && matches!(
                (self.priority, self.table),
                (0, RT_TABLE_LOCAL) | (32766, RT_TABLE_MAIN) | (32767, RT_TABLE_DEFAULT)
            )
    }
}

/// The kernel's routing state, as one dump saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetSnapshot {
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
    pub rules: Vec<Rule>,
}

/// Why a destination is left to the kernel FIB lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// Rules beyond the default three: the route may depend on more than the destination.
    PolicyRules,
    NoRoute,
    /// The best route is not unicast (local, blackhole, unreachable, ...).
    NotUnicast,
    /// Multipath, nexthop objects, encapsulation, ... (see [`Route::complex`]).
    ComplexRoute,
    /// The route leaves by a device the fast path cannot send to.
    DeviceNotOwned,
    /// No valid neighbour entry yet (the kernel resolves it when the FIB path sends).
    NoNeighbour,
    NoLink,
}

impl NetSnapshot {
    pub fn policy_routing(&self) -> bool {
        self.rules.iter().any(|r| !r.is_default())
    }
}

/// The next hop towards `dst`, leaving by `oif` when the stream pins its egress device (as
/// `ip route get DST oif DEV`). `owned`: devices the fast path may send to.
pub fn resolve(
    snap: &NetSnapshot,
    dst: IpAddr,
    oif: Option<u32>,
    owned: &HashSet<u32>,
) -> Result<NextHop, Unresolved> {
    if snap.policy_routing() {
        return Err(Unresolved::PolicyRules);
    }
    // The default rules consult local, then main, then default.
    let route = [RT_TABLE_LOCAL, RT_TABLE_MAIN, RT_TABLE_DEFAULT]
        .iter()
        .find_map(|t| best_route(snap, *t, dst, oif))
        .ok_or(Unresolved::NoRoute)?;
    if route.kind != RouteKind::Unicast {
        return Err(Unresolved::NotUnicast);
    }
    if route.complex {
        return Err(Unresolved::ComplexRoute);
    }
    let ifindex = route.oif.ok_or(Unresolved::NoRoute)?;
    if !owned.contains(&ifindex) {
        return Err(Unresolved::DeviceNotOwned);
    }
    let link = snap
        .links
        .iter()
        .find(|l| l.ifindex == ifindex)
        .ok_or(Unresolved::NoLink)?;
    let smac = link.mac.ok_or(Unresolved::NoLink)?;
    let via = route.gateway.unwrap_or(dst);
    let dmac = snap
        .neighbours
        .iter()
        .find(|n| n.ifindex == ifindex && n.addr == via && n.state & NUD_VALID != 0)
        .and_then(|n| n.lladdr)
        .ok_or(Unresolved::NoNeighbour)?;
    Ok(NextHop {
        ifindex,
        mtu: route.mtu.filter(|m| *m != 0).unwrap_or(link.mtu),
        smac,
        dmac,
    })
}

/// The longest matching prefix of one table, lowest metric first among equals.
fn best_route(snap: &NetSnapshot, table: u32, dst: IpAddr, oif: Option<u32>) -> Option<&Route> {
    snap.routes
        .iter()
        .filter(|r| r.table == table && contains(r.dst, r.prefix_len, dst))
        // A pinned egress restricts the lookup to routes through it (local routes have none).
        .filter(|r| oif.is_none() || r.oif.is_none() || r.oif == oif)
        .min_by_key(|r| (std::cmp::Reverse(r.prefix_len), r.priority))
}

/// Whether `prefix/len` contains `addr` (same family only).
fn contains(prefix: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (prefix, addr) {
        (IpAddr::V4(p), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(p) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(p), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(p) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// A destination as the fast path reaches it: the address, and the egress device the stream
/// pins (0: whichever the routes choose).
pub type HopKey = (IpAddr, u32);

struct Slot {
    key: HopKey,
    refs: u32,
    value: NextHop,
}

/// The next-hop array as the daemon fills it: one slot per [`HopKey`] in use, shared by every
/// stream that goes there, so a neighbour change rewrites one slot, not every stream entry.
pub struct NextHops {
    capacity: u32,
    by_key: HashMap<HopKey, u32>,
    slots: HashMap<u32, Slot>,
    free: Vec<u32>,
    /// Released slots, free again once the entries that named them are gone from the map.
    released: Vec<u32>,
    snapshot: Option<NetSnapshot>,
    owned: HashSet<u32>,
}

impl NextHops {
    /// `capacity`: slots of the array (slot 0 is never given out); `owned`: the devices the
    /// fast path runs on and may send to.
    pub fn new(capacity: u32, owned: HashSet<u32>) -> NextHops {
        NextHops {
            capacity,
            by_key: HashMap::new(),
            slots: HashMap::new(),
            free: (1..capacity).rev().collect(),
            released: Vec::new(),
            snapshot: None,
            owned,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// A slot for `key` (shared with the streams already going there), resolved against the
    /// latest snapshot, and whether it is new (to be written before use); None when the array
    /// is full (the stream then uses the FIB).
    pub fn acquire(&mut self, key: HopKey) -> Option<(u32, bool)> {
        if let Some(i) = self.by_key.get(&key) {
            let s = self.slots.get_mut(i)?;
            s.refs += 1;
            return Some((*i, false));
        }
        let i = self.free.pop()?;
        let value = self.resolve(key);
        self.by_key.insert(key, i);
        self.slots.insert(
            i,
            Slot {
                key,
                refs: 1,
                value,
            },
        );
        Some((i, true))
    }

    /// One stream no longer goes through slot `i`.
    pub fn release(&mut self, i: u32) {
        let Some(s) = self.slots.get_mut(&i) else {
            return;
        };
        s.refs = s.refs.saturating_sub(1);
        if s.refs == 0 {
            let key = s.key;
            self.slots.remove(&i);
            self.by_key.remove(&key);
            self.released.push(i);
        }
    }

    /// The entries that named released slots are out of the map now: the slots may be reused.
    pub fn recycle(&mut self) {
        self.free.append(&mut self.released);
    }

    /// The value slot `i` holds (unresolved: zero).
    pub fn value(&self, i: u32) -> NextHop {
        self.slots.get(&i).map(|s| s.value).unwrap_or_default()
    }

    /// Slots in use.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots resolved now.
    pub fn resolved(&self) -> usize {
        self.slots.values().filter(|s| s.value.ifindex != 0).count()
    }

    /// A new view of the kernel's state and of the devices the fast path owns: re-resolves
    /// every slot and returns those whose value changed, to be written to the array.
    pub fn update(&mut self, snap: NetSnapshot, owned: HashSet<u32>) -> Vec<(u32, NextHop)> {
        self.snapshot = Some(snap);
        self.owned = owned;
        let keys: Vec<(u32, HopKey)> = self.slots.iter().map(|(i, s)| (*i, s.key)).collect();
        let mut changed = Vec::new();
        for (i, key) in keys {
            let v = self.resolve(key);
            if let Some(s) = self.slots.get_mut(&i)
                && s.value != v
            {
                tracing::debug!(slot = i, dst = %key.0, ifindex = v.ifindex, "next hop changed");
                s.value = v;
                changed.push((i, v));
            }
        }
        changed
    }

    fn resolve(&self, (dst, oif): HopKey) -> NextHop {
        let Some(snap) = &self.snapshot else {
            return NextHop::default();
        };
        let oif = (oif != 0).then_some(oif);
        resolve(snap, dst, oif, &self.owned).unwrap_or_else(|why| {
            tracing::debug!(%dst, ?why, "next hop left to the kernel FIB lookup");
            NextHop::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETH0: u32 = 2;
    const ETH1: u32 = 3;
    const MAC0: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const GW: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 0xbb];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn route(table: u32, dst: &str, len: u8, oif: u32, gw: Option<&str>) -> Route {
        Route {
            table,
            dst: ip(dst),
            prefix_len: len,
            kind: RouteKind::Unicast,
            oif: Some(oif),
            gateway: gw.map(ip),
            priority: 0,
            mtu: None,
            complex: false,
        }
    }

    fn neigh(ifindex: u32, addr: &str, mac: [u8; 6], state: u16) -> Neighbour {
        Neighbour {
            ifindex,
            addr: ip(addr),
            lladdr: Some(mac),
            state,
        }
    }

    const REACHABLE: u16 = 0x02;
    const STALE: u16 = 0x04;
    const INCOMPLETE: u16 = 0x01;

    /// eth0: 10.0.0.0/24 with a default route via 10.0.0.254; eth1: 10.1.0.0/24.
    fn net() -> NetSnapshot {
        NetSnapshot {
            links: vec![
                Link {
                    ifindex: ETH0,
                    mac: Some(MAC0),
                    mtu: 1500,
                },
                Link {
                    ifindex: ETH1,
                    mac: Some(MAC1),
                    mtu: 9000,
                },
            ],
            routes: vec![
                route(RT_TABLE_MAIN, "0.0.0.0", 0, ETH0, Some("10.0.0.254")),
                route(RT_TABLE_MAIN, "10.0.0.0", 24, ETH0, None),
                route(RT_TABLE_MAIN, "10.1.0.0", 24, ETH1, None),
                Route {
                    kind: RouteKind::Other,
                    oif: Some(ETH0),
                    ..route(RT_TABLE_LOCAL, "10.0.0.1", 32, ETH0, None)
                },
            ],
            neighbours: vec![
                neigh(ETH0, "10.0.0.254", GW, REACHABLE),
                neigh(ETH0, "10.0.0.7", PEER, STALE),
                neigh(ETH1, "10.1.0.9", PEER, INCOMPLETE),
            ],
            rules: vec![
                Rule {
                    priority: 0,
                    table: RT_TABLE_LOCAL,
                    selective: false,
                },
                Rule {
                    priority: 32766,
                    table: RT_TABLE_MAIN,
                    selective: false,
                },
                Rule {
                    priority: 32767,
                    table: RT_TABLE_DEFAULT,
                    selective: false,
                },
            ],
        }
    }

    fn owned() -> HashSet<u32> {
        HashSet::from([ETH0, ETH1])
    }

    #[test]
    fn a_connected_destination_goes_to_its_own_mac() {
        let h = resolve(&net(), ip("10.0.0.7"), None, &owned()).unwrap();
        assert_eq!(
            h,
            NextHop {
                ifindex: ETH0,
                mtu: 1500,
                smac: MAC0,
                dmac: PEER
            }
        );
    }

    #[test]
    fn a_remote_destination_goes_to_the_gateway_of_the_longest_prefix() {
        let h = resolve(&net(), ip("192.0.2.1"), None, &owned()).unwrap();
        assert_eq!((h.ifindex, h.dmac), (ETH0, GW));
    }

    #[test]
    fn an_incomplete_or_missing_neighbour_is_left_to_the_fib() {
        assert_eq!(
            resolve(&net(), ip("10.1.0.9"), None, &owned()),
            Err(Unresolved::NoNeighbour)
        );
        assert_eq!(
            resolve(&net(), ip("10.1.0.10"), None, &owned()),
            Err(Unresolved::NoNeighbour)
        );
    }

    #[test]
    fn policy_rules_leave_everything_to_the_fib() {
        let mut n = net();
        n.rules.push(Rule {
            priority: 100,
            table: 10,
            selective: true,
        });
        assert_eq!(
            resolve(&n, ip("10.0.0.7"), None, &owned()),
            Err(Unresolved::PolicyRules)
        );
    }

    #[test]
    fn local_multipath_foreign_devices_and_no_route_are_left_to_the_fib() {
        let mut n = net();
        assert_eq!(
            resolve(&n, ip("10.0.0.1"), None, &owned()),
            Err(Unresolved::NotUnicast)
        );
        assert_eq!(
            resolve(&n, ip("10.0.0.7"), None, &HashSet::from([ETH1])),
            Err(Unresolved::DeviceNotOwned)
        );
        n.routes[0].complex = true;
        assert_eq!(
            resolve(&n, ip("192.0.2.1"), None, &owned()),
            Err(Unresolved::ComplexRoute)
        );
        n.routes.remove(0);
        assert_eq!(
            resolve(&n, ip("192.0.2.1"), None, &owned()),
            Err(Unresolved::NoRoute)
        );
        assert_eq!(
            resolve(&n, ip("fd00::1"), None, &owned()),
            Err(Unresolved::NoRoute)
        );
    }

    #[test]
    fn a_pinned_egress_restricts_the_routes_and_the_route_mtu_wins() {
        let mut n = net();
        // A second default through eth1 with a worse metric and its own MTU.
        n.routes.push(Route {
            priority: 10,
            mtu: Some(1400),
            ..route(RT_TABLE_MAIN, "0.0.0.0", 0, ETH1, Some("10.1.0.1"))
        });
        n.neighbours.push(neigh(ETH1, "10.1.0.1", GW, REACHABLE));
        let free = resolve(&n, ip("192.0.2.1"), None, &owned()).unwrap();
        assert_eq!(free.ifindex, ETH0);
        let pinned = resolve(&n, ip("192.0.2.1"), Some(ETH1), &owned()).unwrap();
        assert_eq!(
            (pinned.ifindex, pinned.smac, pinned.mtu),
            (ETH1, MAC1, 1400)
        );
    }

    #[test]
    fn ipv6_prefixes_match_bit_by_bit() {
        assert!(contains(ip("fd00:1::"), 64, ip("fd00:1::9")));
        assert!(!contains(ip("fd00:1::"), 64, ip("fd00:2::9")));
        assert!(contains(ip("::"), 0, ip("fd00:2::9")));
        assert!(!contains(ip("::"), 0, ip("10.0.0.1")));
        assert!(contains(ip("10.0.0.0"), 31, ip("10.0.0.1")));
        assert!(!contains(ip("10.0.0.0"), 32, ip("10.0.0.1")));
    }

    #[test]
    fn streams_to_one_destination_share_a_slot_and_see_its_changes() {
        let mut hops = NextHops::new(4, owned());
        // Before any snapshot nothing is resolved.
        let (a, fresh) = hops.acquire((ip("10.0.0.7"), 0)).unwrap();
        assert!(fresh);
        assert_eq!(hops.value(a), NextHop::default());
        let changed = hops.update(net(), owned());
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0, a);
        assert_eq!(changed[0].1.dmac, PEER);
        let (b, fresh) = hops.acquire((ip("10.0.0.7"), 0)).unwrap();
        assert_eq!((b, fresh, hops.value(b).dmac), (a, false, PEER));
        let v = hops.value(a);
        // The same snapshot again changes nothing.
        assert!(hops.update(net(), owned()).is_empty());
        // A new MAC for the neighbour: the one slot changes.
        let mut n = net();
        n.neighbours[1].lladdr = Some([2, 0, 0, 0, 0, 0xcc]);
        let new = NextHop {
            dmac: [2, 0, 0, 0, 0, 0xcc],
            ..v
        };
        assert_eq!(hops.update(n.clone(), owned()), vec![(a, new)]);
        // The neighbour goes away: the slot is unresolved (FIB) until it comes back.
        n.neighbours.remove(1);
        assert_eq!(hops.update(n, owned()), vec![(a, NextHop::default())]);
        assert_eq!(hops.resolved(), 0);
        // Both users gone: the slot is free (after recycle) and holds nothing.
        hops.release(a);
        hops.release(b);
        assert!(hops.is_empty());
    }

    #[test]
    fn slots_are_reused_only_after_recycle_and_the_array_can_fill() {
        let mut hops = NextHops::new(3, owned());
        let (a, _) = hops.acquire((ip("10.0.0.7"), 0)).unwrap();
        let (b, _) = hops.acquire((ip("10.0.0.8"), 0)).unwrap();
        assert_ne!(a, 0);
        assert_ne!(b, 0);
        assert!(
            hops.acquire((ip("10.0.0.9"), 0)).is_none(),
            "slot 0 is never used"
        );
        hops.release(a);
        assert!(
            hops.acquire((ip("10.0.0.9"), 0)).is_none(),
            "not before recycle"
        );
        hops.recycle();
        let (c, _) = hops.acquire((ip("10.0.0.9"), 0)).unwrap();
        assert_eq!(c, a);
        assert_eq!(hops.len(), 2);
    }
}
