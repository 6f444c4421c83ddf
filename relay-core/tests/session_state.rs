//! The session model's bookkeeping: what every change returns, the endpoint index, per-component
//! peers, and the saved state across restarts (versions, a changed port range).

#[path = "session_common.rs"]
mod common;

use std::net::SocketAddr;

use common::{crlf, sessions_with_range};
use relay_core::component::Component;
use relay_core::session::{
    AnswerOptions, OfferOptions, STATE_VERSION, SessionError, Sessions, SessionsState,
};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn sdp(o: &str, ip: &str, port: u16) -> String {
    crlf(&[
        "v=0",
        &format!("o={o} 1 1 IN IP4 {ip}"),
        "s=-",
        &format!("c=IN IP4 {ip}"),
        "t=0 0",
        &format!("m=audio {port} RTP/AVP 0"),
    ])
}

fn call(s: &mut Sessions, id: &str) {
    s.offer(
        id,
        "A",
        &sdp("a", "198.51.100.10", 4000),
        &OfferOptions::default(),
    )
    .unwrap();
    s.answer(
        id,
        "A",
        "B",
        &sdp("b", "198.51.100.20", 5000),
        &AnswerOptions::default(),
    )
    .unwrap();
}

#[test]
fn every_change_returns_what_the_call_needs_now() {
    let mut s = sessions_with_range(30000, 30099);
    let offered = s
        .offer(
            "c",
            "A",
            &sdp("a", "198.51.100.10", 4000),
            &OfferOptions::default(),
        )
        .unwrap();
    // Both sides' RTP and RTCP endpoints exist from the offer on; no entry before an answer.
    assert_eq!(
        offered.update.endpoints,
        vec![
            sa("192.0.2.1:30000"),
            sa("192.0.2.1:30001"),
            sa("192.0.2.1:30002"),
            sa("192.0.2.1:30003"),
        ]
    );
    assert!(offered.update.entries.is_empty());
    let answered = s
        .answer(
            "c",
            "A",
            "B",
            &sdp("b", "198.51.100.20", 5000),
            &AnswerOptions::default(),
        )
        .unwrap();
    assert_eq!(answered.update.endpoints, offered.update.endpoints);
    assert_eq!(answered.update.entries, s.call_entries("c"));
    let gone = s.delete("c", None, None).unwrap();
    assert_eq!(gone, Default::default());
    assert_eq!(s.call_of(sa("192.0.2.1:30000")), None);
}

#[test]
fn endpoint_lookup_is_indexed_at_10000_calls() {
    let mut s = sessions_with_range(20000, 60000);
    for i in 0..10_000 {
        call(&mut s, &format!("call-{i}"));
    }
    assert_eq!(s.len(), 10_000);
    // Every endpoint of every call resolves to its own call (four per call).
    let mut resolved = 0;
    for i in 0..10_000 {
        let id = format!("call-{i}");
        for st in s.streams(&id) {
            for leg in &st.legs {
                for (c, local) in leg.endpoints() {
                    assert_eq!(s.call_of(local), Some(id.as_str()));
                    assert_eq!(s.component_of(local), Some(c));
                    resolved += 1;
                }
            }
        }
    }
    assert_eq!(resolved, 40_000);
    // The last call latches through the index as the first did.
    let last = s.streams("call-9999")[0].legs[0].rtp.unwrap();
    assert!(s.latch(last, sa("198.51.100.10:4000")).unwrap().accepted);
    // A port nobody owns is refused.
    assert!(matches!(
        s.latch(sa("192.0.2.1:1000"), sa("198.51.100.10:4000")),
        Err(SessionError::UnknownEndpoint(_))
    ));
    // A deleted call's endpoints leave the index.
    s.delete("call-0", None, None).unwrap();
    let first = sa("192.0.2.1:20000");
    assert_eq!(s.call_of(first), None);
}

#[test]
fn rtcp_peer_is_the_rtcp_source() {
    let mut s = sessions_with_range(30000, 30099);
    call(&mut s, "c");
    let leg = &s.streams("c")[0].legs[0];
    let (rtp, rtcp) = (leg.rtp.unwrap(), leg.rtcp.unwrap());
    s.latch(rtp, sa("198.51.100.10:4000")).unwrap();
    s.latch(rtcp, sa("198.51.100.10:4001")).unwrap();
    let leg = &s.streams("c")[0].legs[0];
    assert_eq!(leg.peer(Component::Rtp), Some(sa("198.51.100.10:4000")));
    assert_eq!(leg.peer(Component::Rtcp), Some(sa("198.51.100.10:4001")));
}

fn config(min: u16, max: u16) -> relay_core::session::Config {
    relay_core::session::Config {
        interfaces: vec![
            "pub/192.0.2.1!203.0.113.1".parse().unwrap(),
            "priv/10.0.0.1".parse().unwrap(),
            "v6/2001:db8::1".parse().unwrap(),
        ],
        port_min: min,
        port_max: max,
    }
}

#[test]
fn a_restart_with_a_new_range_allocates_in_the_new_range() {
    let mut s = sessions_with_range(30000, 30099);
    call(&mut s, "old");
    let state = s.snapshot();
    assert_eq!(state.version(), STATE_VERSION);
    let mut s = Sessions::restore(config(40000, 40099), state).unwrap();
    // The restored call keeps its ports, named as outside the range; new calls get the new range.
    assert_eq!(s.ports_outside_range().len(), 4);
    assert!(s.ports_outside_range().iter().all(|(c, _)| c == "old"));
    call(&mut s, "new");
    for leg in &s.streams("new")[0].legs {
        for (_, local) in leg.endpoints() {
            assert!((40000..=40099).contains(&local.port()), "{local}");
        }
    }
    // The old call still works, and its delete clears the list.
    let old_rtp = s.streams("old")[0].legs[0].rtp.unwrap();
    assert!(s.latch(old_rtp, sa("198.51.100.10:4000")).unwrap().accepted);
    s.delete("old", None, None).unwrap();
    assert!(s.ports_outside_range().is_empty());
}

#[test]
fn restored_ports_inside_the_range_are_not_handed_out_again() {
    let mut s = sessions_with_range(30000, 30007);
    call(&mut s, "a");
    let mut s = Sessions::restore(config(30000, 30007), s.snapshot()).unwrap();
    assert!(s.ports_outside_range().is_empty());
    call(&mut s, "b");
    let ports = |s: &Sessions, id: &str| -> Vec<u16> {
        s.streams(id)[0]
            .legs
            .iter()
            .flat_map(|l| l.endpoints().map(|(_, a)| a.port()).collect::<Vec<_>>())
            .collect()
    };
    let (a, b) = (ports(&s, "a"), ports(&s, "b"));
    assert!(a.iter().all(|p| !b.contains(p)), "{a:?} {b:?}");
}

#[test]
fn saved_state_versions() {
    let mut s = sessions_with_range(30000, 30099);
    call(&mut s, "c");
    let json = serde_json::to_value(s.snapshot()).unwrap();
    // Version 1 had no version field and saved the allocators: still read.
    let mut v1 = json.clone();
    let m = v1.as_object_mut().unwrap();
    m.remove("version");
    m.insert("allocators".into(), serde_json::json!([]));
    let state: SessionsState = serde_json::from_value(v1).unwrap();
    assert_eq!(state.version(), 1);
    let restored = Sessions::restore(config(30000, 30099), state).unwrap();
    assert_eq!(restored.call_entries("c"), s.call_entries("c"));
    // A newer format is refused whole.
    let mut v9 = json;
    v9["version"] = serde_json::json!(9);
    let state: SessionsState = serde_json::from_value(v9).unwrap();
    assert_eq!(
        Sessions::restore(config(30000, 30099), state).unwrap_err(),
        SessionError::StateVersion {
            found: 9,
            supported: STATE_VERSION
        }
    );
}

#[test]
fn a_call_record_moves_a_call_to_another_relay() {
    let mut a = sessions_with_range(30000, 30099);
    call(&mut a, "c");
    let rtp = a.streams("c")[0].legs[0].rtp.unwrap();
    a.latch(rtp, sa("198.51.100.10:4000")).unwrap();
    let record = a.export_call("c").unwrap();
    // Through JSON, as a journal or Redis keeps it.
    let json = serde_json::to_string(&record).unwrap();
    let record: relay_core::session::CallRecord = serde_json::from_str(&json).unwrap();
    let mut b = sessions_with_range(30000, 30099);
    let update = b.import_call(record.clone()).unwrap();
    assert_eq!(update.entries, a.call_entries("c"));
    assert_eq!(update.endpoints.len(), 4);
    assert_eq!(b.call_of(rtp), Some("c"));
    // Its ports are taken on the importer: a new call gets others.
    call(&mut b, "d");
    assert!(b.streams("d")[0].legs[0].rtp.unwrap().port() >= 30004);
    // Importing again replaces the call; a record whose ports another call holds is refused.
    assert!(b.import_call(record.clone()).is_ok());
    let mut clash = sessions_with_range(30000, 30099);
    call(&mut clash, "other");
    assert!(matches!(
        clash.import_call(record.clone()),
        Err(SessionError::EndpointTaken { .. })
    ));
    assert_eq!(clash.len(), 1);
    // Another relay without the interface refuses it, unchanged.
    let mut other = Sessions::new(relay_core::session::Config {
        interfaces: vec!["x/192.0.2.9".parse().unwrap()],
        port_min: 30000,
        port_max: 30099,
    })
    .unwrap();
    assert!(matches!(
        other.import_call(record.clone()),
        Err(SessionError::UnknownInterface(_))
    ));
    assert!(other.is_empty());
    let mut newer = serde_json::to_value(&record).unwrap();
    newer["version"] = serde_json::json!(7);
    let newer: relay_core::session::CallRecord = serde_json::from_value(newer).unwrap();
    assert!(matches!(
        b.import_call(newer),
        Err(SessionError::StateVersion { found: 7, .. })
    ));
}

#[test]
fn oversized_offers_are_refused_before_anything_is_allocated() {
    let mut s = sessions_with_range(30000, 30099);
    s.set_limits(relay_core::session::Limits {
        max_sdp_bytes: 4096,
        max_media: 4,
    });
    let mut many = sdp("a", "198.51.100.10", 4000);
    for k in 1..5 {
        many.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 4000 + 2 * k));
    }
    assert_eq!(
        s.offer("c", "A", &many, &OfferOptions::default())
            .unwrap_err(),
        SessionError::TooManyMedia { got: 5, max: 4 }
    );
    let mut big = sdp("a", "198.51.100.10", 4000);
    big.push_str(&"a=x-filler:0123456789\r\n".repeat(200));
    assert!(matches!(
        s.offer("c", "A", &big, &OfferOptions::default()),
        Err(SessionError::SdpTooLarge { max: 4096, .. })
    ));
    assert!(s.is_empty());
    assert_eq!(s.ports_in_use("192.0.2.1".parse().unwrap()), 0);
    // 500 m= lines against the default cap: refused too.
    let mut s = sessions_with_range(30000, 30099);
    let mut huge = sdp("a", "198.51.100.10", 4000);
    for k in 1..500 {
        huge.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 4000 + 2 * k));
    }
    assert!(matches!(
        s.offer("c", "A", &huge, &OfferOptions::default()),
        Err(SessionError::TooManyMedia { got: 500, max: 64 })
    ));
}
