//! The XDP program attached in native mode to a veth inside throwaway network namespaces:
//! real UDP datagrams cross it, reach an ordinary socket, and the counters account for them.

use std::{net::UdpSocket, time::Duration};

use relay_common::{config::RelayConfig, stats::Reason};
use relay_ctl::xdp::{AttachMode, Relay, read_totals};
use relay_tests::netns::{Netns, veth};

const SENT: usize = 50;

#[test]
fn native_attach_counts_real_datagrams() {
    if !relay_tests::privileged("native_attach_counts_real_datagrams") {
        return;
    }
    let p = relay_tests::unique_prefix();
    let ns_a = Netns::new(&format!("{p}-a")).unwrap();
    let ns_r = Netns::new(&format!("{p}-r")).unwrap();
    let (va, vr) = (format!("{p}a"), format!("{p}r"));
    veth(&ns_a, &va, "10.201.0.2/24", &ns_r, &vr, "10.201.0.1/24").unwrap();

    // Load and attach from inside the relay namespace (attach resolves the ifindex there).
    let vr2 = vr.clone();
    let (relay, mode) = ns_r
        .run(move || {
            let config = RelayConfig {
                port_min: 30_000,
                port_max: 30_010,
                flags: 0,
            };
            let mut relay = Relay::load(&config)?;
            let (_, mode) = relay.attach(&vr2)?;
            anyhow::Ok((relay, mode))
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        mode,
        AttachMode::Native,
        "veth supports native XDP on this kernel"
    );

    // Receivers on a relay port and on a non-relay port in the relay namespace.
    let (relay_rx, other_rx) = ns_r
        .run(|| {
            let a = UdpSocket::bind("10.201.0.1:30004")?;
            let b = UdpSocket::bind("10.201.0.1:5060")?;
            for s in [&a, &b] {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
            }
            std::io::Result::Ok((a, b))
        })
        .unwrap()
        .unwrap();

    let sent = ns_a
        .run(|| {
            let s = UdpSocket::bind("10.201.0.2:0")?;
            for i in 0..SENT {
                let payload = relay_tests::frames::rtp_payload(i as u16);
                s.send_to(&payload, "10.201.0.1:30004")?;
                s.send_to(b"OPTIONS sip:x SIP/2.0\r\n\r\n", "10.201.0.1:5060")?;
            }
            std::io::Result::Ok(SENT)
        })
        .unwrap()
        .unwrap();

    let mut buf = [0u8; 2048];
    for i in 0..sent {
        let (n, from) = relay_rx
            .recv_from(&mut buf)
            .expect("datagram passed by XDP");
        assert_eq!(
            &buf[..n],
            relay_tests::frames::rtp_payload(i as u16).as_slice()
        );
        assert_eq!(from.ip().to_string(), "10.201.0.2");
        let n = other_rx
            .recv_from(&mut buf)
            .expect("datagram passed by XDP")
            .0;
        assert_eq!(&buf[..n], b"OPTIONS sip:x SIP/2.0\r\n\r\n");
    }

    let t = read_totals(&relay.stats_map().unwrap()).unwrap();
    assert_eq!(
        t.get(Reason::PassUnknownStream).packets,
        SENT as u64,
        "{t:?}"
    );
    assert_eq!(
        t.get(Reason::PassNotRelayPort).packets,
        SENT as u64,
        "{t:?}"
    );
    // Each datagram crossed the program once: 14 (eth) + 20 (ip) + 8 (udp) + payload.
    assert_eq!(
        t.get(Reason::PassUnknownStream).bytes,
        (SENT * (42 + relay_tests::frames::rtp_payload(0).len())) as u64
    );
    drop(relay);
}
