//! The table's rows: the cases (frame in, reason and output expected) and the stream entries
//! they need.

use relay_common::{
    stats::Reason,
    stream::{Endpoint, FLAG_RTCP_DEMUX, FLAG_SET_TOS, FLAG_SOURCE_ANY, Mismatch, StreamEntry},
};
use relay_tests::frames::{self, Vlan};

use super::*;

pub fn cases() -> Vec<Case> {
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
        Case {
            // Ethernet padding after an empty datagram is not payload (the UDP length says so).
            name: "empty payload padded with an RTP-looking byte",
            frame: {
                let mut f = v4(Vlan::None, from_a, "10.10.1.1:30000", &[]);
                f.extend_from_slice(&[0x80; 18]);
                f
            },
            reason: Reason::PassEmpty,
            expect: Expect::Unchanged,
        },
        Case {
            // 1460 bytes of RTP fit a 1500-byte MTU over IPv4 (1488) but not once translated
            // to IPv6 (1508): the daemon sends it, counted.
            name: "v4 -> v6 over the egress MTU",
            frame: v4(Vlan::None, from_a, "10.10.1.1:30060", &{
                let mut big = frames::rtp_payload(9);
                big.resize(1460, 0xab);
                big
            }),
            reason: Reason::PassTooBig,
            expect: Expect::Unchanged,
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
        // Secure latching in the fast path: these three run in this order (the first sets
        // the latched source's last-seen time that the second is judged by).
        Case {
            name: "handover policy, the latched source forwards",
            frame: v4(Vlan::None, "10.10.1.2:4000", "10.10.1.1:30074", &rtp),
            reason: Reason::RedirectForward,
            expect: to_b("10.10.2.1:30075", "10.10.2.2:5000"),
        },
        Case {
            name: "handover policy, another source while the latched one is active: dropped",
            frame: v4(Vlan::None, "10.10.1.66:4000", "10.10.1.1:30074", &rtp),
            reason: Reason::DropSourceMismatch,
            expect: Expect::Unchanged,
        },
        Case {
            name: "handover policy, another source after the latched one went silent: daemon",
            frame: v4(Vlan::None, "10.10.1.66:4000", "10.10.1.1:30076", &rtp),
            reason: Reason::PassSourceMismatch,
            expect: Expect::Unchanged,
        },
    ]
}

/// The stream entries the cases use, keyed by relay endpoint; `ib` is device B's ifindex.
pub fn table(ib: u32) -> Vec<(&'static str, StreamEntry)> {
    let d = Mismatch::Drop;
    vec![
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
            "10.10.1.1:30074",
            entry(
                30,
                "10.10.1.2:4000",
                "10.10.2.1:30075",
                "10.10.2.2:5000",
                Mismatch::Handover,
                0,
            ),
        ),
        (
            "10.10.1.1:30076",
            entry(
                31,
                "10.10.1.2:4000",
                "10.10.2.1:30077",
                "10.10.2.2:5000",
                Mismatch::Handover,
                0,
            ),
        ),
    ]
}
