//! ICE on the fakes: STUN routing between forks, consent, components after a re-offer.

use std::time::Duration;

use relay_common::stream::Endpoint;
use relay_core::{creds::Credentials, ice::CONSENT_TIMEOUT, stun::Class};
use serde_json::json;

use super::*;

fn creds(u: &str) -> Credentials {
    Credentials::new(u, format!("{u}password{u}password"))
}

/// A plain caller and an ICE-forced B side: the relay terminates ICE towards B. Returns the
/// relay's B-side endpoint and credentials.
fn offer_with_ice_towards_b(h: &mut Harness, call_id: &str) -> (SocketAddr, Credentials) {
    let to_b = h.ok_sdp(
        json!({"command": "offer", "call-id": call_id, "from-tag": "A",
        "sdp": plain("198.51.100.10", 4000), "ICE": "force"}),
    );
    (relay(media_port(&to_b)), relay_creds(&to_b))
}

fn answer(h: &mut Harness, call_id: &str, tag: &str, ip: &str, c: &Credentials) {
    h.ok_sdp(
        json!({"command": "answer", "call-id": call_id, "from-tag": "A", "to-tag": tag,
        "sdp": sdp(ip, 4000, &ice_lines(c))}),
    );
}

#[test]
fn forks_whose_tags_sort_against_chronology_each_reach_their_own_agent() {
    let mut h = Harness::new();
    let (b_ep, relay_b) = offer_with_ice_towards_b(&mut h, "fork");
    // The first answer's tag sorts last, the second's (latest, active) first.
    answer(&mut h, "fork", "zzz", "198.51.100.21", &creds("zzzz"));
    answer(&mut h, "fork", "aaa", "198.51.100.22", &creds("aaaa"));
    let (peer_zzz, peer_aaa) = (sa("198.51.100.21:4000"), sa("198.51.100.22:4000"));

    h.packet(b_ep, peer_aaa, &check(&relay_b, "aaaa", true));
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "one response");
    assert_eq!((sent[0].0, sent[0].1), (b_ep, peer_aaa));
    assert_eq!(response(&sent[0].2), (Class::Success, None));
    let e = h
        .entry(b_ep)
        .expect("the active fork's nomination installs its entry");
    assert_eq!(e.expected, Endpoint::from(peer_aaa));
    assert_eq!(e.dst, Endpoint::from(sa("198.51.100.10:4000")));

    // The earlier fork is still a leg of its own (RFC 7584 s.4.4): answered by its agent, and its
    // nomination does not steer media away from the active fork.
    h.packet(b_ep, peer_zzz, &check(&relay_b, "zzzz", true));
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].1, response(&sent[0].2)),
        (peer_zzz, (Class::Success, None))
    );
    assert_eq!(h.entry(b_ep).unwrap().expected, Endpoint::from(peer_aaa));

    // A ufrag no fork has goes to the active fork's agent, which refuses it.
    h.packet(b_ep, sa("192.0.2.99:1000"), &check(&relay_b, "evil", false));
    assert_eq!(response(&h.sent()[0].2), (Class::Error, Some(401)));
}

#[test]
fn a_peer_sending_only_indications_after_nomination_keeps_its_media() {
    let mut h = Harness::new();
    let (b_ep, relay_b) = offer_with_ice_towards_b(&mut h, "consent");
    answer(&mut h, "consent", "B", "198.51.100.20", &creds("bbbb"));
    let a_ep = relay(h.ports("consent", "A")[0]);
    let (peer_a, peer_b) = (sa("198.51.100.10:4000"), sa("198.51.100.20:4000"));
    h.packet(b_ep, peer_b, &check(&relay_b, "bbbb", true));
    h.sent();
    let nominated_at = h.now.instant;
    // The agent's own deadline is the engine's (the daemon sleeps until it).
    assert_eq!(
        h.engine.ice.poll_timeout(),
        Some(nominated_at + CONSENT_TIMEOUT)
    );
    assert!(h.engine.poll_timeout() <= nominated_at + CONSENT_TIMEOUT);

    // Five minutes of keepalives by Binding Indication (RFC 8445 s.11) and media both ways.
    for i in 0..30u8 {
        h.advance(Duration::from_secs(10));
        h.packet(b_ep, peer_b, &indication());
        h.packet(b_ep, peer_b, &rtp(i));
        h.packet(a_ep, peer_a, &rtp(i));
    }
    assert_eq!(
        h.entry(b_ep).map(|e| e.expected),
        Some(Endpoint::from(peer_b)),
        "the nominated pair still forwards"
    );
    let slot = h.entry(b_ep).unwrap().counter_slot;
    assert_eq!(
        h.table.borrow().counters[&slot].packets,
        30,
        "B's media went through the fast path"
    );
    assert_eq!(
        h.engine.stats.ice_consent_lapsed, 1,
        "noticed once, not acted on"
    );
    assert_eq!(h.engine.stats.ice_checks.get("ignored"), Some(&30));
    // Only A's first packet (which latched A) went through the daemon; no STUN was sent.
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0, sent[0].1), (b_ep, peer_b));

    // Media of the stream that does reach the daemon is forwarded too.
    h.engine.handle_inbound(
        h.now,
        Inbound {
            local: b_ep,
            source: peer_b,
            data: rtp(99),
        },
    );
    h.engine.commit();
    assert_eq!(h.sent(), vec![(a_ep, peer_a, rtp(99))]);
}

#[test]
fn reoffer_dropping_rtcp_mux_gives_the_agent_an_rtcp_component() {
    let mut h = Harness::new();
    let (ca, cb) = (creds("aaaa"), creds("bbbb"));
    let muxed = |c: &Credentials| {
        let [u, p] = ice_lines(c);
        vec![u, p, "a=rtcp-mux".to_owned()]
    };
    h.ok_sdp(
        json!({"command": "offer", "call-id": "mux", "from-tag": "A",
        "sdp": sdp("198.51.100.10", 4000, &muxed(&ca))}),
    );
    let to_a = h.ok_sdp(
        json!({"command": "answer", "call-id": "mux", "from-tag": "A", "to-tag": "B",
        "sdp": sdp("198.51.100.20", 5000, &muxed(&cb))}),
    );
    let relay_a = relay_creds(&to_a);
    assert_eq!(h.ports("mux", "A").len(), 1, "rtcp-mux: one endpoint");

    h.ok_sdp(
        json!({"command": "offer", "call-id": "mux", "from-tag": "A",
        "sdp": sdp("198.51.100.10", 4000, &ice_lines(&ca))}),
    );
    let ports = h.ports("mux", "A");
    assert_eq!(ports.len(), 2, "without rtcp-mux: RTP and RTCP endpoints");
    let rtcp_ep = relay(ports[1]);
    h.packet(
        rtcp_ep,
        sa("198.51.100.10:4001"),
        &check(&relay_a, "aaaa", false),
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "the RTCP check is answered");
    assert_eq!(
        (sent[0].0, response(&sent[0].2)),
        (rtcp_ep, (Class::Success, None))
    );
    assert_eq!(h.engine.stats.ice_checks.get("dropped"), None);
}
