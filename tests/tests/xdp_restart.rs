//! Restart survival: after the loader exits, the pinned link keeps the program attached and
//! counting into the pinned maps; a new loader takes the link over with the same maps; detaching
//! removes everything.

use std::{net::UdpSocket, time::Duration};

use relay_common::{config::RelayConfig, names, stats::Reason};
use relay_ctl::{
    pins::{self, Attached},
    xdp::{AttachMode, open_pinned_stats, read_totals},
};
use relay_tests::netns::{Bpffs, Netns, veth};

const BURST: u64 = 20;

fn burst(ns: &Netns) {
    ns.run(|| {
        let s = UdpSocket::bind("10.202.0.2:0").unwrap();
        for i in 0..BURST {
            s.send_to(
                &relay_tests::frames::rtp_payload(i as u16),
                "10.202.0.1:30004",
            )
            .unwrap();
        }
    })
    .unwrap();
    // Receive-side processing is asynchronous to the sender.
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn program_survives_loader_exit_and_is_taken_over() {
    if !relay_tests::privileged("program_survives_loader_exit_and_is_taken_over") {
        return;
    }
    let p = relay_tests::unique_prefix();
    let bpffs = Bpffs::new(&p).unwrap();
    let pin_dir = bpffs.path().join("relay");
    let ns_a = Netns::new(&format!("{p}-a")).unwrap();
    let ns_r = Netns::new(&format!("{p}-r")).unwrap();
    let (va, vr) = (format!("{p}a"), format!("{p}r"));
    veth(&ns_a, &va, "10.202.0.2/24", &ns_r, &vr, "10.202.0.1/24").unwrap();
    let config = RelayConfig {
        port_min: 30_000,
        port_max: 30_010,
        flags: 0,
    };

    // The second load asks for another size: the re-opened pinned table keeps its own.
    let start = |expect_replace: bool, max_streams: u32| {
        let (pin_dir, vr) = (pin_dir.clone(), vr.clone());
        ns_r.run(move || {
            let mut relay = pins::load(&config, &pin_dir, max_streams).unwrap();
            assert_eq!(relay.stream_capacity().unwrap(), 4096);
            let how = pins::attach(&mut relay, &vr, &pin_dir).unwrap();
            if expect_replace {
                assert_eq!(how, Attached::Replaced);
            } else {
                assert_eq!(how, Attached::New(AttachMode::Native));
            }
            relay
        })
        .unwrap()
    };

    let first = start(false, 4096);
    let stats = open_pinned_stats(&pin_dir).unwrap();
    burst(&ns_a);
    assert_eq!(
        read_totals(&stats)
            .unwrap()
            .get(Reason::PassUnknownStream)
            .packets,
        BURST
    );

    drop(first); // the daemon exits
    burst(&ns_a);
    assert_eq!(
        read_totals(&stats)
            .unwrap()
            .get(Reason::PassUnknownStream)
            .packets,
        2 * BURST,
        "program kept running on the pinned link with no loader"
    );

    let second = start(true, 8192);
    burst(&ns_a);
    assert_eq!(
        read_totals(&stats)
            .unwrap()
            .get(Reason::PassUnknownStream)
            .packets,
        3 * BURST,
        "new program counts into the same pinned map"
    );
    assert!(pin_dir.join(names::STATS_MAP).exists());

    drop(second);
    pins::detach_all(&pin_dir).unwrap();
    assert!(!pin_dir.exists());
    burst(&ns_a);
    assert_eq!(
        read_totals(&stats)
            .unwrap()
            .get(Reason::PassUnknownStream)
            .packets,
        3 * BURST,
        "detached: nothing counts any more"
    );
}
