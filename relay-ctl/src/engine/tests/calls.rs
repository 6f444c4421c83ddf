//! Calls on the fakes: latching, deletes, timeouts, restore.

use std::time::Duration;

use serde_json::json;

use super::*;

/// A plain call: A offers, B answers. Returns (A's relay endpoint, B's relay endpoint).
fn plain_call(h: &mut Harness, call_id: &str) -> (SocketAddr, SocketAddr) {
    let to_b = h.ok_sdp(
        json!({"command": "offer", "call-id": call_id, "from-tag": "A",
        "sdp": plain("198.51.100.10", 4000)}),
    );
    let to_a = h.ok_sdp(
        json!({"command": "answer", "call-id": call_id, "from-tag": "A", "to-tag": "B",
        "sdp": plain("198.51.100.20", 5000)}),
    );
    (relay(media_port(&to_a)), relay(media_port(&to_b)))
}

const PEER_A: &str = "198.51.100.10:4000";
const PEER_B: &str = "198.51.100.20:5000";

#[test]
fn latching_installs_an_entry_once_then_the_daemon_sends_nothing_more() {
    let mut h = Harness::new();
    let (a_ep, b_ep) = plain_call(&mut h, "latch");
    // Restricted latching: the entry exists only once A's media came from the signalled address.
    assert_eq!(h.entry(a_ep), None);
    h.packet(a_ep, sa(PEER_A), &rtp(1));
    assert_eq!(
        h.sent(),
        vec![(b_ep, sa(PEER_B), rtp(1))],
        "the first packet, via the daemon, from B's relay endpoint"
    );
    let key = relay_common::stream::StreamKey::from(a_ep);
    assert_eq!(h.table.borrow().inserts.get(&key), Some(&1));
    for i in 2..50 {
        h.packet(a_ep, sa(PEER_A), &rtp(i));
    }
    assert!(h.sent().is_empty(), "the fast path forwards the rest");
    assert_eq!(
        h.table.borrow().inserts.get(&key),
        Some(&1),
        "installed once"
    );
    // Another source is not latched (restricted to the signalled IP).
    h.packet(a_ep, sa("192.0.2.50:4000"), &rtp(1));
    assert!(h.sent().is_empty());
}

#[test]
fn delete_removes_entries_unbinds_sockets_and_frees_slots() {
    let mut h = Harness::new();
    let (a_ep, b_ep) = plain_call(&mut h, "del");
    h.packet(a_ep, sa(PEER_A), &rtp(1));
    h.packet(b_ep, sa(PEER_B), &rtp(1));
    assert_eq!(h.table.borrow().entries.len(), 2);
    assert_eq!(
        h.sockets.borrow().bound.len(),
        4,
        "RTP and RTCP of each leg"
    );
    let slots: Vec<u32> = h.engine.table.slots().map(|(_, s)| s).collect();
    assert_eq!(slots.len(), 2);
    let r = h.ng(json!({"command": "delete", "call-id": "del"}));
    assert_eq!(r["result"], "ok");
    assert!(h.table.borrow().entries.is_empty());
    assert!(h.sockets.borrow().bound.is_empty());
    assert_eq!(h.engine.table.slots().count(), 0);
    assert!(h.engine.meta.is_empty() && h.engine.call_of.is_empty());
    // Freed slots are given out again.
    let (a2, _) = plain_call(&mut h, "del2");
    h.packet(a2, sa(PEER_A), &rtp(1));
    let slot = h.entry(a2).unwrap().counter_slot;
    assert!(slots.contains(&slot), "slot {slot} reused");
}

#[test]
fn delete_delay_deletes_later() {
    let mut h = Harness::new();
    plain_call(&mut h, "later");
    let r = h.ng(json!({"command": "delete", "call-id": "later", "delete-delay": 5}));
    assert_eq!(r["result"], "ok");
    h.advance(Duration::from_secs(4));
    assert!(h.engine.meta.contains_key("later"));
    h.advance(Duration::from_secs(2));
    assert!(!h.engine.meta.contains_key("later"));
    assert!(h.sockets.borrow().bound.is_empty());
}

#[test]
fn media_timeout_ends_silent_calls_and_fast_path_media_keeps_calls() {
    let mut h = Harness::new();
    plain_call(&mut h, "silent");
    let (a_ep, _) = plain_call(&mut h, "talking");
    h.packet(a_ep, sa(PEER_A), &rtp(0));
    for i in 1..=70u8 {
        h.advance(Duration::from_secs(1));
        h.packet(a_ep, sa(PEER_A), &rtp(i));
    }
    assert!(!h.engine.meta.contains_key("silent"), "no media for 60 s");
    assert!(
        h.engine.meta.contains_key("talking"),
        "media through the fast path counts"
    );
    assert_eq!(
        h.sent().len(),
        1,
        "only the latching packet went through the daemon"
    );
}

#[test]
fn a_new_engine_restores_calls_from_the_state_file() {
    let mut h = Harness::new();
    let (a_ep, _) = plain_call(&mut h, "kept");
    h.packet(a_ep, sa(PEER_A), &rtp(1));
    assert!(!h.engine.state_dirty(), "durable before the reply");
    let entry = h.entry(a_ep).unwrap();
    // A restarted daemon: new sockets, the same (pinned) table.
    let sockets = Rc::new(RefCell::new(SocketState::default()));
    let engine = Engine::new(
        h.engine.cfg.clone(),
        Box::new(FakeFastPath(Rc::clone(&h.table))),
        Box::new(FakeSockets(Rc::clone(&sockets))),
        h.now,
    )
    .unwrap();
    h.engine = engine;
    h.sockets = sockets;
    assert!(h.engine.meta.contains_key("kept"));
    assert_eq!(h.sockets.borrow().bound.len(), 4);
    assert_eq!(h.entry(a_ep), Some(entry), "same entry, same counter slot");
}

#[test]
fn a_restart_with_a_new_port_range_keeps_old_calls_and_allocates_inside_the_new_one() {
    let mut h = Harness::new();
    let (a_ep, _) = plain_call(&mut h, "old");
    h.packet(a_ep, sa(PEER_A), &rtp(1));
    let mut cfg = h.engine.cfg.clone();
    cfg.port_min = 31000;
    cfg.port_max = 31999;
    let sockets = Rc::new(RefCell::new(SocketState::default()));
    h.engine = Engine::new(
        cfg,
        Box::new(FakeFastPath(Rc::clone(&h.table))),
        Box::new(FakeSockets(Rc::clone(&sockets))),
        h.now,
    )
    .unwrap();
    h.sockets = sockets;
    // The old call is still served from its old ports.
    assert!(h.sockets.borrow().bound.contains(&a_ep));
    assert!(h.entry(a_ep).is_some());
    // New calls get ports in the new range, which the fast path serves.
    let (a2, b2) = plain_call(&mut h, "new");
    for ep in [a2, b2] {
        assert!((31000..=31999).contains(&ep.port()), "{ep}");
    }
}

#[test]
fn query_reports_the_rtcp_peer_for_the_rtcp_stream() {
    let mut h = Harness::new();
    let (a_ep, _) = plain_call(&mut h, "q");
    let a_rtcp = relay(a_ep.port() + 1);
    h.packet(a_ep, sa(PEER_A), &rtp(1));
    h.packet(
        a_rtcp,
        sa("198.51.100.10:4001"),
        &[0x81, 200, 0, 1, 0, 0, 0, 1],
    );
    let q = h.ng(json!({"command": "query", "call-id": "q"}));
    let streams = &q["tags"]["A"]["medias"][0]["streams"];
    assert_eq!(streams[0]["endpoint"]["port"], 4000, "{q}");
    assert_eq!(streams[1]["endpoint"]["port"], 4001, "{q}");
}

/// A plain call whose caller signals a private address (symmetric latching, as behind a NAT).
fn natted_call(h: &mut Harness) -> (SocketAddr, SocketAddr) {
    let to_b = h.ok_sdp(
        json!({"command": "offer", "call-id": "nat", "from-tag": "A",
        "sdp": plain("10.1.1.1", 4000)}),
    );
    let to_a = h.ok_sdp(
        json!({"command": "answer", "call-id": "nat", "from-tag": "A", "to-tag": "B",
        "sdp": plain("198.51.100.20", 5000)}),
    );
    (relay(media_port(&to_a)), relay(media_port(&to_b)))
}

#[test]
fn injected_media_never_reaches_the_callee_and_a_nat_rebinding_still_moves_the_latch() {
    let mut h = Harness::new();
    let (a_ep, _) = natted_call(&mut h);
    let nat = sa("203.0.113.77:40000");
    h.packet(a_ep, nat, &rtp(1));
    assert_eq!(h.sent().len(), 1, "latched and forwarded");
    // An injector while A talks (the fast path counts A's packets): nothing gets through.
    for i in 0..200u8 {
        h.advance(Duration::from_millis(10));
        h.packet(a_ep, nat, &rtp(i));
        h.packet(a_ep, sa("198.51.100.66:9999"), &rtp(i));
    }
    assert!(h.sent().is_empty(), "0 injected packets reach the callee");
    // The NAT rebinds A to a new port; the old one is silent: after the handover interval the
    // new source takes over, and stays.
    let rebound = sa("203.0.113.77:40002");
    h.advance(Duration::from_millis(500));
    h.packet(a_ep, rebound, &rtp(1));
    assert!(
        h.sent().is_empty(),
        "too early: the latched source spoke 0.5 s ago"
    );
    h.advance(Duration::from_secs(2));
    h.packet(a_ep, rebound, &rtp(2));
    assert_eq!(h.sent().len(), 1, "handed over after 2 s of silence");
    let e = h.entry(a_ep).unwrap();
    assert_eq!(e.expected, relay_common::stream::Endpoint::from(rebound));
}

/// Secure latching moves into the fast path once the learning window has closed: until then
/// the daemon sees other sources (a better match may take the latch), after it the map entry
/// itself refuses them while the latched source talks.
#[test]
fn the_fast_path_refuses_other_sources_once_the_learning_window_closes() {
    use relay_common::stream::Mismatch;
    let mut h = Harness::new();
    let (a_ep, _) = natted_call(&mut h);
    h.packet(a_ep, sa("203.0.113.77:40000"), &rtp(1));
    let mismatch = |h: &Harness| h.entry(a_ep).unwrap().mismatch;
    assert_eq!(mismatch(&h), Mismatch::Userspace as u8, "learning");
    h.advance(Duration::from_secs(5));
    assert_eq!(mismatch(&h), Mismatch::Handover as u8, "learnt");
    assert_eq!(h.entry(a_ep).unwrap().handover_ds, 20, "2 s, in tenths");
}

/// `latch-handover` reaches both deciders: the daemon's latch and the fast path's entries.
#[test]
fn a_configured_latch_handover_applies_to_the_daemon_and_the_entries() {
    let mut h = Harness::new();
    let mut cfg = h.engine.cfg.clone();
    cfg.latch_handover = Duration::from_millis(500);
    h.engine.set_timeouts(&cfg);
    let (a_ep, _) = natted_call(&mut h);
    h.packet(a_ep, sa("203.0.113.77:40000"), &rtp(1));
    h.advance(Duration::from_secs(5));
    assert_eq!(h.entry(a_ep).unwrap().handover_ds, 5, "0.5 s, in tenths");
    h.packet(a_ep, sa("203.0.113.77:40000"), &rtp(2));
    h.advance(Duration::from_millis(600));
    h.sent();
    // Silent for 0.6 s: more than 0.5 s (less than the default 2 s), a rebinding takes over.
    let rebound = sa("203.0.113.77:40002");
    h.packet(a_ep, rebound, &rtp(2));
    assert_eq!(h.sent().len(), 1, "handed over after 0.5 s of silence");
}
