#![no_main]
//! Every SIP entry point on arbitrary bytes: no panic, and outputs that parse again.

use libfuzzer_sys::fuzz_target;
use relay_core::sip::{self, Framing, SipMessage};

fuzz_target!(|data: &[u8]| {
    for framing in [Framing::Datagram, Framing::Stream] {
        if let Ok(m) = SipMessage::parse_framed(data, framing) {
            let _ = (
                m.call_id(),
                m.from_tag(),
                m.to_tag(),
                m.cseq(),
                m.via_branch(),
                m.sdp(),
            );
        }
        let out = sip::rewrite_body_framed(data, framing, |sdp| {
            Ok::<_, std::convert::Infallible>(format!("{sdp}a=x:ü\r\n"))
        });
        if let Ok(out) = out {
            // Content-Length was corrected, so the output frames as a stream message.
            assert!(SipMessage::parse_framed(&out, Framing::Stream).is_ok());
        }
        let src = "[2001:db8::1]:5062".parse().expect("literal address");
        if let Ok(out) = sip::apply_rport_framed(data, framing, src) {
            assert!(SipMessage::parse_framed(&out, framing).is_ok());
        }
    }
});
