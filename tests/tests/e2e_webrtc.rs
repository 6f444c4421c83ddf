//! The WebRTC <-> SIP gateway end to end: aiortc (a full WebRTC stack: ICE, DTLS-SRTP) as the
//! browser leg, a plain RTP socket (or an SDES endpoint) as the SIP leg, through our daemon
//! driven over NG with the standard Kamailio gateway flags. Audio payloads are checked byte
//! for byte both ways; bad DTLS/SRTP input is refused and counted.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use relay_core::srtp_sdp::{CryptoAttr, SrtpSuite};
use relay_ctl::srtp::{Direction, SrtpContext};
use relay_tests::{
    call::{Relay, bind, sdp},
    topology::media_addr,
    webrtc::{BrowserLeg, Summary, attr},
};
use serde_json::{Value, json};

/// Toward the browser: `ICE=force DTLS=passive RTP/SAVPF rtcp-mux-offer SDES-off`.
fn to_browser() -> Value {
    json!({"ICE": "force", "DTLS": "passive", "flags": ["RTP/SAVPF", "SDES-off"], "rtcp-mux": ["offer"]})
}

/// Toward the SIP side: `ICE=remove DTLS=off RTP/AVP rtcp-mux-demux`.
fn to_sip() -> Value {
    json!({"ICE": "remove", "DTLS": "off", "flags": ["RTP/AVP"], "rtcp-mux": ["demux"]})
}

fn rtp(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x5151_5151u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The SIP leg's payload for packet `i`: 160 bytes, a pattern the browser can report back.
fn sip_payload(i: u16) -> Vec<u8> {
    (0..160u16)
        .map(|j| (i.wrapping_mul(7) ^ j) as u8 | 0x01)
        .collect()
}

/// The SIP leg for `secs`: sends RTP every 20 ms to `relay` (optionally through `protect`),
/// records payloads of RTP it receives (optionally after `unprotect`).
fn sip_leg(
    sock: UdpSocket,
    relay: SocketAddr,
    secs: f32,
    mut protect: Option<SrtpContext>,
    mut unprotect: Option<SrtpContext>,
) -> std::thread::JoinHandle<(Vec<Vec<u8>>, u16)> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let t0 = Instant::now();
        let mut sent = 0u16;
        let mut next = t0;
        while t0.elapsed() < Duration::from_secs_f32(secs) {
            if Instant::now() >= next {
                let mut p = rtp(1000 + sent, 160 * u32::from(sent), &sip_payload(sent));
                if let Some(c) = protect.as_mut() {
                    c.protect_rtp(&mut p).unwrap();
                }
                let _ = sock.send_to(&p, relay);
                sent += 1;
                next += Duration::from_millis(20);
            }
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                let mut p = buf[..n].to_vec();
                if p.len() < 12 || (192..=223).contains(&p[1]) {
                    continue; // RTCP
                }
                if let Some(c) = unprotect.as_mut()
                    && c.unprotect_rtp(&mut p).is_err()
                {
                    continue;
                }
                got.push(p[12..].to_vec());
            }
        }
        (got, sent)
    })
}

fn stats(r: &Relay) -> Value {
    r.ng(json!({"command": "statistics"}))["statistics"]["crypto"].clone()
}

/// How many of `sent` arrived in `got`, in order as a subsequence.
fn delivered(sent: &[Vec<u8>], got: &[Vec<u8>]) -> usize {
    got.iter().filter(|g| sent.contains(g)).count()
}

fn check_browser_audio(s: &Summary, sip_got: &[Vec<u8>], sip_sent: u16) {
    eprintln!(
        "browser: ice {:?} connection {:?} dtls {:?}, sent {}, received {}; SIP leg got {} (sent {sip_sent})",
        s.ice,
        s.connection,
        s.dtls,
        s.sent.len(),
        s.received.len(),
        sip_got.len()
    );
    assert!(
        s.dtls.iter().all(|d| d == "connected"),
        "browser DTLS: {s:?}"
    );
    // Browser -> SIP: every PCMU payload the browser encoded, byte for byte (a few lost at
    // the start while ICE and DTLS settle are fine; 2 s of audio are 100 packets).
    let n = delivered(&s.sent, sip_got);
    assert!(
        n >= 60,
        "SIP leg got {n} of {} browser payloads ({} packets in all)",
        s.sent.len(),
        sip_got.len()
    );
    assert_eq!(
        n,
        sip_got.len(),
        "the SIP leg got only what the browser sent"
    );
    // SIP -> browser: what the SIP leg sent, byte for byte.
    let want: Vec<Vec<u8>> = (0..sip_sent).map(sip_payload).collect();
    let got: Vec<Vec<u8>> = s.received.iter().map(|r| r.2.clone()).collect();
    let m = delivered(&want, &got);
    assert!(
        m >= 60,
        "browser got {m} of {sip_sent} SIP payloads: {:?}",
        &s.received.len()
    );
    assert_eq!(m, got.len(), "the browser got only what the SIP leg sent");
}

/// The call: browser offers, SIP answers. Returns the NG offer reply SDP (to SIP).
fn browser_offers(r: &Relay, b: &mut BrowserLeg, id: &str, tamper: bool) -> (String, UdpSocket) {
    let mut offer = b.sdp().unwrap();
    if tamper {
        // One byte of the browser's certificate fingerprint changed: the relay must refuse it.
        let fp = attr(&offer, "fingerprint").unwrap().to_owned();
        let bad = format!(
            "{}{}",
            &fp[..fp.len() - 2],
            if fp.ends_with("00") { "11" } else { "00" }
        );
        offer = offer.replace(&fp, &bad);
    }
    let to_sip_sdp = r.offer(id, "browser", &offer, to_sip());
    assert!(to_sip_sdp.contains(" RTP/AVP "), "{to_sip_sdp}");
    for gone in [
        "a=fingerprint",
        "a=setup",
        "a=crypto",
        "a=ice-",
        "a=candidate",
    ] {
        assert!(
            !to_sip_sdp.contains(gone),
            "{gone} toward SIP: {to_sip_sdp}"
        );
    }
    let sip_addr = format!("{}:6000", r.t.callee.addr);
    let sock = bind(&r.t.callee.ns, &sip_addr);
    let answer = sdp(&r.t.callee.addr, 6000, &[]);
    let to_browser_sdp = r.answer(id, "browser", "sip", &answer, to_browser());
    assert!(to_browser_sdp.contains("UDP/TLS/RTP/SAVPF") || to_browser_sdp.contains("RTP/SAVPF"));
    assert_eq!(attr(&to_browser_sdp, "setup"), Some("passive"));
    assert!(attr(&to_browser_sdp, "fingerprint").is_some_and(|f| f.starts_with("sha-256 ")));
    assert!(attr(&to_browser_sdp, "ice-ufrag").is_some());
    eprintln!("to the browser:\n{to_browser_sdp}");
    b.give_sdp(&to_browser_sdp).unwrap();
    (to_sip_sdp, sock)
}

#[test]
fn browser_calls_sip_phone_through_the_gateway() {
    if !relay_tests::privileged("browser_calls_sip_phone_through_the_gateway") {
        return;
    }
    let r = Relay::start(&[]).unwrap();
    let mut b = BrowserLeg::start(&r.t.caller.ns, "offer", 5.0).unwrap();
    let (to_sip_sdp, sock) = browser_offers(&r, &mut b, "webrtc-1", false);
    let sip = sip_leg(sock, media_addr(&to_sip_sdp), 5.0, None, None);
    let (sip_got, sip_sent) = sip.join().unwrap();
    let s = b.summary(Duration::from_secs(15)).unwrap();
    check_browser_audio(&s, &sip_got, sip_sent);

    let q = r.query("webrtc-1");
    let fwd: Vec<&str> = q["tags"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|t| t["medias"][0]["streams"].as_array().unwrap())
        .map(|s| s["forwarding"].as_str().unwrap())
        .collect();
    assert!(!fwd.is_empty());
    assert!(
        fwd.iter().all(|f| *f == "daemon (crypto: DTLS-SRTP<->RTP)"),
        "{fwd:?}"
    );
    let c = stats(&r);
    assert_eq!(c["dtls_handshakes_ok"], 1, "{c}");
    assert!(c["crypto_forwarded"].as_u64().unwrap() >= 120, "{c}");
    // Nothing of this call is in the fast path's table.
    let table = r.streams().unwrap();
    for l in q["tags"].as_object().unwrap().values() {
        for st in l["medias"][0]["streams"].as_array().unwrap() {
            let port = st["local port"].as_u64().unwrap() as u16;
            assert!(
                !table.keys().any(|k| k.port() == port),
                "fast-path entry for {port}"
            );
        }
    }
}

#[test]
fn wrong_fingerprint_is_refused_and_nothing_flows() {
    if !relay_tests::privileged("wrong_fingerprint_is_refused_and_nothing_flows") {
        return;
    }
    let r = Relay::start(&[]).unwrap();
    let mut b = BrowserLeg::start(&r.t.caller.ns, "offer", 4.0).unwrap();
    let (to_sip_sdp, sock) = browser_offers(&r, &mut b, "webrtc-badfp", true);
    let sip = sip_leg(sock, media_addr(&to_sip_sdp), 4.0, None, None);
    let (sip_got, _) = sip.join().unwrap();
    let s = b.summary(Duration::from_secs(15)).unwrap();
    assert!(
        sip_got.is_empty(),
        "{} packets reached the SIP leg",
        sip_got.len()
    );
    assert!(s.received.is_empty(), "the browser got media");
    assert!(s.dtls.iter().all(|d| d != "connected"), "{s:?}");
    let c = stats(&r);
    assert!(c["dtls_fingerprint_mismatch"].as_u64().unwrap() >= 1, "{c}");
    assert!(c["dtls_handshakes_failed"].as_u64().unwrap() >= 1, "{c}");
    assert_eq!(c["dtls_handshakes_ok"], 0, "{c}");
    assert_eq!(c["crypto_forwarded"], 0, "{c}");
}

/// An SDES endpoint's a=crypto for `key`.
fn crypto_line(key: &[u8]) -> String {
    format!(
        "a=crypto:{}",
        CryptoAttr::new(1, SrtpSuite::AesCm128HmacSha1_80, key.to_vec())
    )
}

/// The relay's key in the a=crypto line with tag `tag` of `sdp`.
fn relay_key(sdp: &str, tag: u32) -> (SrtpSuite, Vec<u8>) {
    let c = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| CryptoAttr::parse(v).unwrap())
        .find(|c| c.tag == tag)
        .unwrap_or_else(|| panic!("no a=crypto:{tag} in {sdp}"));
    (c.suite().unwrap(), c.keys[0].key_salt.clone())
}

#[test]
fn sdes_to_plain_with_replay_and_tamper_dropped() {
    if !relay_tests::privileged("sdes_to_plain_with_replay_and_tamper_dropped") {
        return;
    }
    let r = Relay::start(&[]).unwrap();
    let key_a = vec![0x42u8; 30];
    let a_sdp = sdp(&r.t.caller.addr, 7000, &[&crypto_line(&key_a)]).replace("RTP/AVP", "RTP/SAVP");
    let to_b = r.offer(
        "sdes-1",
        "a",
        &a_sdp,
        json!({"transport-protocol": "RTP/AVP"}),
    );
    assert!(
        to_b.contains(" RTP/AVP ") && !to_b.contains("a=crypto"),
        "{to_b}"
    );
    let to_a = r.answer(
        "sdes-1",
        "a",
        "b",
        &sdp(&r.t.callee.addr, 7002, &[]),
        json!({}),
    );
    assert!(to_a.contains(" RTP/SAVP "), "{to_a}");
    let (suite, relay_to_a) = relay_key(&to_a, 1);
    let a = bind(&r.t.caller.ns, &format!("{}:7000", r.t.caller.addr));
    let b = bind(&r.t.callee.ns, &format!("{}:7002", r.t.callee.addr));
    let (relay_a, relay_b) = (media_addr(&to_a), media_addr(&to_b));
    let mut a_tx = SrtpContext::new(suite, &key_a, Direction::Outbound).unwrap();
    let mut a_rx = SrtpContext::new(suite, &relay_to_a, Direction::Inbound).unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..20u16 {
        let plain = rtp(i, 160 * u32::from(i), &sip_payload(i));
        let mut p = plain.clone();
        a_tx.protect_rtp(&mut p).unwrap();
        a.send_to(&p, relay_a).unwrap();
        let (n, _) = b.recv_from(&mut buf).expect("B receives plain RTP");
        assert_eq!(&buf[..n], plain.as_slice(), "A->B packet {i}");
        if i == 19 {
            // The same SRTP packet again (a replay), and a fresh one with a flipped bit.
            a.send_to(&p, relay_a).unwrap();
            let mut t = rtp(20, 0, &sip_payload(20));
            a_tx.protect_rtp(&mut t).unwrap();
            t[30] ^= 0x10;
            a.send_to(&t, relay_a).unwrap();
        }
        b.send_to(&plain, relay_b).unwrap();
        let (n, _) = a.recv_from(&mut buf).expect("A receives SRTP");
        let mut got = buf[..n].to_vec();
        a_rx.unprotect_rtp(&mut got)
            .expect("relay's SRTP authenticates");
        assert_eq!(got, plain, "B->A packet {i}");
    }
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        b.recv_from(&mut buf).is_err(),
        "replayed or tampered SRTP was forwarded"
    );
    let c = stats(&r);
    assert_eq!(
        (c["srtp_replays"].as_u64(), c["srtp_auth_failures"].as_u64()),
        (Some(1), Some(1)),
        "{c}"
    );
    let q = r.query("sdes-1");
    assert!(
        Value::Object(q.clone())
            .to_string()
            .contains("daemon (crypto: SDES-SRTP<->RTP)"),
        "{q:?}"
    );
}

#[test]
fn browser_to_sdes_endpoint() {
    if !relay_tests::privileged("browser_to_sdes_endpoint") {
        return;
    }
    let r = Relay::start(&[]).unwrap();
    let mut b = BrowserLeg::start(&r.t.caller.ns, "offer", 5.0).unwrap();
    let offer = b.sdp().unwrap();
    let to_sdes = r.offer(
        "dtls-sdes",
        "browser",
        &offer,
        json!({"ICE": "remove", "DTLS": "off", "transport-protocol": "RTP/SAVP", "rtcp-mux": ["demux"]}),
    );
    assert!(
        to_sdes.contains(" RTP/SAVP ") && !to_sdes.contains("a=fingerprint"),
        "{to_sdes}"
    );
    let (suite, relay_to_b) = relay_key(&to_sdes, 1);
    let key_b = vec![0x24u8; 30];
    let answer =
        sdp(&r.t.callee.addr, 6000, &[&crypto_line(&key_b)]).replace("RTP/AVP", "RTP/SAVP");
    let to_browser_sdp = r.answer("dtls-sdes", "browser", "sip", &answer, to_browser());
    b.give_sdp(&to_browser_sdp).unwrap();
    let sock = bind(&r.t.callee.ns, &format!("{}:6000", r.t.callee.addr));
    let sip = sip_leg(
        sock,
        media_addr(&to_sdes),
        5.0,
        Some(SrtpContext::new(suite, &key_b, Direction::Outbound).unwrap()),
        Some(SrtpContext::new(suite, &relay_to_b, Direction::Inbound).unwrap()),
    );
    let (got, sent) = sip.join().unwrap();
    let s = b.summary(Duration::from_secs(15)).unwrap();
    check_browser_audio(&s, &got, sent);
    assert!(
        Value::Object(r.query("dtls-sdes"))
            .to_string()
            .contains("DTLS-SRTP<->SDES-SRTP")
    );
}

#[test]
fn gateway_call_survives_daemon_restart() {
    if !relay_tests::privileged("gateway_call_survives_daemon_restart") {
        return;
    }
    let mut r = Relay::start(&[]).unwrap();
    let dir = std::env::temp_dir().join(format!("{}-gw", r.t.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let state = format!("--state-file={}", dir.join("state.json").display());
    let cert = format!("--dtls-cert={}", dir.join("dtls.pem").display());
    // A daemon of its own with a state file and certificate that outlive it.
    r.daemon.stop().unwrap();
    r.daemon =
        r.t.start_daemon(&r.pin_dir, &["--detach", &state, &cert])
            .unwrap();
    let mut b = BrowserLeg::start(&r.t.caller.ns, "offer", 9.0).unwrap();
    let (to_sip_sdp, sock) = browser_offers(&r, &mut b, "webrtc-restart", false);
    let sip = sip_leg(sock, media_addr(&to_sip_sdp), 9.0, None, None);
    std::thread::sleep(Duration::from_secs(3));
    let before = stats(&r);
    assert_eq!(before["dtls_handshakes_ok"], 1, "{before}");
    // Restart without --detach in between: the new daemon restores the call and its keys.
    r.daemon.stop().unwrap();
    r.daemon =
        r.t.start_daemon(&r.pin_dir, &["--detach", &state, &cert])
            .unwrap();
    let (sip_got, sip_sent) = sip.join().unwrap();
    let s = b.summary(Duration::from_secs(15)).unwrap();
    let after = stats(&r);
    assert_eq!(
        after["dtls_handshakes_ok"], 0,
        "no new handshake after the restart: {after}"
    );
    assert!(
        after["crypto_forwarded"].as_u64().unwrap() >= 100,
        "media after the restart: {after}"
    );
    // Both ways, byte for byte, across the restart (the packets lost while no daemon ran aside).
    assert!(
        delivered(&s.sent, &sip_got) >= 200,
        "{} of {}",
        delivered(&s.sent, &sip_got),
        s.sent.len()
    );
    let want: Vec<Vec<u8>> = (0..sip_sent).map(sip_payload).collect();
    let got: Vec<Vec<u8>> = s.received.iter().map(|r| r.2.clone()).collect();
    assert!(
        delivered(&want, &got) >= 200,
        "{} of {sip_sent}",
        delivered(&want, &got)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sip_phone_calls_browser_through_the_gateway() {
    if !relay_tests::privileged("sip_phone_calls_browser_through_the_gateway") {
        return;
    }
    let r = Relay::start(&[]).unwrap();
    let sip_sdp = sdp(&r.t.caller.addr, 6000, &[]);
    let to_browser_sdp = r.offer("webrtc-2", "sip", &sip_sdp, to_browser());
    assert_eq!(
        attr(&to_browser_sdp, "setup"),
        Some("passive"),
        "{to_browser_sdp}"
    );
    assert!(to_browser_sdp.contains("a=rtcp-mux"), "{to_browser_sdp}");
    let mut b = BrowserLeg::start(&r.t.callee.ns, "answer", 5.0).unwrap();
    b.give_sdp(&to_browser_sdp).unwrap();
    let answer = b.sdp().unwrap();
    assert_eq!(attr(&answer, "setup"), Some("active"), "{answer}");
    let to_sip_sdp = r.answer("webrtc-2", "sip", "browser", &answer, to_sip());
    assert!(to_sip_sdp.contains(" RTP/AVP "), "{to_sip_sdp}");
    for gone in ["a=fingerprint", "a=setup", "a=ice-", "a=candidate"] {
        assert!(
            !to_sip_sdp.contains(gone),
            "{gone} toward SIP: {to_sip_sdp}"
        );
    }
    let sock = bind(&r.t.caller.ns, &format!("{}:6000", r.t.caller.addr));
    let sip = sip_leg(sock, media_addr(&to_sip_sdp), 5.0, None, None);
    let (sip_got, sip_sent) = sip.join().unwrap();
    let s = b.summary(Duration::from_secs(15)).unwrap();
    check_browser_audio(&s, &sip_got, sip_sent);
    assert_eq!(stats(&r)["dtls_handshakes_ok"], 1);
}
