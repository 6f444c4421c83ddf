//! Per-leg SRTP decisions and the SDP they produce, as a table of offer/answer exchanges.

use relay_core::sdp::{LineEnding, Sdp};
use relay_core::session_crypto::{
    self, CryptoOptions, DtlsOption, Implied, LegCrypto, SessionCryptoError, StreamCrypto,
};
use relay_core::srtp_sdp::{Fingerprint, HashFunc, Profile, Setup, SrtpSuite};

const K30: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
const K30B: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk";

fn fp(byte: u8) -> Fingerprint {
    Fingerprint {
        hash: HashFunc::Sha256,
        bytes: vec![byte; 32],
    }
}

fn sdp(proto: &str, attrs: &[String]) -> String {
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 {proto} 0 8\r\n"
    );
    for a in attrs {
        s.push_str(&format!("a={a}\r\n"));
    }
    s
}

fn opts(flags: &[&str]) -> CryptoOptions {
    let mut o = CryptoOptions::default();
    for f in flags {
        assert!(o.apply_flag(f).is_some(), "flag {f}");
    }
    o
}

/// Runs an offer through `offer` and returns the rewritten SDP and the state.
fn do_offer(body: &str, o: &CryptoOptions) -> Result<(String, StreamCrypto), SessionCryptoError> {
    let mut s = Sdp::parse(body).unwrap();
    let mut n = 0u8;
    let mut keys = |len: usize| {
        n += 1;
        vec![n; len]
    };
    let st = session_crypto::offer(
        0,
        &s.session,
        &mut s.media[0],
        LineEnding::CrLf,
        o,
        &fp(0xAA),
        &mut keys,
    )?;
    if st.pending.as_ref().is_some_and(|p| p.offerer.is_some()) {
        session_crypto::strip_session(&mut s.session);
    }
    Ok((s.to_string(), st))
}

fn do_answer(
    body: &str,
    st: &mut StreamCrypto,
    o: &CryptoOptions,
) -> Result<String, SessionCryptoError> {
    let mut s = Sdp::parse(body).unwrap();
    let mut keys = |len: usize| vec![0x77; len];
    session_crypto::answer(
        0,
        &s.session,
        &mut s.media[0],
        LineEnding::CrLf,
        st,
        o,
        &fp(0xAA),
        &mut keys,
    )?;
    Ok(s.to_string())
}

fn attrs(body: &str) -> Vec<String> {
    body.lines()
        .filter(|l| {
            ["m=", "a=crypto", "a=fingerprint", "a=setup"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(str::to_owned)
        .collect()
}

fn webrtc_offer() -> String {
    sdp(
        "UDP/TLS/RTP/SAVPF",
        &[
            format!("fingerprint:{}", fp(0xBB)),
            "setup:actpass".into(),
            "rtcp-mux".into(),
        ],
    )
}

#[test]
fn browser_calls_sip_phone_with_the_gateway_flags() {
    // Offer toward the SIP side: ICE=remove DTLS=off RTP/AVP rtcp-mux-demux.
    let (to_sip, mut st) = do_offer(&webrtc_offer(), &opts(&["RTP/AVP", "DTLS=off"])).unwrap();
    assert_eq!(attrs(&to_sip), ["m=audio 4000 RTP/AVP 0 8"]);
    assert!(st.converts());
    // The SIP phone answers plain; the answer toward the browser carries DTLS=passive RTP/SAVPF SDES-off.
    let to_browser = do_answer(
        &sdp("RTP/AVP", &[]),
        &mut st,
        &opts(&["DTLS=passive", "RTP/SAVPF", "SDES-off"]),
    )
    .unwrap();
    assert_eq!(
        attrs(&to_browser),
        [
            "m=audio 4000 UDP/TLS/RTP/SAVPF 0 8".to_owned(),
            format!("a=fingerprint:{}", fp(0xAA)),
            "a=setup:passive".into()
        ]
    );
    assert_eq!(
        st.legs,
        [
            LegCrypto::Dtls {
                setup: Setup::Passive,
                remote: fp(0xBB)
            },
            LegCrypto::None
        ]
    );
    assert_eq!(st.describe().as_deref(), Some("DTLS-SRTP<->RTP"));
    assert_eq!(st.to_string(), "crypto: DTLS-SRTP<->RTP");
}

#[test]
fn sip_phone_calls_browser() {
    let o = opts(&["RTP/SAVPF", "DTLS=passive", "SDES-off"]);
    let (to_browser, mut st) = do_offer(&sdp("RTP/AVP", &[]), &o).unwrap();
    assert_eq!(
        attrs(&to_browser),
        [
            "m=audio 4000 RTP/SAVPF 0 8".to_owned(),
            format!("a=fingerprint:{}", fp(0xAA)),
            "a=setup:passive".into()
        ]
    );
    let answer = sdp(
        "UDP/TLS/RTP/SAVPF",
        &[format!("fingerprint:{}", fp(0xBB)), "setup:active".into()],
    );
    let to_sip = do_answer(&answer, &mut st, &opts(&["RTP/AVP", "DTLS=off"])).unwrap();
    assert_eq!(attrs(&to_sip), ["m=audio 4000 RTP/AVP 0 8"]);
    assert_eq!(
        st.legs,
        [
            LegCrypto::None,
            LegCrypto::Dtls {
                setup: Setup::Passive,
                remote: fp(0xBB)
            }
        ]
    );
    // The WebRTC shortcut offers UDP/TLS/RTP/SAVPF and actpass.
    let mut w = CryptoOptions::default();
    assert_eq!(
        w.apply_flag("WebRTC"),
        Some(Implied {
            ice_force: true,
            rtcp_mux_offer: true,
            rtcp_mux_require: true
        })
    );
    let (to_browser, _) = do_offer(&sdp("RTP/AVP", &[]), &w).unwrap();
    assert_eq!(
        attrs(&to_browser),
        [
            "m=audio 4000 UDP/TLS/RTP/SAVPF 0 8".to_owned(),
            format!("a=fingerprint:{}", fp(0xAA)),
            "a=setup:actpass".into()
        ]
    );
}

#[test]
fn sdes_to_plain_and_back() {
    let offer = sdp(
        "RTP/SAVP",
        &[
            format!("crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{K30}"),
            format!("crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{K30B}"),
        ],
    );
    // SDES-no- on the answer leaves out the first suite the offerer listed.
    let (to_b, mut st) = do_offer(&offer, &opts(&["RTP/AVP"])).unwrap();
    assert_eq!(attrs(&to_b), ["m=audio 4000 RTP/AVP 0 8"]);
    let to_a = do_answer(
        &sdp("RTP/AVP", &[]),
        &mut st,
        &opts(&["SDES-no-AES_CM_128_HMAC_SHA1_32"]),
    )
    .unwrap();
    let ours = "d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3";
    assert_eq!(
        attrs(&to_a),
        [
            "m=audio 4000 RTP/SAVP 0 8".to_owned(),
            format!("a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{ours}")
        ]
    );
    let LegCrypto::Sdes {
        suite,
        tag,
        local,
        remote,
    } = &st.legs[0]
    else {
        panic!("{st:?}")
    };
    assert_eq!((*suite, *tag), (SrtpSuite::AesCm128HmacSha1_80, 4));
    assert_eq!(local, &vec![0x77; 30]);
    assert_eq!(remote.len(), 30);
    assert_eq!(st.describe().as_deref(), Some("SDES-SRTP<->RTP"));

    // Plain offerer, SDES toward the answerer (DTLS=off): every suite offered, answer picks one.
    let (to_b, mut st) = do_offer(
        &sdp("RTP/AVP", &[]),
        &opts(&[
            "RTP/SAVP",
            "DTLS=off",
            "SDES-only-AES_CM_128_HMAC_SHA1_80",
            "SDES-only-AEAD_AES_128_GCM",
        ]),
    )
    .unwrap();
    let lines = attrs(&to_b);
    assert_eq!(lines[0], "m=audio 4000 RTP/SAVP 0 8");
    assert!(lines[1].starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"));
    assert!(lines[2].starts_with("a=crypto:2 AEAD_AES_128_GCM inline:"));
    assert_eq!(lines.len(), 3);
    let to_a = do_answer(
        &sdp(
            "RTP/SAVP",
            &[format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K30B}")],
        ),
        &mut st,
        &CryptoOptions::default(),
    )
    .unwrap();
    assert_eq!(attrs(&to_a), ["m=audio 4000 RTP/AVP 0 8"]);
    let LegCrypto::Sdes { tag: 1, local, .. } = &st.legs[1] else {
        panic!("{st:?}")
    };
    assert_eq!(local, &vec![1; 30], "the key the relay offered with tag 1");
}

#[test]
fn dtls_to_sdes_terminates_both_legs() {
    let (to_b, mut st) = do_offer(&webrtc_offer(), &opts(&["RTP/SAVP", "DTLS=off"])).unwrap();
    let lines = attrs(&to_b);
    assert_eq!(lines[0], "m=audio 4000 RTP/SAVP 0 8");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("a=crypto:")).count(),
        3
    );
    assert!(!to_b.contains("a=fingerprint") && !to_b.contains("a=setup"));
    let answer = sdp(
        "RTP/SAVP",
        &[format!("crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{K30B}")],
    );
    let to_a = do_answer(&answer, &mut st, &opts(&["DTLS=passive"])).unwrap();
    assert!(to_a.contains("a=setup:passive") && !to_a.contains("a=crypto"));
    assert!(to_a.contains("m=audio 4000 UDP/TLS/RTP/SAVPF 0 8"));
    assert!(matches!(
        st.legs[1],
        LegCrypto::Sdes {
            suite: SrtpSuite::AesCm128HmacSha1_32,
            tag: 2,
            ..
        }
    ));
    assert_eq!(st.describe().as_deref(), Some("DTLS-SRTP<->SDES-SRTP"));
    // An answer that accepts nothing the relay offered is refused.
    let (_, mut st) = do_offer(&webrtc_offer(), &opts(&["RTP/SAVP", "DTLS=off"])).unwrap();
    let bad = sdp(
        "RTP/SAVP",
        &[format!("crypto:9 AES_CM_128_HMAC_SHA1_80 inline:{K30B}")],
    );
    assert_eq!(
        do_answer(&bad, &mut st, &CryptoOptions::default()),
        Err(SessionCryptoError::AnswerCrypto(0))
    );
}

#[test]
fn passthrough_and_same_security_changes() {
    let sdes = sdp(
        "RTP/SAVP",
        &[format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K30}")],
    );
    type Case = (&'static str, String, Vec<&'static str>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "SDES passes end to end",
            sdes.clone(),
            vec![],
            "m=audio 4000 RTP/SAVP 0 8",
        ),
        (
            "DTLS passes end to end",
            webrtc_offer(),
            vec![],
            "m=audio 4000 UDP/TLS/RTP/SAVPF 0 8",
        ),
        (
            "AVP -> AVPF is SDP only",
            sdp("RTP/AVP", &[]),
            vec!["RTP/AVPF"],
            "m=audio 4000 RTP/AVPF 0 8",
        ),
        (
            "SAVP -> SAVPF keeps SDES",
            sdes.clone(),
            vec!["RTP/SAVPF"],
            "m=audio 4000 RTP/SAVPF 0 8",
        ),
        (
            "unknown profile untouched",
            sdp("UDP/BFCP", &[]),
            vec!["RTP/AVP"],
            "m=audio 4000 UDP/BFCP 0 8",
        ),
    ];
    for (what, body, flags, m) in cases {
        let (out, st) = do_offer(&body, &opts(&flags)).unwrap();
        assert!(!st.converts(), "{what}");
        assert_eq!(attrs(&out)[0], m, "{what}");
        assert_eq!(
            attrs(&out)[1..],
            attrs(&body)[1..],
            "{what}: crypto lines unchanged"
        );
    }
    // The answer goes back in the offerer's profile.
    let (_, mut st) = do_offer(&sdp("RTP/AVP", &[]), &opts(&["RTP/AVPF"])).unwrap();
    let to_a = do_answer(&sdp("RTP/AVPF", &[]), &mut st, &CryptoOptions::default()).unwrap();
    assert_eq!(attrs(&to_a), ["m=audio 4000 RTP/AVP 0 8"]);
    assert_eq!(st.describe(), None);
}

#[test]
fn bad_input_is_an_error_and_changes_nothing() {
    for bad in [
        "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:@@@",
        "crypto:x AES_CM_128_HMAC_SHA1_80 inline:AAAA",
        "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
        "fingerprint:sha-256 zz",
        "setup:sideways",
    ] {
        let body = sdp("RTP/SAVP", &[bad.to_owned()]);
        let mut s = Sdp::parse(&body).unwrap();
        let before = s.clone();
        let r = session_crypto::offer(
            0,
            &s.session,
            &mut s.media[0],
            LineEnding::CrLf,
            &opts(&["RTP/AVP"]),
            &fp(1),
            &mut |n| vec![0; n],
        );
        assert!(
            matches!(r, Err(SessionCryptoError::Attr(_))),
            "{bad}: {r:?}"
        );
        assert_eq!(s, before, "{bad}");
    }
    // SRTP offered without any keying the relay can use.
    let r = do_offer(&sdp("RTP/SAVP", &[]), &opts(&["RTP/AVP"]));
    assert_eq!(r.unwrap_err(), SessionCryptoError::NoUsableCrypto(0));
}

#[test]
fn option_parsing() {
    let mut o = CryptoOptions::default();
    for (flag, ok) in [
        ("RTP/AVP", true),
        ("UDP/TLS/RTP/SAVP", true),
        ("SDES-off", true),
        ("SDES-no-AES_CM_128_HMAC_SHA1_32", true),
        ("SDES-only-AEAD_AES_128_GCM", true),
        ("DTLS=passive", true),
        ("SDES-pad", false),
        ("DTLS=sideways", false),
        ("symmetric", false),
    ] {
        assert_eq!(o.apply_flag(flag).is_some(), ok, "{flag}");
    }
    assert_eq!(o.transport, Some(Profile::UdpTlsRtpSavp));
    assert_eq!(o.dtls, DtlsOption::Passive);
    assert!(
        o.sdes.off
            && o.sdes.no == ["AES_CM_128_HMAC_SHA1_32"]
            && o.sdes.only == ["AEAD_AES_128_GCM"]
    );
    for (v, want) in [
        ("off", DtlsOption::Off),
        ("no", DtlsOption::Off),
        ("disable", DtlsOption::Off),
        ("Active", DtlsOption::Active),
    ] {
        o.set_dtls(v).unwrap();
        assert_eq!(o.dtls, want);
    }
    assert!(o.set_transport("RTP/XYZ").is_err());
    o.set_transport("RTP/SAVPF").unwrap();
    assert_eq!(o.transport, Some(Profile::RtpSavpf));
    let mut s = CryptoOptions::default();
    assert!(s.add_sdes("no-AES_CM_128_HMAC_SHA1_80"));
    assert!(!s.sdes.allows(SrtpSuite::AesCm128HmacSha1_80));
    assert!(s.sdes.allows(SrtpSuite::AeadAes128Gcm));
}

fn crypto_suites(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| v.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn osrtp_offer_keys_a_plain_leg_when_the_answerer_takes_them() {
    let o = opts(&["OSRTP-offer"]);
    let (to_b, mut st) = do_offer(&sdp("RTP/AVP", &[]), &o).unwrap();
    // RFC 8643: the relay's keys in the plain profile.
    assert!(to_b.contains("m=audio 4000 RTP/AVP 0 8"), "{to_b}");
    assert_eq!(
        crypto_suites(&to_b),
        [
            "1 AES_CM_128_HMAC_SHA1_80",
            "2 AES_CM_128_HMAC_SHA1_32",
            "3 AEAD_AES_128_GCM"
        ]
    );
    assert!(st.converts(), "held in the daemon until the answer says");
    // B takes the first suite: the relay terminates B's SRTP, A stays plain.
    let mut taken = st.clone();
    let to_a = do_answer(
        &sdp(
            "RTP/AVP",
            &[format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K30B}")],
        ),
        &mut taken,
        &CryptoOptions::default(),
    )
    .unwrap();
    assert_eq!(attrs(&to_a), ["m=audio 4000 RTP/AVP 0 8"]);
    assert!(matches!(
        &taken.legs,
        [LegCrypto::None, LegCrypto::Sdes { tag: 1, .. }]
    ));
    assert_eq!(
        taken.describe().as_deref(),
        Some("RTP<->SDES-SRTP"),
        "{taken:?}"
    );
    // B declines (a plain answer): nothing converts, the fast path carries the call.
    do_answer(&sdp("RTP/AVP", &[]), &mut st, &CryptoOptions::default()).unwrap();
    assert!(!st.converts(), "{st:?}");
    // An SRTP offer toward a plain leg becomes an OSRTP offer too (the relay's keys).
    let savp = sdp(
        "RTP/SAVP",
        &[format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K30}")],
    );
    let (to_b, _) = do_offer(&savp, &opts(&["RTP/AVP", "OSRTP-offer"])).unwrap();
    assert!(to_b.contains(" RTP/AVP ") && !to_b.contains(K30), "{to_b}");
    assert_eq!(crypto_suites(&to_b).len(), 3, "{to_b}");
}

#[test]
fn osrtp_offer_passes_unless_accept_takes_it_up() {
    let osrtp = sdp(
        "RTP/AVP",
        &[format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K30}")],
    );
    // By default (and with OSRTP-offer: it is OSRTP already) the offer passes unchanged.
    for o in [CryptoOptions::default(), opts(&["OSRTP-offer"])] {
        let (to_b, st) = do_offer(&osrtp, &o).unwrap();
        assert_eq!(
            crypto_suites(&to_b),
            ["1 AES_CM_128_HMAC_SHA1_80"],
            "{to_b}"
        );
        assert!(to_b.contains(K30) && !st.converts());
    }
    // B declines; without accept the answer passes and the call stays plain.
    let (_, mut st) = do_offer(&osrtp, &CryptoOptions::default()).unwrap();
    let mut plain = st.clone();
    let to_a = do_answer(&sdp("RTP/AVP", &[]), &mut plain, &CryptoOptions::default()).unwrap();
    assert!(crypto_suites(&to_a).is_empty() && !plain.converts());
    // With OSRTP-accept the relay accepts A's SRTP itself: its own key, in A's profile.
    let to_a = do_answer(&sdp("RTP/AVP", &[]), &mut st, &opts(&["OSRTP-accept"])).unwrap();
    assert_eq!(attrs(&to_a)[0], "m=audio 4000 RTP/AVP 0 8");
    assert_eq!(crypto_suites(&to_a), ["1 AES_CM_128_HMAC_SHA1_80"]);
    assert!(!to_a.contains(K30), "the relay's key, not A's: {to_a}");
    assert_eq!(st.describe().as_deref(), Some("SDES-SRTP<->RTP"));
    // B taking A's keys end to end needs no relay: the answer passes even with accept.
    let (_, mut st) = do_offer(&osrtp, &CryptoOptions::default()).unwrap();
    let b = sdp(
        "RTP/AVP",
        &[format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K30B}")],
    );
    let to_a = do_answer(&b, &mut st, &opts(&["OSRTP-accept"])).unwrap();
    assert!(to_a.contains(K30B) && !st.converts(), "{to_a}");
    // Legacy best-effort forms are not implemented: not a known flag.
    assert!(
        CryptoOptions::default()
            .apply_flag("OSRTP-accept-legacy")
            .is_none()
    );
}
