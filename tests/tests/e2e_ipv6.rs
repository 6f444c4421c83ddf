//! An IPv6 caller and an IPv4 callee (rtpengine's `address family`): the relay faces each leg
//! in its own family, and the XDP program translates IPv6<->IPv4 between them, so media both
//! ways arrives intact at ordinary sockets without the daemon forwarding it.

use std::net::SocketAddr;

use relay_tests::{
    call::{Relay, assert_fast, bind, burst, rtp, sdp, two_way},
    topology::{RELAY_SERVICE, RELAY_SERVICE6, Wire, media_addr},
};
use serde_json::json;

relay_tests::on_both_wires!(ipv6_caller_ipv4_callee);

fn ipv6_caller_ipv4_callee(wire: Wire) {
    if !relay_tests::privileged("ipv6_caller_ipv4_callee") {
        return;
    }
    // A second logical interface: the IPv6 service address.
    let r = Relay::start_on(wire, &[&format!("--listen=pub6/{RELAY_SERVICE6}")]).unwrap();
    let t = &r.t;
    let (a, b): (SocketAddr, SocketAddr) = (
        "[fd00:1::2]:4000".parse().unwrap(),
        "10.1.2.2:5000".parse().unwrap(),
    );
    let caller = bind(&t.caller.ns, &a.to_string());
    let callee = bind(&t.callee.ns, &b.to_string());

    let to_b = r.offer(
        "v6",
        "A",
        &sdp("fd00:1::2", 4000, &["a=sendrecv"]),
        json!({"address family": "IP4", "received from": ["IP6", "fd00:1::2"]}),
    );
    assert!(
        to_b.contains(&format!("c=IN IP4 {RELAY_SERVICE}\r\n")),
        "{to_b}"
    );
    let relay_b = media_addr(&to_b);
    let to_a = r.answer(
        "v6",
        "A",
        "B",
        &sdp("10.1.2.2", 5000, &["a=sendrecv"]),
        json!({"received from": ["IP4", "10.1.2.2"]}),
    );
    assert!(
        to_a.contains(&format!("c=IN IP6 {RELAY_SERVICE6}\r\n")),
        "{to_a}"
    );
    let relay_a = media_addr(&to_a);
    assert_eq!(relay_a.ip().to_string(), RELAY_SERVICE6);

    // Latching by the daemon on the first packet each way.
    burst(&caller, relay_a, &callee, relay_b, 1, rtp(0));
    burst(&callee, relay_b, &caller, relay_a, 1, rtp(0));
    // Each entry is keyed in its leg's family and rewrites into the other's.
    let want = two_way(relay_a, a, relay_b, b);
    assert_eq!(r.wait_streams(|m| *m == want), want);

    let q0 = r.query("v6");
    let user0 = r.userspace_forwarded();
    let family0 = r.fastpath("pass_family_change");
    burst(&caller, relay_a, &callee, relay_b, 20, rtp(100));
    burst(&callee, relay_b, &caller, relay_a, 20, rtp(100));
    let q1 = r.query("v6");
    assert_fast(&q0, &q1, "A", 0, 20);
    assert_fast(&q0, &q1, "B", 0, 20);
    assert_eq!(r.userspace_forwarded(), user0, "translated in XDP");
    assert_eq!(r.fastpath("pass_family_change"), family0);
    assert_eq!(r.fastpath("drop_translate_failed"), 0);
    assert_eq!(r.streams().unwrap(), want);
    r.assert_wire();
}
