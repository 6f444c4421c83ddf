//! Write-ahead state on the fakes: what was acknowledged survives a crash (an engine dropped
//! without stopping), the map is never newer than the state, and a restart reconciles the map.

use serde_json::json;

use super::*;

fn plain_call(h: &mut Harness, call_id: &str, a_port: u16) -> (SocketAddr, SocketAddr) {
    let to_b = h.ok_sdp(
        json!({"command": "offer", "call-id": call_id, "from-tag": "A",
        "sdp": plain("198.51.100.10", a_port)}),
    );
    let to_a = h.ok_sdp(
        json!({"command": "answer", "call-id": call_id, "from-tag": "A", "to-tag": "B",
        "sdp": plain("198.51.100.20", 5000)}),
    );
    (relay(media_port(&to_a)), relay(media_port(&to_b)))
}

/// A daemon killed with SIGKILL: nothing runs on the way out, the pinned table stays.
pub(super) fn crash_and_restart(h: &mut Harness) {
    let sockets = Rc::new(RefCell::new(SocketState::default()));
    let cfg = h.engine.cfg.clone();
    let fresh = Engine::new(
        cfg,
        Box::new(FakeFastPath(Rc::clone(&h.table))),
        Box::new(FakeSockets(Rc::clone(&sockets))),
        h.now,
    )
    .unwrap();
    // The old engine is forgotten, not shut down (no flush, no drop-time writes).
    std::mem::forget(std::mem::replace(&mut h.engine, fresh));
    h.sockets = sockets;
}

#[test]
fn an_acknowledged_call_survives_a_crash_right_after_its_reply() {
    let mut h = Harness::new();
    let (a_ep, b_ep) = plain_call(&mut h, "c1", 4000);
    crash_and_restart(&mut h);
    assert!(h.engine.meta.contains_key("c1"));
    assert!(h.sockets.borrow().bound.contains(&a_ep));
    assert!(h.sockets.borrow().bound.contains(&b_ep));
    // Its ports are not handed to the next call.
    let (a2, b2) = plain_call(&mut h, "c2", 4100);
    assert!(![a_ep, b_ep].contains(&a2) && ![a_ep, b_ep].contains(&b2));
}

#[test]
fn a_reoffer_is_never_reverted_by_a_restart() {
    let mut h = Harness::new();
    let (a_ep, b_ep) = plain_call(&mut h, "c", 4000);
    h.packet(a_ep, sa("198.51.100.10:4000"), &rtp(1));
    h.packet(b_ep, sa("198.51.100.20:5000"), &rtp(1));
    // A moves to port 4006 (a re-offer, answered); B's media must now go there.
    plain_call(&mut h, "c", 4006);
    let towards_a = |h: &Harness| h.entry(b_ep).map(|e| e.dst.socket_addr().unwrap());
    assert_eq!(towards_a(&h), Some(sa("198.51.100.10:4006")));
    crash_and_restart(&mut h);
    assert_eq!(
        towards_a(&h),
        Some(sa("198.51.100.10:4006")),
        "the restarted daemon keeps the latest acknowledged state"
    );
}

#[test]
fn the_map_changes_only_after_the_state_is_durable() {
    let mut h = Harness::new();
    let (a_ep, _) = plain_call(&mut h, "c", 4000);
    // The engine handles the latching packet but has not committed: nothing in the map yet.
    h.engine.handle_inbound(
        h.now,
        Inbound {
            local: a_ep,
            source: sa("198.51.100.10:4000"),
            data: rtp(1),
        },
    );
    assert_eq!(h.entry(a_ep), None);
    assert!(h.engine.state_dirty());
    h.engine.commit();
    assert!(h.entry(a_ep).is_some());
    assert!(!h.engine.state_dirty());
}

#[test]
fn entries_the_state_does_not_know_are_removed_at_start() {
    let mut h = Harness::new();
    let (a_ep, _) = plain_call(&mut h, "c", 4000);
    h.packet(a_ep, sa("198.51.100.10:4000"), &rtp(1));
    // An entry left by a call the state never acknowledged.
    let stray = relay(30990);
    let mut e = h.entry(a_ep).unwrap();
    e.counter_slot = 999;
    h.table
        .borrow_mut()
        .entries
        .insert(relay_common::stream::StreamKey::from(stray), e);
    crash_and_restart(&mut h);
    assert_eq!(h.entry(stray), None, "orphan removed");
    assert!(h.entry(a_ep).is_some(), "known entry re-applied");
}

#[test]
fn a_deleted_call_stays_deleted_after_a_crash() {
    let mut h = Harness::new();
    let (a_ep, _) = plain_call(&mut h, "c", 4000);
    h.packet(a_ep, sa("198.51.100.10:4000"), &rtp(1));
    let r = h.ng(json!({"command": "delete", "call-id": "c"}));
    assert_eq!(r["result"], "ok");
    crash_and_restart(&mut h);
    assert!(!h.engine.meta.contains_key("c"));
    assert_eq!(h.entry(a_ep), None);
    assert!(h.sockets.borrow().bound.is_empty());
}

/// The daemon's pipelined commit: a change handled while a write is in flight is neither in
/// that write nor released by it; each write releases exactly its own map changes.
#[test]
fn a_change_made_while_a_write_is_in_flight_waits_for_its_own_write() {
    let mut h = Harness::new();
    let (a_ep, b_ep) = plain_call(&mut h, "c", 4000);
    let latch = |h: &mut Harness, local: SocketAddr, source: &str| {
        h.engine.handle_inbound(
            h.now,
            Inbound {
                local,
                source: sa(source),
                data: rtp(1),
            },
        )
    };
    latch(&mut h, a_ep, "198.51.100.10:4000");
    let (first, first_release) = h.engine.begin_commit();
    let first = first.expect("the latch changed the call: a write");
    // While the first write syncs, B's side latches.
    latch(&mut h, b_ep, "198.51.100.20:5000");
    assert!(h.engine.state_dirty());
    first.run().unwrap();
    h.engine.finish_commit(Some(Ok(())), first_release);
    assert!(
        h.entry(a_ep).is_some(),
        "the first write released its entry"
    );
    assert_eq!(
        h.entry(b_ep),
        None,
        "the second change waits for its own write"
    );
    crash_and_restart(&mut h);
    assert!(h.entry(a_ep).is_some(), "what was released is durable");
    assert_eq!(
        h.entry(b_ep),
        None,
        "what was never written never reached the map"
    );
}
