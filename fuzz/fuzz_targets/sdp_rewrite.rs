//! Any bytes through the SDP entry points: parse, round-trip, offer and answer under options
//! picked by the first byte. Must never panic; a parsed body must re-serialise byte-identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::sdp::Sdp;
use relay_core::session::{
    AnswerOptions, Config, IceOption, OfferOptions, RtcpMuxOption, Sessions,
};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if let Ok(sdp) = Sdp::parse(text) {
        assert_eq!(sdp.to_string(), text);
        let _ = sdp.describe();
    }
    let config = Config {
        interfaces: vec![
            "pub/192.0.2.1!203.0.113.1".parse().unwrap(),
            "v6/2001:db8::1".parse().unwrap(),
        ],
        port_min: 30000,
        port_max: 30019,
    };
    let Ok(mut s) = Sessions::new(config) else {
        return;
    };
    let ice = [
        IceOption::Remove,
        IceOption::Force,
        IceOption::Default,
        IceOption::Optional,
        IceOption::ForceRelay,
    ][usize::from(sel & 7) % 5];
    let rtcp_mux = [
        RtcpMuxOption::None,
        RtcpMuxOption::Offer,
        RtcpMuxOption::Demux,
        RtcpMuxOption::Accept,
        RtcpMuxOption::Reject,
        RtcpMuxOption::Require,
        RtcpMuxOption::OfferReject,
    ][usize::from(sel >> 3 & 7) % 7];
    let mut opts = OfferOptions {
        ice,
        rtcp_mux,
        ..Default::default()
    };
    opts.replace.origin = sel & 0x40 != 0;
    if sel & 0x80 != 0 {
        opts.address_family = Some(relay_core::session::AddressFamily::Ip6);
    }
    if let Ok(out) = s.offer("c", "A", text, &opts) {
        // The relay's own output must be acceptable input.
        assert!(Sdp::parse(&out.sdp).and_then(|p| p.describe()).is_ok());
        let _ = s.answer("c", "A", "B", text, &AnswerOptions::default());
        let _ = s.offer("c", "A", text, &opts);
        for e in s.entries() {
            let _ = s.latch(e.local, e.rewrite.to);
        }
        let _ = s.ice_legs("c");
        let _ = s.delete("c", Some("A"), Some("B"));
    }
});
