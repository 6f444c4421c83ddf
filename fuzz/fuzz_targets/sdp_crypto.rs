//! Any bytes through the SRTP attribute parsers and the per-leg SRTP offer/answer: must never
//! panic; whatever parses must re-serialise to something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::sdp::Sdp;
use relay_core::session_crypto::{self, CryptoOptions};
use relay_core::srtp_sdp::{CryptoAttr, Fingerprint, HashFunc, Setup};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if let Ok(c) = CryptoAttr::parse(text) {
        assert_eq!(CryptoAttr::parse(&c.to_string()), Ok(c));
    }
    if let Ok(f) = Fingerprint::parse(text) {
        assert_eq!(Fingerprint::parse(&f.to_string()), Ok(f));
    }
    let _ = text.parse::<Setup>();
    let Ok(sdp) = Sdp::parse(text) else {
        return;
    };
    let mut o = CryptoOptions::default();
    for (bit, flag) in ["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "DTLS=off", "SDES-off", "DTLS=passive", "WebRTC", "RTP/AVPF"]
        .iter()
        .enumerate()
    {
        if sel & (1 << bit) != 0 {
            o.apply_flag(flag);
        }
    }
    let relay = Fingerprint::of_der(HashFunc::Sha256, b"relay");
    let mut keys = |n: usize| vec![7u8; n];
    let mut offer = sdp.clone();
    let mut states = Vec::new();
    for (i, m) in offer.media.iter_mut().enumerate() {
        match session_crypto::offer(i, &sdp.session, m, sdp.ending(), &o, &relay, &mut keys) {
            Ok(st) => states.push(st),
            Err(_) => return,
        }
    }
    assert!(Sdp::parse(&offer.to_string()).is_ok());
    // The same body as the answer.
    let mut answer = sdp.clone();
    for (i, (m, st)) in answer.media.iter_mut().zip(states.iter_mut()).enumerate() {
        let _ = session_crypto::answer(i, &sdp.session, m, sdp.ending(), st, &o, &relay, &mut keys);
    }
    assert!(Sdp::parse(&answer.to_string()).is_ok());
});
