use std::net::SocketAddr;
use std::time::Instant;

use relay_core::forwarding::StreamId;
use relay_core::session::{IceRole, LegInfo, StreamInfo};
use relay_core::session_crypto::CryptoOptions;

use super::*;
use crate::dtls::{DtlsEndpoint, DtlsRole};
use crate::srtp::{Direction, SrtpContext};

fn opts(flags: &[&str]) -> CryptoOptions {
    let mut o = CryptoOptions::default();
    for f in flags {
        o.apply_flag(f).unwrap();
    }
    o
}

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([10, 99, 0, 1], p))
}

fn info() -> Vec<StreamInfo> {
    let leg = |tag: &str, p: u16| LegInfo {
        interface: "pub".into(),
        tag: Some(tag.into()),
        rtp: Some(addr(p)),
        rtcp: None,
        rtcp_mux: true,
        ice: IceRole::None,
        latch_mode: None,
        peers: [None, None],
    };
    vec![StreamInfo {
        id: StreamId(1),
        index: 0,
        media: "audio".into(),
        legs: [leg("a", 30000), leg("b", 30002)],
    }]
}

fn browser_sdp(fp: &Fingerprint) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 10.99.0.1\r\ns=-\r\nt=0 0\r\nm=audio 30002 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 10.99.0.1\r\na=rtcp-mux\r\na=fingerprint:{fp}\r\na=setup:actpass\r\n"
    )
}

const PLAIN: &str = "v=0\r\no=- 1 1 IN IP4 10.99.0.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 10.99.0.1\r\n";

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, (seq >> 8) as u8, seq as u8, 0, 0, 0, 1, 1, 2, 3, 4];
    p.extend_from_slice(&[seq as u8; 160]);
    p
}

/// Browser (leg 0, DTLS active) <-> plain SIP leg; returns the gateway and the browser's
/// SRTP contexts after the handshake.
fn call(
    browser: &DtlsIdentity,
    browser_fp_in_sdp: &Fingerprint,
) -> (Gateway, Option<(SrtpContext, SrtpContext)>) {
    let relay = DtlsIdentity::generate().unwrap();
    let relay_fp = relay.fingerprint.clone();
    let mut gw = Gateway::new(relay, GatewayState::default());
    let sdp = browser_sdp(browser_fp_in_sdp);
    let o = opts(&["RTP/AVP", "DTLS=off"]);
    gw.offer("c1", "a", &sdp, &o, true).unwrap();
    let to_sip = gw.offer("c1", "a", &sdp, &o, false).unwrap();
    assert!(to_sip.contains("m=audio 30002 RTP/AVP 0"), "{to_sip}");
    assert!(!to_sip.contains("a=fingerprint") && !to_sip.contains("a=setup"));
    let to_browser = gw
        .answer(
            "c1",
            "b",
            PLAIN,
            &opts(&["DTLS=passive", "RTP/SAVPF", "SDES-off"]),
            false,
        )
        .unwrap();
    assert!(to_browser.contains("m=audio 30000 UDP/TLS/RTP/SAVPF 0"));
    assert!(to_browser.contains(&format!("a=fingerprint:{relay_fp}")));
    assert!(to_browser.contains("a=setup:passive"));
    let now = Instant::now();
    gw.bind("c1", &info(), now);
    // Both endpoints of the stream are the daemon's now.
    assert_eq!(
        gw.converts(&addr(30000)).as_deref(),
        Some("crypto: DTLS-SRTP<->RTP")
    );
    assert_eq!(
        gw.converts(&addr(30002)).as_deref(),
        Some("crypto: DTLS-SRTP<->RTP")
    );
    // The browser's side is side 0, whose relay endpoint is 30000.
    let mut ep = DtlsEndpoint::new(browser, DtlsRole::Active, relay_fp, now).unwrap();
    let mut keys = None;
    for _ in 0..10 {
        let Some(d) = ep.poll_transmit() else { break };
        let replies = gw
            .dtls(&addr(30000), now, &d)
            .expect("DTLS is the relay's here");
        for r in replies {
            if let Ok(Some(k)) = ep.handle_input(now, &r) {
                keys = Some(k);
            }
        }
    }
    let ctx = keys.map(|k| {
        (
            SrtpContext::new(k.suite, &k.local, Direction::Outbound).unwrap(),
            SrtpContext::new(k.suite, &k.remote, Direction::Inbound).unwrap(),
        )
    });
    (gw, ctx)
}

#[test]
fn browser_to_plain_through_the_gateway() {
    let browser = DtlsIdentity::generate().unwrap();
    let (mut gw, ctx) = call(&browser, &browser.fingerprint);
    let (mut tx, mut rx) = ctx.expect("handshake done");
    assert_eq!(gw.counters.dtls_handshakes_ok, 1);
    // Browser -> SIP phone.
    let mut p = rtp(1);
    tx.protect_rtp(&mut p).unwrap();
    assert_eq!(gw.media(&addr(30000), &p).unwrap(), rtp(1));
    assert_eq!(gw.media(&addr(30000), &p), Err(MediaDrop::Replay));
    let mut t = rtp(3);
    tx.protect_rtp(&mut t).unwrap();
    t[20] ^= 1;
    assert_eq!(gw.media(&addr(30000), &t), Err(MediaDrop::Auth));
    // SIP phone -> browser.
    let mut q = gw.media(&addr(30002), &rtp(9)).unwrap();
    rx.unprotect_rtp(&mut q).unwrap();
    assert_eq!(q, rtp(9));
    let c = gw.counters;
    assert_eq!(
        (c.crypto_forwarded, c.srtp_replays, c.srtp_auth_failures),
        (2, 1, 1)
    );

    // A restart: the state keeps the DTLS keys; the new gateway resumes without a handshake.
    let state: GatewayState =
        serde_json::from_str(&serde_json::to_string(&gw.snapshot()).unwrap()).unwrap();
    let mut again = Gateway::new(DtlsIdentity::generate().unwrap(), state);
    again.bind("c1", &info(), Instant::now());
    let mut p = rtp(4);
    tx.protect_rtp(&mut p).unwrap();
    assert_eq!(again.media(&addr(30000), &p).unwrap(), rtp(4));
    let mut q = again.media(&addr(30002), &rtp(10)).unwrap();
    rx.unprotect_rtp(&mut q).unwrap();
    assert_eq!(q, rtp(10));
    again.remove("c1");
    assert_eq!(again.converts(&addr(30000)), None);
}

#[test]
fn wrong_fingerprint_is_refused_and_counted() {
    let (browser, other) = (
        DtlsIdentity::generate().unwrap(),
        DtlsIdentity::generate().unwrap(),
    );
    let (mut gw, ctx) = call(&browser, &other.fingerprint);
    assert!(ctx.is_none());
    assert_eq!(gw.counters.dtls_handshakes_failed, 1);
    assert_eq!(gw.counters.dtls_fingerprint_mismatch, 1);
    assert_eq!(gw.counters.dtls_handshakes_ok, 0);
    assert_eq!(gw.media(&addr(30002), &rtp(1)), Err(MediaDrop::DtlsFailed));
}

#[test]
fn dry_runs_keep_nothing_and_bad_crypto_is_refused() {
    let mut gw = Gateway::new(DtlsIdentity::generate().unwrap(), GatewayState::default());
    let bad =
        PLAIN.replace("RTP/AVP", "RTP/SAVP") + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:@@@@\r\n";
    let e = gw
        .offer("c", "a", &bad, &opts(&["RTP/AVP"]), true)
        .unwrap_err();
    assert!(e.contains("a=crypto"), "{e}");
    assert!(gw.snapshot().calls.is_empty());
    gw.offer("c", "a", PLAIN, &CryptoOptions::default(), true)
        .unwrap();
    assert!(gw.snapshot().calls.is_empty());
    // Plain to plain: nothing converts, the fast path keeps the stream.
    gw.offer("c", "a", PLAIN, &CryptoOptions::default(), false)
        .unwrap();
    gw.answer("c", "b", PLAIN, &CryptoOptions::default(), false)
        .unwrap();
    gw.bind("c", &info(), Instant::now());
    assert_eq!(gw.converts(&addr(30000)), None);
    assert!(gw.describe("c").is_empty());
    assert_eq!(
        gw.offer("c", "a", "garbage", &CryptoOptions::default(), true)
            .unwrap(),
        "garbage"
    );
}
