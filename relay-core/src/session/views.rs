//! Read-only views of a call: per stream and leg for `query` and `relay-ctl show`, and per ICE
//! leg for the daemon's agents.

use std::net::SocketAddr;

use super::Sessions;
use super::model::{IceRole, Side, on_hold};
use crate::component::Component;
use crate::creds::Credentials;
use crate::forwarding::StreamId;
use crate::latch::LatchMode;
use crate::sdp::{Candidate, Direction};

/// What the daemon needs to run one ICE-lite agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceLeg {
    pub stream: StreamId,
    /// The remote party's tag: every fork is its own leg (RFC 7584 s.4.4).
    pub tag: String,
    /// This leg is the side's active one (the latest answer of a forked offer).
    pub active: bool,
    pub role: IceRole,
    /// Relay endpoints of the leg, RTP first (and RTCP without rtcp-mux).
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
    /// The peer media is accepted from, per component index: the latched source, or the
    /// nominated pair's remote on ICE legs.
    pub peers: [Option<SocketAddr>; 2],
}

impl LegInfo {
    pub fn peer(&self, c: Component) -> Option<SocketAddr> {
        self.peers[c.index()]
    }

    /// The leg's relay endpoints with their components.
    pub fn endpoints(&self) -> impl Iterator<Item = (Component, SocketAddr)> + '_ {
        [(Component::Rtp, self.rtp), (Component::Rtcp, self.rtcp)]
            .into_iter()
            .filter_map(|(c, a)| Some((c, a?)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub id: StreamId,
    pub index: usize,
    pub media: String,
    /// The offerer's leg, then the answerer's.
    pub legs: [LegInfo; 2],
}

impl Sessions {
    /// One entry per ICE leg (terminated or optional) of a call, for the daemon's agents.
    pub fn ice_legs(&self, call_id: &str) -> Vec<IceLeg> {
        let Some(call) = self.calls.get(call_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (s, side) in call.sides() {
            let bind = self.interfaces[side.iface].bind;
            // Every fork is its own leg (RFC 7584 s.4.4): same relay endpoint and local
            // credentials, its own remote credentials and candidates.
            for (tag, mono) in &side.remotes {
                for (i, st) in side.streams.iter().enumerate() {
                    let local = match st.ice {
                        IceRole::None => continue,
                        IceRole::Terminated => side.creds.clone(),
                        IceRole::Optional => call[s.other()]
                            .active()
                            .and_then(|m| m.streams.get(i))
                            .and_then(|r| r.desc.creds.clone()),
                    };
                    let (Some(local), Some(_), Some(r)) = (local, st.rtp, mono.streams.get(i))
                    else {
                        continue;
                    };
                    out.push(IceLeg {
                        stream: st.id,
                        tag: tag.clone(),
                        active: side.active.as_deref() == Some(tag.as_str()),
                        role: st.ice,
                        local_endpoints: st
                            .ports()
                            .map(|(_, p)| SocketAddr::new(bind, p))
                            .collect(),
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
        call.sides()
            .find_map(|(_, sd)| sd.remotes.get(tag))
            .map(|m| m.sdp.as_str())
    }

    /// True when a leg of the call has muted or inactive media: a=sendonly, a=recvonly,
    /// a=inactive or c=0.0.0.0 on an enabled stream (a call on hold). Such calls are timed out
    /// by rtpengine's silent timeout instead of the media timeout.
    pub fn is_muted(&self, call_id: &str) -> bool {
        let Some(call) = self.calls.get(call_id) else {
            return false;
        };
        call.sides()
            .filter_map(|(_, sd)| sd.active())
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
        let n = call[Side::Offerer].streams.len();
        (0..n)
            .filter_map(|i| {
                let leg = |s: Side| -> Option<LegInfo> {
                    let side = &call[s];
                    let st = side.streams.get(i)?;
                    let iface = &self.interfaces[side.iface];
                    let mono = side.active();
                    let remote = mono.and_then(|m| m.streams.get(i));
                    let peers = Component::BOTH.map(|c| {
                        remote.and_then(|r| {
                            if st.ice == IceRole::None {
                                r.latched[c.index()]
                            } else {
                                r.nominated[c.index()]
                            }
                        })
                    });
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
                        peers,
                    })
                };
                let media = call[Side::Offerer]
                    .active()
                    .and_then(|m| m.streams.get(i))
                    .map(|r| r.desc.media.clone())
                    .unwrap_or_default();
                Some(StreamInfo {
                    id: call[Side::Offerer].streams.get(i)?.id,
                    index: i,
                    media,
                    legs: [leg(Side::Offerer)?, leg(Side::Answerer)?],
                })
            })
            .collect()
    }
}
