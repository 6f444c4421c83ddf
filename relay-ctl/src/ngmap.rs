//! rtpengine NG dictionary keys -> relay-core offer/answer options. rtpengine accepts keys with
//! dashes, spaces or underscores and lists or single strings for list-valued keys; so do we.

use std::net::IpAddr;

use relay_core::session::{
    AddressFamily, AnswerOptions, Flags, IceOption, OfferOptions, Replace, RtcpMuxOption,
};
use serde_json::{Map, Value};

/// A request dictionary with normalised keys (lower case, `-` for space and `_`).
pub struct Request {
    dict: Map<String, Value>,
    /// Options we do not know, reported once per name by the caller.
    pub unknown: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("No {0} in message")]
    Missing(&'static str),
    #[error("Invalid value for '{key}': {value}")]
    Invalid { key: &'static str, value: String },
}

pub fn normalise(key: &str) -> String {
    key.to_ascii_lowercase().replace([' ', '_'], "-")
}

impl Request {
    pub fn new(raw: &Map<String, Value>) -> Request {
        let mut dict: Map<String, Value> =
            raw.iter().map(|(k, v)| (normalise(k), v.clone())).collect();
        if let Some(Value::String(f)) = dict.remove("rtpp-flags") {
            expand_rtpp_flags(&mut dict, &f);
        }
        Request {
            dict,
            unknown: Vec::new(),
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.dict.get(key).and_then(Value::as_str)
    }

    pub fn required(&self, key: &'static str) -> Result<&str, OptionError> {
        self.str(key)
            .filter(|s| !s.is_empty())
            .ok_or(OptionError::Missing(key))
    }

    /// A list-valued key given as a list of strings or as one string.
    pub fn list(&self, key: &str) -> Vec<String> {
        match self.dict.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    /// An integer given as a number or a decimal string (both occur in the wild).
    pub fn int(&self, key: &'static str) -> Result<Option<u64>, OptionError> {
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| OptionError::Invalid {
                key,
                value: n.to_string(),
            }),
            Some(Value::String(s)) => {
                s.trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| OptionError::Invalid {
                        key,
                        value: s.clone(),
                    })
            }
            Some(v) => Err(OptionError::Invalid {
                key,
                value: v.to_string(),
            }),
        }
    }

    fn flags(&mut self) -> Flags {
        let mut f = Flags::default();
        for flag in self.list("flags") {
            if crate::ngcrypto::is_crypto_flag(&flag) {
                continue;
            }
            match normalise(&flag).as_str() {
                "trust-address" => f.trust_address = true,
                "symmetric" => f.symmetric = true,
                "asymmetric" => f.asymmetric = true,
                "strict-source" => f.strict_source = true,
                "media-handover" => f.media_handover = true,
                "port-latching" => f.port_latching = true,
                other => self.unknown.push(format!("flag {other}")),
            }
        }
        f
    }

    fn replace(&mut self) -> Replace {
        let mut r = Replace::default();
        for item in self.list("replace") {
            match normalise(&item).as_str() {
                "origin" => r.origin = true,
                "session-connection" => r.session_connection = true,
                other => self.unknown.push(format!("replace {other}")),
            }
        }
        r
    }

    fn received_from(&self) -> Result<Option<IpAddr>, OptionError> {
        let l = self.list("received-from");
        match l.as_slice() {
            [] => Ok(None),
            [_, addr] | [addr] => addr.parse().map(Some).map_err(|_| OptionError::Invalid {
                key: "received from",
                value: addr.clone(),
            }),
            _ => Err(OptionError::Invalid {
                key: "received from",
                value: l.join(" "),
            }),
        }
    }

    /// The `ICE` key; None when absent.
    fn ice(&self) -> Result<Option<IceOption>, OptionError> {
        Ok(Some(match self.str("ice").map(normalise).as_deref() {
            None => return Ok(None),
            Some("default") => IceOption::Default,
            Some("remove") => IceOption::Remove,
            Some("force") => IceOption::Force,
            Some("optional") => IceOption::Optional,
            Some("force-relay") => IceOption::ForceRelay,
            Some(v) => {
                return Err(OptionError::Invalid {
                    key: "ICE",
                    value: v.to_owned(),
                });
            }
        }))
    }

    pub fn offer_options(&mut self) -> Result<OfferOptions, OptionError> {
        let ice = self.ice()?.unwrap_or_default();
        // Several rtcp-mux items may be given: `offer` with `reject` is a combination of its
        // own (rtpengine's opposite of `demux`); otherwise the last one we know wins.
        let mut rtcp_mux = RtcpMuxOption::None;
        let (mut offer, mut reject) = (false, false);
        for item in self.list("rtcp-mux") {
            rtcp_mux = match normalise(&item).as_str() {
                "offer" => {
                    offer = true;
                    RtcpMuxOption::Offer
                }
                "demux" => RtcpMuxOption::Demux,
                "accept" => RtcpMuxOption::Accept,
                "reject" => {
                    reject = true;
                    RtcpMuxOption::Reject
                }
                "require" => RtcpMuxOption::Require,
                other => {
                    self.unknown.push(format!("rtcp-mux {other}"));
                    rtcp_mux
                }
            };
        }
        if offer && reject {
            rtcp_mux = RtcpMuxOption::OfferReject;
        }
        let direction = match self.list("direction").as_slice() {
            [] => None,
            [a, b] => Some((a.clone(), b.clone())),
            other => {
                return Err(OptionError::Invalid {
                    key: "direction",
                    value: other.join(" "),
                });
            }
        };
        let address_family = match self.str("address-family") {
            None => None,
            Some("IP4") => Some(AddressFamily::Ip4),
            Some("IP6") => Some(AddressFamily::Ip6),
            Some(v) => {
                return Err(OptionError::Invalid {
                    key: "address family",
                    value: v.to_owned(),
                });
            }
        };
        Ok(OfferOptions {
            ice,
            rtcp_mux,
            flags: self.flags(),
            replace: self.replace(),
            direction,
            address_family,
            received_from: self.received_from()?,
            source_mismatch: None,
        })
    }

    pub fn answer_options(&mut self) -> Result<AnswerOptions, OptionError> {
        Ok(AnswerOptions {
            ice: self.ice()?,
            flags: self.flags(),
            replace: self.replace(),
            received_from: self.received_from()?,
            source_mismatch: None,
        })
    }
}

/// rtpengine's `rtpp_flags` string (what Kamailio sends with `rtpp_flags` set): `key=value`
/// items become keys (list keys such as `rtcp-mux`, `SDES`, `replace` collect), `rtcp-mux-X`
/// and `replace-X` go to their lists, anything else is a `flags` item. Explicit keys win.
fn expand_rtpp_flags(dict: &mut Map<String, Value>, flags: &str) {
    const LISTS: &[&str] = &["rtcp-mux", "sdes", "replace", "direction", "received-from"];
    let push = |dict: &mut Map<String, Value>, key: &str, v: &str| {
        let entry = dict
            .entry(key.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        match entry {
            Value::Array(a) => a.push(Value::String(v.to_owned())),
            Value::String(s) => {
                *entry = Value::Array(vec![
                    Value::String(std::mem::take(s)),
                    Value::String(v.to_owned()),
                ])
            }
            _ => {}
        }
    };
    for token in flags.split_ascii_whitespace() {
        if let Some((k, v)) = token.split_once('=') {
            let k = normalise(k);
            if LISTS.contains(&k.as_str()) {
                push(dict, &k, v);
            } else {
                dict.entry(k).or_insert_with(|| Value::String(v.to_owned()));
            }
        } else if let Some(v) = token.strip_prefix("rtcp-mux-") {
            push(dict, "rtcp-mux", v);
        } else if let Some(v) = token.strip_prefix("replace-") {
            push(dict, "replace", v);
        } else {
            push(dict, "flags", token);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req(v: Value) -> Request {
        Request::new(v.as_object().unwrap())
    }

    #[test]
    fn offer_options_from_rtpengine_keys() {
        let mut r = req(json!({
            "call-id": "c", "ICE": "force", "rtcp-mux": ["demux"], "flags": ["trust-address", "symmetric", "loop-protect"],
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
        assert_eq!(r.unknown, vec!["flag loop-protect".to_owned()]);
        assert_eq!(r.required("call-id"), Ok("c"));
        assert_eq!(
            r.required("from-tag"),
            Err(OptionError::Missing("from-tag"))
        );
    }

    #[test]
    fn single_strings_and_underscored_keys_are_accepted() {
        let mut r =
            req(json!({"rtcp_mux": "require", "flags": "strict-source", "delete delay": "30"}));
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
    fn rtpp_flags_string_expands_to_keys_lists_and_flags() {
        let mut r = req(
            json!({"rtpp_flags": "ICE=force DTLS=passive RTP/SAVPF rtcp-mux-offer SDES-off replace-origin trust-address"}),
        );
        let o = r.offer_options().unwrap();
        assert_eq!(o.ice, IceOption::Force);
        assert_eq!(o.rtcp_mux, RtcpMuxOption::Offer);
        assert!(o.replace.origin && o.flags.trust_address);
        assert!(r.unknown.is_empty(), "{:?}", r.unknown);
        assert_eq!(r.str("dtls"), Some("passive"));
        assert_eq!(r.list("flags"), ["RTP/SAVPF", "SDES-off", "trust-address"]);
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
}
