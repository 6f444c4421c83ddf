//! Call flows beyond one offer and one answer, end to end over NG: a re-INVITE that moves the
//! callee, hold and resume, delete, rtcp-mux on one leg only, and a forked offer. Each checks
//! the payload at an ordinary socket, that the media crossed XDP (per-stream fast-path counters
//! rise while the daemon's share stays put) and the stream table left after the step.

use relay_common::stream::FLAG_RTCP_DEMUX;
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use relay_tests::{
    call::{MapEntry, Relay, assert_fast, bind, burst, rtcp_payload, rtp, sdp, silent, two_way},
    topology::{Wire, media_addr},
};
use serde_json::json;

relay_tests::on_both_wires!(
    reinvite_moves_callee_to_a_new_port,
    hold_resume_and_delete,
    rtcp_mux_on_one_leg_separate_rtcp_on_the_other,
    forked_offer_two_answers_delete_one_branch
);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn reinvite_moves_callee_to_a_new_port(wire: Wire) {
    if !relay_tests::privileged("reinvite_moves_callee_to_a_new_port") {
        return;
    }
    let r = Relay::start_on(wire, &[]).unwrap();
    let t = &r.t;
    let caller = bind(&t.caller.ns, "10.1.1.2:4000");
    let old = bind(&t.callee.ns, "10.1.2.2:5000");
    let new = bind(&t.callee.ns, "10.1.2.2:5002");
    let from_a = json!({"received from": ["IP4", "10.1.1.2"]});
    let from_b = json!({"received from": ["IP4", "10.1.2.2"]});

    let a_sdp = sdp("10.1.1.2", 4000, &["a=sendrecv"]);
    let relay_b = media_addr(&r.offer("re", "A", &a_sdp, from_a.clone()));
    let to_a = r.answer(
        "re",
        "A",
        "B",
        &sdp("10.1.2.2", 5000, &["a=sendrecv"]),
        from_b.clone(),
    );
    let relay_a = media_addr(&to_a);
    // The first packet each way is latched by the daemon; the rest crosses XDP.
    burst(&caller, relay_a, &old, relay_b, 1, rtp(0));
    burst(&old, relay_b, &caller, relay_a, 1, rtp(0));
    let want = two_way(
        relay_a,
        addr("10.1.1.2:4000"),
        relay_b,
        addr("10.1.2.2:5000"),
    );
    assert_eq!(r.wait_streams(|m| *m == want), want);
    let q0 = r.query("re");
    burst(&caller, relay_a, &old, relay_b, 20, rtp(100));
    burst(&old, relay_b, &caller, relay_a, 20, rtp(100));
    let q1 = r.query("re");
    assert_fast(&q0, &q1, "A", 0, 20);
    assert_fast(&q0, &q1, "B", 0, 20);

    // re-INVITE from A, same tags; B's answer moves its media to port 5002.
    let to_b = r.offer("re", "A", &a_sdp, from_a);
    assert_eq!(media_addr(&to_b), relay_b, "B keeps its relay endpoint");
    let to_a = r.answer(
        "re",
        "A",
        "B",
        &sdp("10.1.2.2", 5002, &["a=sendrecv"]),
        from_b,
    );
    assert_eq!(media_addr(&to_a), relay_a, "A keeps its relay endpoint");
    // Right after the answer: A's entry points at the new port; B's old latch is gone, so its
    // endpoint waits for media from the new port (no stale entry, no second one).
    let m = r.streams().unwrap();
    assert_eq!(
        m,
        BTreeMap::from([(
            relay_a,
            MapEntry {
                expected: Some(addr("10.1.1.2:4000")),
                src: relay_b,
                dst: addr("10.1.2.2:5002")
            }
        )])
    );
    let q1 = r.query("re");
    burst(&caller, relay_a, &new, relay_b, 20, rtp(200));
    assert_fast(&q1, &r.query("re"), "A", 0, 20);
    assert!(
        silent(&old, Duration::from_millis(200)),
        "the old port got media"
    );

    // B from its new port: latched once by the daemon, then XDP.
    burst(&new, relay_b, &caller, relay_a, 1, rtp(300));
    let want = two_way(
        relay_a,
        addr("10.1.1.2:4000"),
        relay_b,
        addr("10.1.2.2:5002"),
    );
    assert_eq!(
        r.wait_streams(|m| *m == want),
        want,
        "updated, not duplicated"
    );
    let q2 = r.query("re");
    burst(&new, relay_b, &caller, relay_a, 20, rtp(400));
    burst(&caller, relay_a, &new, relay_b, 20, rtp(500));
    let q3 = r.query("re");
    assert_fast(&q2, &q3, "A", 0, 20);
    assert_fast(&q2, &q3, "B", 0, 20);
    assert!(
        silent(&old, Duration::from_millis(100)),
        "the old port got media"
    );
    assert_eq!(r.streams().unwrap(), want);
    r.assert_wire();
}

fn hold_resume_and_delete(wire: Wire) {
    if !relay_tests::privileged("hold_resume_and_delete") {
        return;
    }
    let r = Relay::start_on(wire, &[]).unwrap();
    let t = &r.t;
    let caller = bind(&t.caller.ns, "10.1.1.2:4000");
    let callee = bind(&t.callee.ns, "10.1.2.2:5000");
    let from_a = json!({"received from": ["IP4", "10.1.1.2"]});
    let from_b = json!({"received from": ["IP4", "10.1.2.2"]});
    let (a, b) = (addr("10.1.1.2:4000"), addr("10.1.2.2:5000"));

    let relay_b = media_addr(&r.offer(
        "hold",
        "A",
        &sdp("10.1.1.2", 4000, &["a=sendrecv"]),
        from_a.clone(),
    ));
    let relay_a = media_addr(&r.answer(
        "hold",
        "A",
        "B",
        &sdp("10.1.2.2", 5000, &["a=sendrecv"]),
        from_b.clone(),
    ));
    burst(&caller, relay_a, &callee, relay_b, 1, rtp(0));
    burst(&callee, relay_b, &caller, relay_a, 1, rtp(0));
    let want = two_way(relay_a, a, relay_b, b);
    assert_eq!(r.wait_streams(|m| *m == want), want);

    // Hold, RFC 3264 s.8.4 style: a=sendonly / a=recvonly pass through untouched; like
    // rtpengine, the relay does not police directions, so the table stays as it was and music
    // on hold (A to B) crosses XDP.
    let to_b = r.offer(
        "hold",
        "A",
        &sdp("10.1.1.2", 4000, &["a=sendonly"]),
        from_a.clone(),
    );
    assert!(to_b.contains("a=sendonly\r\n"), "{to_b}");
    assert_eq!(media_addr(&to_b), relay_b);
    let to_a = r.answer(
        "hold",
        "A",
        "B",
        &sdp("10.1.2.2", 5000, &["a=recvonly"]),
        from_b.clone(),
    );
    assert!(to_a.contains("a=recvonly\r\n"), "{to_a}");
    assert_eq!(media_addr(&to_a), relay_a);
    assert_eq!(r.streams().unwrap(), want, "entries survive a hold");
    let q0 = r.query("hold");
    burst(&caller, relay_a, &callee, relay_b, 20, rtp(100));
    assert_fast(&q0, &r.query("hold"), "A", 0, 20);

    // Old-style hold (RFC 2543, c=0.0.0.0): B is told not to send, and the relay has nowhere
    // to send B's media, so the entry towards A goes; A's own media still crosses XDP.
    let to_b = r.offer(
        "hold",
        "A",
        &sdp("0.0.0.0", 4000, &["a=sendonly"]),
        from_a.clone(),
    );
    assert!(to_b.contains("c=IN IP4 0.0.0.0\r\n"), "{to_b}");
    r.answer(
        "hold",
        "A",
        "B",
        &sdp("10.1.2.2", 5000, &["a=recvonly"]),
        from_b.clone(),
    );
    let on_hold = BTreeMap::from([(relay_a, want[&relay_a])]);
    assert_eq!(r.streams().unwrap(), on_hold);
    let q0 = r.query("hold");
    burst(&caller, relay_a, &callee, relay_b, 20, rtp(200));
    assert_fast(&q0, &r.query("hold"), "A", 0, 20);
    for i in 0..5 {
        callee.send_to(&rtp(300)(i), relay_b).unwrap();
    }
    assert!(
        silent(&caller, Duration::from_millis(200)),
        "media reached a party on hold"
    );

    // Resume: sendrecv at the old address; both entries back without re-latching.
    r.offer("hold", "A", &sdp("10.1.1.2", 4000, &["a=sendrecv"]), from_a);
    r.answer(
        "hold",
        "A",
        "B",
        &sdp("10.1.2.2", 5000, &["a=sendrecv"]),
        from_b,
    );
    assert_eq!(r.streams().unwrap(), want, "entries after resume");
    let q0 = r.query("hold");
    burst(&caller, relay_a, &callee, relay_b, 20, rtp(400));
    burst(&callee, relay_b, &caller, relay_a, 20, rtp(400));
    let q1 = r.query("hold");
    assert_fast(&q0, &q1, "A", 0, 20);
    assert_fast(&q0, &q1, "B", 0, 20);

    // Delete: the table is empty when the reply arrives and the next packets go nowhere.
    r.ng(json!({"command": "delete", "call-id": "hold", "from-tag": "A"}));
    assert_eq!(r.streams().unwrap(), BTreeMap::new());
    caller.send_to(&rtp(500)(0), relay_a).unwrap();
    callee.send_to(&rtp(500)(1), relay_b).unwrap();
    assert!(
        silent(&callee, Duration::from_millis(300)),
        "B after delete"
    );
    assert!(
        silent(&caller, Duration::from_millis(100)),
        "A after delete"
    );
    r.assert_wire();
}

fn rtcp_mux_on_one_leg_separate_rtcp_on_the_other(wire: Wire) {
    if !relay_tests::privileged("rtcp_mux_on_one_leg_separate_rtcp_on_the_other") {
        return;
    }
    let r = Relay::start_on(wire, &[]).unwrap();
    let t = &r.t;
    let caller = bind(&t.caller.ns, "10.1.1.2:4000");
    let callee_rtp = bind(&t.callee.ns, "10.1.2.2:5000");
    let callee_rtcp = bind(&t.callee.ns, "10.1.2.2:5001");

    // rtpengine's `rtcp-mux: accept`: A's rtcp-mux is accepted and offered on; B declines it.
    let to_b = r.offer(
        "mux",
        "A",
        &sdp("10.1.1.2", 4000, &["a=rtcp-mux", "a=sendrecv"]),
        json!({"rtcp-mux": ["accept"]}),
    );
    let relay_b = media_addr(&to_b);
    let relay_b_rtcp = SocketAddr::new(relay_b.ip(), relay_b.port() + 1);
    let to_a = r.answer(
        "mux",
        "A",
        "B",
        &sdp("10.1.2.2", 5000, &["a=sendrecv"]),
        json!({}),
    );
    assert!(to_a.contains("a=rtcp-mux\r\n"), "A keeps rtcp-mux: {to_a}");
    let relay_a = media_addr(&to_a);
    let q = r.query("mux");
    assert_eq!(
        q["tags"]["A"]["medias"][0]["streams"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        q["tags"]["B"]["medias"][0]["streams"][1]["local port"],
        relay_b_rtcp.port(),
        "B has an RTCP port of its own (RTP + 1)"
    );

    // First packets: the daemon latches each relay endpoint.
    burst(&caller, relay_a, &callee_rtp, relay_b, 1, rtp(0));
    burst(&callee_rtp, relay_b, &caller, relay_a, 1, rtp(0));
    burst(
        &callee_rtcp,
        relay_b_rtcp,
        &caller,
        relay_a,
        1,
        rtcp_payload,
    );
    // B's RTP and RTCP endpoints forward in XDP, both into A's one muxed port; A's muxed port
    // forwards RTP to B's RTP port and splits RTCP off to B's RTCP port, in XDP as well.
    let (a, b) = (addr("10.1.1.2:4000"), addr("10.1.2.2:5000"));
    let want = BTreeMap::from([
        (
            relay_a,
            MapEntry {
                expected: Some(a),
                src: relay_b,
                dst: b,
            },
        ),
        (
            relay_b,
            MapEntry {
                expected: Some(b),
                src: relay_a,
                dst: a,
            },
        ),
        (
            relay_b_rtcp,
            MapEntry {
                expected: Some(addr("10.1.2.2:5001")),
                src: relay_a,
                dst: a,
            },
        ),
    ]);
    assert_eq!(r.wait_streams(|m| *m == want), want);
    let demux = r.raw_stream(relay_a).unwrap().unwrap();
    assert_ne!(demux.flags & FLAG_RTCP_DEMUX, 0, "{demux:?}");
    assert_eq!(
        (demux.rtcp_src.socket_addr(), demux.rtcp_dst.socket_addr()),
        (Some(relay_b_rtcp), Some(addr("10.1.2.2:5001"))),
        "A's RTCP leaves from B's relay RTCP endpoint to B's RTCP port"
    );

    let q0 = r.query("mux");
    let user0 = r.userspace_forwarded();
    // B to A: RTP and RTCP from their own ports land on A's single port, through XDP.
    burst(&callee_rtp, relay_b, &caller, relay_a, 20, rtp(100));
    burst(&callee_rtcp, relay_b_rtcp, &caller, relay_a, 20, |i| {
        rtcp_payload(100 + i)
    });
    let q1 = r.query("mux");
    assert_fast(&q0, &q1, "B", 0, 20);
    assert_fast(&q0, &q1, "B", 1, 20);
    assert_eq!(r.userspace_forwarded(), user0, "B to A went through XDP");
    // A to B: RTP to B's RTP port, RTCP sent on A's RTP port to B's RTCP port (RTP + 1),
    // each from the matching relay endpoint; demuxed in XDP.
    burst(&caller, relay_a, &callee_rtp, relay_b, 20, rtp(200));
    burst(&caller, relay_a, &callee_rtcp, relay_b_rtcp, 20, |i| {
        rtcp_payload(200 + i)
    });
    assert!(
        silent(&callee_rtp, Duration::from_millis(100)),
        "RTCP leaked to RTP"
    );
    let q2 = r.query("mux");
    assert_fast(&q1, &q2, "A", 0, 40);
    assert_eq!(r.userspace_forwarded(), user0, "A to B went through XDP");
    assert_eq!(r.streams().unwrap(), want);
    r.assert_wire();
}

fn forked_offer_two_answers_delete_one_branch(wire: Wire) {
    if !relay_tests::privileged("forked_offer_two_answers_delete_one_branch") {
        return;
    }
    let r = Relay::start_on(wire, &[]).unwrap();
    let t = &r.t;
    let caller = bind(&t.caller.ns, "10.1.1.2:4000");
    let b1 = bind(&t.callee.ns, "10.1.2.2:5000");
    // The attacker host serves as the second callee of the fork.
    let b2 = bind(&t.attacker.ns, "10.1.3.2:6000");
    let strict = json!({"flags": ["strict-source"]});
    let (a, b1_addr, b2_addr) = (
        addr("10.1.1.2:4000"),
        addr("10.1.2.2:5000"),
        addr("10.1.3.2:6000"),
    );

    let relay_b = media_addr(&r.offer(
        "fork",
        "A",
        &sdp("10.1.1.2", 4000, &["a=sendrecv"]),
        strict.clone(),
    ));
    let to_a1 = r.answer(
        "fork",
        "A",
        "B1",
        &sdp("10.1.2.2", 5000, &["a=sendrecv"]),
        strict.clone(),
    );
    let to_a2 = r.answer(
        "fork",
        "A",
        "B2",
        &sdp("10.1.3.2", 6000, &["a=sendrecv"]),
        strict.clone(),
    );
    let relay_a = media_addr(&to_a1);
    assert_eq!(media_addr(&to_a2), relay_a, "one relay endpoint for A");

    // Both branches answered: like rtpengine's active dialogue, A's media goes to the latest
    // answer only, never to both.
    burst(&caller, relay_a, &b2, relay_b, 1, rtp(0));
    burst(&b2, relay_b, &caller, relay_a, 1, rtp(0));
    let want = two_way(relay_a, a, relay_b, b2_addr);
    assert_eq!(r.wait_streams(|m| *m == want), want);
    let q0 = r.query("fork");
    burst(&caller, relay_a, &b2, relay_b, 20, rtp(100));
    burst(&b2, relay_b, &caller, relay_a, 20, rtp(100));
    let q1 = r.query("fork");
    assert_fast(&q0, &q1, "A", 0, 20);
    assert_fast(&q0, &q1, "B2", 0, 20);
    assert!(
        silent(&b1, Duration::from_millis(100)),
        "A's media duplicated to B1"
    );

    // The latest branch hangs up: `delete` with its to-tag. The call lives on with B1.
    r.ng(json!({"command": "delete", "call-id": "fork", "from-tag": "A", "to-tag": "B2"}));
    let q = r.query("fork");
    assert!(q["tags"].get("B2").is_none(), "{q:#?}");
    assert!(q["tags"].get("B1").is_some(), "{q:#?}");
    // Right away A's entry points at B1, and B2's is gone (B1 is latched on its first packet).
    let m = r.streams().unwrap();
    assert_eq!(
        m,
        BTreeMap::from([(
            relay_a,
            MapEntry {
                expected: Some(a),
                src: relay_b,
                dst: b1_addr
            }
        )])
    );
    // The relay has never sent to B1: the first packet waits in the kernel for neighbour
    // resolution (pass_fib_miss) and the daemon forwards it; the rest is XDP's.
    let fib_miss = r.fastpath("pass_fib_miss");
    burst(&caller, relay_a, &b1, relay_b, 1, rtp(199));
    assert!(r.fastpath("pass_fib_miss") <= fib_miss + 1);
    let q0 = r.query("fork");
    burst(&caller, relay_a, &b1, relay_b, 20, rtp(200));
    assert_fast(&q0, &r.query("fork"), "A", 0, 20);
    assert!(
        silent(&b2, Duration::from_millis(100)),
        "deleted branch got media"
    );
    burst(&b1, relay_b, &caller, relay_a, 1, rtp(300));
    let want = two_way(relay_a, a, relay_b, b1_addr);
    assert_eq!(r.wait_streams(|m| *m == want), want);
    let q0 = r.query("fork");
    burst(&b1, relay_b, &caller, relay_a, 20, rtp(400));
    burst(&caller, relay_a, &b1, relay_b, 20, rtp(400));
    let q1 = r.query("fork");
    assert_fast(&q0, &q1, "A", 0, 20);
    assert_fast(&q0, &q1, "B1", 0, 20);
    // The deleted branch's media is dropped (strict source) and reaches no one.
    for i in 0..5 {
        b2.send_to(&rtp(500)(i), relay_b).unwrap();
    }
    assert!(
        silent(&caller, Duration::from_millis(200)),
        "deleted branch reached A"
    );
    assert_eq!(r.streams().unwrap(), want);

    // Deleting the last branch ends the call.
    r.ng(json!({"command": "delete", "call-id": "fork", "from-tag": "A", "to-tag": "B1"}));
    assert_eq!(r.streams().unwrap(), BTreeMap::new());
    assert_eq!(r.ng(json!({"command": "list"}))["calls"], json!([]));
    r.assert_wire();
}
