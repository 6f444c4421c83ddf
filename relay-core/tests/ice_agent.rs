//! ICE-lite agent: one test per rule, asserting reply bytes, error codes and events.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use relay_core::creds::Credentials;
use relay_core::ice::{Component, IceError, IceEvent, IceLiteAgent};
use relay_core::stun::{
    self, Class, IntegrityKey, MessageBuilder, StunError, StunMessage, TransactionId,
};

const LOCAL: &str = "10.0.0.1:4000";
const PEER: &str = "192.0.2.7:5000";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn setup() -> (IceLiteAgent, Credentials, Credentials) {
    let local = Credentials::random();
    let remote = Credentials::random();
    let mut a = IceLiteAgent::new(local.clone(), 2);
    a.set_remote_credentials(remote.clone());
    (a, local, remote)
}

fn req(local: &Credentials, remote: &Credentials) -> MessageBuilder {
    MessageBuilder::new(Class::Request, stun::BINDING, TransactionId([7; 12]))
        .username(&format!("{}:{}", local.ufrag, remote.ufrag))
        .priority(1000)
        .ice_controlling(42)
}

fn signed(b: MessageBuilder, pwd: &str) -> Vec<u8> {
    b.integrity(&IntegrityKey::new(pwd.as_bytes()))
        .fingerprint()
        .build()
        .unwrap()
}

fn send(
    a: &mut IceLiteAgent,
    now: Instant,
    from: &str,
    d: &[u8],
) -> Result<Option<Vec<u8>>, IceError> {
    a.handle_stun(now, Component::Rtp, sa(LOCAL), sa(from), d)
        .map(|t| t.map(|t| t.bytes))
}

fn error_code(bytes: &[u8]) -> (u16, bool) {
    let m = StunMessage::parse(bytes).unwrap();
    assert_eq!(m.class, Class::Error);
    assert_eq!(m.transaction_id, TransactionId([7; 12]));
    (m.attributes.error_code.unwrap().code, m.has_integrity())
}

#[test]
fn valid_check_gets_signed_success_with_xor_mapped_source() {
    let (mut a, l, r) = setup();
    let now = Instant::now();
    let reply = send(&mut a, now, PEER, &signed(req(&l, &r), &l.pwd))
        .unwrap()
        .unwrap();
    let m = StunMessage::parse(&reply).unwrap();
    assert_eq!(m.class, Class::Success);
    assert_eq!(m.transaction_id, TransactionId([7; 12]));
    assert_eq!(m.attributes.xor_mapped_address, Some(sa(PEER)));
    assert!(m.verify_integrity(&IntegrityKey::new(l.pwd.as_bytes())));
    assert!(m.has_fingerprint());
    assert_eq!(
        a.poll_event(),
        Some(IceEvent::PairValidated {
            component: Component::Rtp,
            local: sa(LOCAL),
            remote: sa(PEER),
            peer_reflexive: true
        })
    );
    assert_eq!(a.poll_event(), None, "no nomination without USE-CANDIDATE");
    assert_eq!(a.nominated(Component::Rtp), None);
}

#[test]
fn regular_nomination_after_validation() {
    let (mut a, l, r) = setup();
    a.add_remote_candidate(Component::Rtp, sa(PEER));
    let now = Instant::now();
    send(&mut a, now, PEER, &signed(req(&l, &r), &l.pwd)).unwrap();
    send(
        &mut a,
        now,
        PEER,
        &signed(req(&l, &r).use_candidate(), &l.pwd),
    )
    .unwrap();
    assert!(matches!(
        a.poll_event(),
        Some(IceEvent::PairValidated {
            peer_reflexive: false,
            ..
        })
    ));
    assert_eq!(
        a.poll_event(),
        Some(IceEvent::PairNominated {
            component: Component::Rtp,
            local: sa(LOCAL),
            remote: sa(PEER)
        })
    );
    assert_eq!(a.nominated(Component::Rtp), Some(sa(PEER)));
}

#[test]
fn aggressive_nomination_on_first_check_and_change() {
    let (mut a, l, r) = setup();
    let now = Instant::now();
    send(
        &mut a,
        now,
        PEER,
        &signed(req(&l, &r).use_candidate(), &l.pwd),
    )
    .unwrap();
    assert!(matches!(
        a.poll_event(),
        Some(IceEvent::PairValidated { .. })
    ));
    assert!(matches!(
        a.poll_event(),
        Some(IceEvent::PairNominated { .. })
    ));
    send(
        &mut a,
        now,
        "192.0.2.8:6000",
        &signed(req(&l, &r).use_candidate(), &l.pwd),
    )
    .unwrap();
    assert!(matches!(
        a.poll_event(),
        Some(IceEvent::PairValidated { .. })
    ));
    assert_eq!(
        a.poll_event(),
        Some(IceEvent::NominatedPairChanged {
            component: Component::Rtp,
            local: sa(LOCAL),
            old_remote: sa(PEER),
            remote: sa("192.0.2.8:6000")
        })
    );
}

#[test]
fn missing_username_is_400_unsigned() {
    let (mut a, l, _) = setup();
    let b = MessageBuilder::new(Class::Request, stun::BINDING, TransactionId([7; 12]))
        .priority(1)
        .ice_controlling(1);
    let reply = send(&mut a, Instant::now(), PEER, &signed(b, &l.pwd))
        .unwrap()
        .unwrap();
    assert_eq!(error_code(&reply), (400, false));
    assert_eq!(a.poll_event(), None);
}

#[test]
fn missing_integrity_is_400_unsigned() {
    let (mut a, l, r) = setup();
    let reply = send(
        &mut a,
        Instant::now(),
        PEER,
        &req(&l, &r).fingerprint().build().unwrap(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(error_code(&reply), (400, false));
    assert_eq!(a.poll_event(), None);
}

#[test]
fn wrong_password_is_401_unsigned_and_changes_nothing() {
    let (mut a, l, r) = setup();
    let reply = send(
        &mut a,
        Instant::now(),
        PEER,
        &signed(req(&l, &r).use_candidate(), "wrongpassword"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(error_code(&reply), (401, false));
    assert_eq!(a.poll_event(), None);
    assert_eq!(a.nominated(Component::Rtp), None);
}

#[test]
fn wrong_ufrag_is_401() {
    let (mut a, l, r) = setup();
    let other = Credentials::new("zzzzzzzz", l.pwd.clone());
    let reply = send(
        &mut a,
        Instant::now(),
        PEER,
        &signed(req(&other, &r), &l.pwd),
    )
    .unwrap()
    .unwrap();
    assert_eq!(error_code(&reply), (401, false));
}

#[test]
fn unknown_required_attribute_is_signed_420_listing_it() {
    let (mut a, l, r) = setup();
    let reply = send(
        &mut a,
        Instant::now(),
        PEER,
        &signed(req(&l, &r).attribute(0x7777, b"x"), &l.pwd),
    )
    .unwrap()
    .unwrap();
    assert_eq!(error_code(&reply), (420, true));
    assert_eq!(
        StunMessage::parse(&reply)
            .unwrap()
            .attributes
            .unknown_attributes,
        vec![0x7777]
    );
    assert_eq!(a.poll_event(), None);
}

#[test]
fn ice_controlled_peer_gets_signed_487() {
    let (mut a, l, r) = setup();
    let b = MessageBuilder::new(Class::Request, stun::BINDING, TransactionId([7; 12]))
        .username(&format!("{}:{}", l.ufrag, r.ufrag))
        .priority(1)
        .ice_controlled(5)
        .use_candidate();
    let reply = send(&mut a, Instant::now(), PEER, &signed(b, &l.pwd))
        .unwrap()
        .unwrap();
    let (code, signed_) = error_code(&reply);
    assert_eq!((code, signed_), (487, true));
    assert!(
        StunMessage::parse(&reply)
            .unwrap()
            .verify_integrity(&IntegrityKey::new(l.pwd.as_bytes()))
    );
    assert_eq!(a.nominated(Component::Rtp), None);
}

#[test]
fn indication_and_stray_response_get_no_reply() {
    let (mut a, l, _) = setup();
    for class in [Class::Indication, Class::Success, Class::Error] {
        let b = MessageBuilder::new(class, stun::BINDING, TransactionId([7; 12]));
        assert_eq!(
            send(&mut a, Instant::now(), PEER, &signed(b, &l.pwd)),
            Ok(None)
        );
    }
    assert_eq!(a.poll_event(), None);
}

#[test]
fn malformed_and_rfc3489_are_dropped() {
    let (mut a, l, r) = setup();
    let mut good = signed(req(&l, &r).use_candidate(), &l.pwd);
    assert_eq!(
        send(&mut a, Instant::now(), PEER, &good[..good.len() - 4]),
        Err(IceError::Stun(StunError::BadLength(good.len() - 20)))
    );
    good[5] ^= 1; // break the magic cookie: an RFC 3489 message
    assert_eq!(
        send(&mut a, Instant::now(), PEER, &good),
        Err(IceError::Stun(StunError::NoMagicCookie))
    );
    let no_fp = req(&l, &r)
        .integrity(&IntegrityKey::new(l.pwd.as_bytes()))
        .build()
        .unwrap();
    assert_eq!(
        send(&mut a, Instant::now(), PEER, &no_fp),
        Err(IceError::MissingFingerprint)
    );
    assert_eq!(a.poll_event(), None);
}

#[test]
fn rtcp_rejected_with_rtcp_mux() {
    let l = Credentials::random();
    let mut a = IceLiteAgent::new(l.clone(), 1);
    let r = Credentials::random();
    let d = signed(req(&l, &r), &l.pwd);
    assert_eq!(
        a.handle_stun(Instant::now(), Component::Rtcp, sa(LOCAL), sa(PEER), &d),
        Err(IceError::UnknownComponent(Component::Rtcp))
    );
}

#[test]
fn consent_expires_after_30s_without_valid_check() {
    let (mut a, l, r) = setup();
    let t0 = Instant::now();
    send(
        &mut a,
        t0,
        PEER,
        &signed(req(&l, &r).use_candidate(), &l.pwd),
    )
    .unwrap();
    while a.poll_event().is_some() {}
    send(
        &mut a,
        t0 + Duration::from_secs(20),
        PEER,
        &signed(req(&l, &r), &l.pwd),
    )
    .unwrap();
    a.handle_timeout(t0 + Duration::from_secs(45));
    assert_eq!(a.poll_event(), None, "check at 20 s refreshed consent");
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(50)));
    a.handle_timeout(t0 + Duration::from_secs(50));
    assert_eq!(
        a.poll_event(),
        Some(IceEvent::ConsentExpired {
            component: Component::Rtp,
            local: sa(LOCAL),
            remote: sa(PEER)
        })
    );
    assert_eq!(a.nominated(Component::Rtp), None);
}

#[test]
fn restart_rejects_old_credentials_and_accepts_new() {
    let (mut a, l, r) = setup();
    let (l2, r2) = (Credentials::random(), Credentials::random());
    a.restart(l2.clone(), Some(r2.clone()));
    let old = send(&mut a, Instant::now(), PEER, &signed(req(&l, &r), &l.pwd))
        .unwrap()
        .unwrap();
    assert_eq!(error_code(&old), (401, false));
    let new = send(
        &mut a,
        Instant::now(),
        PEER,
        &signed(req(&l2, &r2).use_candidate(), &l2.pwd),
    )
    .unwrap()
    .unwrap();
    assert_eq!(StunMessage::parse(&new).unwrap().class, Class::Success);
    assert_eq!(a.nominated(Component::Rtp), Some(sa(PEER)));
}

#[test]
fn sha256_integrity_is_verified() {
    let (mut a, l, r) = setup();
    let d = req(&l, &r)
        .integrity_sha256(&IntegrityKey::new(l.pwd.as_bytes()))
        .fingerprint()
        .build()
        .unwrap();
    let reply = send(&mut a, Instant::now(), PEER, &d).unwrap().unwrap();
    let m = StunMessage::parse(&reply).unwrap();
    assert_eq!(m.class, Class::Success);
    assert!(m.verify_integrity_sha256(&IntegrityKey::new(l.pwd.as_bytes())));
    let bad = req(&l, &r)
        .integrity_sha256(&IntegrityKey::new(b"nope"))
        .fingerprint()
        .build()
        .unwrap();
    assert_eq!(
        error_code(&send(&mut a, Instant::now(), PEER, &bad).unwrap().unwrap()),
        (401, false)
    );
}

#[test]
fn consent_expiry_is_informational_and_a_later_nomination_is_new() {
    let (mut a, l, r) = setup();
    let t0 = Instant::now();
    send(
        &mut a,
        t0,
        PEER,
        &signed(req(&l, &r).use_candidate(), &l.pwd),
    )
    .unwrap();
    while a.poll_event().is_some() {}
    a.handle_timeout(t0 + Duration::from_secs(30));
    assert!(matches!(
        a.poll_event(),
        Some(IceEvent::ConsentExpired { .. })
    ));
    // Indications keep NAT bindings open but prove nothing; they neither refresh nor fail.
    let ind = MessageBuilder::new(Class::Indication, stun::BINDING, TransactionId([9; 12]))
        .fingerprint()
        .build()
        .unwrap();
    assert_eq!(
        send(&mut a, t0 + Duration::from_secs(31), PEER, &ind),
        Ok(None)
    );
    assert_eq!(a.poll_timeout(), None, "nothing left to time out");
}

#[test]
fn components_follow_the_leg_and_messages_are_told_apart_by_ufrag() {
    let l = Credentials::random();
    let r = Credentials::random();
    let mut a = IceLiteAgent::new(l.clone(), 1);
    a.set_remote_credentials(r.clone());
    let d = signed(req(&l, &r), &l.pwd);
    let rtcp = |a: &mut IceLiteAgent| {
        a.handle_stun(Instant::now(), Component::Rtcp, sa(LOCAL), sa(PEER), &d)
    };
    assert_eq!(
        rtcp(&mut a),
        Err(IceError::UnknownComponent(Component::Rtcp))
    );
    a.set_components(2);
    assert!(rtcp(&mut a).unwrap().is_some(), "RTCP check answered");
    assert!(a.accepts_message(&StunMessage::parse(&d).unwrap()));
    let other = Credentials::random();
    let theirs = signed(req(&l, &other), &l.pwd);
    assert!(!a.accepts_message(&StunMessage::parse(&theirs).unwrap()));
    let unknown_remote = IceLiteAgent::new(l.clone(), 1);
    assert!(
        !unknown_remote.accepts_message(&StunMessage::parse(&d).unwrap()),
        "no remote ufrag known: not claimed (the active fork's agent gets it)"
    );
}
