//! Next hops from the control plane, end to end: the daemon resolves each stream's next hop
//! from the relay namespace's routes and neighbours (rtnetlink), the fast path forwards with it
//! and makes no FIB lookup (`fib_lookup` stays still); `ip neigh replace` with a new MAC is
//! followed by the frames on the wire within 100 ms; a deleted neighbour sends the stream to
//! the FIB lookup (counted) and media keeps flowing while the kernel resolves it again.
//! On both hooks: XDP (NIC-like wire) and TC (container-like wire).

use std::time::{Duration, Instant};

use relay_tests::{
    call::{Relay, bind, burst, rtp, sdp},
    sniff::Sniffer,
    topology::{Wire, media_addr},
};
use serde_json::json;

relay_tests::on_both_wires!(next_hop_follows_neighbour_changes);

const NEW_MAC: [u8; 6] = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x77];

fn fib_lookups(r: &Relay) -> u64 {
    let st = r.ng(json!({"command": "statistics"}));
    st["statistics"]["fastpath events"]["fib_lookup"]
        .as_u64()
        .expect("fib_lookup in statistics")
}

fn resolved(r: &Relay) -> u64 {
    let st = r.ng(json!({"command": "statistics"}));
    st["statistics"]["next hops"]["resolved"]
        .as_u64()
        .unwrap_or(0)
}

/// Destination MACs of the UDP frames to `port` the sniffer saw since the last call.
fn dst_macs(s: &Sniffer, port: u16) -> Vec<[u8; 6]> {
    s.frames()
        .into_iter()
        .filter(|f| {
            f.len() >= 42
                && f[12..14] == [0x08, 0x00]
                && f[23] == 17
                && u16::from_be_bytes([f[36], f[37]]) == port
        })
        .map(|f| f[..6].try_into().unwrap())
        .collect()
}

fn mac_of(ns: &relay_tests::netns::Netns, dev: &str) -> [u8; 6] {
    let out = ns.ip(&["-br", "link", "show", "dev", dev]).unwrap();
    let mac = out.split_whitespace().nth(2).expect("MAC in ip -br link");
    let v: Vec<u8> = mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn next_hop_follows_neighbour_changes(wire: Wire) {
    if !relay_tests::privileged("next_hop_follows_neighbour_changes") {
        return;
    }
    let r = Relay::start_on(wire, &["--port-min", "30000", "--port-max", "30100"]).unwrap();
    let (caller_ip, callee_ip) = (r.t.caller.addr.clone(), r.t.callee.addr.clone());
    let caller = bind(&r.t.caller.ns, &format!("{caller_ip}:4000"));
    let callee = bind(&r.t.callee.ns, &format!("{callee_ip}:5000"));
    let to_b = r.offer("nh", "A", &sdp(&caller_ip, 4000, &[]), json!({}));
    let to_a = r.answer("nh", "A", "B", &sdp(&callee_ip, 5000, &[]), json!({}));
    let (relay_a, relay_b) = (media_addr(&to_a), media_addr(&to_b));
    // Latch both legs (the first packet each way goes through the daemon).
    burst(&caller, relay_a, &callee, relay_b, 5, rtp(0));
    burst(&callee, relay_b, &caller, relay_a, 5, rtp(0));
    let t0 = Instant::now();
    while resolved(&r) < 2 && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(resolved(&r) >= 2, "both streams' next hops resolved");
    let entry = r.raw_stream(relay_a).unwrap().expect("entry of A's leg");
    assert_ne!(entry.next_hop, 0, "the entry names a next-hop slot");

    // Steady state: forwarded with the daemon's next hop, no FIB lookup, the callee's MAC.
    let sniff = Sniffer::open(&r.t.callee.ns, &r.t.callee.dev).unwrap();
    let callee_mac = mac_of(&r.t.callee.ns, &r.t.callee.dev);
    let fib0 = fib_lookups(&r);
    burst(&caller, relay_a, &callee, relay_b, 20, rtp(100));
    assert_eq!(
        fib_lookups(&r),
        fib0,
        "no FIB lookup with a resolved next hop"
    );
    let macs = dst_macs(&sniff, 5000);
    assert!(
        macs.len() >= 20 && macs.iter().all(|m| *m == callee_mac),
        "{macs:02x?}"
    );

    // The neighbour's MAC changes: the fast path's frames carry it within 100 ms.
    let changed = Instant::now();
    r.t.relay
        .ip(&[
            "neigh",
            "replace",
            &callee_ip,
            "lladdr",
            "02:5e:00:00:00:77",
            "dev",
            &r.t.callee.relay_dev,
            "nud",
            "permanent",
        ])
        .unwrap();
    let mut followed = None;
    for i in 0..500u16 {
        caller
            .send_to(&relay_tests::frames::rtp_payload(1000 + i), relay_a)
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
        if dst_macs(&sniff, 5000).contains(&NEW_MAC) {
            followed = Some(changed.elapsed());
            break;
        }
    }
    let followed = followed.expect("the new MAC never appeared on the wire");
    eprintln!("{wire:?}: new neighbour MAC on the wire {followed:?} after `ip neigh replace`");
    assert!(
        followed < Duration::from_millis(100),
        "took {followed:?} (wire {wire:?})"
    );
    assert_eq!(fib_lookups(&r), fib0, "followed by the slot, not the FIB");

    // The neighbour goes away: the FIB lookup takes over (counted) and media keeps flowing
    // (the daemon sends while the kernel resolves the neighbour again).
    r.t.relay
        .ip(&["neigh", "del", &callee_ip, "dev", &r.t.callee.relay_dev])
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let fib1 = fib_lookups(&r);
    while callee_recv(&callee) {}
    let mut delivered = 0;
    for i in 0..20u16 {
        caller
            .send_to(&relay_tests::frames::rtp_payload(2000 + i), relay_a)
            .unwrap();
        if callee_recv(&callee) {
            delivered += 1;
        }
    }
    let fib2 = fib_lookups(&r);
    assert!(fib2 > fib1, "fib_lookup rose ({fib1} -> {fib2})");
    assert!(delivered >= 18, "{delivered} of 20 delivered");
    // Once the kernel has the neighbour again, the slot is resolved and the FIB is left alone.
    let t0 = Instant::now();
    while resolved(&r) < 2 && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let fib3 = fib_lookups(&r);
    burst(&caller, relay_a, &callee, relay_b, 10, rtp(3000));
    assert_eq!(
        fib_lookups(&r),
        fib3,
        "resolved again after the kernel's ARP"
    );
    r.assert_wire();
}

fn callee_recv(s: &std::net::UdpSocket) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let got = relay_tests::call::recv(s).is_some();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    got
}
