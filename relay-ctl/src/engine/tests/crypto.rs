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
