//! Optional ICE termination (RFC 7584 s.4.3, rtpengine's `ICE: optional`) with a full ICE
//! agent on each leg: str0m's `is` as caller and as callee. The endpoints' own credentials and
//! candidates pass through, the relay adds itself as a lowest-priority relay candidate; with no
//! direct route between the hosts, only the relay pairs succeed, on both legs at once, and the
//! media then crosses XDP both ways.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use is::IceCreds;
use relay_tests::{
    call::{Relay, assert_fast, burst, rtp, sdp, two_way},
    ice::{candidates, check, creds},
    topology::{RELAY_SERVICE, Wire},
};

relay_tests::on_both_wires!(optional_ice_on_both_legs);

fn ice_sdp(ip: &str, port: u16, c: &IceCreds) -> String {
    sdp(
        ip,
        port,
        &[
            &format!("a=ice-ufrag:{}", c.ufrag),
            &format!("a=ice-pwd:{}", c.pass),
            &format!("a=candidate:1 1 UDP 2130706431 {ip} {port} typ host"),
            "a=sendrecv",
        ],
    )
}

/// The relay candidate the relay added, after checking the endpoint's own passed through.
fn relay_candidate(sdp: &str, own: SocketAddr) -> SocketAddr {
    let cands = candidates(sdp);
    assert!(
        cands.contains(&(own, "host".into())),
        "the endpoint's candidate passes through:\n{sdp}"
    );
    let relays: Vec<_> = cands.iter().filter(|(_, t)| t == "relay").collect();
    assert_eq!(relays.len(), 1, "one relay candidate:\n{sdp}");
    assert_eq!(relays[0].0.ip().to_string(), RELAY_SERVICE);
    relays[0].0
}

fn optional_ice_on_both_legs(wire: Wire) {
    if !relay_tests::privileged("optional_ice_on_both_legs") {
        return;
    }
    let r = Relay::start_on(wire, &[]).unwrap();
    let t = &r.t;
    // The hosts cannot reach each other directly (as behind two NATs): only via the relay.
    t.caller
        .ns
        .ip(&["route", "add", "unreachable", "10.1.2.0/24"])
        .unwrap();
    t.callee
        .ns
        .ip(&["route", "add", "unreachable", "10.1.1.0/24"])
        .unwrap();
    let (a, b): (SocketAddr, SocketAddr) = (
        "10.1.1.2:4000".parse().unwrap(),
        "10.1.2.2:5000".parse().unwrap(),
    );
    let (a_creds, b_creds) = (IceCreds::new(), IceCreds::new());

    let opt = serde_json::json!({"ICE": "optional"});
    let to_b = r.offer(
        "opt",
        "A",
        &ice_sdp("10.1.1.2", 4000, &a_creds),
        opt.clone(),
    );
    assert!(!to_b.contains("a=ice-lite"), "{to_b}");
    assert_eq!(creds(&to_b), a_creds, "A's credentials pass through to B");
    let relay_b = relay_candidate(&to_b, a);
    let to_a = r.answer("opt", "A", "B", &ice_sdp("10.1.2.2", 5000, &b_creds), opt);
    assert_eq!(creds(&to_a), b_creds, "B's credentials pass through to A");
    let relay_a = relay_candidate(&to_a, b);

    // Both agents at once: the caller controlling, the callee controlled (it answered). The
    // relay is ICE-lite on B's leg, so it answers B's controlled checks with 487 and B takes
    // the controlling role there (RFC 8445 s.7.2.5.1) and nominates.
    // Each agent checks with what its SDP said, as a real endpoint would.
    let (seen_by_a, seen_by_b) = (creds(&to_a), creds(&to_b));
    let limit = Duration::from_secs(10);
    let caller = t
        .caller
        .ns
        .spawn(move || {
            let sock = UdpSocket::bind(a).unwrap();
            check(sock, a, a_creds, seen_by_a, &[b, relay_a], true, limit)
        })
        .unwrap();
    let callee = t
        .callee
        .ns
        .spawn(move || {
            let sock = UdpSocket::bind(b).unwrap();
            check(sock, b, b_creds, seen_by_b, &[a, relay_b], false, limit)
        })
        .unwrap();
    let caller = caller.join().unwrap().unwrap();
    let callee = callee.join().unwrap().unwrap();
    assert_eq!(caller.nominated, Some(relay_a), "A's checks completed");
    assert_eq!(callee.nominated, Some(relay_b), "B's checks completed");
    assert!(callee.controlling, "B switched roles on the relay's 487");

    // Nominations became entries: each relay endpoint accepts its nominated peer only.
    let want = two_way(relay_a, a, relay_b, b);
    assert_eq!(r.wait_streams(|m| *m == want), want);
    let q0 = r.query("opt");
    for tag in ["A", "B"] {
        assert_eq!(
            q0["tags"][tag]["medias"][0]["streams"][0]["ICE"], "optional",
            "{q0:#?}"
        );
    }
    let (ca, cb) = (&caller.sock, &callee.sock);
    burst(ca, relay_a, cb, relay_b, 20, rtp(0));
    burst(cb, relay_b, ca, relay_a, 20, rtp(0));
    let q1 = r.query("opt");
    assert_fast(&q0, &q1, "A", 0, 20);
    assert_fast(&q0, &q1, "B", 0, 20);
    assert_eq!(
        r.userspace_forwarded(),
        0,
        "ICE legs: entries came from nominations, the daemon forwarded no media at all"
    );
    assert_eq!(r.streams().unwrap(), want);
    r.assert_wire();
}
