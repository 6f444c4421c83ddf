//! The conversations of issue 15 (the NG vocabulary Kamailio and OpenSIPS configs send), in the
//! side-by-side table of `ng_equivalence.rs`. Each case states where we differ from Debian's
//! rtpengine 10.5 and why.
//!
//! Not here, because rtpengine 10.5 has no equivalent to compare with:
//! - `rtpp-flags` (the flag string): 10.5 predates it and ignores the key; one case below pins
//!   that as a known difference, the parser's own table test (relay-ctl ngmap) shows both forms
//!   give identical options;
//! - `TOS` (no SDP change; the fast-path table test checks the byte on forwarded packets);
//! - `force-answer`, `force`, `no-redis-update`: Kamailio module flags that 10.5 ignores; ours
//!   accept them (no "unknown" log) and they change nothing in a reply.

use serde_json::json;

use super::{Case, Step, a_sdp, answer, b_sdp, delete, offer, offer_req};

pub fn cases() -> Vec<Case> {
    let none = || json!({});
    vec![
        Case {
            name: "codec strip PCMU: m= and a=rtpmap lose it",
            steps: vec![
                offer("cstrip", a_sdp(""), json!({"codec": {"strip": ["PCMU"]}})),
                answer("cstrip", b_sdp(""), none()),
                Step::Media,
            ],
        },
        Case {
            name: "codec strip in the flags list (codec-strip-PCMA), as Kamailio 5.6 sends it",
            steps: vec![
                offer("cstrip2", a_sdp(""), json!({"flags": ["codec-strip-PCMA"]})),
                answer("cstrip2", b_sdp(""), none()),
            ],
        },
        Case {
            name: "codec strip all except PCMA",
            steps: vec![
                offer(
                    "cexcept",
                    a_sdp(""),
                    json!({"codec": {"strip": ["all"], "except": ["PCMA"]}}),
                ),
                answer("cexcept", b_sdp(""), none()),
            ],
        },
        Case {
            name: "codec mask PCMU (offer only)",
            steps: vec![
                offer("cmask", a_sdp(""), json!({"codec": {"mask": ["PCMU"]}})),
                answer("cmask", b_sdp(""), none()),
            ],
        },
        Case {
            name: "codec strip of everything is refused: the list stays",
            steps: vec![
                offer(
                    "cnone",
                    a_sdp(""),
                    json!({"codec": {"strip": ["PCMU", "PCMA"]}}),
                ),
                answer("cnone", b_sdp(""), none()),
            ],
        },
        Case {
            name: "label and via-branch: stored, answered per branch, query and delete",
            steps: vec![
                offer(
                    "label",
                    a_sdp(""),
                    json!({"label": "caller", "via-branch": "z9hG4bK-1"}),
                ),
                answer(
                    "label",
                    b_sdp(""),
                    json!({"label": "callee", "via-branch": "z9hG4bK-1"}),
                ),
                Step::Media,
                Step::Same {
                    req: json!({"command": "query", "call-id": "label"}),
                    pointers: &["/result", "/tags/A/label", "/tags/B/label"],
                },
                delete("label", json!({"from-tag": "A", "via-branch": "z9hG4bK-1"})),
                Step::Query("label"),
            ],
        },
        Case {
            name: "SIP-source-address: the SIP source is the media address",
            steps: vec![
                offer(
                    "sipsrc",
                    a_sdp("").replace("10.1.1.2", "192.0.2.9"),
                    json!({"flags": ["SIP-source-address"], "received from": ["IP4", "10.1.1.2"]}),
                ),
                answer("sipsrc", b_sdp(""), none()),
                Step::Media,
            ],
        },
        Case {
            name: "loop protect marks the SDP; TOS, force, no-redis-update are accepted",
            steps: vec![
                offer(
                    "loop",
                    a_sdp(""),
                    json!({"flags": ["loop-protect", "no-redis-update", "force"], "TOS": 184}),
                ),
                answer("loop", b_sdp(""), json!({"TOS": -1})),
            ],
        },
        Case {
            name: "delete by from-tag with to-tag flag, delete delay 0, then a second delete",
            steps: vec![
                offer("dtag", a_sdp(""), none()),
                answer("dtag", b_sdp(""), none()),
                delete(
                    "dtag",
                    json!({"from-tag": "A", "to-tag": "B", "flags": ["to-tag"], "delete delay": 0}),
                ),
                Step::Query("dtag"),
                delete("dtag", none()),
            ],
        },
        Case {
            name: "delete of a whole call with the all flag",
            steps: vec![
                offer("dall", a_sdp(""), none()),
                answer("dall", b_sdp(""), none()),
                delete("dall", json!({"from-tag": "A", "flags": ["all"]})),
                Step::Query("dall"),
            ],
        },
        Case {
            name: "statistics: rtpengine's reply shape",
            steps: vec![Step::Keys {
                req: json!({"command": "statistics"}),
                pointers: &[
                    "/statistics",
                    "/statistics/currentstatistics",
                    "/statistics/totalstatistics",
                    "/statistics/controlstatistics",
                ],
            }],
        },
        Case {
            name: "accepted differences of issue 15",
            steps: vec![
                // rtpp-flags: rtpengine 10.5 ignores the key (it came later) and offers PCMU;
                // we strip it as the flag string asks.
                Step::Known {
                    req: {
                        let mut r = offer_req("krtpp", a_sdp(""));
                        r["rtpp-flags"] = json!("codec-strip=PCMU replace-origin");
                        r
                    },
                    ours: "ok",
                    rtpengine: "ok",
                },
                // always-transcode: Debian's rtpengine transcodes; we do not and answer ok with
                // a warning saying so (the SDP passes unchanged).
                Step::Known {
                    req: {
                        let mut r = offer_req("ktrans", a_sdp(""));
                        r["flags"] = json!(["always-transcode"]);
                        r
                    },
                    ours: "ok",
                    rtpengine: "ok",
                },
                // media address: rtpengine 10.5 writes it into the SDP it sends the *other* side
                // (c=, with its own port), so that side sends media past the relay to the
                // endpoint; we follow the documented meaning: it is the endpoint's media address
                // (what latching expects), and the other side gets the relay's address.
                Step::Known {
                    req: {
                        let mut r = offer_req(
                            "kmaddr2",
                            a_sdp("").replace("c=IN IP4 10.1.1.2", "c=IN IP4 192.0.2.9"),
                        );
                        r["media address"] = json!("10.1.1.2");
                        r
                    },
                    ours: "ok",
                    rtpengine: "ok",
                },
                // A malformed media address: rtpengine logs a warning and goes on with the SDP
                // address; we refuse with its wording, nothing is allocated.
                Step::Known {
                    req: {
                        let mut r = offer_req("kmaddr", a_sdp(""));
                        r["media address"] = json!("not-an-address");
                        r
                    },
                    ours: "error",
                    rtpengine: "ok",
                },
            ],
        },
    ]
}

/// `--max-sessions` on both servers: a new call beyond the limit gets `load limit` when the
/// proxy says it supports it, rtpengine's error otherwise; an existing call's re-offer still
/// works; once a call is deleted a new one fits again. Nothing is allocated for a refused call.
#[test]
fn load_limit_same_as_rtpengine() {
    use relay_tests::{
        daemon::{Daemon, ng_reply},
        netns::Bpffs,
        rtpengine::{Rtpengine, RtpengineConfig},
        topology::Topology,
    };
    use serde_json::Value;

    let name = "load_limit_same_as_rtpengine";
    if !relay_tests::privileged(name) || !relay_tests::rtpengine::available(name) {
        return;
    }
    let t = Topology::new().unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let mut args: Vec<String> = super::INTERFACES
        .iter()
        .map(|i| format!("--listen={i}"))
        .collect();
    args.extend(t.relay_devices().iter().map(|d| format!("--interface={d}")));
    args.extend(
        [
            "--port-min=30000",
            "--port-max=30999",
            "--detach",
            "--max-sessions=1",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _ours = Daemon::start(&t.relay, &bpffs.path().join("relay"), &args).unwrap();
    let _rtpe = Rtpengine::start(
        &t.relay,
        &RtpengineConfig {
            interfaces: super::INTERFACES,
            ng: super::RTPE_NG.parse().unwrap(),
            port_min: 40000,
            port_max: 40999,
            extra: &["--delete-delay=0", "--max-sessions=1"],
        },
    )
    .unwrap();
    let supports = json!({"supports": ["load limit"]});
    let steps: Vec<Value> = vec![
        offer_req("l1", a_sdp("")),
        super::merge(offer_req("l2", a_sdp("")), supports.clone()),
        offer_req("l2", a_sdp("")),
        super::merge(offer_req("l1", a_sdp("")), supports.clone()),
        json!({"command": "delete", "call-id": "l1", "from-tag": "A"}),
        super::merge(offer_req("l2", a_sdp("")), supports),
    ];
    let want = ["ok", "load limit", "error", "ok", "ok", "ok"];
    for (server, ng) in [("ours", super::OURS_NG), ("rtpengine", super::RTPE_NG)] {
        for (i, (req, want)) in steps.iter().zip(want).enumerate() {
            let r = ng_reply(&t.relay, ng.parse().unwrap(), req.clone()).unwrap();
            let got = r.get("result").and_then(Value::as_str).unwrap_or("");
            assert_eq!(got, want, "{server} step {i}: {r:?}");
            if want == "error" {
                let reason = r["error-reason"].as_str().unwrap_or("");
                assert!(
                    reason.starts_with("Parallel session limit reached"),
                    "{server}: {reason}"
                );
            }
            if want == "load limit" {
                assert_eq!(r["message"], "Parallel session limit reached", "{server}");
            }
        }
    }
}
