//! The session model: a call, its two sides, their monologues and streams, and the state that is
//! saved across daemon restarts (versioned).
//!
//! A call has two sides. [`Side::Offerer`] faces the party that made the first offer (A),
//! [`Side::Answerer`] the party that answered it (B). Each side owns the relay endpoints and ICE
//! credentials of its leg and keeps one monologue per remote tag: the answerer's side keeps one
//! per to-tag when the offer forks, the latest answer being the active one.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Index, IndexMut};

use super::interfaces::{InterfaceIndex, LogicalInterface};
use super::options::{IceOption, RtcpMuxOption};
use crate::component::Component;
use crate::creds::Credentials;
use crate::forwarding::{MismatchPolicy, StreamId};
use crate::latch::LatchMode;
use crate::sdp::{MediaDesc, SessionDesc};

/// One side of a call: the one facing the first offerer, or the one facing its answerer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Offerer,
    Answerer,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Offerer, Side::Answerer];

    pub fn other(self) -> Side {
        match self {
            Side::Offerer => Side::Answerer,
            Side::Answerer => Side::Offerer,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Offerer => 0,
            Side::Answerer => 1,
        }
    }
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

/// The relay's end of one media stream on one side: its ports and how they are used.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct LocalStream {
    pub id: StreamId,
    pub rtp: Option<u16>,
    pub rtcp: Option<u16>,
    pub mux: bool,
    /// rtcp-mux was offered to this leg's endpoint (so it may accept it).
    pub mux_offered: bool,
    pub ice: IceRole,
}

impl LocalStream {
    pub fn new(id: StreamId) -> LocalStream {
        LocalStream {
            id,
            rtp: None,
            rtcp: None,
            mux: false,
            mux_offered: false,
            ice: IceRole::None,
        }
    }

    /// The relay ports this stream listens on, by component (RTCP only without rtcp-mux).
    pub fn ports(&self) -> impl Iterator<Item = (Component, u16)> + '_ {
        let rtcp = self.rtcp.filter(|_| !self.mux);
        [(Component::Rtp, self.rtp), (Component::Rtcp, rtcp)]
            .into_iter()
            .filter_map(|(c, p)| Some((c, p?)))
    }
}

/// What a remote party signalled for one stream, and what the relay learned of it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct RemoteStream {
    pub desc: MediaDesc,
    /// Sources latched (RFC 7362), by component index.
    pub latched: [Option<SocketAddr>; 2],
    /// Peers of the nominated ICE pairs, by component index.
    pub nominated: [Option<SocketAddr>; 2],
    /// Until when a latch that did not match the signalled endpoint exactly may still move to
    /// a better match (rtpengine's heuristic learning), by component index. Not saved: after a
    /// restart the latch is final.
    #[serde(skip)]
    pub learning_until: [Option<std::time::Instant>; 2],
}

/// One remote party's view of the call: its last SDP and how its media is accepted.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Monologue {
    pub sdp: String,
    pub creds: Option<Credentials>,
    pub latch_mode: LatchMode,
    pub mismatch: MismatchPolicy,
    pub handover: bool,
    pub streams: Vec<RemoteStream>,
}

/// One side of a call (serialised as in format version 1).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct CallSide {
    pub iface: InterfaceIndex,
    pub creds: Option<Credentials>,
    pub remotes: BTreeMap<String, Monologue>,
    pub active: Option<String>,
    /// Remote tags, most recently offered or answered last: when the active fork goes, the
    /// latest of the others takes over. Empty in state saved before it existed.
    #[serde(default)]
    pub recent: Vec<String>,
    pub streams: Vec<LocalStream>,
}

impl CallSide {
    pub fn new(iface: InterfaceIndex) -> CallSide {
        CallSide {
            iface,
            creds: None,
            remotes: BTreeMap::new(),
            active: None,
            recent: Vec::new(),
            streams: Vec::new(),
        }
    }

    pub fn active(&self) -> Option<&Monologue> {
        self.remotes.get(self.active.as_deref()?)
    }

    /// What the remote party `tag` signalled now; it becomes the active fork.
    pub fn set_active(&mut self, tag: &str, mono: Monologue) {
        self.remotes.insert(tag.to_owned(), mono);
        self.recent.retain(|t| t != tag);
        self.recent.push(tag.to_owned());
        self.active = Some(tag.to_owned());
    }

    /// Drops the fork `tag`; if it was active, the most recent remaining one becomes so.
    pub fn remove_fork(&mut self, tag: &str) {
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
pub(super) struct Call {
    sides: [CallSide; 2],
    pub mux_option: RtcpMuxOption,
    pub ice_option: IceOption,
}

impl Call {
    pub fn new(offerer: CallSide, answerer: CallSide, opts: (RtcpMuxOption, IceOption)) -> Call {
        Call {
            sides: [offerer, answerer],
            mux_option: opts.0,
            ice_option: opts.1,
        }
    }

    /// The side that holds a monologue for `tag`.
    pub fn side_of(&self, tag: &str) -> Option<Side> {
        Side::BOTH
            .into_iter()
            .find(|s| self[*s].remotes.contains_key(tag))
    }

    pub fn sides(&self) -> impl Iterator<Item = (Side, &CallSide)> {
        Side::BOTH.into_iter().map(move |s| (s, &self[s]))
    }

    pub fn into_sides(self) -> [CallSide; 2] {
        self.sides
    }
}

impl Index<Side> for Call {
    type Output = CallSide;
    fn index(&self, s: Side) -> &CallSide {
        &self.sides[s.index()]
    }
}

impl IndexMut<Side> for Call {
    fn index_mut(&mut self, s: Side) -> &mut CallSide {
        &mut self.sides[s.index()]
    }
}

/// Where a relay endpoint belongs: which call, side, stream and component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct EndpointRef {
    pub call_id: String,
    pub side: Side,
    pub stream: usize,
    pub component: Component,
}

/// Format of [`SessionsState`] written by this version. Version 1 (no `version` field) also held
/// the port allocators; they are now rebuilt from the configured range and the calls.
pub const STATE_VERSION: u32 = 2;

fn version_1() -> u32 {
    1
}

/// Everything [`super::Sessions`] holds but its credential source and indexes, for persistence
/// across daemon restarts. Opaque: it only round-trips through serde.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SessionsState {
    #[serde(default = "version_1")]
    pub(super) version: u32,
    pub(super) interfaces: Vec<LogicalInterface>,
    pub(super) calls: BTreeMap<String, Call>,
    pub(super) next_stream: u64,
}

impl SessionsState {
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// Credentials of the first stream that has any.
pub(super) fn first_creds(desc: &SessionDesc) -> Option<Credentials> {
    desc.media.iter().find_map(|m| m.creds.clone())
}

/// Signalled address of a component; None while on hold (c=0.0.0.0).
pub(super) fn signalled(d: &MediaDesc, c: Component) -> Option<SocketAddr> {
    let (ip, port) = match c {
        Component::Rtp => (d.connection?, d.port),
        Component::Rtcp => d.rtcp_addr()?,
    };
    (!ip.is_unspecified() && port != 0).then_some(SocketAddr::new(ip, port))
}

/// On hold the old way (RFC 3264 s.8.4: c=0.0.0.0): the endpoint wants nothing sent to it.
pub(super) fn on_hold(d: &MediaDesc) -> bool {
    d.connection.is_some_and(|ip| ip.is_unspecified())
}

/// The same endpoint in a re-offer: same port, and same address or a hold or resume of it.
pub(super) fn same_endpoint(old: &MediaDesc, new: &MediaDesc) -> bool {
    old.port == new.port && (old.connection == new.connection || on_hold(old) || on_hold(new))
}

/// The unspecified address of `like`'s family.
pub(super) fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}
