//! The NG server on the fakes: retransmissions and rtpengine's error wording.

use serde_json::json;

use super::*;

#[test]
fn a_retransmission_is_answered_from_the_cache_and_not_executed_again() {
    let mut h = Harness::new();
    let offer = json!({"command": "offer", "call-id": "r", "from-tag": "A",
        "sdp": plain("198.51.100.10", 4000)});
    let first = h.ng_raw("same", &offer);
    assert_eq!(first["result"], "ok");
    let again = h.ng_raw("same", &offer);
    assert_eq!(first, again);
    let offers = |h: &Harness| {
        h.engine
            .metrics()
            .ng_requests
            .iter()
            .find(|(c, r, _)| c == "offer" && r == "ok")
            .map(|(_, _, n)| *n)
    };
    assert_eq!(offers(&h), Some(1), "executed once");
    // After the cache's 30 s the same cookie is a new request.
    h.advance(Duration::from_secs(31));
    h.ng_raw("same", &offer);
    assert_eq!(offers(&h), Some(2));
}

#[test]
fn errors_carry_rtpengine_wording() {
    let mut h = Harness::new();
    let good = plain("198.51.100.10", 4000);
    let no_c = "v=0\r\no=x 1 1 IN IP4 198.51.100.10\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    for (req, want) in [
        (
            json!({"call-id": "x"}),
            "Dictionary contains no key \"command\"",
        ),
        (json!({"command": "frobnicate"}), "Unrecognized command"),
        (
            json!({"command": "offer", "call-id": "x", "from-tag": "A"}),
            "No SDP body in message",
        ),
        (
            json!({"command": "offer", "from-tag": "A", "sdp": good}),
            "No call-id in message",
        ),
        (
            json!({"command": "answer", "call-id": "nope", "from-tag": "A", "to-tag": "B", "sdp": good}),
            "Unknown call-id",
        ),
        (
            json!({"command": "query", "call-id": "nope"}),
            "Unknown call-id",
        ),
        (
            json!({"command": "delete", "call-id": "nope", "flags": ["fatal"]}),
            "Call-ID not found or tags didn't match",
        ),
        (
            json!({"command": "offer", "call-id": "x", "from-tag": "A", "sdp": no_c}),
            "Incomplete SDP specification: ",
        ),
        (
            json!({"command": "offer", "call-id": "x", "from-tag": "A", "sdp": "garbage"}),
            "Failed to parse SDP: ",
        ),
    ] {
        let r = h.ng(req.clone());
        assert_eq!(r["result"], "error", "{req}");
        let reason = r["error-reason"].as_str().unwrap();
        assert!(reason.starts_with(want), "{req}: {reason:?}, want {want:?}");
    }
    let r = h.ng(json!({"command": "delete", "call-id": "nope"}));
    assert_eq!(
        (r["result"].as_str(), r["warning"].as_str()),
        (Some("ok"), Some("Call-ID not found or tags didn't match"))
    );
    assert!(h.engine.meta.is_empty(), "no call was created");
}

#[test]
fn running_out_of_file_descriptors_says_so_and_allocates_nothing() {
    let mut h = Harness::new();
    h.sockets
        .borrow()
        .out_of_descriptors
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = h.ng(json!({"command": "offer", "call-id": "fd", "from-tag": "A",
        "sdp": plain("198.51.100.10", 4000)}));
    assert_eq!(r["result"], "error");
    let why = r["error-reason"].as_str().unwrap();
    assert!(why.starts_with("Out of file descriptors (limit "), "{why}");
    assert!(why.contains("raise LimitNOFILE"), "{why}");
    assert!(h.sockets.borrow().bound.is_empty());
    assert!(!h.engine.meta.contains_key("fd"));
}
