//! The forwarding entries a call needs, and what changes them after negotiation: latching
//! (RFC 7362) on legs without ICE, nominations on ICE legs.
//!
//! Latching defaults: restricted legs drop mismatched sources, symmetric legs forward them
//! (rtpengine's behaviour), `strict-source` drops, `media-handover` hands them to userspace to
//! re-latch.

use std::net::SocketAddr;

use super::model::{Call, IceRole, RemoteStream, Side, on_hold, signalled};
use super::{SessionError, Sessions};
use crate::component::Component;
use crate::forwarding::{ForwardingEntry, MismatchPolicy, Rewrite};
use crate::latch::LatchMode;

/// Result of [`Sessions::latch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatchOutcome {
    pub accepted: bool,
    /// All entries the call needs now (diff against the previous set with
    /// [`crate::forwarding::diff`]).
    pub entries: Vec<ForwardingEntry>,
}

impl Sessions {
    /// Media arrived on `local` from `observed` with no matching entry: latch if the leg's policy
    /// allows it (RFC 7362).
    pub fn latch(
        &mut self,
        local: SocketAddr,
        observed: SocketAddr,
    ) -> Result<LatchOutcome, SessionError> {
        let at = self.locate(local)?.clone();
        let call = self
            .calls
            .get_mut(&at.call_id)
            .ok_or(SessionError::UnknownEndpoint(local))?;
        let side = &mut call[at.side];
        let ice = side.streams[at.stream].ice;
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
                let rs = &mut mono.streams[at.stream];
                let signalled = signalled(&rs.desc, at.component);
                let slot = &mut rs.latched[at.component.index()];
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
        let entries = self.call_entries(&at.call_id);
        Ok(LatchOutcome { accepted, entries })
    }

    /// The ICE-lite agent of leg `tag` (see [`super::IceLeg::tag`]) on `local` nominated a
    /// validated pair with `remote`. A fork that is not the active leg records it for when it
    /// becomes so.
    pub fn ice_nominated(
        &mut self,
        local: SocketAddr,
        tag: &str,
        remote: SocketAddr,
    ) -> Result<Vec<ForwardingEntry>, SessionError> {
        let at = self.locate(local)?.clone();
        let call = self
            .calls
            .get_mut(&at.call_id)
            .ok_or(SessionError::UnknownEndpoint(local))?;
        let side = &mut call[at.side];
        if side.streams[at.stream].ice == IceRole::None {
            return Err(SessionError::NotIce(local));
        }
        let m = side
            .remotes
            .get_mut(tag)
            .ok_or_else(|| SessionError::UnknownTag {
                call_id: at.call_id.clone(),
                tag: tag.to_owned(),
            })?;
        if let Some(r) = m.streams.get_mut(at.stream) {
            r.nominated[at.component.index()] = Some(remote);
        }
        Ok(self.call_entries(&at.call_id))
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
        for ingress in Side::BOTH {
            self.side_entries(call, ingress, &mut out);
        }
        out.sort();
        out
    }

    /// Entries for media arriving on side `ingress` and leaving on the other side.
    fn side_entries(&self, call: &Call, ingress: Side, out: &mut Vec<ForwardingEntry>) {
        let egress = ingress.other();
        let (from_side, to_side) = (&call[ingress], &call[egress]);
        let (Some(sender), Some(receiver)) = (from_side.active(), to_side.active()) else {
            return;
        };
        let bind_in = self.interfaces[from_side.iface].bind;
        let bind_out = self.interfaces[to_side.iface].bind;
        for (i, (in_stream, out_stream)) in
            from_side.streams.iter().zip(&to_side.streams).enumerate()
        {
            let (Some(sent), Some(received)) = (sender.streams.get(i), receiver.streams.get(i))
            else {
                continue;
            };
            let (Some(in_rtp), Some(out_rtp)) = (in_stream.rtp, out_stream.rtp) else {
                continue;
            };
            if sent.desc.port == 0 || received.desc.port == 0 {
                continue;
            }
            let policy = if in_stream.ice == IceRole::None {
                sender.mismatch
            } else {
                MismatchPolicy::Drop
            };
            let dest = |c: Component| {
                let c = if out_stream.mux { Component::Rtp } else { c };
                let from_port = if c == Component::Rtcp {
                    out_stream.rtcp?
                } else {
                    out_rtp
                };
                let to = peer(received, out_stream.ice, receiver.latch_mode, c)?;
                Some(Rewrite {
                    from: SocketAddr::new(bind_out, from_port),
                    to,
                })
            };
            // Some(None): any source is accepted; None: no entry yet (nothing learned).
            let source = |c: Component| -> Option<Option<SocketAddr>> {
                if in_stream.ice != IceRole::None {
                    return sent.nominated[c.index()].map(Some);
                }
                match sender.latch_mode {
                    LatchMode::Asymmetric => Some(None),
                    _ => sent.latched[c.index()].map(Some),
                }
            };
            let mut push = |port: u16, component: Component, rtcp_rewrite: Option<Rewrite>| {
                if let (Some(src), Some(rewrite)) = (source(component), dest(component)) {
                    out.push(ForwardingEntry {
                        local: SocketAddr::new(bind_in, port),
                        expected_source: src,
                        mismatch: policy,
                        stream: in_stream.id,
                        component,
                        rewrite,
                        rtcp_rewrite,
                    });
                }
            };
            let demux = (in_stream.mux && !out_stream.mux)
                .then(|| dest(Component::Rtcp))
                .flatten();
            push(in_rtp, Component::Rtp, demux);
            if let (false, Some(p)) = (in_stream.mux, in_stream.rtcp) {
                push(p, Component::Rtcp, None);
            }
        }
    }
}

/// Where media for a remote goes: the nominated pair under ICE, else latched or signalled;
/// nowhere while it is on hold.
pub(super) fn peer(
    r: &RemoteStream,
    ice: IceRole,
    mode: LatchMode,
    c: Component,
) -> Option<SocketAddr> {
    if ice != IceRole::None {
        return r.nominated[c.index()];
    }
    if on_hold(&r.desc) {
        return None;
    }
    if mode == LatchMode::Asymmetric {
        return signalled(&r.desc, c);
    }
    r.latched[c.index()].or_else(|| signalled(&r.desc, c))
}
