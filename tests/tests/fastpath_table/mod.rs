//! The fast-path table shared by the XDP and the TC runs under BPF_PROG_TEST_RUN: {case, frame,
//! expected verdict and counter slot, expected output}, the stream entries the cases need, the
//! namespace whose routes and static neighbours make the FIB results deterministic, and the
//! output check with etherparse (an independent implementation): addresses, ports, TTL, MACs,
//! VLAN tags, payload, and the IPv4 header and UDP checksums.
#![allow(dead_code)]

mod cases;

pub use cases::{cases, table};

use std::net::SocketAddr;

use aya::programs::TestRunResult;
use etherparse::{LinkExtHeader, LinkHeader, NetHeaders, PacketHeaders, TransportHeader};
use relay_common::{
    config::RelayConfig,
    stats::Reason,
    stream::{Endpoint, Mismatch, StreamEntry, StreamKey},
};
use relay_ctl::xdp::{Relay, read_totals};
use relay_tests::{
    frames::{self, Vlan},
    netns::Netns,
};

pub const NEIGH_A3: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x03];
pub const NEIGH_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn entry(
    slot: u32,
    expected: &str,
    src: &str,
    dst: &str,
    mismatch: Mismatch,
    flags: u8,
) -> StreamEntry {
    StreamEntry {
        stream_id: u64::from(slot),
        expected: Endpoint::from(sa(expected)),
        src: Endpoint::from(sa(src)),
        dst: Endpoint::from(sa(dst)),
        flags,
        mismatch: mismatch as u8,
        tos: 0,
        handover_ds: 20,
        counter_slot: slot,
        egress_ifindex: 0,
        next_hop: 0,
        rtcp_next_hop: 0,
        rtcp_src: Endpoint::default(),
        rtcp_dst: Endpoint::default(),
    }
}

pub struct Fwd {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub zero_csum: bool,
    /// The TOS / traffic class the output must carry (rtpengine's `TOS`); None: unchecked.
    pub tos: Option<u8>,
}

pub enum Expect {
    Unchanged,
    Forwarded(Fwd),
}

pub struct Case {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub reason: Reason,
    pub expect: Expect,
}

pub fn v4(vlan: Vlan, src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    let ip = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v) => v.octets(),
        _ => unreachable!(),
    };
    frames::udp4(vlan, ip(s), ip(d), s.port(), d.port(), payload)
}

pub fn v6(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    v6_vlan(Vlan::None, src, dst, payload)
}

pub fn v6_vlan(vlan: Vlan, src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    let ip = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V6(v) => v.octets(),
        _ => unreachable!(),
    };
    frames::udp6(vlan, ip(s), ip(d), s.port(), d.port(), payload)
}

/// An IPv4 frame without a UDP checksum (legal on IPv4 only).
pub fn without_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14 + 20 + 6] = 0;
    frame[14 + 20 + 7] = 0;
    frame
}

pub fn fwd_to_b(src: &str, dst: &str) -> Fwd {
    match to_b(src, dst) {
        Expect::Forwarded(f) => f,
        Expect::Unchanged => unreachable!(),
    }
}

pub fn to_b(src: &str, dst: &str) -> Expect {
    Expect::Forwarded(Fwd {
        smac: MAC_B,
        dmac: NEIGH_B,
        src: sa(src),
        dst: sa(dst),
        zero_csum: false,
        tos: None,
    })
}

pub fn check_forwarded(name: &str, input: &[u8], out: &[u8], fwd: &Fwd) -> Vec<String> {
    let (src, dst, zero_csum) = (fwd.src, fwd.dst, fwd.zero_csum);
    let mut f = Vec::new();
    let (hin, hout) = match (
        PacketHeaders::from_ethernet_slice(input),
        PacketHeaders::from_ethernet_slice(out),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (_, Err(e)) => return vec![format!("{name}: output does not parse: {e}")],
        (Err(e), _) => return vec![format!("{name}: input does not parse: {e}")],
    };
    if let Some(LinkHeader::Ethernet2(e)) = &hout.link
        && (e.source, e.destination) != (fwd.smac, fwd.dmac)
    {
        f.push(format!(
            "{name}: MACs {:02x?} -> {:02x?}",
            e.source, e.destination
        ));
    }
    let tags = |h: &PacketHeaders<'_>| {
        h.link_exts
            .iter()
            .filter_map(|x| {
                if let LinkExtHeader::Vlan(v) = x {
                    Some(v.vlan_id.value())
                } else {
                    None
                }
            })
            .collect::<Vec<_>>()
    };
    if tags(&hin) != tags(&hout) {
        f.push(format!(
            "{name}: VLAN tags {:?} -> {:?}",
            tags(&hin),
            tags(&hout)
        ));
    }
    let Some(TransportHeader::Udp(udp)) = &hout.transport else {
        return vec![format!("{name}: no UDP in output")];
    };
    let payload = hout.payload.slice();
    if payload != hin.payload.slice() {
        f.push(format!("{name}: payload changed"));
    }
    if (udp.source_port, udp.destination_port) != (src.port(), dst.port()) {
        f.push(format!(
            "{name}: ports {} -> {}",
            udp.source_port, udp.destination_port
        ));
    }
    match &hout.net {
        Some(NetHeaders::Ipv4(ip, _)) => {
            if (
                std::net::IpAddr::from(ip.source),
                std::net::IpAddr::from(ip.destination),
            ) != (src.ip(), dst.ip())
                || ip.time_to_live != 64
            {
                f.push(format!(
                    "{name}: ip {:?} -> {:?} ttl {}",
                    ip.source, ip.destination, ip.time_to_live
                ));
            }
            let tos = (ip.dscp.value() << 2) | ip.ecn.value();
            if fwd.tos.is_some_and(|t| t != tos) {
                f.push(format!("{name}: TOS {tos}, want {:?}", fwd.tos));
            }
            if ip.header_checksum != ip.calc_header_checksum() {
                f.push(format!("{name}: bad IPv4 header checksum"));
            }
            if zero_csum {
                if udp.checksum != 0 {
                    f.push(format!(
                        "{name}: zero UDP checksum became {:#x}",
                        udp.checksum
                    ));
                }
            } else if udp.checksum != udp.calc_checksum_ipv4(ip, payload).unwrap() {
                f.push(format!("{name}: bad UDP checksum"));
            }
        }
        Some(NetHeaders::Ipv6(ip, _)) => {
            if (
                std::net::IpAddr::from(ip.source),
                std::net::IpAddr::from(ip.destination),
            ) != (src.ip(), dst.ip())
                || ip.hop_limit != 64
            {
                f.push(format!(
                    "{name}: ip {:?} -> {:?}",
                    ip.source, ip.destination
                ));
            }
            if fwd.tos.is_some_and(|t| t != ip.traffic_class) {
                f.push(format!(
                    "{name}: traffic class {}, want {:?}",
                    ip.traffic_class, fwd.tos
                ));
            }
            if udp.checksum != udp.calc_checksum_ipv6(ip, payload).unwrap() {
                f.push(format!("{name}: bad UDP checksum"));
            }
        }
        _ => f.push(format!("{name}: no IP in output")),
    }
    f
}

pub fn setup(ns: &Netns, p: &str) -> (String, String) {
    let (a, a2, b, b2) = (
        format!("{p}a"),
        format!("{p}a2"),
        format!("{p}b"),
        format!("{p}b2"),
    );
    for (x, y, mac) in [
        (&a, &a2, "02:00:00:00:01:01"),
        (&b, &b2, "02:00:00:00:02:01"),
    ] {
        ns.ip(&[
            "link", "add", x, "address", mac, "type", "veth", "peer", "name", y,
        ])
        .unwrap();
        ns.ip(&["link", "set", x, "up"]).unwrap();
        ns.ip(&["link", "set", y, "up"]).unwrap();
    }
    ns.enable_forwarding().unwrap();
    let neigh = |ip: &'static str, mac: &'static str, dev: &String| {
        ns.ip(&["neigh", "add", ip, "lladdr", mac, "dev", dev])
            .unwrap();
    };
    ns.ip(&["addr", "add", "10.10.1.1/24", "dev", &a]).unwrap();
    ns.ip(&["addr", "add", "10.10.2.1/24", "dev", &b]).unwrap();
    neigh("10.10.1.2", "02:00:00:00:01:02", &a);
    neigh("10.10.1.3", "02:00:00:00:01:03", &a);
    neigh("10.10.2.2", "02:00:00:00:02:02", &b);
    // One prefix reachable both ways: the FIB prefers A, an entry can pin its egress to B.
    for (via, dev, metric) in [("10.10.1.3", &a, "10"), ("10.10.2.2", &b, "20")] {
        ns.ip(&[
            "route",
            "add",
            "10.10.9.0/24",
            "via",
            via,
            "dev",
            dev,
            "metric",
            metric,
        ])
        .unwrap();
    }
    ns.ip(&["-6", "addr", "add", "fd10:1::1/64", "dev", &a, "nodad"])
        .unwrap();
    ns.ip(&["-6", "addr", "add", "fd10:2::1/64", "dev", &b, "nodad"])
        .unwrap();
    ns.ip(&[
        "-6",
        "neigh",
        "add",
        "fd10:2::2",
        "lladdr",
        "02:00:00:00:02:02",
        "dev",
        &b,
    ])
    .unwrap();
    (a, b)
}

pub fn ifindex(name: &str) -> u32 {
    relay_ctl::xdp::ifindex(name).unwrap_or_else(|| panic!("no device {name}"))
}

/// The relay program (ports 30000-30100) with the table's entries installed and `egress`
/// registered for redirects.
pub fn load_with_table(egress: u32) -> Relay {
    let mut relay = load(egress);
    for (key, e) in table(egress) {
        relay.reset_stream_counters(e.counter_slot).unwrap();
        relay.insert_stream(StreamKey::from(sa(key)), e).unwrap();
    }
    relay
}

/// The relay program (ports 30000-30100) with `egress` registered for redirects, no entries.
pub fn load(egress: u32) -> Relay {
    let mut relay = Relay::load(&RelayConfig {
        port_min: 30_000,
        port_max: 30_100,
        flags: 0,
    })
    .unwrap();
    relay.add_egress(egress).unwrap();
    relay
}

/// Runs one case through `run` (BPF_PROG_TEST_RUN of the case's frame into the buffer it is
/// given) with the verdict counters read around it. Returns the program's return value, for the
/// caller to judge by its hook, and every other fault: a slot other than the case's reason moved,
/// or the output frame is not the expected one.
pub fn run_case(
    relay: &mut Relay,
    case: &Case,
    run: impl FnOnce(&mut Relay, &mut [u8]) -> TestRunResult,
) -> (u32, Vec<String>) {
    let before = read_totals(&relay.stats_map().unwrap()).unwrap();
    let mut out = vec![0u8; case.frame.len() + 256];
    let res = run(relay, &mut out);
    let after = read_totals(&relay.stats_map().unwrap()).unwrap();
    let out = &out[..res.data_size_out as usize];
    let mut failures = Vec::new();
    for r in Reason::ALL {
        let d = after.get(r).packets - before.get(r).packets;
        if d != u64::from(r == case.reason) {
            failures.push(format!("{}: slot {} moved by {d}", case.name, r.name()));
        }
    }
    match &case.expect {
        Expect::Unchanged => {
            if out != case.frame.as_slice() {
                failures.push(format!("{}: frame modified", case.name));
            }
        }
        Expect::Forwarded(fwd) => {
            failures.extend(check_forwarded(case.name, &case.frame, out, fwd));
        }
    }
    (res.return_value, failures)
}

/// The next hop the daemon resolved, against the FIB, through one hook: `run` runs the program
/// on a frame arriving on A and returns (reason slot that moved, output frame). An entry to
/// 10.10.2.2 (which the FIB resolves to B's neighbour) names next-hop slot 5:
/// - slot unresolved: the FIB's MACs, `fib_lookup` counted;
/// - slot resolved: its MACs (not the FIB's), nothing counted;
/// - slot resolved with an MTU below the packet: passed to the daemon, untouched.
pub fn next_hop_checks(
    relay: &mut relay_ctl::xdp::Relay,
    ib: u32,
    mut run: impl FnMut(&mut Relay, &[u8], &mut [u8]) -> TestRunResult,
) -> Vec<String> {
    // The reason slot the run moved, and the output frame.
    let mut run = |relay: &mut Relay, frame: &[u8]| {
        let before = read_totals(&relay.stats_map().unwrap()).unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        let res = run(relay, frame, &mut out);
        let after = read_totals(&relay.stats_map().unwrap()).unwrap();
        out.truncate(res.data_size_out as usize);
        let moved = Reason::ALL
            .into_iter()
            .find(|r| after.get(*r).packets != before.get(*r).packets);
        (moved, out)
    };
    use relay_common::stream::{FLAG_SOURCE_ANY, NextHop, StreamKey};
    const SLOT: u32 = 5;
    let e = StreamEntry {
        next_hop: SLOT,
        ..entry(
            40,
            "10.10.1.2:4000",
            "10.10.2.1:30051",
            "10.10.2.2:6000",
            Mismatch::Drop,
            FLAG_SOURCE_ANY,
        )
    };
    relay.reset_stream_counters(e.counter_slot).unwrap();
    relay
        .insert_stream(StreamKey::from(sa("10.10.1.1:30050")), e)
        .unwrap();
    let frame = v4(
        Vlan::None,
        "10.10.1.2:4000",
        "10.10.1.1:30050",
        &frames::rtp_payload(7),
    );
    let fib_lookups = |r: &relay_ctl::xdp::Relay| -> u64 {
        relay_ctl::xdp::read_events(&r.events_map().unwrap()).unwrap()[0].1
    };
    let mut f = Vec::new();
    let mut check = |relay: &mut relay_ctl::xdp::Relay,
                     name: &str,
                     want: Reason,
                     fwd: Option<Fwd>,
                     fib: u64| {
        let before = fib_lookups(relay);
        let (reason, out) = run(relay, &frame);
        if reason != Some(want) {
            f.push(format!("{name}: reason {reason:?}, want {want:?}"));
        }
        match fwd {
            Some(fwd) => f.extend(check_forwarded(name, &frame, &out, &fwd)),
            None if out != frame => f.push(format!("{name}: frame modified")),
            None => {}
        }
        let d = fib_lookups(relay) - before;
        if d != fib {
            f.push(format!("{name}: fib_lookup moved by {d}, want {fib}"));
        }
    };
    let to = |smac, dmac| Fwd {
        smac,
        dmac,
        src: sa("10.10.2.1:30051"),
        dst: sa("10.10.2.2:6000"),
        zero_csum: false,
        tos: None,
    };
    relay.set_next_hop(SLOT, NextHop::default()).unwrap();
    check(
        relay,
        "next hop unresolved: FIB",
        Reason::RedirectForward,
        Some(to(MAC_B, NEIGH_B)),
        1,
    );
    let (smac, dmac) = ([0x02, 0, 0, 0, 0x0e, 0x01], [0x02, 0, 0, 0, 0x0e, 0x02]);
    let hop = NextHop {
        ifindex: ib,
        mtu: 1500,
        smac,
        dmac,
    };
    relay.set_next_hop(SLOT, hop).unwrap();
    check(
        relay,
        "next hop from the daemon",
        Reason::RedirectForward,
        Some(to(smac, dmac)),
        0,
    );
    relay
        .set_next_hop(SLOT, NextHop { mtu: 40, ..hop })
        .unwrap();
    check(relay, "next hop MTU too small", Reason::PassTooBig, None, 0);
    relay
        .remove_stream(&StreamKey::from(sa("10.10.1.1:30050")))
        .unwrap();
    f
}
