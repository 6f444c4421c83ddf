//! Tests of the NG option mapping (a file of their own to keep ngmap.rs short).
use serde_json::json;

use super::*;

fn req(v: Value) -> Request {
    Request::new(v.as_object().unwrap())
}

#[test]
fn offer_options_from_rtpengine_keys() {
    let mut r = req(json!({
        "call-id": "c", "ICE": "force", "rtcp-mux": ["demux"], "flags": ["trust-address", "symmetric", "pierce-NAT"],
        "replace": ["origin", "session connection"], "direction": ["int", "ext"],
        "address family": "IP6", "received from": ["IP4", "192.0.2.9"],
    }));
    let o = r.offer_options().unwrap();
    assert_eq!(o.ice, IceOption::Force);
    assert_eq!(o.rtcp_mux, RtcpMuxOption::Demux);
    assert!(o.flags.trust_address && o.flags.symmetric && !o.flags.strict_source);
    assert!(o.replace.origin && o.replace.session_connection);
    assert_eq!(o.direction, Some(("int".into(), "ext".into())));
    assert_eq!(o.address_family, Some(AddressFamily::Ip6));
    assert_eq!(o.received_from, Some("192.0.2.9".parse().unwrap()));
    assert_eq!(r.unknown, vec!["flag pierce-nat".to_owned()]);
    assert_eq!(r.required("call-id"), Ok("c"));
    assert_eq!(
        r.required("from-tag"),
        Err(OptionError::Missing("from-tag"))
    );
}

#[test]
fn single_strings_and_underscored_keys_are_accepted() {
    let mut r = req(json!({"rtcp_mux": "require", "flags": "strict-source", "delete delay": "30"}));
    let o = r.offer_options().unwrap();
    assert_eq!(o.rtcp_mux, RtcpMuxOption::Require);
    let both = req(json!({"rtcp-mux": ["reject", "offer"]}))
        .offer_options()
        .unwrap();
    assert_eq!(both.rtcp_mux, RtcpMuxOption::OfferReject);
    assert!(o.flags.strict_source);
    assert_eq!(r.int("delete-delay"), Ok(Some(30)));
}

#[test]
fn ice_in_the_answer_is_read_and_absent_means_none() {
    let a = req(json!({"ICE": "force"})).answer_options().unwrap();
    assert_eq!(a.ice, Some(IceOption::Force));
    assert_eq!(req(json!({})).answer_options().unwrap().ice, None);
    assert!(req(json!({"ICE": "never"})).answer_options().is_err());
}

#[test]
fn bad_values_are_errors_not_defaults() {
    for bad in [
        json!({"ICE": "sometimes"}),
        json!({"direction": ["only-one"]}),
        json!({"address family": "IPX"}),
        json!({"received from": ["IP4", "not-an-ip"]}),
    ] {
        assert!(req(bad.clone()).offer_options().is_err(), "{bad} accepted");
    }
    assert!(
        req(json!({"delete delay": "soon"}))
            .int("delete-delay")
            .is_err()
    );
    assert!(
        req(json!({"delete delay": -3}))
            .int("delete-delay")
            .is_err()
    );
}

/// The table of the issue: each rtpp-flags string and the dictionary Kamailio's module builds
/// from the same flags give identical options.
#[test]
fn rtpp_flags_and_dictionary_forms_give_identical_options() {
    let table = [
        (
            "replace-origin via-branch=auto-next strict-source label=callee OSRTP-accept \
             transport-protocol=RTP/AVP address-family=IP4 codec=[strip=[PCMA] mask=[G722]]",
            json!({"replace": ["origin"], "flags": ["strict-source", "OSRTP-accept"], "label": "callee",
                   "transport-protocol": "RTP/AVP", "address-family": "IP4",
                   "codec": {"strip": ["PCMA"], "mask": ["G722"]}}),
        ),
        (
            "replace-origin replace-session-connection ICE=remove RTP/AVP SIP-source-address \
             label=caller codec-strip=PCMA codec-except-PCMU loop-protect TOS=184",
            json!({"replace": ["origin", "session-connection"], "ICE": "remove",
                   "transport-protocol": "RTP/AVP", "flags": ["SIP-source-address", "loop-protect"],
                   "label": "caller", "codec": {"strip": ["PCMA"], "except": ["PCMU"]}, "TOS": 184}),
        ),
        (
            "trust-address rtcp-mux-demux direction=internal direction=external media-address=192.0.2.7 \
             no-redis-update force always-transcode",
            json!({"flags": ["trust-address", "no-redis-update", "force", "always-transcode"],
                   "rtcp-mux": ["demux"], "direction": ["internal", "external"],
                   "media address": "192.0.2.7"}),
        ),
    ];
    for (flags, dict) in table {
        let base = json!({"command": "offer", "call-id": "c", "from-tag": "f",
                          "received-from": ["IP4", "192.0.2.1"], "via-branch": "z9hG4bK1"});
        let mut a = base.as_object().unwrap().clone();
        a.insert("rtpp-flags".into(), Value::String(flags.into()));
        let mut b = base.as_object().unwrap().clone();
        b.extend(dict.as_object().unwrap().clone());
        let (mut a, mut b) = (Request::parse(&a).unwrap(), Request::parse(&b).unwrap());
        assert_eq!(a.offer_options(), b.offer_options(), "{flags}");
        assert_eq!(a.media_options(), b.media_options(), "{flags}");
        assert_eq!(a.delete_options(), b.delete_options(), "{flags}");
        assert_eq!(a.unknown, b.unknown, "{flags}");
        assert_eq!(
            a.media_options().unwrap().via_branch.as_deref(),
            Some("z9hG4bK1")
        );
    }
}

#[test]
fn media_options_from_the_issue_list() {
    let mut r = Request::parse(
        json!({"flags": ["SIP-source-address", "loop-protect", "always-transcode", "codec-strip-PCMA"],
               "label": "caller", "via-branch": "b1", "media address": "2001:db8::1", "TOS": "-1",
               "codec": {"offer": "PCMU", "accept": ["opus"]}, "supports": ["load limit"]})
        .as_object()
        .unwrap(),
    )
    .unwrap();
    let m = r.media_options().unwrap();
    assert_eq!(m.label.as_deref(), Some("caller"));
    assert_eq!(m.via_branch.as_deref(), Some("b1"));
    assert_eq!(m.media_address, Some("2001:db8::1".parse().unwrap()));
    assert!(m.sip_source_address && m.loop_protect && m.always_transcode && m.supports_load_limit);
    assert_eq!(m.tos, Tos::Keep);
    assert_eq!(m.codecs.strip, vec!["PCMA".to_owned()]);
    assert_eq!(m.codecs.offer, vec!["PCMU".to_owned()]);
    assert_eq!(m.codecs.accept, vec!["opus".to_owned()]);
    r.offer_options().unwrap();
    assert!(r.unknown.is_empty(), "{:?}", r.unknown);
    assert!(r.unknown_keys().is_empty(), "{:?}", r.unknown_keys());
}

#[test]
fn delete_options_and_bad_values() {
    let d = Request::parse(
        json!({"call-id": "c", "from-tags": ["a", "b"], "flags": ["all", "fatal", "to-tag"],
               "delete delay": 5, "label": "callee"})
        .as_object()
        .unwrap(),
    )
    .unwrap()
    .delete_options()
    .unwrap();
    assert_eq!(d.from_tags, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(d.all, All::All);
    assert!(d.fatal && d.to_tag_flag && !d.fast);
    assert_eq!(d.delete_delay, Some(5));
    assert_eq!(d.label.as_deref(), Some("callee"));
    let bad = |v: Value| Request::parse(v.as_object().unwrap());
    assert!(matches!(
        bad(json!({"rtpp-flags": "codec=[strip=[PCMA]"})),
        Err(OptionError::RtppFlags(_))
    ));
    assert_eq!(
        bad(json!({"media address": "nowhere"}))
            .unwrap()
            .media_options()
            .err()
            .map(|e| e.to_string()),
        Some("Could not parse 'media-address'".to_owned())
    );
    for v in [
        json!({"TOS": "high"}),
        json!({"codec": "PCMA"}),
        json!({"label": 5}),
        json!({"codec": {"strip": [1]}}),
    ] {
        assert!(bad(v.clone()).unwrap().media_options().is_err(), "{v}");
    }
    assert!(
        bad(json!({"all": "some"}))
            .unwrap()
            .delete_options()
            .is_err()
    );
}

#[test]
fn unknown_flags_and_keys_are_reported() {
    let mut r = Request::parse(
        json!({"rtpp-flags": "frob=1 OSRTP-accept", "flags": ["no-such-flag"], "weird key": 1})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    r.offer_options().unwrap();
    assert_eq!(
        r.unknown,
        vec![
            "rtpp-flags key frob".to_owned(),
            "flag no-such-flag".to_owned()
        ]
    );
    assert_eq!(r.unknown_keys(), vec!["key weird-key".to_owned()]);
}
