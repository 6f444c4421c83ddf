//! Per-leg SRTP decisions of a call and the SDP they produce: which leg the relay terminates
//! (SDES or DTLS-SRTP), with which suites and keys, and the m= profile each leg sees.
//!
//! Options follow rtpengine's NG protocol: the options of an `offer` shape the answerer's leg
//! (the one the rewritten offer goes to), those of an `answer` shape the offerer's leg.
//! - `transport-protocol` (or a bare `RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`, `RTP/SAVPF`,
//!   `UDP/TLS/RTP/SAVP`, `UDP/TLS/RTP/SAVPF` flag): the profile of the recipient's leg. Plain on one
//!   side and SRTP on the other makes the relay terminate SRTP on the secure leg. Same-security
//!   changes (AVP <-> AVPF) only rewrite the m= line. In an answer the offerer gets the profile it
//!   offered (rtpengine's default; `accept` is not implemented).
//! - `DTLS=off|no|disable` never offers or accepts DTLS-SRTP on that leg; `passive` / `active`
//!   choose the relay's DTLS role (`a=setup`); by default the relay offers `actpass` and answers
//!   `active` to an `actpass` offer, as rtpengine does.
//! - `SDES-off` (`SDES=off|no|disable`) never offers or accepts SDES; `SDES-no-<SUITE>` leaves a
//!   suite out; `SDES-only-<SUITE>` offers only the named suites. By default SDES is offered next to
//!   DTLS whenever the relay offers SRTP.
//! - `OSRTP` (RFC 8643; `OSRTP-offer`, `OSRTP-accept`): opportunistic SRTP, SDES in a plain
//!   RTP/AVP(F) m= line. By default an OSRTP offer passes through. `offer` turns an offer that
//!   goes out plain into an OSRTP one with the relay's a=crypto: if the answerer accepts, the
//!   relay terminates its SRTP, else the call stays plain (and in the fast path). `accept`, in an
//!   answer that declines an OSRTP offer, accepts it anyway with the relay's a=crypto. The
//!   legacy (duplicated m= line) forms are not implemented.
//! - `WebRTC`: `UDP/TLS/RTP/SAVPF`, `ICE=force`, `rtcp-mux-offer`, `rtcp-mux-require`, `SDES-off`
//!   (rtpengine's shortcut; `trickle-ICE`, `no-rtcp-attribute` and `generate-mid` are not
//!   implemented).
//!
//! A leg the relay does not terminate passes its `a=crypto` / `a=fingerprint` / `a=setup` lines
//! through unchanged: SRTP stays end to end and the fast path forwards it.

use std::fmt;

use thiserror::Error;

use crate::sdp::{Line, LineEnding};
use crate::srtp_sdp::{CryptoAttr, CryptoError, Fingerprint, Profile, Setup, SrtpSuite};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SessionCryptoError {
    #[error(transparent)]
    Attr(#[from] CryptoError),
    #[error("bad value `{value}` for {key}")]
    Option { key: &'static str, value: String },
    #[error("m= line {0}: SRTP offered but no a=crypto or a=fingerprint the relay can use")]
    NoUsableCrypto(usize),
    #[error("m= line {0}: the answer accepts none of the SRTP the relay offered")]
    AnswerCrypto(usize),
}

/// rtpengine's `DTLS` key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DtlsOption {
    #[default]
    Default,
    Passive,
    Active,
    Off,
}

/// rtpengine's `SDES` list.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SdesOptions {
    pub off: bool,
    /// `only-<SUITE>`: if non-empty, the only suites offered or accepted.
    pub only: Vec<String>,
    /// `no-<SUITE>`: suites never offered or accepted.
    pub no: Vec<String>,
}

impl SdesOptions {
    pub fn allows(&self, suite: SrtpSuite) -> bool {
        let name = suite.sdes_name();
        let has = |l: &[String]| l.iter().any(|s| s.eq_ignore_ascii_case(name));
        !self.off && (self.only.is_empty() || has(&self.only)) && !has(&self.no)
    }
}

/// What a `WebRTC` flag implies outside crypto; the NG layer applies it to ICE and rtcp-mux.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Implied {
    pub ice_force: bool,
    pub rtcp_mux_offer: bool,
    pub rtcp_mux_require: bool,
}

/// rtpengine's `OSRTP` list (RFC 8643).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OsrtpOptions {
    /// `offer` / `offer-RFC`: a plain offer goes out as an OSRTP offer.
    pub offer: bool,
    /// `accept` / `accept-RFC`: a declined OSRTP offer is accepted by the relay.
    pub accept: bool,
}

/// The crypto-related NG options of one offer or answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CryptoOptions {
    /// `transport-protocol`: the recipient leg's profile.
    pub transport: Option<Profile>,
    pub dtls: DtlsOption,
    pub sdes: SdesOptions,
    #[serde(default)]
    pub osrtp: OsrtpOptions,
}

impl CryptoOptions {
    /// `transport-protocol` value.
    pub fn set_transport(&mut self, v: &str) -> Result<(), SessionCryptoError> {
        self.transport = Some(v.trim().parse().map_err(|_| SessionCryptoError::Option {
            key: "transport-protocol",
            value: v.to_owned(),
        })?);
        Ok(())
    }

    /// `DTLS` value.
    pub fn set_dtls(&mut self, v: &str) -> Result<(), SessionCryptoError> {
        self.dtls = match v.trim().to_ascii_lowercase().as_str() {
            "off" | "no" | "disable" => DtlsOption::Off,
            "passive" => DtlsOption::Passive,
            "active" => DtlsOption::Active,
            _ => {
                return Err(SessionCryptoError::Option {
                    key: "DTLS",
                    value: v.to_owned(),
                });
            }
        };
        Ok(())
    }

    /// One `SDES` list item (without the `SDES-` prefix); false if unknown.
    pub fn add_sdes(&mut self, item: &str) -> bool {
        let lower = item.to_ascii_lowercase();
        match lower.as_str() {
            "off" | "no" | "disable" => self.sdes.off = true,
            _ if lower.starts_with("no-") => self.sdes.no.push(item[3..].to_owned()),
            _ if lower.starts_with("only-") => self.sdes.only.push(item[5..].to_owned()),
            _ => return false,
        }
        true
    }

    /// One `OSRTP` list item (without the `OSRTP-` prefix); false if unknown (the legacy
    /// forms included: they are not implemented).
    pub fn add_osrtp(&mut self, item: &str) -> bool {
        match item.to_ascii_lowercase().as_str() {
            "offer" | "offer-rfc" => self.osrtp.offer = true,
            "accept" | "accept-rfc" => self.osrtp.accept = true,
            _ => return false,
        }
        true
    }

    /// One item of the NG `flags` list. None if the flag is not a crypto flag.
    pub fn apply_flag(&mut self, flag: &str) -> Option<Implied> {
        if let Ok(p) = flag.parse::<Profile>() {
            self.transport = Some(p);
            return Some(Implied::default());
        }
        let lower = flag.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("sdes-") {
            return self
                .add_sdes(&flag[flag.len() - rest.len()..])
                .then(Implied::default);
        }
        if let Some(rest) = lower.strip_prefix("osrtp-") {
            return self.add_osrtp(rest).then(Implied::default);
        }
        if let Some(v) = lower
            .strip_prefix("dtls=")
            .or_else(|| lower.strip_prefix("dtls-"))
        {
            return self.set_dtls(v).ok().map(|()| Implied::default());
        }
        if lower == "webrtc" {
            self.transport = Some(Profile::UdpTlsRtpSavpf);
            self.sdes.off = true;
            return Some(Implied {
                ice_force: true,
                rtcp_mux_offer: true,
                rtcp_mux_require: true,
            });
        }
        None
    }
}

/// The SRTP attributes of one m= section (media level, session level as fallback).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SectionCrypto {
    /// None for a profile the relay does not bridge (passed through as is).
    pub profile: Option<Profile>,
    pub cryptos: Vec<CryptoAttr>,
    pub fingerprint: Option<Fingerprint>,
    pub setup: Option<Setup>,
}

/// Keying of a leg as signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keying {
    Plain,
    Sdes,
    Dtls,
    /// Both offered (RTP/SAVP with a=crypto and a=fingerprint).
    Both,
}

impl SectionCrypto {
    /// Reads a section; any malformed crypto attribute is an error (nothing is changed).
    pub fn read(session: &[Line], section: &[Line]) -> Result<SectionCrypto, SessionCryptoError> {
        let mut c = SectionCrypto::default();
        if let Some(m) = section.first() {
            c.profile = m.value().split(' ').nth(2).and_then(|p| p.parse().ok());
        }
        for (level, lines) in [(0, session), (1, section)] {
            for l in lines {
                match l.attr() {
                    Some(("crypto", Some(v))) if level == 1 => {
                        c.cryptos.push(CryptoAttr::parse(v)?);
                    }
                    // Several hashes of one certificate may be listed (RFC 8122 s.5); the
                    // first is kept, each is checked for syntax.
                    Some(("fingerprint", Some(v))) => {
                        let f = Fingerprint::parse(v)?;
                        if level == 1 || c.fingerprint.is_none() {
                            c.fingerprint.get_or_insert(f);
                        }
                    }
                    Some(("setup", Some(v))) => c.setup = Some(v.parse()?),
                    _ => {}
                }
            }
        }
        Ok(c)
    }

    fn keying(&self) -> Keying {
        match self.profile {
            None => Keying::Plain,
            Some(p) if !p.is_secure() => Keying::Plain,
            Some(p) if p.is_dtls() => Keying::Dtls,
            Some(_) => match (self.cryptos.is_empty(), self.fingerprint.is_some()) {
                (false, true) => Keying::Both,
                (false, false) => Keying::Sdes,
                (true, _) => Keying::Dtls,
            },
        }
    }
}

/// The relay's SRTP role on one leg of a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LegCrypto {
    /// The relay does not touch this leg's media: plain RTP, or SRTP end to end.
    #[default]
    None,
    /// SDES: the relay protects with `local` (its a=crypto) and unprotects with `remote`.
    Sdes {
        suite: SrtpSuite,
        tag: u32,
        local: Vec<u8>,
        remote: Vec<u8>,
    },
    /// DTLS-SRTP: the relay runs a handshake in `setup` role with a peer showing `remote`.
    Dtls { setup: Setup, remote: Fingerprint },
}

impl LegCrypto {
    pub fn terminated(&self) -> bool {
        !matches!(self, LegCrypto::None)
    }

    fn label(&self) -> &'static str {
        match self {
            LegCrypto::None => "RTP",
            LegCrypto::Sdes { .. } => "SDES-SRTP",
            LegCrypto::Dtls { .. } => "DTLS-SRTP",
        }
    }
}

/// What the relay offered toward the answerer, kept until the answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// The offerer's SRTP, to be answered by the relay (None: passed through or plain).
    pub offerer: Option<SectionCrypto>,
    /// The relay's a=crypto lines toward the answerer (keys it will protect with).
    pub sdes: Vec<CryptoAttr>,
    /// The relay's a=setup toward the answerer, if it offered DTLS.
    pub dtls: Option<Setup>,
    pub terminate_answerer: bool,
}

/// SRTP state of one stream (m= line): index 0 is the offerer's leg, 1 the answerer's.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamCrypto {
    /// The profile the offerer used (what it gets back in the answer).
    pub offer_profile: Option<Profile>,
    pub legs: [LegCrypto; 2],
    pub pending: Option<Pending>,
    /// An OSRTP offer (a=crypto in a plain profile) passed through: `OSRTP-accept` in the
    /// answer may still take it up.
    #[serde(default)]
    pub osrtp_offer: Option<SectionCrypto>,
}

impl StreamCrypto {
    /// Media needs the daemon (SRTP on at least one leg is the relay's).
    pub fn converts(&self) -> bool {
        self.legs.iter().any(LegCrypto::terminated)
            || self
                .pending
                .as_ref()
                .is_some_and(|p| p.offerer.is_some() || p.terminate_answerer)
    }

    /// "DTLS-SRTP<->RTP" etc., offerer's leg first; None when the fast path can carry it.
    pub fn describe(&self) -> Option<String> {
        self.legs
            .iter()
            .any(LegCrypto::terminated)
            .then(|| format!("{}<->{}", self.legs[0].label(), self.legs[1].label()))
    }
}

impl fmt::Display for StreamCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.describe() {
            Some(d) => write!(f, "crypto: {d}"),
            None => f.write_str("no crypto conversion"),
        }
    }
}

/// Fresh master key || salt of `len` bytes.
pub type KeyGen<'a> = &'a mut dyn FnMut(usize) -> Vec<u8>;

fn is_crypto_attr(l: &Line) -> bool {
    ["crypto", "fingerprint", "setup", "tls-id"]
        .iter()
        .any(|a| l.is_attr(a))
}

/// Removes session-level fingerprint/setup (call when any stream's SRTP is terminated).
pub fn strip_session(session: &mut Vec<Line>) {
    session.retain(|l| !is_crypto_attr(l));
}

fn set_profile(section: &mut [Line], p: Profile) {
    if let Some(m) = section.first_mut() {
        let parts: Vec<&str> = m.value().splitn(4, ' ').collect();
        if parts.len() >= 3 {
            let mut v = format!("m={} {} {}", parts[0], parts[1], p.as_str());
            if let Some(rest) = parts.get(3) {
                v.push(' ');
                v.push_str(rest);
            }
            m.text = v;
        }
    }
}

fn push(section: &mut Vec<Line>, eol: LineEnding, text: String) {
    // Keep a last line without terminator last.
    let at = if section.last().is_some_and(|l| l.ending == LineEnding::None) {
        section.len() - 1
    } else {
        section.len()
    };
    section.insert(at, Line::new(text, eol));
}

/// Rewrites the offerer's section `index` for the answerer and returns the stream's SRTP state.
#[allow(clippy::too_many_arguments)]
pub fn offer(
    index: usize,
    session: &[Line],
    section: &mut Vec<Line>,
    eol: LineEnding,
    opts: &CryptoOptions,
    relay: &Fingerprint,
    keys: KeyGen<'_>,
) -> Result<StreamCrypto, SessionCryptoError> {
    let a = SectionCrypto::read(session, section)?;
    let Some(a_profile) = a.profile else {
        return Ok(StreamCrypto::default());
    };
    let a_keying = a.keying();
    let out = opts.transport.unwrap_or(a_profile);
    let dtls_ok = opts.dtls != DtlsOption::Off;
    let sdes_suites: Vec<SrtpSuite> = SrtpSuite::ALL
        .into_iter()
        .filter(|s| opts.sdes.allows(*s))
        .collect();
    let sdes_ok = !sdes_suites.is_empty() && !out.is_dtls();
    // An offer that is OSRTP already passes as it is.
    let is_osrtp = a_keying == Keying::Plain && !a.cryptos.is_empty();
    let osrtp_offer = opts.osrtp.offer && !out.is_secure() && sdes_ok && !is_osrtp;
    let passthrough = match (a_keying, out.is_secure()) {
        (Keying::Plain, false) => !osrtp_offer,
        (Keying::Plain, true) | (_, false) => false,
        (Keying::Sdes, true) => sdes_ok && opts.transport.is_none_or(|p| !p.is_dtls()),
        (Keying::Dtls, true) => dtls_ok,
        (Keying::Both, true) => dtls_ok || sdes_ok,
    };
    let mut st = StreamCrypto {
        offer_profile: Some(a_profile),
        ..StreamCrypto::default()
    };
    if passthrough {
        set_profile(section, out);
        if is_osrtp {
            st.osrtp_offer = Some(a);
        }
        return Ok(st);
    }
    if a_keying != Keying::Plain && a.cryptos.is_empty() && a.fingerprint.is_none() {
        return Err(SessionCryptoError::NoUsableCrypto(index));
    }
    section.retain(|l| !is_crypto_attr(l));
    let mut pending = Pending {
        offerer: (a_keying != Keying::Plain).then_some(a),
        ..Pending::default()
    };
    if out.is_secure() {
        pending.terminate_answerer = true;
        let profile = match (dtls_ok, sdes_ok, opts.transport) {
            (_, _, Some(p)) => p,
            (true, false, None) => out.with_keying(Some(true)),
            _ => out.with_keying(Some(false)),
        };
        set_profile(section, profile);
        if dtls_ok || !sdes_ok {
            let setup = match opts.dtls {
                DtlsOption::Passive => Setup::Passive,
                DtlsOption::Active => Setup::Active,
                _ => Setup::ActPass,
            };
            push(section, eol, format!("a=fingerprint:{relay}"));
            push(section, eol, format!("a=setup:{}", setup.as_str()));
            pending.dtls = Some(setup);
        }
        if sdes_ok {
            for (i, s) in sdes_suites.into_iter().enumerate() {
                let c = CryptoAttr::new(i as u32 + 1, s, keys(s.master_len()));
                push(section, eol, format!("a=crypto:{c}"));
                pending.sdes.push(c);
            }
        }
    } else {
        set_profile(section, out);
        if osrtp_offer {
            // RFC 8643: the relay's keys in the plain profile; a plain answer declines them.
            pending.terminate_answerer = true;
            for (i, s) in sdes_suites.into_iter().enumerate() {
                let c = CryptoAttr::new(i as u32 + 1, s, keys(s.master_len()));
                push(section, eol, format!("a=crypto:{c}"));
                pending.sdes.push(c);
            }
        }
    }
    st.pending = Some(pending);
    Ok(st)
}

/// The relay's SDES answer to the offerer's a=crypto lines (the first usable suite).
fn sdes_answer(
    index: usize,
    a: &SectionCrypto,
    section: &mut Vec<Line>,
    eol: LineEnding,
    opts: &CryptoOptions,
    keys: KeyGen<'_>,
) -> Result<LegCrypto, SessionCryptoError> {
    let pick = a
        .cryptos
        .iter()
        .find(|c| c.suite().is_some_and(|s| opts.sdes.allows(s)) && !c.unsupported_params());
    let Some(c) = pick else {
        return Err(SessionCryptoError::NoUsableCrypto(index));
    };
    let suite = c.suite().unwrap_or(SrtpSuite::AesCm128HmacSha1_80);
    let ours = CryptoAttr::new(c.tag, suite, keys(suite.master_len()));
    push(section, eol, format!("a=crypto:{ours}"));
    Ok(LegCrypto::Sdes {
        suite,
        tag: c.tag,
        local: ours.keys[0].key_salt.clone(),
        remote: c.keys[0].key_salt.clone(),
    })
}

/// Rewrites the answerer's section `index` for the offerer and settles both legs.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    index: usize,
    session: &[Line],
    section: &mut Vec<Line>,
    eol: LineEnding,
    st: &mut StreamCrypto,
    opts: &CryptoOptions,
    relay: &Fingerprint,
    keys: KeyGen<'_>,
) -> Result<(), SessionCryptoError> {
    let b = SectionCrypto::read(session, section)?;
    let Some(pending) = st.pending.clone() else {
        // Nothing terminated: the answer passes, back in the profile the offerer used.
        if let (Some(p), Some(_)) = (st.offer_profile, b.profile) {
            set_profile(section, p);
        }
        st.legs = Default::default();
        // A declined OSRTP offer that `OSRTP-accept` takes up: the relay answers it with its
        // own a=crypto and terminates the offerer's SRTP.
        let declined = b.cryptos.is_empty() && !b.profile.is_some_and(Profile::is_secure);
        if let (Some(a), true, true) = (&st.osrtp_offer, opts.osrtp.accept, declined)
            && section.first().and_then(|m| m.value().split(' ').nth(1)) != Some("0")
        {
            section.retain(|l| !is_crypto_attr(l));
            st.legs[0] = sdes_answer(index, a, section, eol, opts, keys)?;
        }
        return Ok(());
    };
    let rejected = section
        .first()
        .and_then(|m| m.value().split(' ').nth(1))
        .is_some_and(|p| p == "0");
    // The answerer's leg.
    let mut b_leg = LegCrypto::None;
    if pending.terminate_answerer && !rejected {
        let usable_dtls = pending.dtls.is_some() && b.fingerprint.is_some();
        let sdes = b.cryptos.iter().find_map(|c| {
            let ours = pending.sdes.iter().find(|o| o.tag == c.tag)?;
            let suite = c.suite()?;
            (ours.suite() == Some(suite) && !c.unsupported_params()).then(|| {
                (
                    suite,
                    c.tag,
                    ours.keys[0].key_salt.clone(),
                    c.keys[0].key_salt.clone(),
                )
            })
        });
        b_leg = if usable_dtls {
            let theirs = b.setup.unwrap_or(Setup::Active);
            let ours = match (theirs, pending.dtls) {
                (Setup::Active, _) => Setup::Passive,
                (Setup::Passive, _) => Setup::Active,
                (_, Some(Setup::Active)) => Setup::Active,
                _ => Setup::Passive,
            };
            LegCrypto::Dtls {
                setup: ours,
                remote: b.fingerprint.clone().unwrap_or_else(|| relay.clone()),
            }
        } else if let Some((suite, tag, local, remote)) = sdes {
            LegCrypto::Sdes {
                suite,
                tag,
                local,
                remote,
            }
        } else if b.profile.is_some_and(Profile::is_secure) {
            return Err(SessionCryptoError::AnswerCrypto(index));
        } else {
            LegCrypto::None
        };
    }
    section.retain(|l| !is_crypto_attr(l));
    // The offerer's leg.
    let mut a_leg = LegCrypto::None;
    if let (Some(a), false) = (&pending.offerer, rejected) {
        let dtls_ok = opts.dtls != DtlsOption::Off && a.fingerprint.is_some();
        if dtls_ok {
            let prefer = match opts.dtls {
                DtlsOption::Passive => Setup::Passive,
                _ => Setup::Active,
            };
            let setup = a
                .setup
                .unwrap_or(Setup::ActPass)
                .answer_to(prefer)
                .unwrap_or(prefer);
            push(section, eol, format!("a=fingerprint:{relay}"));
            push(section, eol, format!("a=setup:{}", setup.as_str()));
            a_leg = LegCrypto::Dtls {
                setup,
                remote: a.fingerprint.clone().unwrap_or_else(|| relay.clone()),
            };
        } else {
            a_leg = sdes_answer(index, a, section, eol, opts, keys)?;
        }
    }
    if let Some(p) = st.offer_profile {
        set_profile(section, p);
    }
    st.legs = [a_leg, b_leg];
    st.pending = None;
    Ok(())
}
