//! The XDP program under BPF_PROG_TEST_RUN: a table of crafted frames, each asserting the
//! verdict, the counter slot it lands in (and only that slot), and that the frame is untouched.

use aya::programs::{TestRun as _, TestRunOptions};
use relay_common::{
    config::RelayConfig,
    stats::{Reason, Verdict},
};
use relay_ctl::xdp::{Relay, read_totals};
use relay_tests::frames::{self, L3, Vlan};

const A4: [u8; 4] = [192, 0, 2, 10];
const R4: [u8; 4] = [192, 0, 2, 1];
const A6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
];
const R6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
];
const RELAY_PORT: u16 = 30_002;
const OTHER_PORT: u16 = 5060;

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    reason: Reason,
}

fn cases() -> Vec<Case> {
    let rtp = frames::rtp_payload(1);
    let v4 = |vlan| frames::udp4(vlan, A4, R4, 40_000, RELAY_PORT, &rtp);
    let v6 = |vlan| frames::udp6(vlan, A6, R6, 40_000, RELAY_PORT, &rtp);
    let mut c = vec![
        Case {
            name: "v4 untagged to relay port",
            frame: v4(Vlan::None),
            reason: Reason::PassUnknownStream,
        },
        Case {
            name: "v4 802.1Q",
            frame: v4(Vlan::Single(10)),
            reason: Reason::PassUnknownStream,
        },
        Case {
            name: "v4 802.1ad QinQ",
            frame: v4(Vlan::Double(100, 10)),
            reason: Reason::PassUnknownStream,
        },
        Case {
            name: "v6 untagged",
            frame: v6(Vlan::None),
            reason: Reason::PassUnknownStream,
        },
        Case {
            name: "v6 802.1Q",
            frame: v6(Vlan::Single(10)),
            reason: Reason::PassUnknownStream,
        },
        Case {
            name: "v6 QinQ",
            frame: v6(Vlan::Double(100, 10)),
            reason: Reason::PassUnknownStream,
        },
        Case {
            name: "v4 with IP options (IHL 7) to relay port",
            frame: frames::udp4_with_options(
                A4,
                R4,
                40_000,
                RELAY_PORT,
                &[1, 1, 1, 1, 1, 1, 1, 0],
                &rtp,
            ),
            reason: Reason::PassUnknownStream,
        },
        Case {
            name: "v4 udp to non-relay port",
            frame: frames::udp4(Vlan::None, A4, R4, 5060, OTHER_PORT, b"INVITE"),
            reason: Reason::PassNotRelayPort,
        },
        Case {
            name: "v6 udp to non-relay port",
            frame: frames::udp6(Vlan::Single(5), A6, R6, 5060, OTHER_PORT, b"INVITE"),
            reason: Reason::PassNotRelayPort,
        },
        Case {
            name: "v4 tcp",
            frame: frames::tcp4(A4, R4, 40_000, RELAY_PORT),
            reason: Reason::PassNotUdp,
        },
        Case {
            name: "v6 tcp",
            frame: frames::tcp6(A6, R6, 40_000, RELAY_PORT),
            reason: Reason::PassNotUdp,
        },
        Case {
            name: "arp",
            frame: frames::arp(),
            reason: Reason::PassNotIp,
        },
    ];

    // Truncations: cut inside each header.
    let full4 = v4(Vlan::None);
    for (name, len) in [
        ("truncated inside ipv4", L3 + 10usize),
        ("truncated inside udp", L3 + 20 + 4),
    ] {
        c.push(Case {
            name,
            frame: full4[..len].to_vec(),
            reason: Reason::PassTruncated,
        });
    }
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, so the shortest
    // truncation we can feed stops inside the first VLAN tag.
    let tagged = v4(Vlan::Double(100, 10));
    c.push(Case {
        name: "truncated inside first vlan tag",
        frame: tagged[..16].to_vec(),
        reason: Reason::PassTruncated,
    });
    c.push(Case {
        name: "truncated inside second vlan tag",
        frame: tagged[..20].to_vec(),
        reason: Reason::PassTruncated,
    });
    let full6 = v6(Vlan::None);
    c.push(Case {
        name: "truncated inside ipv6",
        frame: full6[..L3 + 30].to_vec(),
        reason: Reason::PassTruncated,
    });
    c.push(Case {
        name: "truncated inside udp after ipv6",
        frame: full6[..L3 + 40 + 6].to_vec(),
        reason: Reason::PassTruncated,
    });

    // Malformed headers.
    let mut ihl4 = full4.clone();
    ihl4[L3] = 0x44;
    frames::fix_ipv4_checksum(&mut ihl4, L3);
    c.push(Case {
        name: "ipv4 IHL < 5",
        frame: ihl4,
        reason: Reason::PassMalformed,
    });
    let mut ver = full4.clone();
    ver[L3] = 0x65;
    c.push(Case {
        name: "ipv4 ethertype with version 6",
        frame: ver,
        reason: Reason::PassMalformed,
    });
    let mut udp_long = full4.clone();
    let ulen = (full4.len() - L3 - 20 + 8) as u16;
    udp_long[L3 + 24..L3 + 26].copy_from_slice(&ulen.to_be_bytes());
    c.push(Case {
        name: "udp length larger than the frame",
        frame: udp_long,
        reason: Reason::PassMalformed,
    });
    let mut udp_short = full4.clone();
    udp_short[L3 + 24..L3 + 26].copy_from_slice(&4u16.to_be_bytes());
    c.push(Case {
        name: "udp length below 8",
        frame: udp_short,
        reason: Reason::PassMalformed,
    });
    let mut frag = full4.clone();
    frag[L3 + 6] = 0x20; // MF
    frames::fix_ipv4_checksum(&mut frag, L3);
    c.push(Case {
        name: "ipv4 first fragment (MF)",
        frame: frag,
        reason: Reason::PassFragment,
    });
    let mut frag2 = full4;
    frag2[L3 + 7] = 0x10; // offset 16*8
    frames::fix_ipv4_checksum(&mut frag2, L3);
    c.push(Case {
        name: "ipv4 later fragment (offset)",
        frame: frag2,
        reason: Reason::PassFragment,
    });
    let mut frag6 = full6;
    frag6[L3 + 6] = 44;
    c.push(Case {
        name: "ipv6 fragment header",
        frame: frag6,
        reason: Reason::PassFragment,
    });
    c
}

#[test]
fn parse_table_under_prog_test_run() {
    if !relay_tests::privileged("parse_table_under_prog_test_run") {
        return;
    }
    let config = RelayConfig {
        port_min: 30_000,
        port_max: 30_100,
        flags: 0,
    };
    let mut relay = Relay::load(&config).expect("load relay program");
    let mut failures = Vec::new();
    for case in cases() {
        let before = read_totals(&relay.stats_map().unwrap()).unwrap();
        let mut out = vec![0u8; case.frame.len() + 256];
        let res = relay
            .program()
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(&case.frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("{}: test_run: {e}", case.name));
        let after = read_totals(&relay.stats_map().unwrap()).unwrap();

        let verdict = Verdict::from_u32(res.return_value);
        if verdict != Some(case.reason.verdict()) {
            failures.push(format!(
                "{}: verdict {:?}, want {:?}",
                case.name,
                verdict,
                case.reason.verdict()
            ));
        }
        for r in Reason::ALL {
            let d_pkts = after.get(r).packets - before.get(r).packets;
            let d_bytes = after.get(r).bytes - before.get(r).bytes;
            let (want_p, want_b) = if r == case.reason {
                (1, case.frame.len() as u64)
            } else {
                (0, 0)
            };
            if (d_pkts, d_bytes) != (want_p, want_b) {
                failures.push(format!(
                    "{}: slot {} moved by {d_pkts} packets/{d_bytes} bytes, want {want_p}/{want_b}",
                    case.name,
                    r.name()
                ));
            }
        }
        let out = &out[..res.data_size_out as usize];
        if out != case.frame.as_slice() {
            failures.push(format!("{}: a passed frame was modified", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn disabled_config_passes_everything_as_not_relay_port() {
    if !relay_tests::privileged("disabled_config_passes_everything_as_not_relay_port") {
        return;
    }
    let mut relay = Relay::load(&RelayConfig::DISABLED).expect("load relay program");
    let frame = frames::udp4(
        Vlan::None,
        A4,
        R4,
        40_000,
        RELAY_PORT,
        &frames::rtp_payload(7),
    );
    let res = relay
        .program()
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            ..TestRunOptions::default()
        })
        .unwrap();
    assert_eq!(res.return_value, Verdict::Pass as u32);
    let t = read_totals(&relay.stats_map().unwrap()).unwrap();
    assert_eq!(t.get(Reason::PassNotRelayPort).packets, 1);
    assert_eq!(t.packets(), 1);
}
