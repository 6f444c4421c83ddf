//! Interop over loopback UDP with an ICE implementation nobody here wrote: the `is` crate
//! (str0m's sans-IO ICE agent) as the controlling full agent.
//!
//! `is` only does regular nomination (it nominates a pair after its own check succeeded), so
//! aggressive nomination is covered with checks encoded by `is::stun` (its independent STUN
//! encoder): USE-CANDIDATE on the very first check.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use is::stun::{StunMessage as IsStun, StunPacket, TransId};
use is::{
    Candidate, DefaultSha1HmacProvider, IceAgent, IceAgentEvent, IceCreds, Protocol,
    Sha1HmacProvider,
};
use relay_core::creds::Credentials;
use relay_core::ice::{Component, IceEvent, IceLiteAgent};
use tokio::net::UdpSocket;

struct Outcome {
    ours: Vec<IceEvent>,
    peer_nominated: Option<SocketAddr>,
    replies_401: usize,
}

/// `wrong_pwd`: what the peer believes our password is, if not the real one.
async fn run(wrong_pwd: Option<&str>, budget: Duration) -> (Outcome, Credentials) {
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (relay_addr, peer_addr) = (relay.local_addr().unwrap(), peer_sock.local_addr().unwrap());

    let local = Credentials::random();
    let mut ours = IceLiteAgent::new(local.clone(), 1);
    let peer_creds = IceCreds::new();
    ours.set_remote_credentials(Credentials::new(
        peer_creds.ufrag.clone(),
        peer_creds.pass.clone(),
    ));

    let mut peer = IceAgent::new(peer_creds);
    peer.set_controlling(true);
    peer.set_remote_credentials(IceCreds {
        ufrag: local.ufrag.clone(),
        pass: wrong_pwd.unwrap_or(&local.pwd).to_string(),
    });
    peer.add_local_candidate(Candidate::host(peer_addr, "udp").unwrap());
    peer.add_remote_candidate(Candidate::host(relay_addr, "udp").unwrap());

    let mut out = Outcome {
        ours: Vec::new(),
        peer_nominated: None,
        replies_401: 0,
    };
    let (mut rbuf, mut pbuf) = ([0u8; 1500], [0u8; 1500]);
    let deadline = Instant::now() + budget;
    while Instant::now() < deadline {
        let now = Instant::now();
        peer.handle_timeout(now);
        while let Some(t) = peer.poll_transmit() {
            peer_sock.send_to(&t.contents, t.destination).await.unwrap();
        }
        while let Some(e) = peer.poll_event() {
            if let IceAgentEvent::NominatedSend { destination, .. } = e {
                out.peer_nominated = Some(destination);
            }
        }
        while let Some(e) = ours.poll_event() {
            out.ours.push(e);
        }
        if out.peer_nominated.is_some() && ours.nominated(Component::Rtp).is_some() {
            break;
        }
        tokio::select! {
            r = relay.recv_from(&mut rbuf) => {
                let (n, src) = r.unwrap();
                if let Ok(Some(t)) = ours.handle_stun(Instant::now(), Component::Rtp, relay_addr, src, &rbuf[..n]) {
                    let m = relay_core::stun::StunMessage::parse(&t.bytes).unwrap();
                    if m.attributes.error_code.map(|e| e.code) == Some(401) {
                        out.replies_401 += 1;
                    }
                    relay.send_to(&t.bytes, t.destination).await.unwrap();
                }
            }
            r = peer_sock.recv_from(&mut pbuf) => {
                let (n, src) = r.unwrap();
                if let Ok(message) = IsStun::parse(&pbuf[..n]) {
                    let pkt = StunPacket { proto: Protocol::Udp, source: src, destination: peer_addr, message };
                    peer.handle_packet(Instant::now(), pkt);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    (out, local)
}

#[tokio::test(flavor = "current_thread")]
async fn is_agent_completes_regular_nomination_against_us() {
    let (out, _) = run(None, Duration::from_secs(10)).await;
    assert!(
        out.peer_nominated.is_some(),
        "peer never nominated; our events: {:?}",
        out.ours
    );
    assert!(matches!(
        out.ours.first(),
        Some(IceEvent::PairValidated {
            peer_reflexive: true,
            ..
        })
    ));
    assert!(
        out.ours
            .iter()
            .any(|e| matches!(e, IceEvent::PairNominated { .. }))
    );
    assert_eq!(out.replies_401, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn is_agent_fails_with_wrong_password() {
    let (out, _) = run(Some("wrongwrongwrongwrongwrong"), Duration::from_secs(3)).await;
    assert!(out.peer_nominated.is_none());
    assert!(out.ours.is_empty(), "{:?}", out.ours);
    assert!(out.replies_401 > 0, "wrong password must get 401");
}

#[tokio::test(flavor = "current_thread")]
async fn aggressive_nomination_with_is_encoded_checks() {
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let local = Credentials::random();
    let mut ours = IceLiteAgent::new(local.clone(), 1);
    let hmac = |k: &[u8], p: &[&[u8]]| DefaultSha1HmacProvider.sha1_hmac(k, p);

    let username = format!("{}:peer", local.ufrag);
    let trans_id = TransId::new();
    let check = IsStun::binding_request(&username, trans_id, true, 77, 1_862_270_975, true);
    let mut buf = [0u8; 1500];
    let n = check
        .to_bytes(Some(local.pwd.as_bytes()), &mut buf, hmac)
        .unwrap();
    peer.send_to(&buf[..n], relay_addr).await.unwrap();

    let mut rbuf = [0u8; 1500];
    let (n, src) = tokio::time::timeout(Duration::from_secs(2), relay.recv_from(&mut rbuf))
        .await
        .unwrap()
        .unwrap();
    let t = ours
        .handle_stun(Instant::now(), Component::Rtp, relay_addr, src, &rbuf[..n])
        .unwrap()
        .unwrap();
    relay.send_to(&t.bytes, t.destination).await.unwrap();

    let (n, _) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = IsStun::parse(&buf[..n]).unwrap();
    assert!(reply.is_successful_binding_response());
    assert_eq!(reply.trans_id(), trans_id);
    assert_eq!(reply.mapped_address(), Some(peer.local_addr().unwrap()));
    assert!(reply.verify(local.pwd.as_bytes(), hmac));
    assert!(matches!(
        ours.poll_event(),
        Some(IceEvent::PairValidated { .. })
    ));
    assert!(matches!(
        ours.poll_event(),
        Some(IceEvent::PairNominated { .. })
    ));
    assert_eq!(
        ours.nominated(Component::Rtp),
        Some(peer.local_addr().unwrap())
    );
}
