//! rtpengine NG keys and flags that set SRTP handling: `transport-protocol` (`transport
//! protocol`), `DTLS`, `SDES` and `OSRTP` (lists), and the `flags` items `RTP/AVP` ... `UDP/TLS/RTP/SAVPF`,
//! `SDES-<item>`, `DTLS=<value>` and `WebRTC` (see [`relay_core::session_crypto`] for what each
//! does). Keys win over flags when both are given.

use relay_core::session_crypto::{CryptoOptions, Implied};

use crate::ngmap::{OptionError, Request, normalise};

/// Whether a `flags` item is one [`crypto_options`] handles (so it is not reported unknown).
pub fn is_crypto_flag(flag: &str) -> bool {
    CryptoOptions::default().apply_flag(flag).is_some()
}

/// The crypto options of one request, and what `WebRTC` implies for ICE and rtcp-mux.
pub fn crypto_options(req: &mut Request) -> Result<(CryptoOptions, Implied), OptionError> {
    let mut o = CryptoOptions::default();
    let mut implied = Implied::default();
    for flag in req.list("flags") {
        if let Some(i) = o.apply_flag(&flag) {
            implied.ice_force |= i.ice_force;
            implied.rtcp_mux_offer |= i.rtcp_mux_offer;
            implied.rtcp_mux_require |= i.rtcp_mux_require;
        }
    }
    if let Some(v) = req.str("transport-protocol").map(str::to_owned) {
        o.set_transport(&v).map_err(|_| OptionError::Invalid {
            key: "transport-protocol",
            value: v,
        })?;
    }
    if let Some(v) = req.str("dtls").map(str::to_owned) {
        o.set_dtls(&v).map_err(|_| OptionError::Invalid {
            key: "DTLS",
            value: v,
        })?;
    }
    for item in req.list("sdes") {
        if !o.add_sdes(&item) {
            req.unknown.push(format!("SDES {}", normalise(&item)));
        }
    }
    for item in req.list("osrtp") {
        if !o.add_osrtp(&item) {
            req.unknown.push(format!("OSRTP {}", normalise(&item)));
        }
    }
    Ok((o, implied))
}

#[cfg(test)]
mod tests {
    use relay_core::session_crypto::DtlsOption;
    use relay_core::srtp_sdp::Profile;
    use serde_json::json;

    use super::*;

    fn req(v: serde_json::Value) -> Request {
        Request::new(v.as_object().unwrap())
    }

    #[test]
    fn keys_and_flags() {
        type Case = (serde_json::Value, Option<Profile>, DtlsOption, bool, bool);
        let cases: Vec<Case> = vec![
            (
                json!({"transport protocol": "RTP/AVP", "DTLS": "off"}),
                Some(Profile::RtpAvp),
                DtlsOption::Off,
                false,
                false,
            ),
            (
                json!({"flags": ["RTP/SAVPF", "SDES-off", "DTLS=passive"]}),
                Some(Profile::RtpSavpf),
                DtlsOption::Passive,
                true,
                false,
            ),
            (
                json!({"flags": ["WebRTC"]}),
                Some(Profile::UdpTlsRtpSavpf),
                DtlsOption::Default,
                true,
                true,
            ),
            (
                json!({"transport-protocol": "RTP/SAVP", "flags": ["RTP/AVP"], "SDES": ["no-AES_CM_128_HMAC_SHA1_32"]}),
                Some(Profile::RtpSavp),
                DtlsOption::Default,
                false,
                false,
            ),
            (
                json!({"flags": ["symmetric"]}),
                None,
                DtlsOption::Default,
                false,
                false,
            ),
        ];
        for (v, transport, dtls, sdes_off, webrtc) in cases {
            let (o, i) = crypto_options(&mut req(v.clone())).unwrap();
            assert_eq!(
                (o.transport, o.dtls, o.sdes.off, i.ice_force),
                (transport, dtls, sdes_off, webrtc),
                "{v}"
            );
        }
        let (o, _) =
            crypto_options(&mut req(json!({"SDES": ["no-AES_CM_128_HMAC_SHA1_32"]}))).unwrap();
        assert_eq!(o.sdes.no, ["AES_CM_128_HMAC_SHA1_32"]);
        assert!(
            is_crypto_flag("SDES-off")
                && is_crypto_flag("RTP/AVPF")
                && !is_crypto_flag("trust-address")
        );
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(crypto_options(&mut req(json!({"transport-protocol": "RTP/XYZ"}))).is_err());
        assert!(crypto_options(&mut req(json!({"DTLS": "sometimes"}))).is_err());
        let mut r = req(json!({"SDES": ["pad"]}));
        crypto_options(&mut r).unwrap();
        assert_eq!(r.unknown, ["SDES pad"]);
    }
}
