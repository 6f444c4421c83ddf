//! ICE on leg A with mandatory termination (RFC 7584 s.4.2), plain RTP on leg B: str0m's `is`
//! agent, an ICE implementation nobody here wrote, runs as the controlling caller against the
//! relay daemon's ICE-lite agent; only after its nomination does media flow, through XDP.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use is::{
    DefaultSha1HmacProvider, IceCreds, Sha1HmacProvider,
    stun::{StunMessage, TransId},
};
use relay_tests::{
    call::{bind, burst, packets, rtp},
    daemon::ng_call,
    ice::{attr, check},
    netns::Bpffs,
    topology::{RELAY_SERVICE, Topology, media_addr},
};
use serde_json::json;

#[test]
fn ice_caller_against_terminating_relay() {
    if !relay_tests::privileged("ice_caller_against_terminating_relay") {
        return;
    }
    let t = Topology::new().unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let _d = t
        .start_daemon(&bpffs.path().join("relay"), &["--detach"])
        .unwrap();

    let c = ice_call(&t, "ice-1");
    let (caller, callee, relay_a, relay_b, to_a) =
        (&c.caller, &c.callee, c.relay_a, c.relay_b, &c.to_a);

    // Give the daemon a moment to turn the nomination into an entry, then media both ways.
    std::thread::sleep(Duration::from_millis(200));
    exchange(&c, 20, 0);
    let mut buf = [0u8; 2048];
    // DTLS (a ClientHello record) is end to end: the daemon passes it along the media's path,
    // both ways, byte for byte.
    let user_before = ng_call(&t.relay, json!({"command": "statistics"})).unwrap()["statistics"]
        ["userspace forwarded packets"]
        .as_u64()
        .unwrap();
    let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20];
    hello.extend_from_slice(&[0x01; 32]);
    caller.send_to(&hello, relay_a).unwrap();
    let (n, from) = callee.recv_from(&mut buf).expect("callee receives DTLS");
    assert_eq!((&buf[..n], from), (hello.as_slice(), relay_b));
    callee.send_to(&hello, relay_b).unwrap();
    let (n, from) = loop {
        let (n, from) = caller.recv_from(&mut buf).expect("caller receives DTLS");
        if buf[0] == 22 {
            break (n, from);
        }
    };
    assert_eq!((&buf[..n], from), (hello.as_slice(), relay_a));
    let user_after = ng_call(&t.relay, json!({"command": "statistics"})).unwrap()["statistics"]
        ["userspace forwarded packets"]
        .as_u64()
        .unwrap();
    assert_eq!(user_after, user_before + 2, "DTLS goes through the daemon");

    // Attacks from the third host, after nomination: nothing reaches B, the entry stays.
    let ufrag = attr(to_a, "ice-ufrag").to_owned();
    let codes = t
        .attacker
        .ns
        .run(move || {
            let sock = UdpSocket::bind("10.1.3.2:4000").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let hmac = |k: &[u8], p: &[&[u8]]| DefaultSha1HmacProvider.sha1_hmac(k, p);
            let username = format!("{ufrag}:evil");
            let mut codes = Vec::new();
            for pwd in [Some("wrongwrongwrongwrongwrong"), None] {
                let check = StunMessage::binding_request(
                    &username,
                    TransId::new(),
                    true,
                    1,
                    2_130_706_431,
                    true,
                );
                let mut buf = [0u8; 1500];
                let n = check
                    .to_bytes(pwd.map(str::as_bytes), &mut buf, hmac)
                    .unwrap();
                sock.send_to(&buf[..n], relay_a).unwrap();
                let n = sock
                    .recv(&mut buf)
                    .expect("the relay answers a bad check with an error");
                let m = relay_core::stun::StunMessage::parse(&buf[..n]).unwrap();
                codes.push(m.attributes.error_code.map(|e| e.code));
                assert!(!m.has_integrity(), "400/401 carry no MESSAGE-INTEGRITY");
            }
            for i in 0..10u16 {
                sock.send_to(&relay_tests::frames::rtp_payload(900 + i), relay_a)
                    .unwrap();
            }
            codes
        })
        .unwrap();
    assert_eq!(codes, vec![Some(401), Some(400)]);
    assert!(
        callee.recv_from(&mut buf).is_err(),
        "spoofed RTP must not reach B"
    );
    let q = ng_call(&t.relay, json!({"command": "query", "call-id": "ice-1"})).unwrap();
    assert_eq!(
        q["tags"]["A"]["medias"][0]["streams"][0]["endpoint"]["address"], "10.1.1.2",
        "{q:#?}"
    );
    caller
        .send_to(&relay_tests::frames::rtp_payload(77), relay_a)
        .unwrap();
    assert_eq!(
        callee.recv_from(&mut buf).unwrap().0,
        relay_tests::frames::rtp_payload(77).len()
    );

    let st = ng_call(&t.relay, json!({"command": "statistics"})).unwrap();
    let redirected = st["statistics"]["fastpath"]["redirect_forward"]["packets"]
        .as_u64()
        .unwrap();
    let userspace = st["statistics"]["userspace forwarded packets"]
        .as_u64()
        .unwrap();
    assert!(
        redirected >= 38 && userspace <= 4,
        "redirected {redirected}, userspace {userspace}"
    );
}

/// What an ICE call set up by [`ice_call`] leaves: the hosts' sockets, the relay endpoints,
/// the relay's credentials on leg A, and the SDP the caller got.
struct IceCall {
    caller: UdpSocket,
    callee: UdpSocket,
    relay_a: SocketAddr,
    relay_b: SocketAddr,
    relay_creds: IceCreds,
    caller_ufrag: String,
    to_a: String,
}

/// Offer (ICE=force) and answer as a proxy would, then str0m's `is` as the caller checks the
/// relay until it nominates the relay's candidate.
fn ice_call(t: &Topology, call_id: &str) -> IceCall {
    let caller_creds = IceCreds::new();
    let offer_sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 10.1.1.2\r\ns=-\r\nc=IN IP4 10.1.1.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n\
         a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=candidate:1 1 UDP 2130706431 10.1.1.2 4000 typ host\r\na=sendrecv\r\n",
        caller_creds.ufrag, caller_creds.pass
    );
    let offer = ng_call(&t.relay, json!({"command": "offer", "call-id": call_id, "from-tag": "A", "sdp": offer_sdp, "ICE": "force"})).unwrap();
    let to_b = offer["sdp"].as_str().unwrap().to_owned();
    assert!(
        !to_b.contains("a=ice-ufrag:") || !to_b.contains(&caller_creds.ufrag),
        "caller's credentials leaked to B:\n{to_b}"
    );
    assert!(
        !to_b.contains("10.1.1.2 4000 typ host"),
        "caller's candidates leaked to B:\n{to_b}"
    );
    let relay_b = media_addr(&to_b);
    let answer = ng_call(
        &t.relay,
        json!({"command": "answer", "call-id": call_id, "from-tag": "A", "to-tag": "B",
               "sdp": "v=0\r\no=- 2 2 IN IP4 10.1.2.2\r\ns=-\r\nc=IN IP4 10.1.2.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=sendrecv\r\n"}),
    )
    .unwrap();
    let to_a = answer["sdp"].as_str().unwrap().to_owned();
    assert!(to_a.contains("a=ice-lite\r\n"), "{to_a}");
    let relay_a = media_addr(&to_a);
    assert_eq!(relay_a.ip().to_string(), RELAY_SERVICE);
    let relay_creds = IceCreds {
        ufrag: attr(&to_a, "ice-ufrag").to_owned(),
        pass: attr(&to_a, "ice-pwd").to_owned(),
    };
    assert_ne!(
        relay_creds.ufrag, caller_creds.ufrag,
        "fresh credentials per leg"
    );
    let caller_ufrag = caller_creds.ufrag.clone();
    let keep_creds = IceCreds {
        ufrag: relay_creds.ufrag.clone(),
        pass: relay_creds.pass.clone(),
    };

    let callee = bind(&t.callee.ns, "10.1.2.2:5000");

    // The caller: `is` as controlling agent, then RTP from the same socket.
    let checked = t
        .caller
        .ns
        .run(move || {
            let local: SocketAddr = "10.1.1.2:4000".parse().unwrap();
            let sock = UdpSocket::bind(local).unwrap();
            check(
                sock,
                local,
                caller_creds,
                relay_creds,
                &[relay_a],
                true,
                Duration::from_secs(10),
            )
        })
        .unwrap();
    let (nominated, caller) = (checked.nominated, checked.sock);
    assert_eq!(
        nominated,
        Some(relay_a),
        "the independent agent nominated the relay's candidate"
    );

    IceCall {
        caller,
        callee,
        relay_a,
        relay_b,
        relay_creds: keep_creds,
        caller_ufrag,
        to_a,
    }
}

/// A consent check (RFC 7675) from the caller's socket, answered by the relay: the response's
/// error code (None for a success) and whether it is signed.
fn consent_check(c: &IceCall) -> (Option<u16>, bool) {
    let username = format!("{}:{}", c.relay_creds.ufrag, c.caller_ufrag);
    let hmac = |k: &[u8], p: &[&[u8]]| DefaultSha1HmacProvider.sha1_hmac(k, p);
    let check =
        StunMessage::binding_request(&username, TransId::new(), true, 1, 2_130_706_431, false);
    let mut buf = [0u8; 1500];
    let n = check
        .to_bytes(Some(c.relay_creds.pass.as_bytes()), &mut buf, hmac)
        .unwrap();
    c.caller.send_to(&buf[..n], c.relay_a).unwrap();
    // Media may be in flight towards the caller: skip it, bounded.
    for _ in 0..50 {
        let (n, _) = c.caller.recv_from(&mut buf).expect("a STUN response");
        if buf[0] < 4 {
            let m = relay_core::stun::StunMessage::parse(&buf[..n]).unwrap();
            return (m.attributes.error_code.map(|e| e.code), m.has_integrity());
        }
    }
    panic!("no STUN response among 50 datagrams");
}

/// `n` RTP packets each way through the relay, payload and relay source checked.
fn exchange(c: &IceCall, n: u16, base: u16) {
    burst(&c.caller, c.relay_a, &c.callee, c.relay_b, n, rtp(base));
    burst(&c.callee, c.relay_b, &c.caller, c.relay_a, n, rtp(base));
}

/// An ICE-terminated call through a daemon restart: XDP forwards while no daemon runs, and the
/// restarted daemon's agent, restored with the leg's credentials, still answers the caller's
/// consent checks with signed successes, so a browser would keep the call.
#[test]
fn ice_call_survives_daemon_restart() {
    if !relay_tests::privileged("ice_call_survives_daemon_restart") {
        return;
    }
    let t = Topology::new().unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let pin_dir = bpffs.path().join("relay");
    let state = std::env::temp_dir().join(format!("{}-ice-state.json", t.prefix));
    let state_arg = format!("--state-file={}", state.display());
    let mut first = t.start_daemon(&pin_dir, &[&state_arg]).unwrap();
    let c = ice_call(&t, "ice-r");
    std::thread::sleep(Duration::from_millis(200));
    exchange(&c, 10, 0);
    assert_eq!(
        consent_check(&c),
        (None, true),
        "consent before the restart"
    );

    assert!(first.stop().unwrap());
    exchange(&c, 10, 100); // no daemon: the pinned program forwards alone
    let second = t.start_daemon(&pin_dir, &[&state_arg]).unwrap();
    assert_eq!(consent_check(&c), (None, true), "consent after the restart");
    exchange(&c, 10, 200);
    let q = ng_call(&t.relay, json!({"command": "query", "call-id": "ice-r"})).unwrap();
    let (fast, _) = packets(&q, "A", 0);
    assert!(fast >= 29, "A's RTP through XDP across the restart: {fast}");

    ng_call(&t.relay, json!({"command": "delete", "call-id": "ice-r"})).unwrap();
    c.caller
        .send_to(&relay_tests::frames::rtp_payload(999), c.relay_a)
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        c.callee.recv_from(&mut buf).is_err(),
        "the restarted daemon's delete stops forwarding"
    );
    drop(second);
    let _ = std::fs::remove_file(&state);
    relay_ctl::pins::detach_all(&pin_dir).unwrap();
}
