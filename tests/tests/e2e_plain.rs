//! A plain RTP call through the relay daemon, driven over NG as a SIP proxy would: offer from the
//! caller, answer from the callee, media both ways received intact by ordinary sockets, the
//! attacker refused under restricted latching, query counters, and delete stopping forwarding.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use relay_tests::{
    daemon::ng_call,
    netns::{Bpffs, Netns},
    topology::{RELAY_SERVICE, Topology, media_addr},
};
use serde_json::json;

fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=sendrecv\r\n"
    )
}

fn bind(ns: &Netns, addr: &str) -> UdpSocket {
    let addr = addr.to_owned();
    ns.run(move || {
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    })
    .unwrap()
}

fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, a)| (buf[..n].to_vec(), a))
}

#[test]
fn plain_call_latches_forwards_and_deletes() {
    if !relay_tests::privileged("plain_call_latches_forwards_and_deletes") {
        return;
    }
    let t = Topology::new().unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let pin_dir = bpffs.path().join("relay");
    let _d = t
        .start_daemon(
            &pin_dir,
            &["--port-min", "30000", "--port-max", "30100", "--detach"],
        )
        .unwrap();

    let caller = bind(&t.caller.ns, "10.1.1.2:4000");
    let callee = bind(&t.callee.ns, "10.1.2.2:5000");
    let attacker = bind(&t.attacker.ns, "10.1.3.2:4000");

    // Caller's signalled address is its real one: restricted latching.
    let offer = ng_call(
        &t.relay,
        json!({"command": "offer", "call-id": "call-1", "from-tag": "tagA", "sdp": sdp("10.1.1.2", 4000),
               "received from": ["IP4", "10.1.1.2"], "flags": ["strict-source"]}),
    )
    .unwrap();
    let to_callee = offer["sdp"].as_str().unwrap().to_owned();
    let relay_b = media_addr(&to_callee);
    assert_eq!(relay_b.ip().to_string(), RELAY_SERVICE);
    assert!(to_callee.contains(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    ));

    let answer = ng_call(
        &t.relay,
        json!({"command": "answer", "call-id": "call-1", "from-tag": "tagA", "to-tag": "tagB",
               "sdp": sdp("10.1.2.2", 5000), "received from": ["IP4", "10.1.2.2"], "flags": ["strict-source"]}),
    )
    .unwrap();
    let relay_a = media_addr(answer["sdp"].as_str().unwrap());
    assert_eq!(relay_a.ip().to_string(), RELAY_SERVICE);
    assert_ne!(relay_a.port(), relay_b.port());

    // Media both ways, payload intact, arriving from the relay's other-leg port.
    for i in 0..20u16 {
        let rtp = relay_tests::frames::rtp_payload(i);
        caller.send_to(&rtp, relay_a).unwrap();
        let (got, from) = recv(&callee).expect("callee receives caller's RTP");
        assert_eq!((got, from), (rtp.clone(), relay_b));
        callee.send_to(&rtp, relay_b).unwrap();
        let (got, from) = recv(&caller).expect("caller receives callee's RTP");
        assert_eq!((got, from), (rtp, relay_a));
    }

    // The attacker sends to the caller's relay port: refused, nothing reaches the callee.
    for i in 0..10u16 {
        attacker
            .send_to(&relay_tests::frames::rtp_payload(1000 + i), relay_a)
            .unwrap();
    }
    assert!(
        recv(&callee).is_none(),
        "attacker's RTP must not reach the callee"
    );
    // The real caller still gets through afterwards.
    caller
        .send_to(&relay_tests::frames::rtp_payload(77), relay_a)
        .unwrap();
    assert_eq!(
        recv(&callee).unwrap().0,
        relay_tests::frames::rtp_payload(77)
    );

    // The media crossed XDP: the daemon forwarded at most the packets that triggered latching
    // (one per direction), the fast path redirected the rest.
    let st = ng_call(&t.relay, json!({"command": "statistics"})).unwrap();
    let st = &st["statistics"];
    let userspace = st["userspace forwarded packets"].as_u64().unwrap();
    let redirected = st["fastpath"]["redirect_forward"]["packets"]
        .as_u64()
        .unwrap();
    assert!(
        userspace <= 2,
        "daemon forwarded {userspace} packets: {st:#?}"
    );
    assert_eq!(redirected + userspace, 41, "{st:#?}");
    assert_eq!(
        st["fastpath"]["drop_source_mismatch"]["packets"], 10,
        "attacker dropped in XDP"
    );
    let q = ng_call(&t.relay, json!({"command": "query", "call-id": "call-1"})).unwrap();
    let leg_a = &q["tags"]["tagA"]["medias"][0]["streams"][0];
    assert_eq!(leg_a["local port"], relay_a.port());
    assert_eq!(leg_a["endpoint"]["address"], "10.1.1.2");
    assert_eq!(leg_a["stats"]["packets"], 21, "{q:#?}");
    assert!(
        leg_a["fast path"]["packets"].as_u64().unwrap() >= 20,
        "{q:#?}"
    );
    let list = ng_call(&t.relay, json!({"command": "list"})).unwrap();
    assert_eq!(list["calls"], json!(["call-1"]));

    ng_call(&t.relay, json!({"command": "delete", "call-id": "call-1"})).unwrap();
    caller
        .send_to(&relay_tests::frames::rtp_payload(99), relay_a)
        .unwrap();
    assert!(recv(&callee).is_none(), "no forwarding after delete");
    let e = ng_call(&t.relay, json!({"command": "query", "call-id": "call-1"})).unwrap_err();
    assert!(e.to_string().contains("Unknown call-id"), "{e}");
    assert_eq!(
        ng_call(&t.relay, json!({"command": "list"})).unwrap()["calls"],
        json!([])
    );
}

#[test]
fn unknown_stream_flood_does_not_starve_control() {
    if !relay_tests::privileged("unknown_stream_flood_does_not_starve_control") {
        return;
    }
    let t = Topology::new().unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let _d = t
        .start_daemon(&bpffs.path().join("relay"), &["--detach"])
        .unwrap();
    let offer = ng_call(
        &t.relay,
        json!({"command": "offer", "call-id": "flood", "from-tag": "a", "sdp": sdp("10.1.1.2", 4000), "flags": ["strict-source"]}),
    )
    .unwrap();
    let target = media_addr(offer["sdp"].as_str().unwrap());

    // Bounded flood: at most 200k datagrams or 3 s, whichever comes first.
    let flood = std::thread::spawn({
        let ns_name = t.attacker.ns.name.clone();
        move || {
            let f = std::fs::File::open(format!("/run/netns/{ns_name}")).unwrap();
            // SAFETY: setns on this thread only.
            assert_eq!(
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) },
                0
            );
            let s = UdpSocket::bind("10.1.3.2:0").unwrap();
            let t0 = std::time::Instant::now();
            let mut sent = 0u64;
            while sent < 200_000 && t0.elapsed() < Duration::from_secs(3) {
                let _ = s.send_to(&relay_tests::frames::rtp_payload(sent as u16), target);
                sent += 1;
            }
            sent
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut answered = 0;
    for _ in 0..10 {
        if ng_call(&t.relay, json!({"command": "ping"})).is_ok_and(|r| r["result"] == "pong") {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = flood.join().unwrap();
    assert!(sent > 1000, "flood too small to mean anything: {sent}");
    assert_eq!(
        answered, 10,
        "NG pings answered during a flood of {sent} datagrams"
    );
    // And the flood changed nothing: no latch under strict source from the wrong address.
    let q = ng_call(&t.relay, json!({"command": "query", "call-id": "flood"})).unwrap();
    assert!(
        q["tags"]["a"]["medias"][0]["streams"][0]
            .get("endpoint")
            .is_none(),
        "{q:#?}"
    );
}

#[test]
fn call_survives_daemon_restart() {
    if !relay_tests::privileged("call_survives_daemon_restart") {
        return;
    }
    let t = Topology::new().unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let pin_dir = bpffs.path().join("relay");
    let state = std::env::temp_dir().join(format!("{}-state.json", t.prefix));
    let state_arg = format!("--state-file={}", state.display());
    let mut first = t.start_daemon(&pin_dir, &[&state_arg]).unwrap();

    let caller = bind(&t.caller.ns, "10.1.1.2:4000");
    let callee = bind(&t.callee.ns, "10.1.2.2:5000");
    let offer = ng_call(
        &t.relay,
        json!({"command": "offer", "call-id": "r1", "from-tag": "a", "sdp": sdp("10.1.1.2", 4000)}),
    )
    .unwrap();
    let relay_b = media_addr(offer["sdp"].as_str().unwrap());
    let answer = ng_call(&t.relay, json!({"command": "answer", "call-id": "r1", "from-tag": "a", "to-tag": "b", "sdp": sdp("10.1.2.2", 5000)})).unwrap();
    let relay_a = media_addr(answer["sdp"].as_str().unwrap());
    let exchange = |n: u16| {
        for i in 0..n {
            let rtp = relay_tests::frames::rtp_payload(i);
            caller.send_to(&rtp, relay_a).unwrap();
            assert_eq!(recv(&callee).expect("callee receives").0, rtp);
            callee.send_to(&rtp, relay_b).unwrap();
            assert_eq!(recv(&caller).expect("caller receives").0, rtp);
        }
    };
    exchange(10);
    let packets = |q: &serde_json::Map<String, serde_json::Value>| {
        q["tags"]["a"]["medias"][0]["streams"][0]["fast path"]["packets"]
            .as_u64()
            .unwrap()
    };
    let before = packets(&ng_call(&t.relay, json!({"command": "query", "call-id": "r1"})).unwrap());

    assert!(first.stop().unwrap());
    exchange(10); // no daemon: the pinned program forwards alone
    let _second = t.start_daemon(&pin_dir, &[&state_arg]).unwrap();
    exchange(10);
    let q = ng_call(&t.relay, json!({"command": "query", "call-id": "r1"})).unwrap();
    assert!(
        packets(&q) >= before + 20,
        "fast-path counters kept rising: {before} -> {}",
        packets(&q)
    );

    ng_call(&t.relay, json!({"command": "delete", "call-id": "r1"})).unwrap();
    caller
        .send_to(&relay_tests::frames::rtp_payload(1), relay_a)
        .unwrap();
    assert!(
        recv(&callee).is_none(),
        "the restarted daemon's delete stops forwarding"
    );
    drop(_second);
    let _ = std::fs::remove_file(&state);
    relay_ctl::pins::detach_all(&pin_dir).unwrap();
}
