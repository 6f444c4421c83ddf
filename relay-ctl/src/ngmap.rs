//! rtpengine NG dictionary keys -> relay-core offer/answer options. rtpengine accepts keys with
//! dashes, spaces or underscores and lists or single strings for list-valued keys; so do we.
//! An `rtpp-flags` string ([`relay_core::rtpp_flags`]) is merged into the dictionary first, and
//! prefixed flags (`replace-origin`, `codec-strip-PCMA`) go to their lists, so every form a proxy
//! may send ends in the same options.

use std::net::IpAddr;

use relay_core::call_options::{All, DeleteOptions, MediaOptions, Tos};
use relay_core::codecs::CodecOptions;
use relay_core::rtpp_flags;
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
    /// rtpengine's own wording for a bad value.
    #[error("{0}")]
    Worded(&'static str),
    #[error("Failed to parse rtpp-flags: {0}")]
    RtppFlags(#[from] rtpp_flags::RtppFlagsError),
}

/// Flags (normalised) the relay acts on or accepts; any other is reported as unknown.
const KNOWN_FLAGS: &[&str] = &[
    "trust-address",
    "symmetric",
    "asymmetric",
    "strict-source",
    "media-handover",
    "port-latching",
    "sip-source-address",
    "loop-protect",
    "no-redis-update",
    "force",
    "always-transcode",
    "force-answer",
    "all",
    "to-tag",
    "fatal",
    "fast",
];

pub fn normalise(key: &str) -> String {
    key.to_ascii_lowercase().replace([' ', '_'], "-")
}

impl Request {
    pub fn new(raw: &Map<String, Value>) -> Request {
        let dict: Map<String, Value> = raw.iter().map(|(k, v)| (normalise(k), v.clone())).collect();
        Request {
            dict,
            unknown: Vec::new(),
        }
    }

    /// A request as it arrives: its `rtpp-flags` string merged in and prefixed flags expanded.
    /// A malformed flag string is an error and nothing of the request is used.
    pub fn parse(raw: &Map<String, Value>) -> Result<Request, OptionError> {
        let mut dict = raw.clone();
        let mut unknown = Vec::new();
        let key = dict.keys().find(|k| normalise(k) == "rtpp-flags").cloned();
        if let Some(key) = key {
            match dict.remove(&key) {
                Some(Value::String(s)) => {
                    let parsed = rtpp_flags::parse(&s)?;
                    unknown.extend(
                        parsed
                            .unknown
                            .into_iter()
                            .map(|k| format!("rtpp-flags key {k}")),
                    );
                    rtpp_flags::merge(&mut dict, parsed.dict);
                }
                Some(v) => {
                    return Err(OptionError::Invalid {
                        key: "rtpp-flags",
                        value: v.to_string(),
                    });
                }
                None => {}
            }
        }
        rtpp_flags::expand_flags(&mut dict);
        let mut r = Request::new(&dict);
        r.unknown = unknown;
        Ok(r)
    }

    /// Whether the `flags` list holds `flag` (normalised).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.list("flags").iter().any(|f| normalise(f) == flag)
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
        self.integer(key, serde_json::Number::as_u64)
    }

    /// A signed integer given as a number or a decimal string.
    fn signed(&self, key: &'static str) -> Result<Option<i64>, OptionError> {
        self.integer(key, serde_json::Number::as_i64)
    }

    /// An integer of type `T` given as a number (`from_number` says whether it fits) or a
    /// decimal string.
    fn integer<T: std::str::FromStr>(
        &self,
        key: &'static str,
        from_number: fn(&serde_json::Number) -> Option<T>,
    ) -> Result<Option<T>, OptionError> {
        let invalid = |value: String| OptionError::Invalid { key, value };
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => from_number(n)
                .map(Some)
                .ok_or_else(|| invalid(n.to_string())),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid(s.clone())),
            Some(v) => Err(invalid(v.to_string())),
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
                other if KNOWN_FLAGS.contains(&other) => {}
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

impl Request {
    /// A string key that, when present, must be a non-empty string.
    fn opt_str(&self, key: &'static str) -> Result<Option<String>, OptionError> {
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(v) => Err(OptionError::Invalid {
                key,
                value: v.to_string(),
            }),
        }
    }

    fn label(&self) -> Result<Option<String>, OptionError> {
        Ok(match self.opt_str("label")? {
            Some(l) => Some(l),
            None => self.opt_str("from-label")?,
        })
    }

    /// The `codec` dictionary; a list or string per operation.
    fn codecs(&mut self) -> Result<CodecOptions, OptionError> {
        let mut c = CodecOptions::default();
        let Some(v) = self.dict.get("codec").cloned() else {
            return Ok(c);
        };
        let Value::Object(ops) = v else {
            return Err(OptionError::Invalid {
                key: "codec",
                value: v.to_string(),
            });
        };
        for (op, val) in ops {
            let items: Vec<String> = match val {
                Value::String(s) => vec![s],
                Value::Array(a) => a
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s),
                        other => Err(OptionError::Invalid {
                            key: "codec",
                            value: other.to_string(),
                        }),
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(OptionError::Invalid {
                        key: "codec",
                        value: other.to_string(),
                    });
                }
            };
            match normalise(&op).as_str() {
                "strip" => c.strip.extend(items),
                "mask" | "consume" => c.mask.extend(items),
                "except" => c.except.extend(items),
                "offer" => c.offer.extend(items),
                "accept" => c.accept.extend(items),
                "transcode" => c.transcode.extend(items),
                other => self.unknown.push(format!("codec {other}")),
            }
        }
        Ok(c)
    }

    /// Options of `offer`/`answer` beyond the session's own ([`MediaOptions`]).
    pub fn media_options(&mut self) -> Result<MediaOptions, OptionError> {
        let media_address = match self.opt_str("media-address")? {
            None => None,
            Some(a) => Some(
                a.parse::<IpAddr>()
                    .map_err(|_| OptionError::Worded("Could not parse 'media-address'"))?,
            ),
        };
        let tos = match self.signed("tos")? {
            None => Tos::Default,
            Some(v) => Tos::from_int(v),
        };
        Ok(MediaOptions {
            label: self.label()?,
            via_branch: self.opt_str("via-branch")?,
            media_address,
            sip_source_address: self.has_flag("sip-source-address"),
            codecs: self.codecs()?,
            tos,
            loop_protect: self.has_flag("loop-protect"),
            always_transcode: self.has_flag("always-transcode"),
            no_redis_update: self.has_flag("no-redis-update"),
            force: self.has_flag("force"),
            force_answer: self.has_flag("force-answer"),
            supports_load_limit: self
                .list("supports")
                .iter()
                .any(|s| normalise(s) == "load-limit"),
        })
    }

    /// What `delete` (and `query`) select.
    pub fn delete_options(&mut self) -> Result<DeleteOptions, OptionError> {
        let all = match self.opt_str("all")?.as_deref().map(normalise).as_deref() {
            None if self.has_flag("all") => All::All,
            None | Some("none") => All::None,
            Some("all") => All::All,
            Some("offer-answer") => All::OfferAnswer,
            Some("not-offer-answer" | "non-offer-answer" | "except-offer-answer") => {
                All::NonOfferAnswer
            }
            Some("flows") => All::Flows,
            Some(v) => {
                return Err(OptionError::Invalid {
                    key: "all",
                    value: v.to_owned(),
                });
            }
        };
        Ok(DeleteOptions {
            from_tag: self.opt_str("from-tag")?,
            to_tag: self.opt_str("to-tag")?,
            from_tags: self.list("from-tags"),
            via_branch: self.opt_str("via-branch")?,
            label: self.label()?,
            all,
            delete_delay: self.int("delete-delay")?,
            fatal: self.has_flag("fatal"),
            fast: self.has_flag("fast"),
            to_tag_flag: self.has_flag("to-tag"),
        })
    }

    /// Keys of the request no part of the relay reads, for the caller to log once.
    pub fn unknown_keys(&self) -> Vec<String> {
        self.dict
            .keys()
            .filter(|k| !rtpp_flags::KNOWN_KEYS.contains(&k.as_str()))
            .map(|k| format!("key {k}"))
            .collect()
    }
}

#[cfg(test)]
#[path = "ngmap_tests.rs"]
mod tests;
