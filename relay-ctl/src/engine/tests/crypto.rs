//! The gateway on the fakes: an SDES leg bridged to a plain one never reaches the fast-path
//! map; the daemon converts every packet and drops replays and forgeries.

use relay_core::srtp_sdp::{CryptoAttr, SrtpSuite};
use serde_json::json;

use super::*;
use crate::srtp::{Direction, SrtpContext};

const PEER_A: &str = "198.51.100.10:4000";
const PEER_B: &str = "198.51.100.20:5000";
const S80: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;

#[test]
fn sdes_to_plain_stays_in_the_daemon_and_refuses_replays() {
    let mut h = Harness::new();
    let key_a = vec![0x42u8; 30];
    let crypto = format!("a=crypto:{}", CryptoAttr::new(1, S80, key_a.clone()));
    let offer = sdp("198.51.100.10", 4000, &[crypto]).replace("RTP/AVP", "RTP/SAVP");
    let to_b = h.ok_sdp(
        json!({"command": "offer", "call-id": "gw", "from-tag": "A", "sdp": offer,
        "transport-protocol": "RTP/AVP"}),
    );
    assert!(
        to_b.contains(" RTP/AVP ") && !to_b.contains("a=crypto"),
        "{to_b}"
    );
    let to_a = h.ok_sdp(
        json!({"command": "answer", "call-id": "gw", "from-tag": "A", "to-tag": "B",
        "sdp": plain("198.51.100.20", 5000)}),
    );
    let relay_key = to_a
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| CryptoAttr::parse(v).unwrap().keys[0].key_salt.clone())
        .expect("the relay answers SDES");
    let (a_ep, b_ep) = (relay(media_port(&to_a)), relay(media_port(&to_b)));
    let mut a_tx = SrtpContext::new(S80, &key_a, Direction::Outbound).unwrap();
    let mut a_rx = SrtpContext::new(S80, &relay_key, Direction::Inbound).unwrap();
    for i in 1..20u8 {
        let mut p = rtp(i);
        a_tx.protect_rtp(&mut p).unwrap();
        h.packet(a_ep, sa(PEER_A), &p);
        assert_eq!(h.sent(), vec![(b_ep, sa(PEER_B), rtp(i))], "A->B {i}");
        if i == 19 {
            h.packet(a_ep, sa(PEER_A), &p);
            assert!(h.sent().is_empty(), "a replay is dropped");
        }
        h.packet(b_ep, sa(PEER_B), &rtp(i));
        let sent = h.sent();
        assert_eq!(sent.len(), 1);
        let mut back = sent[0].2.clone();
        a_rx.unprotect_rtp(&mut back).unwrap();
        assert_eq!(back, rtp(i), "B->A {i}");
    }
    // Nothing of the call ever went into the map; the applied entries stay the daemon's.
    assert!(
        h.table.borrow().inserts.is_empty(),
        "{:?}",
        h.table.borrow().inserts
    );
    assert!(h.entry(a_ep).is_none() && h.entry(b_ep).is_none());
    let q = h.ng(json!({"command": "query", "call-id": "gw"}));
    assert!(
        q.to_string().contains("daemon (crypto: SDES-SRTP<->RTP)"),
        "{q}"
    );
    let s = h.ng(json!({"command": "statistics"}));
    assert_eq!(s["statistics"]["crypto"]["srtp_replays"], 1, "{s}");
    assert_eq!(s["statistics"]["crypto"]["crypto_forwarded"], 38, "{s}");
}

#[test]
fn malformed_crypto_is_refused_and_changes_nothing() {
    let mut h = Harness::new();
    let bad = sdp(
        "198.51.100.10",
        4000,
        &["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:@@@"],
    )
    .replace("RTP/AVP", "RTP/SAVP");
    let r = h.ng(
        json!({"command": "offer", "call-id": "bad", "from-tag": "A", "sdp": bad,
        "transport-protocol": "RTP/AVP"}),
    );
    assert_eq!(r["result"], "error", "{r}");
    assert!(
        r["error-reason"].as_str().unwrap().contains("a=crypto"),
        "{r}"
    );
    let l = h.ng(json!({"command": "list"}));
    assert_eq!(l["calls"], json!([]), "{l}");
}

/// The relay's key in the a=crypto line of `sdp` for `suite`, with its tag.
fn relay_line(sdp: &str, suite: SrtpSuite) -> CryptoAttr {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| CryptoAttr::parse(v).unwrap())
        .find(|c| c.suite() == Some(suite))
        .unwrap_or_else(|| panic!("no {suite:?} a=crypto in {sdp}"))
}

#[test]
fn each_fork_keeps_its_own_sdes_keys_and_the_active_one_decrypts() {
    let mut h = Harness::new();
    let to_b = h.ok_sdp(json!({"command": "offer", "call-id": "fk", "from-tag": "A",
        "sdp": plain("198.51.100.10", 4000), "transport-protocol": "RTP/SAVP"}));
    let ours = relay_line(&to_b, S80);
    let b_ep = relay(media_port(&to_b));
    // Two forks answer the same offer, each with its own key.
    let fork = |h: &mut Harness, tag: &str, ip: &str, key: &[u8]| {
        let line = format!("a=crypto:{}", CryptoAttr::new(ours.tag, S80, key.to_vec()));
        let answer = sdp(ip, 5000, &[line]).replace("RTP/AVP", "RTP/SAVP");
        h.ok_sdp(
            json!({"command": "answer", "call-id": "fk", "from-tag": "A", "to-tag": tag,
            "sdp": answer}),
        )
    };
    let (key_b1, key_b2) = (vec![0x11u8; 30], vec![0x22u8; 30]);
    fork(&mut h, "B1", "198.51.100.21", &key_b1);
    let to_a = fork(&mut h, "B2", "198.51.100.22", &key_b2);
    assert!(
        to_a.contains(" RTP/AVP ") && !to_a.contains("a=crypto"),
        "{to_a}"
    );
    let a_ep = relay(media_port(&to_a));
    let (b1, b2) = (sa("198.51.100.21:5000"), sa("198.51.100.22:5000"));
    let to_b_rx = ours.keys[0].key_salt.clone();

    // B2 answered last: its key decrypts, B1's does not.
    let mut b2_tx = SrtpContext::new(S80, &key_b2, Direction::Outbound).unwrap();
    let mut b1_tx = SrtpContext::new(S80, &key_b1, Direction::Outbound).unwrap();
    for i in 1..4u8 {
        let mut p = rtp(i);
        b2_tx.protect_rtp(&mut p).unwrap();
        h.packet(b_ep, b2, &p);
        assert_eq!(h.sent(), vec![(a_ep, sa(PEER_A), rtp(i))], "B2->A {i}");
    }
    let mut forged = rtp(10);
    b1_tx.protect_rtp(&mut forged).unwrap();
    h.packet(b_ep, b2, &forged);
    assert!(h.sent().is_empty(), "B1's key must not decrypt B2's leg");
    // A's media goes to B2, under the key the relay offered to every fork.
    let mut b_rx = SrtpContext::new(S80, &to_b_rx, Direction::Inbound).unwrap();
    h.packet(a_ep, sa(PEER_A), &rtp(1));
    let sent = h.sent();
    assert_eq!((sent.len(), sent[0].1), (1, b2), "{sent:?}");
    let mut back = sent[0].2.clone();
    b_rx.unprotect_rtp(&mut back).unwrap();
    assert_eq!(back, rtp(1));

    // B2 goes; B1 is the active fork again, and its own key decrypts its media.
    let r = h.ng(json!({"command": "delete", "call-id": "fk", "from-tag": "A", "to-tag": "B2"}));
    assert_eq!(r["result"], "ok", "{r}");
    for i in 1..4u8 {
        let mut p = rtp(i);
        b1_tx.protect_rtp(&mut p).unwrap();
        h.packet(b_ep, b1, &p);
        assert_eq!(h.sent(), vec![(a_ep, sa(PEER_A), rtp(i))], "B1->A {i}");
    }
    let mut late = rtp(20);
    b2_tx.protect_rtp(&mut late).unwrap();
    h.packet(b_ep, b1, &late);
    assert!(h.sent().is_empty(), "the gone fork's key must not decrypt");
    h.packet(a_ep, sa(PEER_A), &rtp(2));
    let sent = h.sent();
    assert_eq!((sent.len(), sent[0].1), (1, b1), "{sent:?}");
    let mut back = sent[0].2.clone();
    b_rx.unprotect_rtp(&mut back).unwrap();
    assert_eq!(back, rtp(2));
    let s = h.ng(json!({"command": "statistics"}));
    assert_eq!(s["statistics"]["crypto"]["srtp_auth_failures"], 2, "{s}");
}

#[test]
fn osrtp_accept_terminates_a_declined_osrtp_offer_in_the_daemon() {
    let mut h = Harness::new();
    let key_a = vec![0x42u8; 30];
    // RFC 8643: SDES in a plain RTP/AVP m= line; by default it passes to B as it is.
    let crypto = format!("a=crypto:{}", CryptoAttr::new(1, S80, key_a.clone()));
    let to_b = h.ok_sdp(json!({"command": "offer", "call-id": "os", "from-tag": "A",
        "sdp": sdp("198.51.100.10", 4000, std::slice::from_ref(&crypto))}));
    assert!(to_b.contains(&crypto), "{to_b}");
    // B declines it (a plain answer); OSRTP-accept makes the relay take it up.
    let to_a = h.ok_sdp(
        json!({"command": "answer", "call-id": "os", "from-tag": "A", "to-tag": "B",
        "sdp": plain("198.51.100.20", 5000), "flags": ["OSRTP-accept"]}),
    );
    assert!(to_a.contains(" RTP/AVP "), "{to_a}");
    let relay_key = relay_line(&to_a, S80).keys[0].key_salt.clone();
    assert_ne!(relay_key, key_a);
    let (a_ep, b_ep) = (relay(media_port(&to_a)), relay(media_port(&to_b)));
    let mut a_tx = SrtpContext::new(S80, &key_a, Direction::Outbound).unwrap();
    let mut a_rx = SrtpContext::new(S80, &relay_key, Direction::Inbound).unwrap();
    for i in 1..4u8 {
        let mut p = rtp(i);
        a_tx.protect_rtp(&mut p).unwrap();
        h.packet(a_ep, sa(PEER_A), &p);
        assert_eq!(h.sent(), vec![(b_ep, sa(PEER_B), rtp(i))], "A->B {i}");
        h.packet(b_ep, sa(PEER_B), &rtp(i));
        let sent = h.sent();
        assert_eq!(sent.len(), 1);
        let mut back = sent[0].2.clone();
        a_rx.unprotect_rtp(&mut back).unwrap();
        assert_eq!(back, rtp(i), "B->A {i}");
    }
    assert!(h.entry(a_ep).is_none() && h.entry(b_ep).is_none());
}
