//! Issue 15's options against the daemon end to end (no proxy; `kamailio.rs` has the proxy):
//! a malformed `rtpp-flags` string changes nothing; `rtpp-flags` with label, TOS, loop protect
//! and codec stripping; the TOS byte in the call's fast-path entries; loop protection passing
//! our own SDP through; `query` and `delete` by label; rtpengine's statistics and metric names.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use relay_common::stream::FLAG_SET_TOS;
use relay_tests::{
    call::{Relay, bind, recv, sdp},
    daemon::{NG, ng_reply},
    netns::Netns,
    topology::media_addr,
};
use serde_json::{Value, json};

const METRICS: &str = "127.0.0.1:9104";

fn http_get(ns: &Netns, path: &'static str) -> String {
    ns.run(move || {
        let mut s = TcpStream::connect(METRICS).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

fn calls(r: &Relay) -> Value {
    r.ng(json!({"command": "list"}))["calls"].clone()
}

#[test]
fn ng_options_end_to_end() {
    if !relay_tests::privileged("ng_options_end_to_end") {
        return;
    }
    let r = Relay::start(&[&format!("--metrics-listen={METRICS}")]).unwrap();
    let a = bind(&r.t.caller.ns, "10.1.1.2:4000");
    let b = bind(&r.t.callee.ns, "10.1.2.2:5000");
    let offer_sdp =
        sdp("10.1.1.2", 4000, &["a=rtpmap:8 PCMA/8000"]).replace(" RTP/AVP 0", " RTP/AVP 0 8");

    // A malformed flag string: an error, and no call.
    let bad = ng_reply(
        &r.t.relay,
        NG.parse().unwrap(),
        json!({"command": "offer", "call-id": "bad", "from-tag": "A", "sdp": offer_sdp,
               "rtpp-flags": "label=caller codec=[strip=[PCMA]"}),
    )
    .unwrap();
    assert_eq!(bad["result"], "error", "{bad:?}");
    assert!(bad["error-reason"].as_str().unwrap().contains("rtpp-flags"));
    assert_eq!(calls(&r), json!([]));

    let to_b = r.offer(
        "c1",
        "A",
        &offer_sdp,
        json!({"rtpp-flags": "label=caller TOS=184 loop-protect codec-strip=PCMA"}),
    );
    assert!(
        to_b.contains(" RTP/AVP 0\r\n") && !to_b.contains("PCMA"),
        "{to_b}"
    );
    assert!(to_b.contains("a=rtpengine:"), "{to_b}");
    // Our own SDP offered back with loop-protect: returned unchanged, nothing created.
    let looped = r.ng(
        json!({"command": "offer", "call-id": "c2", "from-tag": "X", "sdp": to_b,
                             "flags": ["loop-protect"]}),
    );
    assert_eq!(looped["sdp"].as_str(), Some(to_b.as_str()));
    assert_eq!(calls(&r), json!(["c1"]));

    let to_a = r.answer(
        "c1",
        "A",
        "B",
        &sdp("10.1.2.2", 5000, &[]),
        json!({"label": "callee", "TOS": 184}),
    );
    let (relay_a, relay_b) = (media_addr(&to_a), media_addr(&to_b));
    let rtp = relay_tests::frames::rtp_payload(1);
    a.send_to(&rtp, relay_a).unwrap();
    assert!(recv(&b).is_some(), "caller -> callee");
    b.send_to(&rtp, relay_b).unwrap();
    assert!(recv(&a).is_some(), "callee -> caller");
    // The entries the daemon installed after latching carry TOS 184 (DSCP EF).
    let t0 = Instant::now();
    loop {
        let e = [relay_a, relay_b].map(|l| r.raw_stream(l).unwrap());
        if e.iter()
            .all(|e| e.is_some_and(|e| e.flags & FLAG_SET_TOS != 0 && e.tos == 184))
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "entries without TOS: {e:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // query by label: that participant only, with its label.
    let q = r.ng(json!({"command": "query", "call-id": "c1", "label": "callee"}));
    let tags = q["tags"].as_object().unwrap();
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["B"]);
    assert_eq!(tags["B"]["label"], "callee");
    assert!(
        q["totals"]["RTP"]["packets"].as_u64().unwrap() >= 2,
        "{q:?}"
    );

    let st = r.ng(json!({"command": "statistics"}));
    let s = &st["statistics"];
    assert_eq!(s["currentstatistics"]["sessionsown"], 1);
    assert!(s["controlstatistics"]["totaloffercount"].as_u64().unwrap() >= 2);
    assert!(s["totalstatistics"]["managedsessions"].as_u64().unwrap() >= 1);
    let m = http_get(&r.t.relay, "/metrics");
    for line in [
        "rtpengine_sessions{type=\"own\"} 1",
        "relay_sessions 1",
        "rtpengine_closed_sessions_total{reason=\"terminated\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
    }
    assert!(m.contains("rtpengine_packets_total{type=\"kernel\"}"));
    assert!(m.contains("rtpengine_ports_used{name=\"pub\""));

    // delete by label deletes that participant: with two, the call goes.
    let d = r.ng(json!({"command": "delete", "call-id": "c1", "label": "caller"}));
    assert_eq!(d["result"], "ok");
    assert_eq!(calls(&r), json!([]));
    let m = http_get(&r.t.relay, "/metrics");
    assert!(
        m.lines()
            .any(|l| l == "rtpengine_closed_sessions_total{reason=\"terminated\"} 1"),
        "{m}"
    );
}
