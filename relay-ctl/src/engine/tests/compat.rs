//! Issue 15's options on the fakes: rtpp-flags, codecs, TOS in the entries, the session limit,
//! labels and branches, close reasons and rtpengine's statistics.

use relay_common::stream::FLAG_SET_TOS;
use serde_json::json;

use super::*;

const A: &str = "198.51.100.10";
const B: &str = "203.0.113.20";

fn two_codecs(ip: &str, port: u16) -> String {
    sdp(ip, port, &["a=rtpmap:8 PCMA/8000"]).replace(" RTP/AVP 0\r\n", " RTP/AVP 0 8\r\n")
}

fn offer(call: &str, sdp: String, extra: Value) -> Value {
    let mut r = json!({"command": "offer", "call-id": call, "from-tag": "A", "sdp": sdp});
    if let (Value::Object(r), Value::Object(e)) = (&mut r, extra) {
        r.extend(e);
    }
    r
}

fn answer(call: &str, sdp: String, extra: Value) -> Value {
    let mut r =
        json!({"command": "answer", "call-id": call, "from-tag": "A", "to-tag": "B", "sdp": sdp});
    if let (Value::Object(r), Value::Object(e)) = (&mut r, extra) {
        r.extend(e);
    }
    r
}

#[test]
fn rtpp_flags_and_dictionary_strip_alike_and_a_bad_string_changes_nothing() {
    let mut h = Harness::new();
    let flags = h.ok_sdp(offer(
        "f",
        two_codecs(A, 4000),
        json!({"rtpp-flags": "codec-strip=PCMA label=caller"}),
    ));
    let dict = h.ok_sdp(offer(
        "d",
        two_codecs(A, 4000),
        json!({"codec": {"strip": ["PCMA"]}, "label": "caller"}),
    ));
    let unport = |s: &str| s.replace(&media_port(s).to_string(), "P");
    assert_eq!(unport(&flags), unport(&dict));
    assert!(
        flags.contains(" RTP/AVP 0\r\n") && !flags.contains("PCMA"),
        "{flags}"
    );
    let bad = h.ng(offer(
        "x",
        two_codecs(A, 4000),
        json!({"rtpp-flags": "codec=[strip=[PCMA]"}),
    ));
    assert_eq!(bad["result"], "error");
    let calls = h.ng(json!({"command": "list"}));
    assert_eq!(calls["calls"], json!(["d", "f"]));
    // The answer loses what the offer stripped.
    let to_a = h.ok_sdp(answer("f", two_codecs(B, 5000), json!({})));
    assert!(to_a.contains(" RTP/AVP 0\r\n"), "{to_a}");
}

#[test]
fn tos_is_written_into_the_call_entries_and_follows_changes() {
    let mut h = Harness::new();
    let to_b = h.ok_sdp(offer("t", plain(A, 4000), json!({"TOS": 184})));
    let to_a = h.ok_sdp(answer("t", plain(B, 5000), json!({"TOS": 184})));
    let (ra, rb) = (relay(media_port(&to_a)), relay(media_port(&to_b)));
    h.packet(ra, sa(&format!("{A}:4000")), &rtp(1));
    h.packet(rb, sa(&format!("{B}:5000")), &rtp(1));
    for local in [ra, rb] {
        let e = h.entry(local).expect("entry after latching");
        assert!(e.flags & FLAG_SET_TOS != 0 && e.tos == 184, "{e:?}");
    }
    // A re-offer with another TOS rewrites the installed entries; -1 keeps it.
    h.ok_sdp(offer("t", plain(A, 4000), json!({"TOS": 46})));
    assert_eq!(h.entry(ra).unwrap().tos, 46);
    h.ok_sdp(answer("t", plain(B, 5000), json!({"TOS": -1})));
    assert_eq!(h.entry(rb).unwrap().tos, 46);
    // Absent: back to the default, packets left as sent.
    h.ok_sdp(answer("t", plain(B, 5000), json!({})));
    assert_eq!(h.entry(ra).unwrap().flags & FLAG_SET_TOS, 0);
}

#[test]
fn tos_labels_and_branches_survive_a_crash() {
    let mut h = Harness::new();
    let to_b = h.ok_sdp(offer(
        "t",
        plain(A, 4000),
        json!({"TOS": 184, "label": "caller", "via-branch": "z9hG4bK1"}),
    ));
    let to_a = h.ok_sdp(answer("t", plain(B, 5000), json!({"TOS": -1})));
    let (ra, rb) = (relay(media_port(&to_a)), relay(media_port(&to_b)));
    h.packet(ra, sa(&format!("{A}:4000")), &rtp(1));
    h.packet(rb, sa(&format!("{B}:5000")), &rtp(1));
    super::state::crash_and_restart(&mut h);
    for local in [ra, rb] {
        let e = h.entry(local).expect("entry re-applied after the crash");
        assert!(e.flags & FLAG_SET_TOS != 0 && e.tos == 184, "{e:?}");
    }
    let names = &h.engine.compat.names["t"];
    assert_eq!(names.labels.get("A").map(String::as_str), Some("caller"));
    assert_eq!(
        names.branches.get("A").map(String::as_str),
        Some("z9hG4bK1")
    );
}

#[test]
fn the_session_limit_refuses_new_calls_only() {
    let mut h = Harness::new();
    h.engine.cfg.max_sessions = Some(1);
    h.ok_sdp(offer("one", plain(A, 4000), json!({})));
    let ll = h.ng(offer(
        "two",
        plain(A, 4002),
        json!({"supports": ["load limit"]}),
    ));
    assert_eq!(ll["result"], "load limit");
    assert_eq!(ll["message"], "Parallel session limit reached");
    let legacy = h.ng(offer("two", plain(A, 4002), json!({})));
    assert_eq!(legacy["result"], "error");
    assert!(
        legacy["error-reason"]
            .as_str()
            .unwrap()
            .starts_with("Parallel session limit reached")
    );
    // Nothing was allocated for the refused call; the existing one still re-offers.
    assert_eq!(h.ng(json!({"command": "list"}))["calls"], json!(["one"]));
    h.ok_sdp(offer(
        "one",
        plain(A, 4000),
        json!({"supports": ["load limit"]}),
    ));
    let st = h.ng(json!({"command": "statistics"}));
    assert_eq!(st["statistics"]["totalstatistics"]["rejectedsessions"], 2);
}

#[test]
fn labels_and_branches_select_participants() {
    let mut h = Harness::new();
    h.ok_sdp(offer(
        "l",
        plain(A, 4000),
        json!({"label": "caller", "via-branch": "b1"}),
    ));
    h.ok_sdp(answer(
        "l",
        plain(B, 5000),
        json!({"label": "callee", "via-branch": "b1"}),
    ));
    let q = h.ng(json!({"command": "query", "call-id": "l"}));
    assert_eq!(q["tags"]["A"]["label"], "caller");
    assert_eq!(q["tags"]["B"]["label"], "callee");
    assert_eq!(q["tags"]["B"]["via-branch"], "b1");
    let only = h.ng(json!({"command": "query", "call-id": "l", "label": "callee"}));
    assert_eq!(only["tags"].as_object().unwrap().len(), 1);
    let none = h.ng(json!({"command": "delete", "call-id": "l", "label": "nobody"}));
    assert_eq!(none["warning"], "Call-ID not found or tags didn't match");
    let d =
        h.ng(json!({"command": "delete", "call-id": "l", "label": "caller", "flags": ["fast"]}));
    assert_eq!(d, json!({"result": "ok"}));
    assert_eq!(h.ng(json!({"command": "list"}))["calls"], json!([]));
}

#[test]
fn close_reasons_and_rtpengine_statistics() {
    let mut h = Harness::new();
    h.ok_sdp(offer("gone", plain(A, 4000), json!({})));
    h.ok_sdp(offer("bye", plain(A, 4002), json!({})));
    let d = h.ng(json!({"command": "delete", "call-id": "bye"}));
    assert_eq!(d["totals"]["RTP"]["packets"], 0);
    h.advance(Duration::from_secs(62));
    let st = h.ng(json!({"command": "statistics"}));
    let t = &st["statistics"]["totalstatistics"];
    assert_eq!(t["regularterminatedsessions"], 1);
    assert_eq!(t["timeoutsessions"], 1);
    assert_eq!(t["managedsessions"], 2);
    assert_eq!(st["statistics"]["currentstatistics"]["sessionsown"], 0);
    assert_eq!(st["statistics"]["controlstatistics"]["totaloffercount"], 2);
    assert!(
        st["statistics"]["fastpath"].is_object(),
        "our own keys stay"
    );
    let m = crate::rtpe_compat::render_metrics(&h.engine.rtpe_figures(h.now.instant));
    assert!(
        m.contains("rtpengine_closed_sessions_total{reason=\"timeout\"} 1"),
        "{m}"
    );
}
