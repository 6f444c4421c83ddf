//! Session behaviour: forwarding entries, latching, re-offers, forks, deletion, port accounting,
//! and that bad input changes nothing.

#[path = "session_common.rs"]
mod common;

use std::net::SocketAddr;

use common::{crlf, sessions, sessions_with_range};
use relay_core::creds::Credentials;
use relay_core::forwarding::{Component, ForwardingEntry, MismatchPolicy, Rewrite, diff};
use relay_core::ports::PortError;
use relay_core::sdp::SdpError;
use relay_core::session::{AnswerOptions, IceOption, IceRole, OfferOptions, SessionError};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn offer_sdp(ip: &str, port: u16) -> String {
    crlf(&[
        "v=0",
        &format!("o=a 1 1 IN IP4 {ip}"),
        "s=-",
        &format!("c=IN IP4 {ip}"),
        "t=0 0",
        &format!("m=audio {port} RTP/AVP 0"),
    ])
}

fn answer_sdp(ip: &str, port: u16) -> String {
    offer_sdp(ip, port).replace("o=a", "o=b")
}

fn setup() -> relay_core::session::Sessions {
    let mut s = sessions();
    s.offer(
        "c1",
        "A",
        &offer_sdp("198.51.100.10", 4000),
        &OfferOptions::default(),
    )
    .unwrap();
    s.answer(
        "c1",
        "A",
        "B",
        &answer_sdp("198.51.100.20", 5000),
        &AnswerOptions::default(),
    )
    .unwrap();
    s
}

#[test]
fn restricted_latching_and_entries() {
    let mut s = setup();
    // Nothing latched yet: every stream goes to userspace first.
    assert_eq!(s.call_entries("c1"), vec![]);
    // A-facing RTP is 192.0.2.1:30000; a packet from another IP is refused (restricted latching).
    let r = s
        .latch(sa("192.0.2.1:30000"), sa("198.51.100.66:4000"))
        .unwrap();
    assert!(!r.accepted);
    assert_eq!(r.entries, vec![]);
    // Same IP, other port (NAT rewrote it): latched.
    let r = s
        .latch(sa("192.0.2.1:30000"), sa("198.51.100.10:4444"))
        .unwrap();
    assert!(r.accepted);
    let want = ForwardingEntry {
        local: sa("192.0.2.1:30000"),
        expected_source: Some(sa("198.51.100.10:4444")),
        mismatch: MismatchPolicy::Handover,
        stream: r.entries[0].stream,
        component: Component::Rtp,
        rewrite: Rewrite {
            from: sa("192.0.2.1:30002"),
            to: sa("198.51.100.20:5000"),
        },
        rtcp_rewrite: None,
    };
    assert_eq!(r.entries, vec![want]);
    // B side latches: now A's traffic goes to B and B's to A's latched address.
    let old = r.entries;
    let r = s
        .latch(sa("192.0.2.1:30002"), sa("198.51.100.20:5000"))
        .unwrap();
    assert!(r.accepted);
    let c = diff(&old, &r.entries);
    assert_eq!(c.updates, vec![]);
    assert_eq!(c.removals, vec![]);
    assert_eq!(c.inserts.len(), 1);
    assert_eq!(c.inserts[0].local, sa("192.0.2.1:30002"));
    assert_eq!(c.inserts[0].rewrite.to, sa("198.51.100.10:4444"));
    assert_eq!(c.inserts[0].rewrite.from, sa("192.0.2.1:30000"));
    // Once latched, another source is refused without media-handover.
    let r = s
        .latch(sa("192.0.2.1:30002"), sa("198.51.100.20:5002"))
        .unwrap();
    assert!(!r.accepted);
    // RTCP latches on its own port (RTP + 1 on both sides).
    let r = s
        .latch(sa("192.0.2.1:30001"), sa("198.51.100.10:4001"))
        .unwrap();
    assert!(r.accepted);
    let rtcp = r
        .entries
        .iter()
        .find(|e| e.local == sa("192.0.2.1:30001"))
        .unwrap();
    assert_eq!(rtcp.component, Component::Rtcp);
    assert_eq!(
        rtcp.rewrite,
        Rewrite {
            from: sa("192.0.2.1:30003"),
            to: sa("198.51.100.20:5001")
        }
    );
    assert_eq!(s.entries().len(), 3);
    assert!(matches!(
        s.latch(sa("192.0.2.1:31000"), sa("1.2.3.4:5")),
        Err(SessionError::UnknownEndpoint(_))
    ));
}

#[test]
fn symmetric_latching_for_private_or_mismatched_source_and_handover() {
    let mut s = sessions();
    s.offer(
        "c",
        "A",
        &offer_sdp("10.1.1.1", 4000),
        &OfferOptions::default(),
    )
    .unwrap();
    let ao = AnswerOptions {
        received_from: Some("198.51.100.77".parse().unwrap()),
        flags: relay_core::session::Flags {
            media_handover: true,
            ..Default::default()
        },
        ..Default::default()
    };
    s.answer("c", "A", "B", &answer_sdp("198.51.100.20", 5000), &ao)
        .unwrap();
    // A signalled a private address: symmetric, anything is latched; other sources are then
    // refused until the latched one goes silent (the secure default).
    let r = s
        .latch(sa("192.0.2.1:30000"), sa("203.0.113.50:1234"))
        .unwrap();
    assert!(r.accepted);
    assert_eq!(r.entries[0].mismatch, MismatchPolicy::Handover);
    assert_eq!(r.entries[0].rewrite.to, sa("198.51.100.20:5000"));
    // B's signalling came from elsewhere: symmetric, with media handover to userspace.
    let r = s
        .latch(sa("192.0.2.1:30002"), sa("203.0.113.60:7000"))
        .unwrap();
    assert!(r.accepted);
    let e = r
        .entries
        .iter()
        .find(|e| e.local == sa("192.0.2.1:30002"))
        .unwrap();
    assert_eq!(e.mismatch, MismatchPolicy::Userspace);
    assert_eq!(e.expected_source, Some(sa("203.0.113.60:7000")));
    // Handover: B moves, the daemon re-latches, A's traffic follows.
    let r = s
        .latch(sa("192.0.2.1:30002"), sa("203.0.113.61:7002"))
        .unwrap();
    assert!(r.accepted);
    let a = r
        .entries
        .iter()
        .find(|e| e.local == sa("192.0.2.1:30000"))
        .unwrap();
    assert_eq!(a.rewrite.to, sa("203.0.113.61:7002"));
}

#[test]
fn asymmetric_and_strict_source_flags() {
    let mut s = sessions();
    let mut o = OfferOptions::default();
    o.flags.asymmetric = true;
    s.offer("c", "A", &offer_sdp("198.51.100.10", 4000), &o)
        .unwrap();
    let mut a = AnswerOptions::default();
    a.flags.strict_source = true;
    a.flags.symmetric = true;
    s.answer("c", "A", "B", &answer_sdp("198.51.100.20", 5000), &a)
        .unwrap();
    // Asymmetric A: entries exist at once and accept any source.
    let e = s.call_entries("c");
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].local, sa("192.0.2.1:30000"));
    assert_eq!(e[0].expected_source, None);
    // B is not latched yet, so A's media goes to B's signalled address.
    assert_eq!(e[0].rewrite.to, sa("198.51.100.20:5000"));
    let r = s.latch(sa("192.0.2.1:30002"), sa("203.0.113.9:9")).unwrap();
    let b = r
        .entries
        .iter()
        .find(|e| e.local == sa("192.0.2.1:30002"))
        .unwrap();
    assert_eq!(b.mismatch, MismatchPolicy::Drop);
    assert_eq!(b.rewrite.to, sa("198.51.100.10:4000"));
}

#[test]
fn reoffer_keeps_ports_and_credentials_unless_remote_changed() {
    let mut s = sessions();
    let ice = |u: &str| {
        crlf(&[
            "v=0",
            "o=a 1 1 IN IP4 198.51.100.10",
            "s=-",
            "c=IN IP4 198.51.100.10",
            "t=0 0",
            "m=audio 4000 RTP/AVP 0",
            &format!("a=ice-ufrag:{u}"),
            "a=ice-pwd:AlicePasswordAlicePassword",
        ])
    };
    let o = OfferOptions {
        ice: IceOption::Force,
        ..Default::default()
    };
    let first = s.offer("c", "A", &ice("u1"), &o).unwrap().sdp;
    s.answer(
        "c",
        "A",
        "B",
        &answer_sdp("198.51.100.20", 5000),
        &AnswerOptions::default(),
    )
    .unwrap();
    let legs = s.ice_legs("c");
    assert_eq!(
        legs.len(),
        1,
        "B answered without ICE: only A's leg terminates"
    );
    assert_eq!(
        legs[0].local,
        Credentials::new("ufrag001", "password001password001")
    );
    assert_eq!(
        legs[0].remote,
        Some(Credentials::new("u1", "AlicePasswordAlicePassword"))
    );
    assert_eq!(
        legs[0].local_endpoints,
        vec![sa("192.0.2.1:30000"), sa("192.0.2.1:30001")]
    );
    // Same offer again (re-INVITE): identical output, same ports, same credentials.
    assert_eq!(s.offer("c", "A", &ice("u1"), &o).unwrap().sdp, first);
    assert_eq!(s.ports_in_use("192.0.2.1".parse().unwrap()), 4);
    // ICE restart by A: A's leg gets fresh credentials; B's leg keeps its own.
    let again = s.offer("c", "A", &ice("u2"), &o).unwrap().sdp;
    assert_eq!(again, first);
    s.answer(
        "c",
        "A",
        "B",
        &answer_sdp("198.51.100.20", 5000),
        &AnswerOptions::default(),
    )
    .unwrap();
    assert_eq!(s.ice_legs("c")[0].local.ufrag, "ufrag003");
    // A moves (new address): its relay ports change; the B-facing port in the offer does not.
    let moved = s
        .offer(
            "c",
            "A",
            &offer_sdp("198.51.100.11", 4002),
            &OfferOptions::default(),
        )
        .unwrap()
        .sdp;
    assert!(moved.contains("m=audio 30002 "), "{moved}");
    let st = &s.streams("c")[0];
    assert_eq!(st.legs[0].rtp, Some(sa("192.0.2.1:30004")));
    assert_eq!(s.ports_in_use("192.0.2.1".parse().unwrap()), 4);
    // With port-latching, a move keeps the ports.
    let mut pl = OfferOptions::default();
    pl.flags.port_latching = true;
    s.offer("c", "A", &offer_sdp("198.51.100.12", 4004), &pl)
        .unwrap();
    assert_eq!(s.streams("c")[0].legs[0].rtp, Some(sa("192.0.2.1:30004")));
}

#[test]
fn forked_answers_are_separate_b_legs() {
    let mut s = sessions();
    s.offer(
        "c",
        "A",
        &offer_sdp("198.51.100.10", 4000),
        &OfferOptions::default(),
    )
    .unwrap();
    let a1 = s
        .answer(
            "c",
            "A",
            "B1",
            &answer_sdp("198.51.100.21", 5000),
            &AnswerOptions::default(),
        )
        .unwrap()
        .sdp;
    let a2 = s
        .answer(
            "c",
            "A",
            "B2",
            &answer_sdp("198.51.100.22", 6000),
            &AnswerOptions::default(),
        )
        .unwrap()
        .sdp;
    // Each fork's answer gives A the same relay endpoint.
    assert_eq!(
        a1.replace("o=b 1 1 IN IP4 198.51.100.21", ""),
        a2.replace("o=b 1 1 IN IP4 198.51.100.22", "")
    );
    assert_eq!(s.streams("c")[0].legs[1].tag.as_deref(), Some("B2"));
    assert_eq!(
        s.remote_sdp("c", "B1"),
        Some(answer_sdp("198.51.100.21", 5000).as_str())
    );
    // The latest fork is active: A's media goes to B2.
    let r = s
        .latch(sa("192.0.2.1:30000"), sa("198.51.100.10:4000"))
        .unwrap();
    assert_eq!(r.entries[0].rewrite.to, sa("198.51.100.22:6000"));
    // Deleting the active fork falls back to the other one, ports stay.
    s.delete("c", Some("A"), Some("B2")).unwrap();
    assert_eq!(s.call_entries("c")[0].rewrite.to, sa("198.51.100.21:5000"));
    assert_eq!(s.ports_in_use("192.0.2.1".parse().unwrap()), 4);
    s.delete("c", None, None).unwrap();
    assert_eq!(s.ports_in_use("192.0.2.1".parse().unwrap()), 0);
    assert_eq!(s.call_ids().count(), 0);
    assert!(matches!(
        s.delete("c", None, None),
        Err(SessionError::UnknownCall(_))
    ));
}

#[test]
fn rejected_streams_free_their_ports() {
    let mut s = sessions();
    let two = crlf(&[
        "v=0",
        "o=a 1 1 IN IP4 198.51.100.10",
        "s=-",
        "c=IN IP4 198.51.100.10",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "m=video 4002 RTP/AVP 96",
    ]);
    s.offer("c", "A", &two, &OfferOptions::default()).unwrap();
    assert_eq!(s.ports_in_use("192.0.2.1".parse().unwrap()), 8);
    let ans = two
        .replace("m=video 4002", "m=video 0")
        .replace("o=a", "o=b");
    s.answer("c", "A", "B", &ans, &AnswerOptions::default())
        .unwrap();
    assert_eq!(s.ports_in_use("192.0.2.1".parse().unwrap()), 4);
    // Rejected in the offer: no ports at all, port 0 passes through.
    let mut s = sessions();
    let out = s
        .offer(
            "d",
            "A",
            &two.replace("m=video 4002", "m=video 0"),
            &OfferOptions::default(),
        )
        .unwrap()
        .sdp;
    assert!(out.contains("\r\nm=video 0 RTP/AVP 96\r\n"));
    assert_eq!(s.ports_in_use("192.0.2.1".parse().unwrap()), 4);
}

#[test]
fn bad_sdp_and_exhaustion_change_no_state() {
    let mut s = setup();
    let before = s
        .offer(
            "c1",
            "A",
            &offer_sdp("198.51.100.10", 4000),
            &OfferOptions::default(),
        )
        .unwrap()
        .sdp;
    let e = s.offer(
        "c1",
        "A",
        "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n",
        &OfferOptions::default(),
    );
    assert_eq!(
        e,
        Err(SessionError::Sdp(SdpError::Malformed {
            line: 3,
            what: "m= line"
        }))
    );
    assert_eq!(
        s.answer(
            "c1",
            "A",
            "B",
            &crlf(&["v=0", "o=b 1 1 IN IP4 1.2.3.4", "s=-", "t=0 0"]),
            &AnswerOptions::default()
        ),
        Err(SessionError::AnswerMismatch { got: 0, want: 1 })
    );
    assert!(matches!(
        s.answer(
            "nope",
            "A",
            "B",
            &answer_sdp("1.2.3.4", 5),
            &AnswerOptions::default()
        ),
        Err(SessionError::UnknownCall(_))
    ));
    assert!(matches!(
        s.offer(
            "c1",
            "X",
            &offer_sdp("1.2.3.4", 5),
            &OfferOptions::default()
        ),
        Err(SessionError::UnknownTag { .. })
    ));
    let bad_dir = OfferOptions {
        direction: Some(("pub".into(), "nowhere".into())),
        ..Default::default()
    };
    assert_eq!(
        s.offer("c2", "A", &offer_sdp("1.2.3.4", 5), &bad_dir),
        Err(SessionError::UnknownInterface("nowhere".into()))
    );
    assert_eq!(
        s.offer(
            "c1",
            "A",
            &offer_sdp("198.51.100.10", 4000),
            &OfferOptions::default()
        )
        .unwrap()
        .sdp,
        before
    );
    assert_eq!(s.call_ids().collect::<Vec<_>>(), vec!["c1"]);

    // Two pairs fit in 30000-30003; a second stream needs two more: explicit error, nothing kept.
    let mut s = sessions_with_range(30000, 30005);
    s.offer(
        "x",
        "A",
        &offer_sdp("198.51.100.10", 4000),
        &OfferOptions::default(),
    )
    .unwrap();
    let two = offer_sdp("198.51.100.10", 4000) + "m=video 4002 RTP/AVP 96\r\n";
    assert_eq!(
        s.offer("x", "A", &two, &OfferOptions::default()),
        Err(SessionError::Ports(PortError::Exhausted {
            min: 30000,
            max: 30005
        }))
    );
    assert_eq!(s.ports_in_use("192.0.2.1".parse().unwrap()), 4);
    assert_eq!(s.streams("x").len(), 1);
}

#[test]
fn ice_nomination_makes_the_entry() {
    let mut s = sessions();
    let a = crlf(&[
        "v=0",
        "o=a 1 1 IN IP4 198.51.100.10",
        "s=-",
        "c=IN IP4 198.51.100.10",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "a=ice-ufrag:AU",
        "a=ice-pwd:AlicePasswordAlicePassword",
        "a=candidate:1 1 UDP 2130706431 198.51.100.10 4000 typ host",
        "a=rtcp-mux",
    ]);
    let accept = OfferOptions {
        rtcp_mux: relay_core::session::RtcpMuxOption::Accept,
        ..Default::default()
    };
    s.offer("c", "A", &a, &accept).unwrap();
    let b = answer_sdp("198.51.100.20", 5000);
    s.answer("c", "A", "B", &b, &AnswerOptions::default())
        .unwrap();
    let st = &s.streams("c")[0];
    assert_eq!(st.legs[0].ice, IceRole::Terminated);
    assert_eq!(st.legs[1].ice, IceRole::None);
    // Latching is refused on an ICE leg; only a nominated pair counts.
    assert!(
        !s.latch(sa("192.0.2.1:30000"), sa("198.51.100.10:4000"))
            .unwrap()
            .accepted
    );
    let e = s
        .ice_nominated(sa("192.0.2.1:30000"), "A", sa("198.51.100.10:4000"))
        .unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].mismatch, MismatchPolicy::Drop);
    assert_eq!(e[0].expected_source, Some(sa("198.51.100.10:4000")));
    assert_eq!(st.legs[0].rtcp, None);
    // A muxes, B does not: A's RTCP goes to B's RTCP port from the relay's RTCP port.
    assert_eq!(
        e[0].rtcp_rewrite,
        Some(Rewrite {
            from: sa("192.0.2.1:30003"),
            to: sa("198.51.100.20:5001")
        })
    );
    assert_eq!(
        s.ice_nominated(sa("192.0.2.1:30002"), "B", sa("1.1.1.1:1")),
        Err(SessionError::NotIce(sa("192.0.2.1:30002")))
    );
}

#[test]
fn forked_ice_answers_are_separate_ice_legs() {
    let mut s = sessions();
    let ice = |ip: &str, u: &str| {
        crlf(&[
            "v=0",
            &format!("o=x 1 1 IN IP4 {ip}"),
            "s=-",
            &format!("c=IN IP4 {ip}"),
            "t=0 0",
            "m=audio 4000 RTP/AVP 0",
            &format!("a=ice-ufrag:{u}"),
            &format!("a=ice-pwd:{u}{u}{u}{u}{u}{u}"),
            "a=rtcp-mux",
        ])
    };
    s.offer(
        "c",
        "A",
        &ice("198.51.100.10", "aaaa"),
        &OfferOptions::default(),
    )
    .unwrap();
    s.answer(
        "c",
        "A",
        "B1",
        &ice("198.51.100.21", "b1b1"),
        &AnswerOptions::default(),
    )
    .unwrap();
    s.answer(
        "c",
        "A",
        "B2",
        &ice("198.51.100.22", "b2b2"),
        &AnswerOptions::default(),
    )
    .unwrap();
    let legs = s.ice_legs("c");
    let summary: Vec<_> = legs
        .iter()
        .map(|l| {
            (
                l.tag.as_str(),
                l.local.ufrag.as_str(),
                l.remote.as_ref().map(|r| r.ufrag.as_str()),
                l.local_endpoints.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("A", "ufrag001", Some("aaaa"), vec![sa("192.0.2.1:30000")]),
            ("B1", "ufrag002", Some("b1b1"), vec![sa("192.0.2.1:30002")]),
            ("B2", "ufrag002", Some("b2b2"), vec![sa("192.0.2.1:30002")]),
        ]
    );
    // Nomination by the non-active fork is kept but does not steer media; the active one does.
    s.ice_nominated(sa("192.0.2.1:30000"), "A", sa("198.51.100.10:4000"))
        .unwrap();
    let e = s
        .ice_nominated(sa("192.0.2.1:30002"), "B1", sa("198.51.100.21:4000"))
        .unwrap();
    assert_eq!(e, vec![]);
    let e = s
        .ice_nominated(sa("192.0.2.1:30002"), "B2", sa("198.51.100.22:4000"))
        .unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].rewrite.to, sa("198.51.100.22:4000"));
    assert_eq!(e[1].rewrite.to, sa("198.51.100.10:4000"));
}

#[test]
fn reoffer_from_the_answerer_goes_to_the_offerer() {
    let mut s = setup();
    let out = s
        .offer(
            "c1",
            "B",
            &answer_sdp("198.51.100.20", 5000),
            &OfferOptions::default(),
        )
        .unwrap()
        .sdp;
    assert_eq!(
        out,
        crlf(&[
            "v=0",
            "o=b 1 1 IN IP4 198.51.100.20",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
        ])
    );
    let back = s
        .answer(
            "c1",
            "B",
            "A",
            &offer_sdp("198.51.100.10", 4000),
            &AnswerOptions::default(),
        )
        .unwrap()
        .sdp;
    assert!(back.contains("m=audio 30002 RTP/AVP 0\r\n"), "{back}");
    assert_eq!(s.ports_in_use("192.0.2.1".parse().unwrap()), 4);
}

#[test]
fn lf_endings_and_unterminated_body_are_kept() {
    let mut s = sessions();
    let body = "v=0\no=a 1 1 IN IP6 2001:db8::10\ns=-\nc=IN IP6 2001:db8::10\nt=0 0\nm=audio 4000 RTP/AVP 0\na=x-last";
    let out = s
        .offer(
            "c",
            "A",
            body,
            &OfferOptions {
                ice: IceOption::Force,
                ..Default::default()
            },
        )
        .unwrap()
        .sdp;
    // An IPv6 offer picks the IPv6 interface for both legs by default.
    assert_eq!(
        out,
        "v=0\no=a 1 1 IN IP6 2001:db8::10\ns=-\nc=IN IP6 2001:db8::1\nt=0 0\na=ice-lite\na=ice-ufrag:ufrag001\na=ice-pwd:password001password001\nm=audio 30002 RTP/AVP 0\na=x-last\na=candidate:1857717640 1 UDP 2130706431 2001:db8::1 30002 typ host\na=candidate:1857717640 2 UDP 2130706430 2001:db8::1 30003 typ host"
    );
}

#[test]
fn reoffer_keeps_negotiated_rtcp_mux() {
    let mut s = sessions();
    let mux = offer_sdp("198.51.100.10", 4000) + "a=rtcp-mux\r\n";
    s.offer("c", "A", &mux, &OfferOptions::default()).unwrap();
    let ans = answer_sdp("198.51.100.20", 5000) + "a=rtcp-mux\r\n";
    s.answer("c", "A", "B", &ans, &AnswerOptions::default())
        .unwrap();
    let legs = |s: &relay_core::session::Sessions| {
        let st = &s.streams("c")[0];
        (st.legs[0].rtcp_mux, st.legs[1].rtcp_mux)
    };
    assert_eq!(legs(&s), (true, true));
    s.offer("c", "A", &mux, &OfferOptions::default()).unwrap();
    assert_eq!(legs(&s), (true, true));
    // Offerer drops rtcp-mux: its leg stops muxing at once.
    s.offer(
        "c",
        "A",
        &offer_sdp("198.51.100.10", 4000),
        &OfferOptions::default(),
    )
    .unwrap();
    assert_eq!(legs(&s), (false, false));
}

#[test]
fn rtcp_attribute_sets_the_rtcp_destination() {
    let mut s = sessions();
    let a = offer_sdp("198.51.100.10", 4000) + "a=rtcp:4009 IN IP4 198.51.100.99\r\n";
    s.offer("c", "A", &a, &OfferOptions::default()).unwrap();
    s.answer(
        "c",
        "A",
        "B",
        &answer_sdp("198.51.100.20", 5000),
        &AnswerOptions::default(),
    )
    .unwrap();
    // B's RTCP arrives on the B-facing RTCP port and goes to A's RFC 3605 address.
    let r = s
        .latch(sa("192.0.2.1:30003"), sa("198.51.100.20:5001"))
        .unwrap();
    assert!(r.accepted);
    let e = r
        .entries
        .iter()
        .find(|e| e.local == sa("192.0.2.1:30003"))
        .unwrap();
    assert_eq!(
        e.rewrite,
        Rewrite {
            from: sa("192.0.2.1:30001"),
            to: sa("198.51.100.99:4009")
        }
    );
}

#[test]
fn ice_key_in_the_answer_forces_or_removes_ice_towards_the_offerer() {
    // ICE=force in the answer: the relay becomes the (ICE-lite) candidate of the offerer, who
    // sent no ICE, as rtpengine does.
    let mut s = sessions();
    s.offer(
        "f",
        "A",
        &offer_sdp("198.51.100.10", 4000),
        &OfferOptions::default(),
    )
    .unwrap();
    let force = AnswerOptions {
        ice: Some(IceOption::Force),
        ..Default::default()
    };
    let ans = s
        .answer("f", "A", "B", &answer_sdp("198.51.100.20", 5000), &force)
        .unwrap()
        .sdp;
    assert!(ans.contains("a=ice-ufrag:"), "{ans}");
    assert!(ans.contains(" typ host\r\n"), "{ans}");
    let legs = s.ice_legs("f");
    assert!(
        legs.iter()
            .any(|l| l.tag == "A" && l.role == IceRole::Terminated),
        "{legs:?}"
    );

    // ICE=remove in the answer: no ICE back to an offerer that had it.
    let mut s = sessions();
    let with_ice = offer_sdp("198.51.100.10", 4000)
        + "a=ice-ufrag:AliceUfrag\r\na=ice-pwd:AlicePasswordAlicePassword\r\n";
    s.offer("r", "A", &with_ice, &OfferOptions::default())
        .unwrap();
    let remove = AnswerOptions {
        ice: Some(IceOption::Remove),
        ..Default::default()
    };
    let ans = s
        .answer("r", "A", "B", &answer_sdp("198.51.100.20", 5000), &remove)
        .unwrap()
        .sdp;
    assert!(!ans.contains("a=ice-"), "{ans}");
    assert!(!ans.contains("a=candidate"), "{ans}");
    assert!(s.ice_legs("r").iter().all(|l| l.tag != "A"));

    // ICE=remove in the offer only: the answer (no ICE key) gives the ICE offerer the relay as
    // its ICE-lite candidate, as rtpengine does; the answerer never saw ICE.
    let mut s = sessions();
    let remove_offer = OfferOptions {
        ice: IceOption::Remove,
        ..Default::default()
    };
    let to_b = s.offer("d", "A", &with_ice, &remove_offer).unwrap().sdp;
    assert!(!to_b.contains("a=ice-"), "{to_b}");
    let ans = s
        .answer(
            "d",
            "A",
            "B",
            &answer_sdp("198.51.100.20", 5000),
            &AnswerOptions::default(),
        )
        .unwrap()
        .sdp;
    assert!(ans.contains("a=ice-ufrag:"), "{ans}");
    assert!(
        s.ice_legs("d")
            .iter()
            .any(|l| l.tag == "A" && l.role == IceRole::Terminated)
    );
}

#[test]
fn hold_with_zero_address_keeps_ports_and_latch_and_sends_nothing_to_the_holder() {
    let mut s = setup();
    s.latch(sa("192.0.2.1:30000"), sa("198.51.100.10:4000"))
        .unwrap();
    s.latch(sa("192.0.2.1:30002"), sa("198.51.100.20:5000"))
        .unwrap();
    let before = s.call_entries("c1");
    assert_eq!(before.len(), 2);
    let reoffer = |s: &mut relay_core::session::Sessions, ip: &str| {
        s.offer("c1", "A", &offer_sdp(ip, 4000), &OfferOptions::default())
            .unwrap();
        s.answer(
            "c1",
            "A",
            "B",
            &answer_sdp("198.51.100.20", 5000),
            &AnswerOptions::default(),
        )
        .unwrap();
    };
    // A holds (c=0.0.0.0): same relay ports, A's latch kept, so A's media (music on hold)
    // still goes to B; nothing goes to A.
    reoffer(&mut s, "0.0.0.0");
    assert_eq!(s.streams("c1")[0].legs[0].rtp, Some(sa("192.0.2.1:30000")));
    assert_eq!(s.call_entries("c1"), vec![before[0]]);
    // Resume at the same address: both entries back, nothing to re-learn.
    reoffer(&mut s, "198.51.100.10");
    assert_eq!(s.call_entries("c1"), before);
    // Hold again, then resume elsewhere: the old latch does not follow A to its new address.
    reoffer(&mut s, "0.0.0.0");
    reoffer(&mut s, "198.51.100.11");
    let after = s.call_entries("c1");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].local, sa("192.0.2.1:30002"));
    assert_eq!(after[0].rewrite.to, sa("198.51.100.11:4000"));
}

#[test]
fn deleting_the_active_fork_hands_over_to_the_latest_other_answer() {
    let mut s = sessions();
    s.offer(
        "c",
        "A",
        &offer_sdp("198.51.100.10", 4000),
        &OfferOptions::default(),
    )
    .unwrap();
    // Answer order differs from tag order on purpose.
    for (tag, ip) in [
        ("zz", "198.51.100.21"),
        ("mm", "198.51.100.22"),
        ("aa", "198.51.100.23"),
    ] {
        s.answer(
            "c",
            "A",
            tag,
            &answer_sdp(ip, 5000),
            &AnswerOptions::default(),
        )
        .unwrap();
    }
    s.latch(sa("192.0.2.1:30000"), sa("198.51.100.10:4000"))
        .unwrap();
    let to = |s: &relay_core::session::Sessions| s.call_entries("c")[0].rewrite.to;
    assert_eq!(to(&s), sa("198.51.100.23:5000"));
    // The active fork (latest answer) goes: the one answered before it takes over, not the
    // one whose tag sorts last.
    s.delete("c", Some("A"), Some("aa")).unwrap();
    assert_eq!(s.streams("c")[0].legs[1].tag.as_deref(), Some("mm"));
    assert_eq!(to(&s), sa("198.51.100.22:5000"));
    // A fork that is not active goes without changing anything.
    s.delete("c", Some("A"), Some("zz")).unwrap();
    assert_eq!(to(&s), sa("198.51.100.22:5000"));
    // The last one takes the call with it.
    s.delete("c", Some("A"), Some("mm")).unwrap();
    assert_eq!(s.call_ids().count(), 0);
}

#[test]
fn hold_marks_the_call_muted_until_resume() {
    let mut s = setup();
    assert!(!s.is_muted("c1"), "an established sendrecv call");
    assert!(!s.is_muted("unknown"));
    let with = |sdp: String, extra: &str| {
        sdp.replace("RTP/AVP 0\r\n", &format!("RTP/AVP 0\r\n{extra}\r\n"))
    };
    let reinvite = |s: &mut relay_core::session::Sessions, offer: &str, answer: &str| {
        s.offer("c1", "A", offer, &OfferOptions::default()).unwrap();
        s.answer("c1", "A", "B", answer, &AnswerOptions::default())
            .unwrap();
    };
    for (offer_attr, answer_attr) in [("a=sendonly", "a=recvonly"), ("a=inactive", "a=inactive")] {
        reinvite(
            &mut s,
            &with(offer_sdp("198.51.100.10", 4000), offer_attr),
            &with(answer_sdp("198.51.100.20", 5000), answer_attr),
        );
        assert!(s.is_muted("c1"), "{offer_attr} / {answer_attr}");
        reinvite(
            &mut s,
            &offer_sdp("198.51.100.10", 4000),
            &answer_sdp("198.51.100.20", 5000),
        );
        assert!(!s.is_muted("c1"), "resumed after {offer_attr}");
    }
    // The old way (RFC 3264 s.8.4).
    reinvite(
        &mut s,
        &offer_sdp("198.51.100.10", 4000).replace("c=IN IP4 198.51.100.10", "c=IN IP4 0.0.0.0"),
        &answer_sdp("198.51.100.20", 5000),
    );
    assert!(s.is_muted("c1"), "c=0.0.0.0");
}
