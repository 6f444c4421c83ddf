//! Next hops from the control plane on the fakes: entries name a slot of the next-hop array,
//! the slot follows the routing state the netlink watcher reports, and slots are shared and
//! released with the entries.

use std::collections::HashSet;

use relay_common::stream::NextHop;
use serde_json::json;

use super::*;
use crate::next_hop::{Link, Neighbour, NetSnapshot, Route, RouteKind, Rule};

const DEV: u32 = 7;
const DEV_MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

/// Both peers on one connected subnet behind device 7, with neighbour entries of `mac_a` and
/// `mac_b` (None: no entry).
fn net(mac_a: Option<[u8; 6]>, mac_b: Option<[u8; 6]>) -> NetSnapshot {
    let mut neighbours = Vec::new();
    for (ip, mac) in [("198.51.100.10", mac_a), ("198.51.100.20", mac_b)] {
        if let Some(m) = mac {
            neighbours.push(Neighbour {
                ifindex: DEV,
                addr: ip.parse().unwrap(),
                lladdr: Some(m),
                state: 0x02,
            });
        }
    }
    NetSnapshot {
        links: vec![Link {
            ifindex: DEV,
            mac: Some(DEV_MAC),
            mtu: 1500,
        }],
        routes: vec![Route {
            table: crate::next_hop::RT_TABLE_MAIN,
            dst: "198.51.100.0".parse().unwrap(),
            prefix_len: 24,
            kind: RouteKind::Unicast,
            oif: Some(DEV),
            gateway: None,
            priority: 0,
            mtu: None,
            complex: false,
        }],
        neighbours,
        rules: vec![Rule {
            priority: 32766,
            table: crate::next_hop::RT_TABLE_MAIN,
            selective: false,
        }],
    }
}

fn hop(mac: [u8; 6]) -> NextHop {
    NextHop {
        ifindex: DEV,
        mtu: 1500,
        smac: DEV_MAC,
        dmac: mac,
    }
}

fn call(h: &mut Harness, id: &str) -> (SocketAddr, SocketAddr) {
    let to_b = h.ok_sdp(json!({"command": "offer", "call-id": id, "from-tag": "A",
        "sdp": plain("198.51.100.10", 4000)}));
    let to_a = h.ok_sdp(
        json!({"command": "answer", "call-id": id, "from-tag": "A", "to-tag": "B",
        "sdp": plain("198.51.100.20", 5000)}),
    );
    let (a_ep, b_ep) = (relay(media_port(&to_a)), relay(media_port(&to_b)));
    h.packet(a_ep, sa("198.51.100.10:4000"), &rtp(1));
    h.packet(b_ep, sa("198.51.100.20:5000"), &rtp(1));
    (a_ep, b_ep)
}

#[test]
fn entries_name_a_slot_that_follows_neighbour_changes() {
    let mut h = Harness::new();
    let owned = HashSet::from([DEV]);
    h.engine
        .net_changed_on(net(Some(MAC_A), Some(MAC_B)), owned.clone());
    let (a_ep, b_ep) = call(&mut h, "nh");
    let (ea, eb) = (h.entry(a_ep).unwrap(), h.entry(b_ep).unwrap());
    // A's media goes to B: its entry's slot holds B's MAC, and the other way round.
    assert_ne!(ea.next_hop, 0);
    assert_ne!(ea.next_hop, eb.next_hop);
    let slot = |s| h.table.borrow().next_hops.get(&s).copied();
    assert_eq!(slot(ea.next_hop), Some(hop(MAC_B)));
    assert_eq!(slot(eb.next_hop), Some(hop(MAC_A)));

    // B's neighbour entry gets a new MAC: one slot write, no entry rewritten.
    let inserts = h.table.borrow().inserts.values().sum::<u32>();
    let new_b = [2, 0, 0, 0, 0, 0xbc];
    h.table.borrow_mut().next_hop_writes.clear();
    h.engine
        .net_changed_on(net(Some(MAC_A), Some(new_b)), owned.clone());
    assert_eq!(h.table.borrow().next_hop_writes, vec![ea.next_hop]);
    assert_eq!(slot(ea.next_hop), Some(hop(new_b)));
    assert_eq!(h.table.borrow().inserts.values().sum::<u32>(), inserts);

    // B's neighbour goes away: the slot is cleared (the program then asks the FIB, counted).
    h.engine
        .net_changed_on(net(Some(MAC_A), None), owned.clone());
    assert_eq!(slot(ea.next_hop), Some(NextHop::default()));
    // The fast path no longer owns the device: nothing is resolved.
    h.engine
        .net_changed_on(net(Some(MAC_A), Some(MAC_B)), HashSet::new());
    assert_eq!(slot(eb.next_hop), Some(NextHop::default()));
}

#[test]
fn a_slot_resolved_before_the_entry_is_written_before_it_and_shared() {
    let mut h = Harness::new();
    h.engine
        .net_changed_on(net(Some(MAC_A), Some(MAC_B)), HashSet::from([DEV]));
    let (a1, _) = call(&mut h, "one");
    let (a2, _) = call(&mut h, "two");
    let (e1, e2) = (h.entry(a1).unwrap(), h.entry(a2).unwrap());
    assert_eq!(e1.next_hop, e2.next_hop, "one slot per destination");
    assert_eq!(
        h.table.borrow().next_hops.get(&e1.next_hop),
        Some(&hop(MAC_B))
    );
    assert_eq!(h.engine.table.next_hop_counts(), (2, 2));
    let st = h.ng(json!({"command": "statistics"}));
    assert_eq!(
        st["statistics"]["next hops"],
        json!({"slots": 2, "resolved": 2})
    );
    // Deleting one call keeps the shared slots; deleting both frees them.
    h.ng(json!({"command": "delete", "call-id": "one"}));
    assert_eq!(h.engine.table.next_hop_counts(), (2, 2));
    h.ng(json!({"command": "delete", "call-id": "two"}));
    assert_eq!(h.engine.table.next_hop_counts(), (0, 0));
}

#[test]
fn without_a_routing_view_entries_still_get_slots_that_fill_in_later() {
    let mut h = Harness::new();
    let (a_ep, _) = call(&mut h, "late");
    let e = h.entry(a_ep).unwrap();
    assert_ne!(e.next_hop, 0);
    assert_eq!(
        h.table.borrow().next_hops.get(&e.next_hop),
        Some(&NextHop::default()),
        "written unresolved before the entry"
    );
    h.engine
        .net_changed_on(net(Some(MAC_A), Some(MAC_B)), HashSet::from([DEV]));
    assert_eq!(
        h.table.borrow().next_hops.get(&e.next_hop),
        Some(&hop(MAC_B))
    );
}
