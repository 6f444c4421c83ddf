//! The daemon as a process: start-up in a namespace, NG ping and error replies, metrics over
//! HTTP, and a restart that takes over the pinned XDP link while media keeps being counted.

use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, UdpSocket},
    time::Duration,
};

use relay_common::stats::Reason;
use relay_ctl::xdp::{open_pinned_stats, read_totals};
use relay_tests::{
    call::sdp,
    daemon::{Daemon, NG, ng_call},
    netns::{Bpffs, Netns, veth},
};
use serde_json::json;

fn http_get(ns: &Netns, addr: &'static str, path: &'static str) -> String {
    ns.run(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

fn raw_ng(ns: &Netns, datagram: &'static [u8]) -> Vec<u8> {
    ns.run(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(datagram, NG).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    })
    .unwrap()
}

/// A caller and a relay namespace joined by a veth pair on 10.NET.0.0/24 (the relay is .1),
/// and a private bpffs for the daemon's pins; all removed on drop.
struct Pair {
    p: String,
    _bpffs: Bpffs,
    pin_dir: std::path::PathBuf,
    caller: Netns,
    relay: Netns,
    /// The relay's end of the veth.
    vr: String,
}

impl Pair {
    fn new(net: u8) -> Pair {
        let p = relay_tests::unique_prefix();
        let bpffs = Bpffs::new(&p).unwrap();
        let pin_dir = bpffs.path().join("relay");
        let caller = Netns::new(&format!("{p}-c")).unwrap();
        let relay = Netns::new(&format!("{p}-r")).unwrap();
        let (vc, vr) = (format!("{p}c"), format!("{p}r"));
        let (a, b) = (format!("10.{net}.0.2/24"), format!("10.{net}.0.1/24"));
        veth(&caller, &vc, &a, &relay, &vr, &b).unwrap();
        Pair {
            p,
            _bpffs: bpffs,
            pin_dir,
            caller,
            relay,
            vr,
        }
    }
}

#[test]
fn daemon_serves_ng_and_metrics_and_survives_restart() {
    if !relay_tests::privileged("daemon_serves_ng_and_metrics_and_survives_restart") {
        return;
    }
    let Pair {
        p,
        _bpffs,
        pin_dir,
        caller,
        relay,
        vr,
    } = Pair::new(203);
    let state = std::env::temp_dir().join(format!("{p}-state.json"));
    let state_s = state.to_str().unwrap().to_owned();
    let args = [
        "--listen",
        "pub/10.203.0.1",
        "--interface",
        &vr,
        "--port-min",
        "30000",
        "--port-max",
        "30100",
        "--metrics-listen",
        "127.0.0.1:9103",
        "--state-file",
        &state_s,
    ];

    let mut d = Daemon::start(&relay, &pin_dir, &args).unwrap();
    assert_eq!(
        ng_call(&relay, json!({"command": "ping"})).unwrap()["result"],
        "pong"
    );
    let e = ng_call(&relay, json!({"command": "frobnicate"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("Unrecognized command"), "{e}");
    // Garbage after a cookie gets an error reply with that cookie; nothing else changes.
    let reply = raw_ng(&relay, b"abc123 d7:command");
    assert!(
        reply.starts_with(b"abc123 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(String::from_utf8_lossy(&reply).contains("error"));
    assert_eq!(
        ng_call(&relay, json!({"command": "ping"})).unwrap()["result"],
        "pong"
    );

    // Bencode, as Kamailio's rtpengine module speaks it.
    assert_eq!(
        raw_ng(&relay, b"k1 d7:command4:pinge"),
        b"k1 d6:result4:ponge".to_vec()
    );
    // A retransmitted offer (same cookie) gets the same reply and is executed once.
    const OFFER: &[u8] = b"r1 d7:command5:offer7:call-id2:c18:from-tag2:t13:sdp89:v=0\r\no=- 1 1 IN IP4 10.203.0.2\r\ns=-\r\nc=IN IP4 10.203.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\ne";
    let first = raw_ng(&relay, OFFER);
    assert!(
        first.starts_with(b"r1 d"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    assert!(
        String::from_utf8_lossy(&first).contains("6:result2:ok"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    assert_eq!(
        raw_ng(&relay, OFFER),
        first,
        "retransmission answered from the cache"
    );
    let metrics = http_get(&relay, "127.0.0.1:9103", "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    let sample = |line: &str| -> Option<u64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
    };
    let frob = "relay_ng_requests_total{command=\"frobnicate\",result=\"error\"}";
    let invalid = "relay_ng_requests_total{command=\"invalid\",result=\"error\"}";
    assert_eq!(sample(frob), Some(1), "{metrics}");
    assert_eq!(sample(invalid), Some(1), "{metrics}");
    assert_eq!(
        sample("relay_ng_requests_total{command=\"offer\",result=\"ok\"}"),
        Some(1),
        "{metrics}"
    );
    assert_eq!(sample("relay_sessions"), Some(1), "{metrics}");
    // Start-up readiness pings count too, so only a lower bound is known here.
    assert!(sample("relay_ng_requests_total{command=\"ping\",result=\"pong\"}").unwrap() >= 2);
    assert!(
        metrics.contains(
            "relay_fastpath_packets_total{reason=\"pass_unknown_stream\",verdict=\"pass\"}"
        )
    );

    // Write-ahead: the change is in the journal before the reply, daemon running (so a crash,
    // not only a stop, keeps the call).
    let journal = relay_ctl::journal::journal_path(&state);
    assert!(
        std::fs::read_to_string(&journal).is_ok_and(|s| s.contains("\"c1\"")),
        "offer journaled before its reply"
    );

    let stats = open_pinned_stats(&pin_dir).unwrap();
    let send = |n: u16| {
        caller
            .run(move || {
                let s = UdpSocket::bind("10.203.0.2:0").unwrap();
                for i in 0..n {
                    s.send_to(&relay_tests::frames::rtp_payload(i), "10.203.0.1:30010")
                        .unwrap();
                }
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        read_totals(&stats)
            .unwrap()
            .get(Reason::PassUnknownStream)
            .packets
    };
    assert_eq!(send(10), 10);
    assert!(d.stop().unwrap(), "daemon exits 0 on SIGTERM");
    assert_eq!(send(10), 20, "fast path keeps running with the daemon down");
    let d2 = Daemon::start(&relay, &pin_dir, &args).unwrap();
    assert_eq!(send(10), 30, "the restarted daemon uses the same maps");
    // The call offered before the restart is known to the new daemon, with its ports.
    assert!(state.exists(), "sessions saved to the state file");
    let list = ng_call(&relay, json!({"command": "list"})).unwrap();
    assert_eq!(list["calls"], json!(["c1"]));
    let q = ng_call(&relay, json!({"command": "query", "call-id": "c1"})).unwrap();
    assert!(
        q["tags"]["t1"]["medias"][0]["streams"][0]["local port"]
            .as_u64()
            .is_some(),
        "{q:#?}"
    );
    ng_call(&relay, json!({"command": "delete", "call-id": "c1"})).unwrap();
    assert_eq!(
        ng_call(&relay, json!({"command": "list"})).unwrap()["calls"],
        json!([])
    );
    drop(d2);
    let _ = std::fs::remove_file(&state);
    relay_ctl::pins::detach_all(&pin_dir).unwrap();
}

/// rtpengine's timeouts: a call without media ends after `--timeout`, a call on hold (muted
/// or inactive media) only after `--silent-timeout`, and their ports are freed.
#[test]
fn held_calls_get_the_silent_timeout() {
    if !relay_tests::privileged("held_calls_get_the_silent_timeout") {
        return;
    }
    let Pair {
        p: _p,
        _bpffs,
        pin_dir,
        caller: _caller,
        relay,
        vr,
    } = Pair::new(204);
    let args = [
        "--listen=pub/10.204.0.1",
        &format!("--interface={vr}"),
        "--port-min=30000",
        "--port-max=30100",
        "--timeout=1",
        "--silent-timeout=4",
    ];
    let _d = Daemon::start(&relay, &pin_dir, &args).unwrap();
    let sdp = |ip: &str, port: u16, dir: &str| sdp(ip, port, &[&format!("a={dir}")]);
    for (call, offer_dir, answer_dir) in [
        ("talking", "sendrecv", "sendrecv"),
        ("held", "sendonly", "recvonly"),
    ] {
        ng_call(
            &relay,
            json!({"command": "offer", "call-id": call, "from-tag": "a",
                   "sdp": sdp("10.204.0.2", 4000, offer_dir)}),
        )
        .unwrap();
        ng_call(
            &relay,
            json!({"command": "answer", "call-id": call, "from-tag": "a", "to-tag": "b",
                   "sdp": sdp("10.204.0.3", 5000, answer_dir)}),
        )
        .unwrap();
    }
    let calls = || ng_call(&relay, json!({"command": "list"})).unwrap()["calls"].clone();
    assert_eq!(calls(), json!(["held", "talking"]));
    // Bounded polls: the media timeout (1 s) is checked on a 1 s tick.
    let wait_for = |want: serde_json::Value, secs: u64| {
        (0..secs * 10).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            calls() == want
        })
    };
    assert!(wait_for(json!(["held"]), 4), "{}", calls());
    let stats = ng_call(&relay, json!({"command": "statistics"})).unwrap();
    assert!(wait_for(json!([]), 6), "{} {stats:?}", calls());
}

/// A relay port another program holds is never offered: the SDP only carries ports the daemon
/// could bind, so media to them reaches it.
#[test]
fn ports_held_by_other_programs_are_not_offered() {
    if !relay_tests::privileged("ports_held_by_other_programs_are_not_offered") {
        return;
    }
    let Pair {
        p: _p,
        _bpffs,
        pin_dir,
        caller,
        relay,
        vr,
    } = Pair::new(205);
    // "Another program": sockets on the first ports of the range, held for the whole test.
    let held: Vec<UdpSocket> = relay
        .run(|| {
            [30000u16, 30003, 30004]
                .iter()
                .map(|p| UdpSocket::bind(("10.205.0.1", *p)).unwrap())
                .collect()
        })
        .unwrap();
    let args = [
        "--listen=pub/10.205.0.1",
        &format!("--interface={vr}"),
        "--port-min=30000",
        "--port-max=30100",
    ];
    let _d = Daemon::start(&relay, &pin_dir, &args).unwrap();
    let sdp = |ip: &str, port: u16| sdp(ip, port, &[]);
    let offer = ng_call(
        &relay,
        json!({"command": "offer", "call-id": "held", "from-tag": "a", "sdp": sdp("10.205.0.2", 4000)}),
    )
    .unwrap();
    let answer = ng_call(
        &relay,
        json!({"command": "answer", "call-id": "held", "from-tag": "a", "to-tag": "b", "sdp": sdp("10.205.0.3", 5000)}),
    )
    .unwrap();
    let port = |reply: &serde_json::Map<String, serde_json::Value>| {
        relay_tests::topology::media_addr(reply["sdp"].as_str().unwrap()).port()
    };
    let (to_b, to_a) = (port(&offer), port(&answer));
    for rtp in [to_b, to_a] {
        for p in [rtp, rtp + 1] {
            assert!(
                ![30000, 30003, 30004].contains(&p),
                "offered a held port {p} (B {to_b}, A {to_a})"
            );
        }
    }
    // The offered ports are the daemon's: the first datagram to A's port latches the caller.
    caller
        .run(move || {
            let s = UdpSocket::bind("10.205.0.2:4000").unwrap();
            s.send_to(&relay_tests::frames::rtp_payload(1), ("10.205.0.1", to_a))
                .unwrap();
        })
        .unwrap();
    let latched = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        let q = ng_call(&relay, json!({"command": "query", "call-id": "held"})).unwrap();
        q["tags"]["a"]["medias"][0]["streams"][0]["endpoint"]["address"] == "10.205.0.2"
    });
    assert!(latched, "the caller latched on A's relay port {to_a}");
    drop(held);
}
