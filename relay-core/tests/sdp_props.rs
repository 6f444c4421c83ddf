//! Property: rewriting keeps every line it does not target byte-identical, in order, with its
//! own line ending, for any mode and option; and the line model round-trips any body.

#[path = "session_common.rs"]
mod common;

use proptest::prelude::*;
use relay_core::sdp::{LineEnding, Sdp, is_ice_attr};
use relay_core::session::{AnswerOptions, IceOption, OfferOptions, RtcpMuxOption};

fn ending() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\r\n"), Just("\n")]
}

/// Attribute and field lines the relay must carry through untouched.
fn opaque_line() -> impl Strategy<Value = String> {
    let value = "[ -~]{0,24}";
    prop_oneof![
        value.prop_map(|v| format!("a=x-vendor:{v}")),
        value.prop_map(|v| format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{v}")),
        (0u8..128, value).prop_map(|(pt, v)| format!("a=rtpmap:{pt} {v}")),
        (0u8..128, value).prop_map(|(pt, v)| format!("a=fmtp:{pt} {v}")),
        (1u32..100000).prop_map(|b| format!("b=AS:{b}")),
        value.prop_map(|v| format!("i={v}")),
        Just("a=sendonly".to_owned()),
        Just("a=inactive".to_owned()),
        Just("a=ptime:20".to_owned()),
    ]
}

/// Lines the relay may rewrite or drop depending on options.
fn target_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a=rtcp-mux".to_owned()),
        Just("a=ice-ufrag:Uf1234".to_owned()),
        Just("a=ice-pwd:Pw1234567890123456789012".to_owned()),
        Just("a=candidate:1 1 UDP 2130706431 198.51.100.10 4000 typ host".to_owned()),
        Just("a=candidate:garbage".to_owned()),
        Just("a=rtcp:4001".to_owned()),
        Just("c=IN IP4 198.51.100.11".to_owned()),
    ]
}

fn section_lines() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop_oneof![3 => opaque_line(), 1 => target_line()], 0..8)
}

fn sdp_body() -> impl Strategy<Value = String> {
    (
        section_lines(),
        prop::collection::vec((0u16..2, section_lines()), 1..4),
        prop::collection::vec(ending(), 64),
        any::<bool>(),
    )
        .prop_map(|(sess, media, ends, last_newline)| {
            let mut lines = vec![
                "v=0".to_owned(),
                "o=- 1 1 IN IP4 198.51.100.10".to_owned(),
                "s=-".to_owned(),
                "c=IN IP4 198.51.100.10".to_owned(),
                "t=0 0".to_owned(),
            ];
            lines.extend(sess);
            for (i, (rejected, body)) in media.into_iter().enumerate() {
                let port = if rejected == 0 {
                    4000 + 2 * i as u16
                } else {
                    0
                };
                lines.push(format!("m=audio {port} RTP/AVP 0 8"));
                lines.extend(body);
            }
            let n = lines.len();
            let mut out = String::new();
            for (i, l) in lines.into_iter().enumerate() {
                out.push_str(&l);
                if i + 1 < n || last_newline {
                    out.push_str(ends[i % ends.len()]);
                }
            }
            out
        })
}

fn options() -> impl Strategy<Value = OfferOptions> {
    (
        prop_oneof![
            Just(IceOption::Remove),
            Just(IceOption::Force),
            Just(IceOption::Default),
            Just(IceOption::Optional),
            Just(IceOption::ForceRelay),
        ],
        prop_oneof![
            Just(RtcpMuxOption::None),
            Just(RtcpMuxOption::Offer),
            Just(RtcpMuxOption::Demux),
            Just(RtcpMuxOption::Accept),
            Just(RtcpMuxOption::Reject),
            Just(RtcpMuxOption::Require),
            Just(RtcpMuxOption::OfferReject),
        ],
        any::<bool>(),
    )
        .prop_map(|(ice, rtcp_mux, origin)| {
            let mut o = OfferOptions {
                ice,
                rtcp_mux,
                ..Default::default()
            };
            o.replace.origin = origin;
            o
        })
}

fn is_target(text: &str, origin: bool) -> bool {
    let l = relay_core::sdp::Line::new(text, LineEnding::CrLf);
    matches!(l.kind(), Some(b'c' | b'm'))
        || (origin && l.kind() == Some(b'o'))
        || l.is_attr("rtcp")
        || l.is_attr("rtcp-mux")
        || is_ice_attr(&l)
}

fn check(body: &str, out: &str, origin: bool) -> Result<(), TestCaseError> {
    let input = Sdp::parse(body).unwrap();
    let output = Sdp::parse(out).unwrap();
    prop_assert_eq!(input.media.len(), output.media.len());
    // Non-target lines, section by section, must appear in order with their own ending.
    let sections = |s: &Sdp| -> Vec<Vec<relay_core::sdp::Line>> {
        std::iter::once(s.session.clone())
            .chain(s.media.iter().cloned())
            .collect()
    };
    for (si, so) in sections(&input).iter().zip(sections(&output)) {
        let mut it = so.iter();
        for l in si.iter().filter(|l| !is_target(&l.text, origin)) {
            let found = it.by_ref().any(|o| {
                o.text == l.text && (o.ending == l.ending || l.ending == LineEnding::None)
            });
            prop_assert!(found, "line {:?} lost or reordered in\n{}", l, out);
        }
    }
    // Kept lines keep their ending, so a body whose unterminated last line was removed ends in
    // the previous line's newline; otherwise an unterminated body stays unterminated.
    let last_kept = input
        .lines()
        .last()
        .is_some_and(|l| !is_target(&l.text, origin));
    if last_kept {
        prop_assert_eq!(out.ends_with('\n'), body.ends_with('\n'));
    }
    Ok(())
}

proptest! {
    #[test]
    fn rewriting_preserves_every_non_target_line(body in sdp_body(), opts in options()) {
        let mut s = common::sessions();
        let out = s.offer("c", "A", &body, &opts).unwrap();
        check(&body, &out.sdp, opts.replace.origin)?;
        // The same body as the answer of B exercises the answer path.
        let ans = s.answer("c", "A", "B", &body, &AnswerOptions::default()).unwrap();
        check(&body, &ans.sdp, false)?;
    }

    #[test]
    fn line_model_round_trips(body in sdp_body()) {
        prop_assert_eq!(Sdp::parse(&body).unwrap().to_string(), body);
    }
}
