//! The fast path as a Katran-style table under BPF_PROG_TEST_RUN: {case, frame, ingress device,
//! expected verdict and counter slot, expected output}. It runs inside a namespace whose routes
//! and static neighbours make the FIB results deterministic. Output frames are checked with
//! etherparse (an independent implementation): addresses, ports, TTL, MACs, VLAN tags, payload,
//! and the IPv4 header and UDP checksums.

use std::net::SocketAddr;

use aya::programs::{TestRun as _, TestRunOptions};
use etherparse::{LinkExtHeader, LinkHeader, NetHeaders, PacketHeaders, TransportHeader};
use relay_common::{
    config::RelayConfig,
    stats::{Reason, Verdict},
    stream::{
        Endpoint, FLAG_RTCP_DEMUX, FLAG_SET_TOS, FLAG_SOURCE_ANY, Mismatch, StreamEntry, StreamKey,
    },
};
use relay_ctl::xdp::{Relay, read_totals};
use relay_tests::{
    frames::{self, Vlan, xdp_md},
    netns::Netns,
};

const NEIGH_A3: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x03];
const NEIGH_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn entry(
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
        _pad: 0,
        counter_slot: slot,
        egress_ifindex: 0,
        rtcp_src: Endpoint::default(),
        rtcp_dst: Endpoint::default(),
    }
}

struct Fwd {
    smac: [u8; 6],
    dmac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    zero_csum: bool,
    /// The TOS / traffic class the output must carry (rtpengine's `TOS`); None: unchecked.
    tos: Option<u8>,
}

enum Expect {
    Unchanged,
    Forwarded(Fwd),
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    reason: Reason,
    expect: Expect,
}

fn v4(vlan: Vlan, src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    let ip = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v) => v.octets(),
        _ => unreachable!(),
    };
    frames::udp4(vlan, ip(s), ip(d), s.port(), d.port(), payload)
}

fn v6(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    v6_vlan(Vlan::None, src, dst, payload)
}

fn v6_vlan(vlan: Vlan, src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    let ip = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V6(v) => v.octets(),
        _ => unreachable!(),
    };
    frames::udp6(vlan, ip(s), ip(d), s.port(), d.port(), payload)
}

/// An IPv4 frame without a UDP checksum (legal on IPv4 only).
fn without_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14 + 20 + 6] = 0;
    frame[14 + 20 + 7] = 0;
    frame
}

fn to_b(src: &str, dst: &str) -> Expect {
    Expect::Forwarded(Fwd {
        smac: MAC_B,
        dmac: NEIGH_B,
        src: sa(src),
        dst: sa(dst),
        zero_csum: false,
        tos: None,
    })
}

fn fwd_to_b(src: &str, dst: &str) -> Fwd {
    match to_b(src, dst) {
        Expect::Forwarded(f) => f,
        Expect::Unchanged => unreachable!(),
    }
}

fn cases() -> Vec<Case> {
    let rtp = frames::rtp_payload(5);
    let mut rtcp = vec![0x81, 200, 0, 6];
    rtcp.extend_from_slice(&[0x11; 24]);
    let from_a = "10.10.1.2:4000";
    let zero = without_checksum(v4(Vlan::None, from_a, "10.10.1.1:30000", &rtp));
    let from_a6 = "[fd10:1::2]:4000";
    let to_b6 = || to_b("[fd10:2::1]:30062", "[fd10:2::2]:5000");
    let to_b4 = || to_b("10.10.2.1:30082", "10.10.2.2:5000");
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    let mut no_cookie = stun.clone();
    no_cookie[4] = 0;
    let fwd = || to_b("10.10.2.1:30002", "10.10.2.2:5000");
    vec![
        Case {
            name: "v4 RTP, redirect to B",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30000", &rtp),
            reason: Reason::RedirectForward,
            expect: fwd(),
        },
        Case {
            name: "v4 RTCP, redirect to B",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30000", &rtcp),
            reason: Reason::RedirectForward,
            expect: fwd(),
        },
        Case {
            name: "v4 802.1Q, tag kept",
            frame: v4(Vlan::Single(10), from_a, "10.10.1.1:30000", &rtp),
            reason: Reason::RedirectForward,
            expect: fwd(),
        },
        Case {
            name: "v4 QinQ, tags kept",
            frame: v4(Vlan::Double(100, 10), from_a, "10.10.1.1:30000", &rtp),
            reason: Reason::RedirectForward,
            expect: fwd(),
        },
        Case {
            name: "v4 with IP options",
            frame: frames::udp4_with_options(
                [10, 10, 1, 2],
                [10, 10, 1, 1],
                4000,
                30000,
                &[1, 1, 1, 1, 1, 1, 1, 0],
                &rtp,
            ),
            reason: Reason::RedirectForward,
            expect: fwd(),
        },
        Case {
            name: "v4 UDP checksum zero stays zero",
            frame: zero,
            reason: Reason::RedirectForward,
            expect: Expect::Forwarded(Fwd {
                smac: MAC_B,
                dmac: NEIGH_B,
                src: sa("10.10.2.1:30002"),
                dst: sa("10.10.2.2:5000"),
                zero_csum: true,
                tos: None,
            }),
        },
        Case {
            name: "v4 TX out of the ingress device",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30010", &rtp),
            reason: Reason::TxForward,
            expect: Expect::Forwarded(Fwd {
                smac: MAC_A,
                dmac: NEIGH_A3,
                src: sa("10.10.1.1:30012"),
                dst: sa("10.10.1.3:6000"),
                zero_csum: false,
                tos: None,
            }),
        },
        Case {
            name: "source mismatch, policy drop",
            frame: v4(Vlan::None, "10.10.1.66:4000", "10.10.1.1:30000", &rtp),
            reason: Reason::DropSourceMismatch,
            expect: Expect::Unchanged,
        },
        Case {
            name: "source port mismatch, policy drop",
            frame: v4(Vlan::None, "10.10.1.2:4001", "10.10.1.1:30000", &rtp),
            reason: Reason::DropSourceMismatch,
            expect: Expect::Unchanged,
        },
        Case {
            name: "source mismatch, policy userspace",
            frame: v4(Vlan::None, "10.10.1.66:4000", "10.10.1.1:30020", &rtp),
            reason: Reason::PassSourceMismatch,
            expect: Expect::Unchanged,
        },
        Case {
            name: "source mismatch, policy forward",
            frame: v4(Vlan::None, "10.10.1.66:4000", "10.10.1.1:30030", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b("10.10.2.1:30032", "10.10.2.2:5000"),
        },
        Case {
            name: "any source accepted",
            frame: v4(Vlan::None, "10.10.1.77:9", "10.10.1.1:30040", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b("10.10.2.1:30042", "10.10.2.2:5000"),
        },
        Case {
            name: "FIB miss (no neighbour)",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30050", &rtp),
            reason: Reason::PassFibMiss,
            expect: Expect::Unchanged,
        },
        Case {
            name: "v4 -> v6 RTP",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30060", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b6(),
        },
        Case {
            name: "v4 -> v6 RTCP",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30060", &rtcp),
            reason: Reason::RedirectForward,
            expect: to_b6(),
        },
        Case {
            name: "v4 -> v6 802.1Q",
            frame: v4(Vlan::Single(10), from_a, "10.10.1.1:30060", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b6(),
        },
        Case {
            name: "v4 -> v6 QinQ",
            frame: v4(Vlan::Double(100, 10), from_a, "10.10.1.1:30060", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b6(),
        },
        Case {
            name: "v4 with IP options -> v6",
            frame: frames::udp4_with_options(
                [10, 10, 1, 2],
                [10, 10, 1, 1],
                4000,
                30060,
                &[1, 1, 1, 1, 1, 1, 1, 0],
                &rtp,
            ),
            reason: Reason::RedirectForward,
            expect: to_b6(),
        },
        Case {
            name: "v4 no UDP checksum -> v6 computes one",
            frame: without_checksum(v4(Vlan::None, from_a, "10.10.1.1:30060", &rtp)),
            reason: Reason::RedirectForward,
            expect: to_b6(),
        },
        Case {
            name: "v4 no checksum, odd length -> v6",
            frame: without_checksum(v4(Vlan::None, from_a, "10.10.1.1:30060", &rtp[..171])),
            reason: Reason::RedirectForward,
            expect: to_b6(),
        },
        Case {
            name: "v6 -> v4 RTP",
            frame: v6(from_a6, "[fd10:1::1]:30080", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b4(),
        },
        Case {
            name: "v6 -> v4 RTCP",
            frame: v6(from_a6, "[fd10:1::1]:30080", &rtcp),
            reason: Reason::RedirectForward,
            expect: to_b4(),
        },
        Case {
            name: "v6 -> v4 802.1Q",
            frame: v6_vlan(Vlan::Single(10), from_a6, "[fd10:1::1]:30080", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b4(),
        },
        Case {
            name: "v6 -> v4 QinQ",
            frame: v6_vlan(Vlan::Double(100, 10), from_a6, "[fd10:1::1]:30080", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b4(),
        },
        Case {
            name: "FIB picks the preferred route (via A)",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30092", &rtp),
            reason: Reason::TxForward,
            expect: Expect::Forwarded(Fwd {
                smac: MAC_A,
                dmac: NEIGH_A3,
                src: sa("10.10.1.1:30093"),
                dst: sa("10.10.9.9:7000"),
                zero_csum: false,
                tos: None,
            }),
        },
        Case {
            name: "egress device pinned to B",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30094", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b("10.10.2.1:30095", "10.10.9.9:7000"),
        },
        Case {
            name: "rtcp-mux leg: RTP to the RTP port",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30096", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b("10.10.2.1:30098", "10.10.2.2:5000"),
        },
        Case {
            name: "rtcp-mux leg: RTCP demuxed to the RTCP port",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30096", &rtcp),
            reason: Reason::RedirectForward,
            expect: to_b("10.10.2.1:30099", "10.10.2.2:5001"),
        },
        Case {
            name: "rtcp-mux leg: one byte, not RTP or RTCP",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30096", &[0x80]),
            reason: Reason::PassMalformed,
            expect: Expect::Unchanged,
        },
        Case {
            name: "entry mixing families",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30070", &rtp),
            reason: Reason::PassFamilyChange,
            expect: Expect::Unchanged,
        },
        Case {
            name: "v6 RTP, redirect to B",
            frame: v6("[fd10:1::2]:4000", "[fd10:1::1]:30000", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b("[fd10:2::1]:30002", "[fd10:2::2]:5000"),
        },
        Case {
            name: "v4 TOS set to EF (184), header checksum updated",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30084", &rtp),
            reason: Reason::RedirectForward,
            expect: Expect::Forwarded(Fwd {
                tos: Some(184),
                ..fwd_to_b("10.10.2.1:30085", "10.10.2.2:5000")
            }),
        },
        Case {
            name: "v6 traffic class set to AF41 (136)",
            frame: v6("[fd10:1::2]:4000", "[fd10:1::1]:30086", &rtp),
            reason: Reason::RedirectForward,
            expect: Expect::Forwarded(Fwd {
                tos: Some(136),
                ..fwd_to_b("[fd10:2::1]:30087", "[fd10:2::2]:5000")
            }),
        },
        Case {
            name: "STUN to userspace",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30000", &stun),
            reason: Reason::PassStun,
            expect: Expect::Unchanged,
        },
        Case {
            name: "0-3 without magic cookie",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30000", &no_cookie),
            reason: Reason::PassOtherPayload,
            expect: Expect::Unchanged,
        },
        Case {
            name: "DTLS to userspace",
            frame: v4(
                Vlan::None,
                from_a,
                "10.10.1.1:30000",
                &[22, 0xfe, 0xfd, 0, 0],
            ),
            reason: Reason::PassDtls,
            expect: Expect::Unchanged,
        },
        Case {
            name: "other payload",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30000", &[0x50, 1, 2, 3]),
            reason: Reason::PassOtherPayload,
            expect: Expect::Unchanged,
        },
        Case {
            name: "unknown stream",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30090", &rtp),
            reason: Reason::PassUnknownStream,
            expect: Expect::Unchanged,
        },
        Case {
            name: "empty payload",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30000", &[]),
            reason: Reason::PassEmpty,
            expect: Expect::Unchanged,
        },
    ]
}

fn check_forwarded(name: &str, input: &[u8], out: &[u8], fwd: &Fwd) -> Vec<String> {
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

fn setup(ns: &Netns, p: &str) -> (String, String) {
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

fn ifindex(name: &str) -> u32 {
    relay_ctl::xdp::ifindex(name).unwrap_or_else(|| panic!("no device {name}"))
}

#[test]
fn fast_path_table_under_prog_test_run() {
    if !relay_tests::privileged("fast_path_table_under_prog_test_run") {
        return;
    }
    let p = relay_tests::unique_prefix();
    let ns = Netns::new(&format!("{p}-fp")).unwrap();
    let (a, b) = setup(&ns, &p);
    let report = ns
        .run(move || {
            let (ia, ib) = (ifindex(&a), ifindex(&b));
            let mut relay = Relay::load(&RelayConfig {
                port_min: 30_000,
                port_max: 30_100,
                flags: 0,
            })
            .unwrap();
            relay.add_egress(ib).unwrap();
            let d = Mismatch::Drop;
            for (key, e) in [
                (
                    "10.10.1.1:30000",
                    entry(
                        1,
                        "10.10.1.2:4000",
                        "10.10.2.1:30002",
                        "10.10.2.2:5000",
                        d,
                        0,
                    ),
                ),
                (
                    "10.10.1.1:30010",
                    entry(
                        2,
                        "10.10.1.2:4000",
                        "10.10.1.1:30012",
                        "10.10.1.3:6000",
                        d,
                        0,
                    ),
                ),
                (
                    "10.10.1.1:30020",
                    entry(
                        3,
                        "10.10.1.2:4000",
                        "10.10.2.1:30022",
                        "10.10.2.2:5000",
                        Mismatch::Userspace,
                        0,
                    ),
                ),
                (
                    "10.10.1.1:30030",
                    entry(
                        4,
                        "10.10.1.2:4000",
                        "10.10.2.1:30032",
                        "10.10.2.2:5000",
                        Mismatch::Forward,
                        0,
                    ),
                ),
                (
                    "10.10.1.1:30040",
                    entry(
                        5,
                        "10.10.1.2:4000",
                        "10.10.2.1:30042",
                        "10.10.2.2:5000",
                        d,
                        FLAG_SOURCE_ANY,
                    ),
                ),
                (
                    "10.10.1.1:30050",
                    entry(
                        6,
                        "10.10.1.2:4000",
                        "10.10.2.1:30052",
                        "10.10.2.9:5000",
                        d,
                        0,
                    ),
                ),
                (
                    "10.10.1.1:30060",
                    entry(
                        7,
                        "10.10.1.2:4000",
                        "[fd10:2::1]:30062",
                        "[fd10:2::2]:5000",
                        d,
                        0,
                    ),
                ),
                (
                    "10.10.1.1:30070",
                    entry(
                        9,
                        "10.10.1.2:4000",
                        "10.10.2.1:30072",
                        "[fd10:2::2]:5000",
                        d,
                        0,
                    ),
                ),
                (
                    "10.10.1.1:30092",
                    entry(
                        11,
                        "10.10.1.2:4000",
                        "10.10.1.1:30093",
                        "10.10.9.9:7000",
                        d,
                        0,
                    ),
                ),
                (
                    "10.10.1.1:30094",
                    StreamEntry {
                        egress_ifindex: ib,
                        ..entry(
                            12,
                            "10.10.1.2:4000",
                            "10.10.2.1:30095",
                            "10.10.9.9:7000",
                            d,
                            0,
                        )
                    },
                ),
                (
                    "10.10.1.1:30096",
                    StreamEntry {
                        flags: FLAG_RTCP_DEMUX,
                        rtcp_src: Endpoint::from(sa("10.10.2.1:30099")),
                        rtcp_dst: Endpoint::from(sa("10.10.2.2:5001")),
                        ..entry(
                            13,
                            "10.10.1.2:4000",
                            "10.10.2.1:30098",
                            "10.10.2.2:5000",
                            d,
                            0,
                        )
                    },
                ),
                (
                    "[fd10:1::1]:30080",
                    entry(
                        10,
                        "[fd10:1::2]:4000",
                        "10.10.2.1:30082",
                        "10.10.2.2:5000",
                        d,
                        0,
                    ),
                ),
                (
                    "10.10.1.1:30084",
                    StreamEntry {
                        tos: 184,
                        ..entry(
                            14,
                            "10.10.1.2:4000",
                            "10.10.2.1:30085",
                            "10.10.2.2:5000",
                            d,
                            FLAG_SET_TOS,
                        )
                    },
                ),
                (
                    "[fd10:1::1]:30086",
                    StreamEntry {
                        tos: 136,
                        ..entry(
                            15,
                            "[fd10:1::2]:4000",
                            "[fd10:2::1]:30087",
                            "[fd10:2::2]:5000",
                            d,
                            FLAG_SET_TOS,
                        )
                    },
                ),
                (
                    "[fd10:1::1]:30000",
                    entry(
                        8,
                        "[fd10:1::2]:4000",
                        "[fd10:2::1]:30002",
                        "[fd10:2::2]:5000",
                        d,
                        0,
                    ),
                ),
            ] {
                relay.reset_stream_counters(e.counter_slot).unwrap();
                relay.insert_stream(StreamKey::from(sa(key)), e).unwrap();
            }
            let mut failures = Vec::new();
            let mut timings = Vec::new();
            for case in cases() {
                let before = read_totals(&relay.stats_map().unwrap()).unwrap();
                let mut out = vec![0u8; case.frame.len() + 256];
                let ctx = xdp_md(case.frame.len(), ia);
                let res = relay
                    .program()
                    .unwrap()
                    .test_run(TestRunOptions {
                        data_in: Some(&case.frame),
                        data_out: Some(&mut out),
                        ctx_in: Some(&ctx),
                        ..TestRunOptions::default()
                    })
                    .unwrap_or_else(|e| panic!("{}: test_run: {e}", case.name));
                let after = read_totals(&relay.stats_map().unwrap()).unwrap();
                let out = &out[..res.data_size_out as usize];
                if Verdict::from_u32(res.return_value) != Some(case.reason.verdict()) {
                    failures.push(format!(
                        "{}: verdict {}, want {:?}",
                        case.name,
                        res.return_value,
                        case.reason.verdict()
                    ));
                }
                for r in Reason::ALL {
                    let d = after.get(r).packets - before.get(r).packets;
                    if d != u64::from(r == case.reason) {
                        failures.push(format!("{}: slot {} moved by {d}", case.name, r.name()));
                    }
                }
                match case.expect {
                    Expect::Unchanged => {
                        if out != case.frame.as_slice() {
                            failures.push(format!("{}: frame modified", case.name));
                        }
                    }
                    Expect::Forwarded(fwd) => {
                        failures.extend(check_forwarded(case.name, &case.frame, out, &fwd));
                    }
                }
                if matches!(
                    case.reason,
                    Reason::RedirectForward
                        | Reason::TxForward
                        | Reason::PassUnknownStream
                        | Reason::DropSourceMismatch
                ) {
                    // `repeat` reruns on the already rewritten buffer, so time single runs on a
                    // fresh copy each and report the median (printed only, never asserted).
                    let mut ns: Vec<u128> = (0..501)
                        .map(|_| {
                            let mut sink = vec![0u8; case.frame.len() + 256];
                            let ctx = xdp_md(case.frame.len(), ia);
                            let opts = TestRunOptions {
                                data_in: Some(&case.frame),
                                data_out: Some(&mut sink),
                                ctx_in: Some(&ctx),
                                ..TestRunOptions::default()
                            };
                            let r = relay.program().unwrap().test_run(opts).unwrap();
                            r.duration.as_nanos()
                        })
                        .collect();
                    ns.sort_unstable();
                    timings.push(format!(
                        "{:<36} {:>6} ns/packet (median of 501 single runs)",
                        case.name, ns[250]
                    ));
                }
            }
            // `repeat` reruns the program on the frame it rewrote, so these entries lead back to
            // themselves (the v4/v6 pair to each other): every iteration takes the whole path.
            let any = FLAG_SOURCE_ANY;
            let rtp = frames::rtp_payload(5);
            let (from_a, from_a6) = ("10.10.1.2:4000", "[fd10:1::2]:4000");
            for (slot, key, src, dst) in [
                (20, "10.10.2.2:30100", "10.10.2.1:30050", "10.10.2.2:30100"),
                (
                    21,
                    "[fd10:2::2]:30100",
                    "[fd10:2::1]:30050",
                    "[fd10:2::2]:30100",
                ),
                (
                    22,
                    "10.10.2.2:30098",
                    "[fd10:2::1]:30050",
                    "[fd10:2::2]:30098",
                ),
                (
                    23,
                    "[fd10:2::2]:30098",
                    "10.10.2.1:30050",
                    "10.10.2.2:30098",
                ),
            ] {
                relay.reset_stream_counters(slot).unwrap();
                relay
                    .insert_stream(StreamKey::from(sa(key)), entry(slot, src, src, dst, d, any))
                    .unwrap();
            }
            for (name, frame) in [
                (
                    "v4 redirect",
                    v4(Vlan::None, from_a, "10.10.2.2:30100", &rtp),
                ),
                ("v6 redirect", v6(from_a6, "[fd10:2::2]:30100", &rtp)),
                (
                    "v4 <-> v6, alternating",
                    v4(Vlan::None, from_a, "10.10.2.2:30098", &rtp),
                ),
            ] {
                let mut runs: Vec<u128> = (0..5)
                    .map(|_| {
                        let mut out = vec![0u8; frame.len() + 256];
                        let ctx = xdp_md(frame.len(), ia);
                        let r = relay
                            .program()
                            .unwrap()
                            .test_run(TestRunOptions {
                                data_in: Some(&frame),
                                data_out: Some(&mut out),
                                ctx_in: Some(&ctx),
                                repeat: 100_000,
                                ..TestRunOptions::default()
                            })
                            .unwrap();
                        if Verdict::from_u32(r.return_value) != Some(Verdict::Redirect) {
                            failures.push(format!("repeat {name}: verdict {}", r.return_value));
                        }
                        r.duration.as_nanos()
                    })
                    .collect();
                runs.sort_unstable();
                timings.push(format!(
                    "{name:<36} {:>6} ns/packet (repeat 100000, median of 5)",
                    runs[2]
                ));
            }
            let translated = relay.stream_counters(22).unwrap().packets
                + relay.stream_counters(23).unwrap().packets;
            if translated != 500_000 {
                failures.push(format!("alternating v4/v6 loop forwarded {translated}"));
            }

            // The v6 stream forwarded one table frame and 501 timed ones.
            let c8 = relay.stream_counters(8).unwrap();
            let v6_len = cases()
                .iter()
                .find(|c| c.name.starts_with("v6 RTP"))
                .unwrap()
                .frame
                .len() as u64;
            if c8.packets != 502 || c8.bytes != 502 * v6_len || c8.last_seen_ns == 0 {
                failures.push(format!("stream slot 8 (v6) counters: {c8:?}"));
            }
            let c6 = relay.stream_counters(6).unwrap();
            if c6.packets != 0 {
                failures.push(format!(
                    "FIB-miss stream must not count as forwarded: {c6:?}"
                ));
            }
            // Removing an entry that is not there is not an error (the daemon's removals are
            // idempotent).
            if let Err(e) = relay.remove_stream(&StreamKey::from(sa("10.10.1.1:30999"))) {
                failures.push(format!("removing an absent entry: {e}"));
            }
            let insns = relay
                .program()
                .unwrap()
                .info()
                .unwrap()
                .verified_instruction_count();
            (failures, timings, insns)
        })
        .unwrap();
    let (failures, timings, insns) = report;
    eprintln!("verifier: {insns:?} instructions processed");
    for t in &timings {
        eprintln!("{t}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
