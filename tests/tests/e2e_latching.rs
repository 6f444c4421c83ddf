//! Secure latching by default, end to end (no `strict-source` anywhere): RTP injected from a
//! third host during a call never reaches the callee; a NAT rebinding (the caller's source port
//! changes after it went silent) moves the latch within the handover interval; a spray from the
//! caller's address before the caller sends does not capture the stream once the caller does.

use std::{net::SocketAddr, time::Duration};

use relay_tests::{
    call::{Relay, bind, recv, sdp, silent},
    frames::rtp_payload,
    topology::media_addr,
};
use serde_json::json;

/// A plain call whose caller signals a private address behind a NAT (symmetric latching, as
/// most field calls); returns (relay endpoint for A's media, relay endpoint for B's media).
fn call(r: &Relay, id: &str) -> (SocketAddr, SocketAddr) {
    let to_b = r.offer(id, "a", &sdp("192.168.1.20", 4000, &[]), json!({}));
    let to_a = r.answer(id, "a", "b", &sdp("10.1.2.2", 5000, &[]), json!({}));
    (media_addr(&to_a), media_addr(&to_b))
}

#[test]
fn injection_rebinding_and_spray_with_default_flags() {
    if !relay_tests::privileged("injection_rebinding_and_spray_with_default_flags") {
        return;
    }
    let r = Relay::start(&[]).unwrap();
    let callee = bind(&r.t.callee.ns, "10.1.2.2:5000");

    // Injection: the caller talks, a third host sends to the caller's relay port meanwhile.
    let (relay_a, _) = call(&r, "inject");
    let caller = bind(&r.t.caller.ns, "10.1.1.2:4000");
    let attacker = bind(&r.t.attacker.ns, "10.1.3.2:4000");
    // The callee reads as the packets come (200 unread datagrams overflow a default socket
    // buffer), until 300 ms of silence.
    let callee_rx = callee.try_clone().unwrap();
    callee_rx
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let (mut real, mut injected) = (0, 0);
        while let Some((p, _)) = recv(&callee_rx) {
            if u16::from_be_bytes([p[2], p[3]]) >= 9000 {
                injected += 1;
            } else {
                real += 1;
            }
        }
        (real, injected, callee_rx)
    });
    for i in 0..200u16 {
        caller.send_to(&rtp_payload(i), relay_a).unwrap();
        attacker.send_to(&rtp_payload(9000 + i), relay_a).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let (real, reached, callee_rx) = reader.join().unwrap();
    assert_eq!(reached, 0, "injected packets reached the callee");
    assert_eq!(real, 200, "the caller's media was lost");

    // Once the learning window (3 s, closed at the daemon's next 1 s sweep) is over, the fast
    // path itself refuses the injector while the caller talks: every injected packet is
    // counted as dropped there, none reaches the callee.
    let learnt = std::time::Instant::now() + Duration::from_millis(4300);
    for i in 0u16.. {
        if std::time::Instant::now() >= learnt {
            break;
        }
        caller
            .send_to(&rtp_payload(1000 + i % 1000), relay_a)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let dropped_before = r.fastpath("drop_source_mismatch");
    for i in 0..50u16 {
        caller.send_to(&rtp_payload(2000 + i), relay_a).unwrap();
        attacker.send_to(&rtp_payload(9000 + i), relay_a).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut injected = 0;
    while let Some((p, _)) = recv(&callee_rx) {
        injected += usize::from(u16::from_be_bytes([p[2], p[3]]) >= 9000);
    }
    assert_eq!(
        injected, 0,
        "injected packets reached the callee after learning"
    );
    assert_eq!(
        r.fastpath("drop_source_mismatch") - dropped_before,
        50,
        "the fast path drops injected media itself"
    );

    // NAT rebinding: the caller falls silent and comes back from another port: after the
    // handover interval (2 s) its media flows again, and sticks.
    std::thread::sleep(Duration::from_millis(2300));
    let rebound = bind(&r.t.caller.ns, "10.1.1.2:4002");
    rebound.send_to(&rtp_payload(500), relay_a).unwrap();
    assert_eq!(
        recv(&callee).expect("media after rebinding").0,
        rtp_payload(500)
    );
    for i in 0..5 {
        rebound.send_to(&rtp_payload(501 + i), relay_a).unwrap();
        assert_eq!(recv(&callee).unwrap().0, rtp_payload(501 + i));
    }
    caller.send_to(&rtp_payload(600), relay_a).unwrap();
    assert!(
        silent(&callee, Duration::from_millis(200)),
        "the old binding took the stream back while the new one talks"
    );

    // Spray before the caller sends: from the caller's address but another port; then the real
    // caller (its signalled address and port) sends within the learning window and keeps it.
    let to_b = r.offer("spray", "a", &sdp("10.1.1.2", 4010, &[]), json!({}));
    let to_a = r.answer("spray", "a", "b", &sdp("10.1.2.2", 5000, &[]), json!({}));
    let (relay_a, _) = (media_addr(&to_a), media_addr(&to_b));
    let sprayer = bind(&r.t.caller.ns, "10.1.1.2:4444");
    for i in 0..20 {
        sprayer.send_to(&rtp_payload(7000 + i), relay_a).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    while recv(&callee_rx).is_some() {}
    let real_caller = bind(&r.t.caller.ns, "10.1.1.2:4010");
    real_caller.send_to(&rtp_payload(1), relay_a).unwrap();
    assert_eq!(
        recv(&callee).expect("the real caller's media").0,
        rtp_payload(1)
    );
    for i in 0..10u16 {
        sprayer.send_to(&rtp_payload(7100 + i), relay_a).unwrap();
        real_caller.send_to(&rtp_payload(2 + i), relay_a).unwrap();
        assert_eq!(recv(&callee).expect("real media").0, rtp_payload(2 + i));
    }
    assert!(
        silent(&callee, Duration::from_millis(200)),
        "spray packets reached the callee after the caller sent"
    );
}
