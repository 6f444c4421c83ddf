//! rtpengine options that act around the offer/answer state machine rather than inside it:
//! labels and Via branches that name monologues, media-address overrides, codec filtering, the
//! TOS byte of forwarded packets, loop protection, load-limit support, and what `delete` selects.
//! The NG mapping (relay-ctl's `ngmap`) fills these in; the daemon applies them.

use std::net::IpAddr;

use crate::codecs::CodecOptions;

/// rtpengine's `TOS` key: an integer; negative leaves the call's TOS as it was, absent or 256 and
/// more reverts to the default (the daemon's, none unless configured).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tos {
    #[default]
    Default,
    Keep,
    Set(u8),
}

impl Tos {
    pub fn from_int(v: i64) -> Tos {
        match v {
            i64::MIN..=-1 => Tos::Keep,
            0..=255 => Tos::Set(v as u8),
            _ => Tos::Default,
        }
    }

    /// The TOS for the call after this request, given the one it had.
    pub fn resolve(self, previous: Option<u8>, default: Option<u8>) -> Option<u8> {
        match self {
            Tos::Default => default,
            Tos::Keep => previous.or(default),
            Tos::Set(v) => Some(v),
        }
    }
}

/// The DSCP (upper six bits) of a TOS byte, as metrics and `query` show it.
pub fn dscp(tos: u8) -> u8 {
    tos >> 2
}

/// Options of `offer` and `answer` beyond [`crate::session::OfferOptions`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaOptions {
    /// `label` / `from-label`: a name for the sending participant, kept with its monologue.
    pub label: Option<String>,
    /// `via-branch`: the SIP Via branch, naming the fork an answer (or re-offer) belongs to.
    pub via_branch: Option<String>,
    /// `media address`: the endpoint's media address, overriding SDP and `received from`.
    pub media_address: Option<IpAddr>,
    /// `SIP source address`: the SIP source (`received from`) is the media address.
    pub sip_source_address: bool,
    pub codecs: CodecOptions,
    pub tos: Tos,
    /// `loop protect`: mark outgoing SDP and pass marked SDP through untouched.
    pub loop_protect: bool,
    /// `always transcode`: needs transcoding; refused (a warning in the reply).
    pub always_transcode: bool,
    /// `no-redis-update`: accepted; nothing to skip until state lives in Redis.
    pub no_redis_update: bool,
    /// `force` (Kamailio: ignore another proxy's marks): accepted and ignored, as rtpengine does.
    pub force: bool,
    /// `force-answer`: handle an `offer` that carries a to-tag as the answer of that to-tag
    /// (Kamailio's module does this itself; the daemon does it if the flag reaches it).
    pub force_answer: bool,
    /// `supports: ["load limit"]`.
    pub supports_load_limit: bool,
}

impl MediaOptions {
    /// The address the endpoint's media comes from instead of the SDP's, if any:
    /// `media address` first, then `SIP source address` with `received from`.
    pub fn endpoint_override(&self, received_from: Option<IpAddr>) -> Option<IpAddr> {
        self.media_address
            .or(received_from.filter(|_| self.sip_source_address))
    }
}

/// rtpengine's `all` key (or flag) on `delete`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum All {
    #[default]
    None,
    All,
    OfferAnswer,
    NonOfferAnswer,
    Flows,
}

/// What a `delete` selects and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
    /// `from-tags`: several participants at once.
    pub from_tags: Vec<String>,
    pub via_branch: Option<String>,
    /// `label`: the participant with this label.
    pub label: Option<String>,
    pub all: All,
    /// `delete delay` in seconds; None: the daemon's default.
    pub delete_delay: Option<u64>,
    pub fatal: bool,
    /// `fast`: no statistics in the reply.
    pub fast: bool,
    /// The `to-tag` flag: honour the to-tag (rtpengine's wording; we always do when given).
    pub to_tag_flag: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tos_follows_rtpengine() {
        assert_eq!(Tos::from_int(-1), Tos::Keep);
        assert_eq!(Tos::from_int(184), Tos::Set(184));
        assert_eq!(Tos::from_int(256), Tos::Default);
        assert_eq!(Tos::Keep.resolve(Some(46), None), Some(46));
        assert_eq!(Tos::Default.resolve(Some(46), None), None);
        assert_eq!(Tos::Set(0).resolve(Some(46), Some(184)), Some(0));
        assert_eq!(dscp(184), 46);
    }

    #[test]
    fn media_address_beats_sip_source() {
        let rf = Some("192.0.2.1".parse().unwrap());
        let mut o = MediaOptions::default();
        assert_eq!(o.endpoint_override(rf), None);
        o.sip_source_address = true;
        assert_eq!(o.endpoint_override(rf), rf);
        o.media_address = Some("198.51.100.2".parse().unwrap());
        assert_eq!(o.endpoint_override(rf), o.media_address);
    }
}
