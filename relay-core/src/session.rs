//! Calls, monologues and media streams; offer/answer rewriting (RFC 3264) with the RFC 7584 ICE
//! modes; latching (RFC 7362); the forwarding entries the fast path needs.
//!
//! A call has two sides. Side 0 faces the first offerer (A), side 1 faces the answerer (B). Each
//! side owns the relay endpoints and ICE credentials of its leg and keeps one monologue per remote
//! tag: side 1 keeps one per to-tag when the offer forks, the latest answer being the active one.
//!
//! The daemon's loop: after `offer`/`answer`/`delete`, diff [`Sessions::call_entries`] against
//! what it installed ([`crate::latch::diff`]). A packet on a relay port with no entry goes to
//! [`Sessions::latch`]; on ICE legs ([`Sessions::ice_legs`]) the agent's nominated pair goes to
//! [`Sessions::ice_nominated`] instead. Latching defaults: restricted legs drop mismatched
//! sources, symmetric legs forward them (rtpengine's behaviour), `strict_source` drops,
//! `media_handover` hands them to userspace to re-latch.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use thiserror::Error;

mod records;
pub use records::{CALL_VERSION, CALL_VERSION_MIN, CallExport, ImportError};

use crate::creds::Credentials;
use crate::latch::{
    Component, ForwardingEntry, LatchMode, MismatchPolicy, Rewrite, StreamId, choose_mode,
};
use crate::ports::{PortAllocator, PortError};
use crate::sdp::{
    self, Candidate, Direction, Line, LineEnding, MediaDesc, Sdp, SdpError, SessionDesc,
    is_ice_attr,
};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    #[error("bad SDP: {0}")]
    Sdp(#[from] SdpError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("no logical interface named `{0}`")]
    UnknownInterface(String),
    #[error("no logical interface of family {0}")]
    NoInterfaceForFamily(AddressFamily),
    #[error("bad interface spec `{0}`: expected NAME/IP or NAME/IP!ADVERTISED")]
    BadInterfaceSpec(String),
    #[error("no logical interfaces configured")]
    NoInterfaces,
    #[error("unknown call `{0}`")]
    UnknownCall(String),
    #[error("tag `{tag}` is not part of call `{call_id}`")]
    UnknownTag { call_id: String, tag: String },
    #[error("re-offer has {got} m= lines, fewer than the {had} already negotiated (RFC 3264 s.8)")]
    MediaRemoved { got: usize, had: usize },
    #[error("answer has {got} m= lines, the offer had {want}")]
    AnswerMismatch { got: usize, want: usize },
    #[error("no relay endpoint {0}")]
    UnknownEndpoint(SocketAddr),
    #[error("saved sessions were made for other logical interfaces")]
    StateMismatch,
    #[error("endpoint {0} does not terminate ICE")]
    NotIce(SocketAddr),
}

/// IPv4 or IPv6, as in rtpengine's `address family` (IP4/IP6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AddressFamily {
    Ip4,
    Ip6,
}

impl AddressFamily {
    fn of(ip: IpAddr) -> AddressFamily {
        if ip.is_ipv4() {
            AddressFamily::Ip4
        } else {
            AddressFamily::Ip6
        }
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressFamily::Ip4 => "IP4",
            AddressFamily::Ip6 => "IP6",
        })
    }
}

/// A logical interface: rtpengine's `NAME/BIND!ADVERTISED`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogicalInterface {
    pub name: String,
    /// Address the relay sockets (and XDP rewrites) use.
    pub bind: IpAddr,
    /// Address written into SDP (differs from `bind` behind a 1:1 NAT).
    pub advertised: IpAddr,
}

impl FromStr for LogicalInterface {
    type Err = SessionError;
    fn from_str(s: &str) -> Result<LogicalInterface, SessionError> {
        let bad = || SessionError::BadInterfaceSpec(s.to_owned());
        let (name, addrs) = s.split_once('/').unwrap_or(("default", s));
        let (bind, adv) = match addrs.split_once('!') {
            Some((b, a)) => (b, Some(a)),
            None => (addrs, None),
        };
        let bind: IpAddr = bind.parse().map_err(|_| bad())?;
        let advertised = match adv {
            Some(a) => a.parse().map_err(|_| bad())?,
            None => bind,
        };
        if name.is_empty() || bind.is_ipv4() != advertised.is_ipv4() {
            return Err(bad());
        }
        Ok(LogicalInterface {
            name: name.to_owned(),
            bind,
            advertised,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub interfaces: Vec<LogicalInterface>,
    pub port_min: u16,
    pub port_max: u16,
}

/// rtpengine's `ICE` key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IceOption {
    /// Strip all ICE attributes.
    Remove,
    /// Mandatory termination (RFC 7584 s.4.2): the relay is the only candidate, on every leg.
    Force,
    /// `Force` if the offer has ICE, otherwise add none.
    #[default]
    Default,
    /// Optional termination (RFC 7584 s.4.3) if the offer has ICE, otherwise `Force`.
    Optional,
    /// Like `Optional`, but the offer's relay candidates are dropped first.
    ForceRelay,
}

/// rtpengine's `rtcp-mux` key (RFC 5761); `None` passes the offerer's choice through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RtcpMuxOption {
    #[default]
    None,
    /// Offer rtcp-mux to the answerer even if the offerer did not.
    Offer,
    /// Accept the offerer's rtcp-mux but offer separate RTCP to the answerer.
    Demux,
    /// Accept the offerer's rtcp-mux whatever the answerer says.
    Accept,
    /// Refuse the offerer's rtcp-mux; the answerer is offered what the offerer offered (as
    /// rtpengine does: combined with `offer` it is the opposite of `demux`).
    Reject,
    /// The answerer must use rtcp-mux: offered without an RTCP port.
    Require,
    /// `offer` and `reject` together: offered to the answerer, refused to the offerer (the
    /// opposite of `Demux`).
    OfferReject,
}

/// rtpengine flags that change latching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// Trust the SDP address even if the signalling came from elsewhere.
    pub trust_address: bool,
    /// Always latch symmetrically.
    pub symmetric: bool,
    /// The endpoint does not do symmetric RTP: learn nothing, accept any source.
    pub asymmetric: bool,
    /// After latching, drop packets from other sources.
    pub strict_source: bool,
    /// After latching, hand packets from other sources to userspace, which re-latches.
    pub media_handover: bool,
    /// Keep local ports on a re-offer even if the remote address changed.
    pub port_latching: bool,
}

/// rtpengine's `replace` list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replace {
    /// Rewrite the address in o=.
    pub origin: bool,
    /// Rewrite c=/m= to the relay even under optional ICE termination.
    pub session_connection: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfferOptions {
    pub ice: IceOption,
    pub rtcp_mux: RtcpMuxOption,
    pub flags: Flags,
    pub replace: Replace,
    /// Interface names (offerer side, answerer side); first offer only.
    pub direction: Option<(String, String)>,
    /// Family the answerer wants (interworking); ignored if `direction` is given.
    pub address_family: Option<AddressFamily>,
    /// Source address of the SIP message carrying this SDP.
    pub received_from: Option<IpAddr>,
    /// Overrides the mismatch policy the flags imply.
    pub source_mismatch: Option<MismatchPolicy>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnswerOptions {
    /// rtpengine's `ICE` key in the answer, towards the offerer: `Force` makes the relay the
    /// offerer's only (ICE-lite) candidate, `Remove` strips ICE; absent or `Default` does the
    /// same as `Force` for an offerer that sent ICE (even if the offer removed it towards the
    /// answerer, as rtpengine does); other values keep what the offer settled.
    pub ice: Option<IceOption>,
    pub flags: Flags,
    pub replace: Replace,
    pub received_from: Option<IpAddr>,
    pub source_mismatch: Option<MismatchPolicy>,
}

/// How ICE runs on one leg of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IceRole {
    /// No ICE on this leg: latching.
    None,
    /// The relay is the only candidate and an ICE-lite agent with its own credentials.
    Terminated,
    /// The endpoint's candidates pass through; the relay's candidate answers with the credentials
    /// of the other leg's endpoint (RFC 7584 s.4.3).
    Optional,
}

/// What the daemon needs to run one ICE-lite agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceLeg {
    pub stream: StreamId,
    pub tag: String,
    pub role: IceRole,
    pub local_endpoints: Vec<SocketAddr>,
    pub local: Credentials,
    pub remote: Option<Credentials>,
    pub remote_candidates: Vec<Candidate>,
}

/// Read-only view of one leg of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegInfo {
    pub interface: String,
    pub tag: Option<String>,
    /// Local RTP endpoint (bind address); None if the stream is rejected.
    pub rtp: Option<SocketAddr>,
    /// Separate RTCP endpoint; None under rtcp-mux.
    pub rtcp: Option<SocketAddr>,
    pub rtcp_mux: bool,
    pub ice: IceRole,
    pub latch_mode: Option<LatchMode>,
    pub latched: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub id: StreamId,
    pub index: usize,
    pub media: String,
    pub legs: [LegInfo; 2],
}

/// Result of [`Sessions::latch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatchOutcome {
    pub accepted: bool,
    /// All entries the call needs now (diff against the previous set with [`crate::latch::diff`]).
    pub entries: Vec<ForwardingEntry>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct LocalStream {
    id: StreamId,
    rtp: Option<u16>,
    rtcp: Option<u16>,
    mux: bool,
    /// rtcp-mux was offered to this leg's endpoint (so it may accept it).
    mux_offered: bool,
    ice: IceRole,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct RemoteStream {
    desc: MediaDesc,
    latched: [Option<SocketAddr>; 2],
    nominated: [Option<SocketAddr>; 2],
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Monologue {
    sdp: String,
    creds: Option<Credentials>,
    latch_mode: LatchMode,
    mismatch: MismatchPolicy,
    handover: bool,
    streams: Vec<RemoteStream>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Side {
    iface: usize,
    creds: Option<Credentials>,
    remotes: BTreeMap<String, Monologue>,
    active: Option<String>,
    /// Remote tags, most recently offered or answered last: when the active fork goes, the
    /// latest of the others takes over. Empty in state saved before it existed.
    #[serde(default)]
    recent: Vec<String>,
    streams: Vec<LocalStream>,
}

impl Side {
    fn active(&self) -> Option<&Monologue> {
        self.remotes.get(self.active.as_deref()?)
    }

    fn activate(&mut self, tag: &str) {
        self.recent.retain(|t| t != tag);
        self.recent.push(tag.to_owned());
        self.active = Some(tag.to_owned());
    }

    /// Drops the fork `tag`; if it was active, the most recent remaining one becomes so.
    fn remove_fork(&mut self, tag: &str) {
        self.remotes.remove(tag);
        self.recent.retain(|t| t != tag);
        if self.active.as_deref() == Some(tag) {
            self.active = self
                .recent
                .iter()
                .rev()
                .find(|t| self.remotes.contains_key(*t))
                .or_else(|| self.remotes.keys().next_back())
                .cloned();
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Call {
    sides: [Side; 2],
    mux_option: RtcpMuxOption,
    ice_option: IceOption,
}

type CredGen = Box<dyn FnMut() -> Credentials + Send>;

/// All calls, the configured interfaces and their port allocators.
pub struct Sessions {
    interfaces: Vec<LogicalInterface>,
    allocators: HashMap<IpAddr, PortAllocator>,
    calls: BTreeMap<String, Call>,
    next_stream: u64,
    creds: CredGen,
    /// Whether a port can be used on a bind address right now (the daemon tries to bind it);
    /// none: every free port can.
    port_check: Option<PortCheck>,
}

/// See [`Sessions::set_port_check`].
pub type PortCheck = Box<dyn FnMut(IpAddr, u16) -> bool + Send>;

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("interfaces", &self.interfaces)
            .field("calls", &self.calls.len())
            .finish()
    }
}

/// Everything [`Sessions`] holds but its credential source, for persistence across daemon
/// restarts. Opaque: it only round-trips through serde.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SessionsState {
    interfaces: Vec<LogicalInterface>,
    allocators: Vec<(IpAddr, PortAllocator)>,
    calls: BTreeMap<String, Call>,
    next_stream: u64,
}

/// Ports taken or given back by one operation; applied only once the operation cannot fail.
#[derive(Default)]
struct PortTxn {
    taken: Vec<(IpAddr, u16)>,
    freed: Vec<(IpAddr, u16)>,
}

impl Sessions {
    pub fn new(config: Config) -> Result<Sessions, SessionError> {
        Sessions::with_credentials(config, Credentials::random)
    }

    /// Like [`Sessions::new`] with an injected credential source (deterministic tests).
    pub fn with_credentials(
        config: Config,
        creds: impl FnMut() -> Credentials + Send + 'static,
    ) -> Result<Sessions, SessionError> {
        if config.interfaces.is_empty() {
            return Err(SessionError::NoInterfaces);
        }
        let mut allocators = HashMap::new();
        for i in &config.interfaces {
            allocators.insert(
                i.bind,
                PortAllocator::new(config.port_min, config.port_max)?,
            );
        }
        Ok(Sessions {
            interfaces: config.interfaces,
            allocators,
            calls: BTreeMap::new(),
            next_stream: 1,
            creds: Box::new(creds),
            port_check: None,
        })
    }

    pub fn snapshot(&self) -> SessionsState {
        SessionsState {
            interfaces: self.interfaces.clone(),
            allocators: self
                .allocators
                .iter()
                .map(|(ip, a)| (*ip, a.clone()))
                .collect(),
            calls: self.calls.clone(),
            next_stream: self.next_stream,
        }
    }

    /// Sessions from a snapshot taken with the same logical interfaces as `config` (ports and
    /// addresses in the snapshot are only valid for those).
    pub fn restore(config: Config, state: SessionsState) -> Result<Sessions, SessionError> {
        let mut s = Sessions::new(config)?;
        if s.interfaces != state.interfaces {
            return Err(SessionError::StateMismatch);
        }
        s.allocators = state.allocators.into_iter().collect();
        s.calls = state.calls;
        s.next_stream = state.next_stream;
        Ok(s)
    }

    /// Makes allocation skip ports `check` refuses, such as ports another program has bound:
    /// an offer then gets ports the daemon can really open.
    pub fn set_port_check(&mut self, check: PortCheck) {
        self.port_check = Some(check);
    }

    /// Ports in use on an interface's bind address.
    pub fn ports_in_use(&self, bind: IpAddr) -> usize {
        self.allocators.get(&bind).map_or(0, |a| a.in_use())
    }

    pub fn call_ids(&self) -> impl Iterator<Item = &str> {
        self.calls.keys().map(String::as_str)
    }

    /// An offer from `from_tag`: returns the SDP to send to the other party.
    pub fn offer(
        &mut self,
        call_id: &str,
        from_tag: &str,
        sdp_text: &str,
        opts: &OfferOptions,
    ) -> Result<String, SessionError> {
        let mut sdp = Sdp::parse(sdp_text)?;
        let desc = sdp.describe()?;
        let existing = self.calls.get(call_id);
        let (s, o) = match existing {
            None => (0, 1),
            Some(c) if c.sides[0].remotes.contains_key(from_tag) => (0, 1),
            Some(c) if c.sides[1].remotes.contains_key(from_tag) => (1, 0),
            Some(_) => {
                return Err(SessionError::UnknownTag {
                    call_id: call_id.to_owned(),
                    tag: from_tag.to_owned(),
                });
            }
        };
        let mut call = match existing {
            Some(c) => c.clone(),
            None => {
                let (a, b) = self.pick_interfaces(&desc, opts)?;
                Call {
                    sides: [self.empty_side(a), self.empty_side(b)],
                    mux_option: opts.rtcp_mux,
                    ice_option: opts.ice,
                }
            }
        };
        if call.sides[s].streams.len() > desc.media.len() {
            return Err(SessionError::MediaRemoved {
                got: desc.media.len(),
                had: call.sides[s].streams.len(),
            });
        }
        call.mux_option = opts.rtcp_mux;
        call.ice_option = opts.ice;
        let remote_ice = desc.has_ice();
        let (role_s, role_o) = match (opts.ice, remote_ice) {
            (IceOption::Remove, _) | (IceOption::Default, false) => (IceRole::None, IceRole::None),
            (IceOption::Force | IceOption::Default, true) => {
                (IceRole::Terminated, IceRole::Terminated)
            }
            (IceOption::Force | IceOption::Optional | IceOption::ForceRelay, false) => {
                (IceRole::None, IceRole::Terminated)
            }
            (IceOption::Optional | IceOption::ForceRelay, true) => {
                (IceRole::Optional, IceRole::Optional)
            }
        };
        let prev = call.sides[s].remotes.get(from_tag).cloned();
        let mut txn = PortTxn::default();
        let result = self.plan_offer(&mut call, s, o, &desc, prev.as_ref(), opts, &mut txn);
        if let Err(e) = result {
            self.rollback(&txn);
            return Err(e);
        }
        // ICE restart by the offerer (RFC 8445 s.9) gives its leg fresh credentials too.
        let restarted = prev
            .as_ref()
            .is_some_and(|p| p.creds.is_some() && p.creds != first_creds(&desc));
        for (side, role) in [(s, role_s), (o, role_o)] {
            for st in &mut call.sides[side].streams {
                st.ice = if st.rtp.is_some() {
                    role
                } else {
                    IceRole::None
                };
            }
            if role == IceRole::Terminated
                && (call.sides[side].creds.is_none() || (side == s && restarted))
            {
                call.sides[side].creds = Some((self.creds)());
            }
        }
        let mono = self.monologue(
            &desc,
            sdp_text,
            prev.as_ref(),
            &opts.flags,
            opts.received_from,
            opts.source_mismatch,
        );
        call.sides[s].remotes.insert(from_tag.to_owned(), mono);
        call.sides[s].activate(from_tag);

        let out = self.rewrite(
            &mut sdp,
            &desc,
            &call,
            o,
            opts.replace,
            call.sides[o]
                .streams
                .iter()
                .map(|st| st.mux_offered)
                .collect(),
        );
        self.commit(&txn);
        self.calls.insert(call_id.to_owned(), call);
        Ok(out)
    }

    /// The answer of `to_tag` to the offer of `from_tag`: returns the SDP to send to the offerer.
    /// A new to-tag for an answered offer is a fork (RFC 7584 s.4.4) and becomes the active leg.
    pub fn answer(
        &mut self,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
        sdp_text: &str,
        opts: &AnswerOptions,
    ) -> Result<String, SessionError> {
        let mut sdp = Sdp::parse(sdp_text)?;
        let desc = sdp.describe()?;
        let existing = self
            .calls
            .get(call_id)
            .ok_or_else(|| SessionError::UnknownCall(call_id.to_owned()))?;
        let s = if existing.sides[0].remotes.contains_key(from_tag) {
            0
        } else if existing.sides[1].remotes.contains_key(from_tag) {
            1
        } else {
            return Err(SessionError::UnknownTag {
                call_id: call_id.to_owned(),
                tag: from_tag.to_owned(),
            });
        };
        let o = 1 - s;
        let mut call = existing.clone();
        let want = call.sides[o].streams.len();
        if desc.media.len() != want {
            return Err(SessionError::AnswerMismatch {
                got: desc.media.len(),
                want,
            });
        }
        let offer_mux: Vec<bool> = call.sides[s]
            .active()
            .map(|m| m.streams.iter().map(|r| r.desc.rtcp_mux).collect())
            .unwrap_or_default();
        let answer_ice = desc.has_ice();
        let mut txn = PortTxn::default();
        for (i, m) in desc.media.iter().enumerate() {
            if m.port == 0 {
                for side in [s, o] {
                    let bind = self.interfaces[call.sides[side].iface].bind;
                    free_stream(&mut call.sides[side].streams[i], bind, &mut txn);
                }
                continue;
            }
            let so = &mut call.sides[o].streams[i];
            so.mux = so.mux_offered && m.rtcp_mux;
            let b_mux = so.mux;
            so.ice = match so.ice {
                IceRole::None => IceRole::None,
                r if answer_ice => r,
                _ => IceRole::None,
            };
            let ss = &mut call.sides[s].streams[i];
            let a_offered = offer_mux.get(i).copied().unwrap_or(false);
            ss.mux = a_offered
                && match call.mux_option {
                    RtcpMuxOption::Accept | RtcpMuxOption::Demux | RtcpMuxOption::Require => true,
                    RtcpMuxOption::Reject | RtcpMuxOption::OfferReject => false,
                    RtcpMuxOption::None | RtcpMuxOption::Offer => b_mux,
                };
            if ss.ice == IceRole::Optional && !answer_ice {
                // Nothing to pass through: the relay becomes the offerer's only candidate.
                ss.ice = IceRole::Terminated;
            }
        }
        let offerer_ice = call.sides[s].active().is_some_and(|m| m.creds.is_some());
        match opts.ice {
            None | Some(IceOption::Default) if offerer_ice => {
                for st in call.sides[s].streams.iter_mut() {
                    if st.rtp.is_some() && st.ice == IceRole::None {
                        st.ice = IceRole::Terminated;
                    }
                }
            }
            Some(IceOption::Force) => {
                for st in call.sides[s]
                    .streams
                    .iter_mut()
                    .filter(|st| st.rtp.is_some())
                {
                    st.ice = IceRole::Terminated;
                }
            }
            Some(IceOption::Remove) => {
                for st in &mut call.sides[s].streams {
                    st.ice = IceRole::None;
                }
            }
            _ => {}
        }
        let needs_creds = call.sides[s]
            .streams
            .iter()
            .any(|st| st.ice == IceRole::Terminated);
        if needs_creds && call.sides[s].creds.is_none() {
            call.sides[s].creds = Some((self.creds)());
        }
        let prev = call.sides[o].remotes.get(to_tag).cloned();
        let mono = self.monologue(
            &desc,
            sdp_text,
            prev.as_ref(),
            &opts.flags,
            opts.received_from,
            opts.source_mismatch,
        );
        call.sides[o].remotes.insert(to_tag.to_owned(), mono);
        call.sides[o].activate(to_tag);
        let mux: Vec<bool> = call.sides[s].streams.iter().map(|st| st.mux).collect();
        let out = self.rewrite(&mut sdp, &desc, &call, s, opts.replace, mux);
        self.commit(&txn);
        self.calls.insert(call_id.to_owned(), call);
        Ok(out)
    }

    /// Whether the call exists and every given tag belongs to it (what a delete needs).
    pub fn check_tags(
        &self,
        call_id: &str,
        from_tag: Option<&str>,
        to_tag: Option<&str>,
    ) -> Result<(), SessionError> {
        let call = self
            .calls
            .get(call_id)
            .ok_or_else(|| SessionError::UnknownCall(call_id.to_owned()))?;
        for tag in from_tag.iter().chain(to_tag.iter()) {
            if !call.sides.iter().any(|sd| sd.remotes.contains_key(*tag)) {
                return Err(SessionError::UnknownTag {
                    call_id: call_id.to_owned(),
                    tag: (*tag).to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Deletes a whole call, or with `to_tag` one fork of it while other forks remain.
    pub fn delete(
        &mut self,
        call_id: &str,
        from_tag: Option<&str>,
        to_tag: Option<&str>,
    ) -> Result<(), SessionError> {
        self.check_tags(call_id, from_tag, to_tag)?;
        let call = self
            .calls
            .get_mut(call_id)
            .ok_or_else(|| SessionError::UnknownCall(call_id.to_owned()))?;
        // A fork goes alone while others remain; the last leg takes the call with it.
        if let Some(t) = to_tag
            && let Some(side) = call.sides.iter_mut().find(|sd| sd.remotes.contains_key(t))
            && side.remotes.len() > 1
        {
            side.remove_fork(t);
            return Ok(());
        }
        if let Some(call) = self.calls.remove(call_id) {
            let mut txn = PortTxn::default();
            for side in call.sides {
                let bind = self.interfaces[side.iface].bind;
                for mut st in side.streams {
                    free_stream(&mut st, bind, &mut txn);
                }
            }
            self.commit(&txn);
        }
        Ok(())
    }

    /// Media arrived on `local` from `observed` with no matching entry: latch if the leg's policy
    /// allows it (RFC 7362).
    pub fn latch(
        &mut self,
        local: SocketAddr,
        observed: SocketAddr,
    ) -> Result<LatchOutcome, SessionError> {
        let (call_id, s, i, comp) = self.find(local)?;
        let call = self
            .calls
            .get_mut(&call_id)
            .ok_or(SessionError::UnknownEndpoint(local))?;
        let side = &mut call.sides[s];
        let ice = side.streams[i].ice;
        let Some(tag) = side.active.clone() else {
            return Ok(LatchOutcome {
                accepted: false,
                entries: Vec::new(),
            });
        };
        let accepted = match side.remotes.get_mut(&tag) {
            Some(mono) if ice == IceRole::None => {
                let mode = mono.latch_mode;
                let handover = mono.handover;
                let rs = &mut mono.streams[i];
                let signalled = signalled(&rs.desc, comp);
                let slot = &mut rs.latched[comp as usize];
                let ok = match (mode, *slot) {
                    (LatchMode::Asymmetric, _) => true,
                    (_, Some(cur)) if cur == observed => true,
                    (_, Some(_)) if !handover => false,
                    (LatchMode::Restricted, _) => {
                        signalled.is_some_and(|a| a.ip() == observed.ip())
                    }
                    (LatchMode::Symmetric, _) => true,
                };
                if ok && mode != LatchMode::Asymmetric {
                    *slot = Some(observed);
                }
                ok
            }
            _ => false,
        };
        let entries = self.call_entries(&call_id);
        Ok(LatchOutcome { accepted, entries })
    }

    /// The ICE-lite agent of leg `tag` (see [`IceLeg::tag`]) on `local` nominated a validated
    /// pair with `remote`. A fork that is not the active leg records it for when it becomes so.
    pub fn ice_nominated(
        &mut self,
        local: SocketAddr,
        tag: &str,
        remote: SocketAddr,
    ) -> Result<Vec<ForwardingEntry>, SessionError> {
        let (call_id, s, i, comp) = self.find(local)?;
        let call = self
            .calls
            .get_mut(&call_id)
            .ok_or(SessionError::UnknownEndpoint(local))?;
        let side = &mut call.sides[s];
        if side.streams[i].ice == IceRole::None {
            return Err(SessionError::NotIce(local));
        }
        let m = side
            .remotes
            .get_mut(tag)
            .ok_or_else(|| SessionError::UnknownTag {
                call_id: call_id.clone(),
                tag: tag.to_owned(),
            })?;
        if let Some(r) = m.streams.get_mut(i) {
            r.nominated[comp as usize] = Some(remote);
        }
        Ok(self.call_entries(&call_id))
    }

    /// Entries of every call, sorted by local endpoint.
    pub fn entries(&self) -> Vec<ForwardingEntry> {
        let mut v: Vec<_> = self
            .calls
            .keys()
            .flat_map(|c| self.call_entries(c))
            .collect();
        v.sort();
        v
    }

    /// Entries one call needs now, sorted by local endpoint.
    pub fn call_entries(&self, call_id: &str) -> Vec<ForwardingEntry> {
        let Some(call) = self.calls.get(call_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (s, o) in [(0, 1), (1, 0)] {
            let (ss, so) = (&call.sides[s], &call.sides[o]);
            let (Some(ms), Some(mo)) = (ss.active(), so.active()) else {
                continue;
            };
            let bs = self.interfaces[ss.iface].bind;
            let bo = self.interfaces[so.iface].bind;
            for (i, (ls, lo)) in ss.streams.iter().zip(&so.streams).enumerate() {
                let (Some(rs), Some(ro)) = (ms.streams.get(i), mo.streams.get(i)) else {
                    continue;
                };
                let (Some(ls_rtp), Some(lo_rtp)) = (ls.rtp, lo.rtp) else {
                    continue;
                };
                if rs.desc.port == 0 || ro.desc.port == 0 {
                    continue;
                }
                let policy = if ls.ice == IceRole::None {
                    ms.mismatch
                } else {
                    MismatchPolicy::Drop
                };
                let dest = |c: Component| {
                    let c = if lo.mux { Component::Rtp } else { c };
                    let from_port = if c == Component::Rtcp {
                        lo.rtcp?
                    } else {
                        lo_rtp
                    };
                    let to = peer(ro, lo.ice, mo.latch_mode, c)?;
                    Some(Rewrite {
                        from: SocketAddr::new(bo, from_port),
                        to,
                    })
                };
                let source = |c: Component| -> Option<Option<SocketAddr>> {
                    if ls.ice != IceRole::None {
                        return rs.nominated[c as usize].map(Some);
                    }
                    match ms.latch_mode {
                        LatchMode::Asymmetric => Some(None),
                        _ => rs.latched[c as usize].map(Some),
                    }
                };
                let mut push = |port: u16, comp: Component, rtcp_rewrite: Option<Rewrite>| {
                    if let (Some(src), Some(rw)) = (source(comp), dest(comp)) {
                        out.push(ForwardingEntry {
                            local: SocketAddr::new(bs, port),
                            expected_source: src,
                            mismatch: policy,
                            stream: ls.id,
                            component: comp,
                            rewrite: rw,
                            rtcp_rewrite,
                        });
                    }
                };
                let demux = (ls.mux && !lo.mux).then(|| dest(Component::Rtcp)).flatten();
                push(ls_rtp, Component::Rtp, demux);
                if let (false, Some(p)) = (ls.mux, ls.rtcp) {
                    push(p, Component::Rtcp, None);
                }
            }
        }
        out.sort();
        out
    }

    /// One entry per ICE leg (terminated or optional) of a call, for the daemon's agents.
    pub fn ice_legs(&self, call_id: &str) -> Vec<IceLeg> {
        let Some(call) = self.calls.get(call_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (s, o) in [(0, 1), (1, 0)] {
            let side = &call.sides[s];
            let bind = self.interfaces[side.iface].bind;
            // Every fork is its own leg (RFC 7584 s.4.4): same relay endpoint and local
            // credentials, its own remote credentials and candidates.
            for (tag, mono) in &side.remotes {
                for (i, st) in side.streams.iter().enumerate() {
                    let local = match st.ice {
                        IceRole::None => continue,
                        IceRole::Terminated => side.creds.clone(),
                        IceRole::Optional => call.sides[o]
                            .active()
                            .and_then(|m| m.streams.get(i))
                            .and_then(|r| r.desc.creds.clone()),
                    };
                    let (Some(local), Some(rtp), Some(r)) = (local, st.rtp, mono.streams.get(i))
                    else {
                        continue;
                    };
                    let mut eps = vec![SocketAddr::new(bind, rtp)];
                    if let (false, Some(p)) = (st.mux, st.rtcp) {
                        eps.push(SocketAddr::new(bind, p));
                    }
                    out.push(IceLeg {
                        stream: st.id,
                        tag: tag.clone(),
                        role: st.ice,
                        local_endpoints: eps,
                        local,
                        remote: r.desc.creds.clone(),
                        remote_candidates: r.desc.candidates.clone(),
                    });
                }
            }
        }
        out
    }

    /// The last SDP a party (by tag) sent, as received.
    pub fn remote_sdp(&self, call_id: &str, tag: &str) -> Option<&str> {
        let call = self.calls.get(call_id)?;
        call.sides
            .iter()
            .find_map(|sd| sd.remotes.get(tag))
            .map(|m| m.sdp.as_str())
    }

    /// True when a leg of the call has muted or inactive media: a=sendonly, a=recvonly,
    /// a=inactive or c=0.0.0.0 on an enabled stream (a call on hold). Such calls are timed out
    /// by rtpengine's silent timeout instead of the media timeout.
    pub fn is_muted(&self, call_id: &str) -> bool {
        let Some(call) = self.calls.get(call_id) else {
            return false;
        };
        call.sides
            .iter()
            .filter_map(Side::active)
            .flat_map(|m| &m.streams)
            .any(|r| {
                r.desc.port != 0 && (r.desc.direction != Direction::SendRecv || on_hold(&r.desc))
            })
    }

    /// Per-stream view of a call.
    pub fn streams(&self, call_id: &str) -> Vec<StreamInfo> {
        let Some(call) = self.calls.get(call_id) else {
            return Vec::new();
        };
        let n = call.sides[0].streams.len();
        (0..n)
            .filter_map(|i| {
                let leg = |s: usize| -> Option<LegInfo> {
                    let side = &call.sides[s];
                    let st = side.streams.get(i)?;
                    let iface = &self.interfaces[side.iface];
                    let mono = side.active();
                    Some(LegInfo {
                        interface: iface.name.clone(),
                        tag: side.active.clone(),
                        rtp: st.rtp.map(|p| SocketAddr::new(iface.bind, p)),
                        rtcp: st
                            .rtcp
                            .filter(|_| !st.mux)
                            .map(|p| SocketAddr::new(iface.bind, p)),
                        rtcp_mux: st.mux,
                        ice: st.ice,
                        latch_mode: mono.map(|m| m.latch_mode),
                        latched: mono.and_then(|m| m.streams.get(i)?.latched[0]),
                    })
                };
                let media = call.sides[0]
                    .active()
                    .and_then(|m| m.streams.get(i))
                    .map(|r| r.desc.media.clone())
                    .unwrap_or_default();
                Some(StreamInfo {
                    id: call.sides[0].streams.get(i)?.id,
                    index: i,
                    media,
                    legs: [leg(0)?, leg(1)?],
                })
            })
            .collect()
    }

    fn empty_side(&self, iface: usize) -> Side {
        Side {
            iface,
            creds: None,
            remotes: BTreeMap::new(),
            active: None,
            recent: Vec::new(),
            streams: Vec::new(),
        }
    }

    fn iface_by_name(&self, name: &str) -> Result<usize, SessionError> {
        self.interfaces
            .iter()
            .position(|i| i.name == name)
            .ok_or_else(|| SessionError::UnknownInterface(name.to_owned()))
    }

    fn iface_by_family(&self, f: AddressFamily) -> Result<usize, SessionError> {
        self.interfaces
            .iter()
            .position(|i| AddressFamily::of(i.bind) == f)
            .ok_or(SessionError::NoInterfaceForFamily(f))
    }

    fn pick_interfaces(
        &self,
        desc: &SessionDesc,
        opts: &OfferOptions,
    ) -> Result<(usize, usize), SessionError> {
        if let Some((a, b)) = &opts.direction {
            return Ok((self.iface_by_name(a)?, self.iface_by_name(b)?));
        }
        let offer_family = desc
            .media
            .iter()
            .find_map(|m| m.connection)
            .or(desc.connection)
            .map(AddressFamily::of);
        let a = match offer_family {
            Some(f) => self.iface_by_family(f).unwrap_or(0),
            None => 0,
        };
        let b = match opts.address_family {
            Some(f) => self.iface_by_family(f)?,
            None => a,
        };
        Ok((a, b))
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_offer(
        &mut self,
        call: &mut Call,
        s: usize,
        o: usize,
        desc: &SessionDesc,
        prev: Option<&Monologue>,
        opts: &OfferOptions,
        txn: &mut PortTxn,
    ) -> Result<(), SessionError> {
        let bs = self.interfaces[call.sides[s].iface].bind;
        let bo = self.interfaces[call.sides[o].iface].bind;
        for m in &desc.media {
            let i = m.index;
            if call.sides[s].streams.len() <= i {
                let id = StreamId(self.next_stream);
                self.next_stream += 1;
                for side in [s, o] {
                    call.sides[side].streams.push(LocalStream {
                        id,
                        rtp: None,
                        rtcp: None,
                        mux: false,
                        mux_offered: false,
                        ice: IceRole::None,
                    });
                }
            }
            if m.port == 0 {
                free_stream(&mut call.sides[s].streams[i], bs, txn);
                free_stream(&mut call.sides[o].streams[i], bo, txn);
                continue;
            }
            let single_s = m.rtcp_mux
                && matches!(
                    opts.rtcp_mux,
                    RtcpMuxOption::Accept | RtcpMuxOption::Demux | RtcpMuxOption::Require
                );
            let single_o = opts.rtcp_mux == RtcpMuxOption::Require;
            let moved = prev
                .and_then(|p| p.streams.get(i))
                .is_some_and(|r| !same_endpoint(&r.desc, m));
            let keep_s = !moved || opts.flags.port_latching;
            self.ensure(&mut call.sides[s].streams[i], bs, single_s, keep_s, txn)?;
            self.ensure(&mut call.sides[o].streams[i], bo, single_o, true, txn)?;
            // A re-offer keeps what the last answer settled until the next answer says otherwise.
            let ls = &mut call.sides[s].streams[i];
            ls.mux = single_s || (ls.mux && m.rtcp_mux);
            ls.mux_offered = m.rtcp_mux;
            let lo = &mut call.sides[o].streams[i];
            lo.mux_offered = match opts.rtcp_mux {
                RtcpMuxOption::Offer | RtcpMuxOption::Require | RtcpMuxOption::OfferReject => true,
                RtcpMuxOption::Demux => false,
                RtcpMuxOption::None | RtcpMuxOption::Accept | RtcpMuxOption::Reject => m.rtcp_mux,
            };
            lo.mux = single_o || (lo.mux && lo.mux_offered);
        }
        Ok(())
    }

    /// Makes sure a stream has ports: one if `single`, else an RTP/RTCP pair.
    fn ensure(
        &mut self,
        st: &mut LocalStream,
        bind: IpAddr,
        single: bool,
        keep: bool,
        txn: &mut PortTxn,
    ) -> Result<(), SessionError> {
        let fits = st.rtp.is_some() && (single || st.rtcp.is_some());
        if fits && keep {
            return Ok(());
        }
        free_stream(st, bind, txn);
        let alloc = self
            .allocators
            .get_mut(&bind)
            .ok_or(SessionError::NoInterfaces)?;
        let p = match self.port_check.as_mut() {
            Some(check) => alloc.allocate_usable(!single, &mut |p| check(bind, p))?,
            None => alloc.allocate(!single)?,
        };
        txn.taken.push((bind, p));
        st.rtp = Some(p);
        st.rtcp = None;
        if !single {
            txn.taken.push((bind, p + 1));
            st.rtcp = Some(p + 1);
        }
        Ok(())
    }

    fn rollback(&mut self, txn: &PortTxn) {
        for (ip, p) in &txn.taken {
            if let Some(a) = self.allocators.get_mut(ip) {
                a.release(*p);
            }
        }
    }

    fn commit(&mut self, txn: &PortTxn) {
        for (ip, p) in &txn.freed {
            if let Some(a) = self.allocators.get_mut(ip) {
                a.release(*p);
            }
        }
    }

    fn monologue(
        &self,
        desc: &SessionDesc,
        sdp_text: &str,
        prev: Option<&Monologue>,
        flags: &Flags,
        received_from: Option<IpAddr>,
        mismatch: Option<MismatchPolicy>,
    ) -> Monologue {
        let signalled = desc.media.iter().find_map(|m| m.connection);
        let latch_mode = choose_mode(
            signalled,
            received_from,
            flags.symmetric,
            flags.asymmetric,
            flags.trust_address,
        );
        let default_policy = if flags.strict_source {
            MismatchPolicy::Drop
        } else if flags.media_handover {
            MismatchPolicy::Userspace
        } else if latch_mode == LatchMode::Restricted {
            MismatchPolicy::Drop
        } else {
            MismatchPolicy::Forward
        };
        let streams = desc
            .media
            .iter()
            .map(|m| {
                // Latched and nominated peers survive a re-offer that keeps the address, and a
                // hold or resume (c=0.0.0.0) of the same endpoint; a resume at another address
                // keeps only what was learned at that address.
                let old = prev
                    .and_then(|p| p.streams.get(m.index))
                    .filter(|r| same_endpoint(&r.desc, m) && r.desc.creds == m.creds);
                let resumed = old.is_some_and(|r| on_hold(&r.desc)) && !on_hold(m);
                let still_there =
                    |a: &SocketAddr| !resumed || m.connection.is_some_and(|ip| a.ip() == ip);
                let keep = |slots: [Option<SocketAddr>; 2]| slots.map(|a| a.filter(still_there));
                RemoteStream {
                    desc: m.clone(),
                    latched: old.map_or([None; 2], |r| keep(r.latched)),
                    nominated: old.map_or([None; 2], |r| keep(r.nominated)),
                }
            })
            .collect();
        Monologue {
            sdp: sdp_text.to_owned(),
            creds: first_creds(desc),
            latch_mode,
            mismatch: mismatch.unwrap_or(default_policy),
            handover: flags.media_handover,
            streams,
        }
    }

    /// Rewrites `sdp` (from the endpoint facing `peer`) for the endpoint facing side `to`.
    #[allow(clippy::too_many_arguments)]
    fn rewrite(
        &self,
        sdp: &mut Sdp,
        desc: &SessionDesc,
        call: &Call,
        to: usize,
        replace: Replace,
        mux: Vec<bool>,
    ) -> String {
        let side = &call.sides[to];
        let iface = &self.interfaces[side.iface];
        let adv = iface.advertised;
        let eol = sdp.ending();
        let terminated = side.streams.iter().any(|st| st.ice == IceRole::Terminated);
        let optional = side.streams.iter().any(|st| st.ice == IceRole::Optional);
        let keep_addr = optional && !replace.session_connection;
        let strip_ice = !optional;
        let force_relay = call.ice_option == IceOption::ForceRelay;
        let conn = |l: &mut Line| {
            if let Some(ip) = sdp::parse_connection(l.value()) {
                let to_ip = if ip.is_unspecified() {
                    unspecified(adv)
                } else {
                    adv
                };
                l.text = format!("c=IN {} {}", sdp::family(to_ip), to_ip);
            }
        };
        sdp.session.retain(|l| !(strip_ice && is_ice_attr(l)));
        for l in &mut sdp.session {
            match l.kind() {
                Some(b'o') if replace.origin => {
                    if let Some(v) = sdp::replace_origin(l.value(), adv) {
                        l.text = format!("o={v}");
                    }
                }
                Some(b'c') if !keep_addr => conn(l),
                _ => {}
            }
        }
        if terminated && let Some(c) = &side.creds {
            append(
                &mut sdp.session,
                vec![
                    "a=ice-lite".to_owned(),
                    format!("a=ice-ufrag:{}", c.ufrag),
                    format!("a=ice-pwd:{}", c.pwd),
                ],
                eol,
            );
        }
        for (i, section) in sdp.media.iter_mut().enumerate() {
            let (Some(st), Some(m)) = (side.streams.get(i), desc.media.get(i)) else {
                continue;
            };
            let live = m.port != 0 && st.rtp.is_some();
            let st_mux = mux.get(i).copied().unwrap_or(false);
            let strip = st.ice != IceRole::Optional;
            section.retain(|l| {
                let ice_gone = strip && is_ice_attr(l);
                let mux_gone = l.is_attr("rtcp-mux") && !st_mux;
                // force-relay: the endpoint's own relay candidates give way to the relay's.
                let relay_gone = force_relay
                    && st.ice == IceRole::Optional
                    && l.is_attr("candidate")
                    && l.attr()
                        .and_then(|(_, v)| Candidate::parse(v?))
                        .is_some_and(|c| c.typ == "relay");
                !(ice_gone || mux_gone || relay_gone)
            });
            let had_mux = section.iter().any(|l| l.is_attr("rtcp-mux"));
            // Under rtcp-mux a=rtcp names the RTP port (RFC 5761 s.5.1.3); a pair keeps its own.
            let rtcp_port = if st.mux { st.rtp } else { st.rtcp.or(st.rtp) };
            for l in section.iter_mut() {
                match l.kind() {
                    Some(b'm') if live && !keep_addr => {
                        if let Some(v) = st.rtp.and_then(|p| sdp::replace_media_port(l.value(), p))
                        {
                            l.text = format!("m={v}");
                        }
                    }
                    Some(b'c') if live && !keep_addr => conn(l),
                    Some(b'a') if live && !keep_addr && l.is_attr("rtcp") => {
                        if let (Some((_, Some(v))), Some(p)) = (l.attr(), rtcp_port) {
                            let with_addr = v.split_ascii_whitespace().nth(1).is_some();
                            l.text = if with_addr {
                                format!("a=rtcp:{p} IN {} {adv}", sdp::family(adv))
                            } else {
                                format!("a=rtcp:{p}")
                            };
                        }
                    }
                    _ => {}
                }
            }
            if !live {
                continue;
            }
            let mut add = Vec::new();
            // One port for RTP and RTCP: say so, or an endpoint that ignores rtcp-mux would send
            // RTCP to RTP + 1, which is not ours (RFC 5761 s.5.1.3; rtpengine does the same).
            let had_rtcp = section.iter().any(|l| l.is_attr("rtcp"));
            if st.mux
                && !keep_addr
                && !had_rtcp
                && let Some(p) = st.rtp
            {
                add.push(format!("a=rtcp:{p}"));
            }
            if st_mux && !had_mux {
                add.push("a=rtcp-mux".to_owned());
            }
            let (typ, type_pref) = match st.ice {
                IceRole::None => ("", None),
                IceRole::Terminated => ("host", Some(126)),
                IceRole::Optional => ("relay", Some(0)),
            };
            if let (Some(tp), Some(rtp)) = (type_pref, st.rtp) {
                let mut comps = vec![(1u16, rtp)];
                if let (false, Some(p)) = (st.mux, st.rtcp) {
                    comps.push((2, p));
                }
                let f = foundation(typ, iface.bind);
                for (c, p) in comps {
                    // Optional termination: local preference 0 puts the relay below every endpoint candidate.
                    let local_pref = if st.ice == IceRole::Optional {
                        0
                    } else {
                        65535
                    };
                    let prio = priority(tp, local_pref, c);
                    let raddr = if typ == "relay" {
                        format!(" raddr {adv} rport {p}")
                    } else {
                        String::new()
                    };
                    add.push(format!(
                        "a=candidate:{f} {c} UDP {prio} {adv} {p} typ {typ}{raddr}"
                    ));
                }
            }
            append(section, add, eol);
        }
        sdp.to_string()
    }

    fn find(&self, local: SocketAddr) -> Result<(String, usize, usize, Component), SessionError> {
        for (id, call) in &self.calls {
            for (s, side) in call.sides.iter().enumerate() {
                if self.interfaces[side.iface].bind != local.ip() {
                    continue;
                }
                for (i, st) in side.streams.iter().enumerate() {
                    if st.rtp == Some(local.port()) {
                        return Ok((id.clone(), s, i, Component::Rtp));
                    }
                    if st.rtcp == Some(local.port()) && !st.mux {
                        return Ok((id.clone(), s, i, Component::Rtcp));
                    }
                }
            }
        }
        Err(SessionError::UnknownEndpoint(local))
    }
}

fn first_creds(desc: &SessionDesc) -> Option<Credentials> {
    desc.media.iter().find_map(|m| m.creds.clone())
}

fn free_stream(st: &mut LocalStream, bind: IpAddr, txn: &mut PortTxn) {
    for p in [st.rtp.take(), st.rtcp.take()].into_iter().flatten() {
        txn.freed.push((bind, p));
    }
    st.mux = false;
}

/// Signalled address of a component; None while on hold (c=0.0.0.0).
fn signalled(d: &MediaDesc, c: Component) -> Option<SocketAddr> {
    let (ip, port) = match c {
        Component::Rtp => (d.connection?, d.port),
        Component::Rtcp => d.rtcp_addr()?,
    };
    (!ip.is_unspecified() && port != 0).then_some(SocketAddr::new(ip, port))
}

/// On hold the old way (RFC 3264 s.8.4: c=0.0.0.0): the endpoint wants nothing sent to it.
fn on_hold(d: &MediaDesc) -> bool {
    d.connection.is_some_and(|ip| ip.is_unspecified())
}

/// The same endpoint in a re-offer: same port, and same address or a hold or resume of it.
fn same_endpoint(old: &MediaDesc, new: &MediaDesc) -> bool {
    old.port == new.port && (old.connection == new.connection || on_hold(old) || on_hold(new))
}

/// Where media for a remote goes: the nominated pair under ICE, else latched or signalled;
/// nowhere while it is on hold.
fn peer(r: &RemoteStream, ice: IceRole, mode: LatchMode, c: Component) -> Option<SocketAddr> {
    if ice != IceRole::None {
        return r.nominated[c as usize];
    }
    if on_hold(&r.desc) {
        return None;
    }
    if mode == LatchMode::Asymmetric {
        return signalled(&r.desc, c);
    }
    r.latched[c as usize].or_else(|| signalled(&r.desc, c))
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Appends lines to a section; the section's last line gives up a missing terminator to the new
/// last line, so a body without a final newline still ends without one.
fn append(section: &mut Vec<Line>, texts: Vec<String>, eol: LineEnding) {
    if texts.is_empty() {
        return;
    }
    let mut last_ending = eol;
    if let Some(l) = section.last_mut() {
        if l.ending == LineEnding::None {
            last_ending = LineEnding::None;
            l.ending = eol;
        } else {
            last_ending = l.ending;
        }
    }
    let n = texts.len();
    for (k, t) in texts.into_iter().enumerate() {
        let ending = if k + 1 == n {
            last_ending
        } else if last_ending == LineEnding::None {
            eol
        } else {
            last_ending
        };
        section.push(Line::new(t, ending));
    }
}

/// RFC 8445 s.5.1.2.1.
pub fn priority(type_pref: u32, local_pref: u32, component: u16) -> u32 {
    (type_pref << 24) + (local_pref << 8) + (256 - u32::from(component.min(256)))
}

/// RFC 8445 s.5.1.1.3: equal for equal (type, base address, transport); FNV-1a keeps it stable.
pub fn foundation(typ: &str, base: IpAddr) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in typ.bytes().chain(base.to_string().bytes()).chain(*b"udp") {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_priority_and_foundation_per_rfc8445() {
        // host, local preference 65535, component 1: 126 * 2^24 + 65535 * 2^8 + 255.
        assert_eq!(priority(126, 65535, 1), 2_130_706_431);
        assert_eq!(priority(126, 65535, 2), 2_130_706_430);
        assert_eq!(priority(0, 0, 1), 255);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(foundation("host", ip), foundation("host", ip));
        assert_ne!(foundation("host", ip), foundation("relay", ip));
        assert_ne!(
            foundation("host", ip),
            foundation("host", "192.0.2.2".parse().unwrap())
        );
    }

    #[test]
    fn interface_specs() {
        let i: LogicalInterface = "pub/192.0.2.1!203.0.113.1".parse().unwrap();
        assert_eq!(
            (
                i.name.as_str(),
                i.bind.to_string(),
                i.advertised.to_string()
            ),
            ("pub", "192.0.2.1".into(), "203.0.113.1".into())
        );
        let i: LogicalInterface = "2001:db8::1".parse().unwrap();
        assert_eq!((i.name.as_str(), i.advertised), ("default", i.bind));
        assert!("x/1.2.3.4!::1".parse::<LogicalInterface>().is_err());
        assert!("x/nope".parse::<LogicalInterface>().is_err());
    }
}
