//! Secure latching by default (issue 14): injection after latching, a NAT rebinding, and a spray
//! before the real endpoint sends (rtpengine's heuristic learning).

#[path = "session_common.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{crlf, sessions};
use relay_core::forwarding::MismatchPolicy;
use relay_core::session::{AnswerOptions, OfferOptions, Sessions};

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

/// A plain call; A signals a private address (symmetric latching), B a public one (restricted).
fn call() -> Sessions {
    let mut s = sessions();
    s.offer(
        "c",
        "A",
        &sdp("a", "10.1.1.1", 4000),
        &OfferOptions::default(),
    )
    .unwrap();
    s.answer(
        "c",
        "A",
        "B",
        &sdp("b", "198.51.100.20", 5000),
        &AnswerOptions::default(),
    )
    .unwrap();
    s
}

const A_RTP: &str = "192.0.2.1:30000";
const B_RTP: &str = "192.0.2.1:30002";

#[test]
fn injection_after_latching_is_refused_while_the_latched_source_talks() {
    let mut s = call();
    let t0 = Instant::now();
    let real = sa("203.0.113.5:40000");
    assert!(s.latch_at(t0, sa(A_RTP), real, None).unwrap().accepted);
    let entry = s.call_entries("c")[0];
    assert_eq!(entry.expected_source, Some(real));
    // Not the signalled endpoint: during the learning window the daemon sees other sources
    // (one may be a better match); after it, the fast path refuses them itself.
    assert_eq!(entry.mismatch, MismatchPolicy::Userspace);
    assert_eq!(
        s.end_learning(t0 + Duration::from_secs(1)),
        Vec::<String>::new()
    );
    assert_eq!(
        s.end_learning(t0 + Duration::from_secs(3)),
        vec!["c".to_owned()]
    );
    assert_eq!(s.call_entries("c")[0].mismatch, MismatchPolicy::Handover);
    // An injector, from anywhere, while the real source sent 20 ms ago: refused, latch kept.
    for (i, from) in ["198.51.100.99:1234", "203.0.113.5:40002", "10.1.1.1:4000"]
        .into_iter()
        .enumerate()
    {
        let t = t0 + Duration::from_secs(10 + i as u64);
        let r = s
            .latch_at(t, sa(A_RTP), sa(from), Some(Duration::from_millis(20)))
            .unwrap();
        assert!(!r.accepted, "{from}");
        assert_eq!(r.entries[0].expected_source, Some(real));
    }
}

#[test]
fn a_nat_rebinding_moves_the_latch_once_the_old_source_is_silent() {
    let mut s = call();
    let t0 = Instant::now();
    let old = sa("203.0.113.5:40000");
    let new = sa("203.0.113.5:40100");
    s.latch_at(t0, sa(A_RTP), old, None).unwrap();
    let t = t0 + Duration::from_secs(60);
    // 1.9 s of silence: not yet.
    let r = s
        .latch_at(t, sa(A_RTP), new, Some(Duration::from_millis(1900)))
        .unwrap();
    assert!(!r.accepted);
    // 2 s: the new binding takes over, and B's media follows it.
    let r = s
        .latch_at(t, sa(A_RTP), new, Some(Duration::from_secs(2)))
        .unwrap();
    assert!(r.accepted);
    assert_eq!(r.entries[0].expected_source, Some(new));
    s.latch_at(t, sa(B_RTP), sa("198.51.100.20:5000"), None)
        .unwrap();
    let to_a = s
        .call_entries("c")
        .into_iter()
        .find(|e| e.local == sa(B_RTP))
        .unwrap();
    assert_eq!(to_a.rewrite.to, new);
}

#[test]
fn a_spray_before_the_real_endpoint_does_not_capture_the_stream() {
    let mut s = call();
    let t0 = Instant::now();
    // B's stream is restricted to B's address; a spray from B's address (other ports) first.
    let spray = sa("198.51.100.20:6666");
    assert!(s.latch_at(t0, sa(B_RTP), spray, None).unwrap().accepted);
    // The real endpoint (signalled address and port) sends within the learning window.
    let real = sa("198.51.100.20:5000");
    let t = t0 + Duration::from_millis(500);
    let r = s
        .latch_at(t, sa(B_RTP), real, Some(Duration::from_millis(1)))
        .unwrap();
    assert!(r.accepted);
    let e = r.entries.iter().find(|e| e.local == sa(B_RTP)).unwrap();
    assert_eq!(e.expected_source, Some(real));
    // The exact match ends learning: the spray cannot take it back.
    let r = s
        .latch_at(t, sa(B_RTP), spray, Some(Duration::from_millis(1)))
        .unwrap();
    assert!(!r.accepted);
    // A worse match never upgrades, and after the window nothing does.
    let mut s = call();
    s.latch_at(t0, sa(B_RTP), sa("198.51.100.20:7000"), None)
        .unwrap();
    let r = s
        .latch_at(
            t0 + Duration::from_secs(4),
            sa(B_RTP),
            real,
            Some(Duration::from_millis(1)),
        )
        .unwrap();
    assert!(!r.accepted, "learning window is over");
}

#[test]
fn media_handover_and_strict_source_keep_their_meaning() {
    let mut s = sessions();
    let mut o = OfferOptions::default();
    o.flags.media_handover = true;
    s.offer("c", "A", &sdp("a", "10.1.1.1", 4000), &o).unwrap();
    let mut a = AnswerOptions::default();
    a.flags.strict_source = true;
    s.answer("c", "A", "B", &sdp("b", "198.51.100.20", 5000), &a)
        .unwrap();
    let t0 = Instant::now();
    s.latch_at(t0, sa(A_RTP), sa("203.0.113.5:1"), None)
        .unwrap();
    // media-handover: another source takes over at once.
    let r = s
        .latch_at(t0, sa(A_RTP), sa("203.0.113.6:2"), Some(Duration::ZERO))
        .unwrap();
    assert!(r.accepted);
    assert_eq!(r.entries[0].mismatch, MismatchPolicy::Userspace);
    // strict-source: the fast path drops other sources itself.
    s.latch_at(t0, sa(B_RTP), sa("198.51.100.20:5000"), None)
        .unwrap();
    let b = s
        .call_entries("c")
        .into_iter()
        .find(|e| e.local == sa(B_RTP))
        .unwrap();
    assert_eq!(b.mismatch, MismatchPolicy::Drop);
}
