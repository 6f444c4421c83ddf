//! The forwarding entries a call needs, and what changes them after negotiation: latching
//! (RFC 7362) on legs without ICE, nominations on ICE legs.
//!
//! Latching defaults: restricted legs drop mismatched sources, symmetric legs forward them
//! (rtpengine's behaviour), `strict-source` drops, `media-handover` hands them to userspace to
//! re-latch.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::model::{Call, IceRole, RemoteStream, Side, on_hold, signalled};
use super::{SessionError, Sessions};
use crate::component::Component;
use crate::forwarding::{ForwardingEntry, MismatchPolicy, Rewrite};
use crate::latch::LatchMode;

/// How long latching waits: see [`Sessions::latch_at`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatchTimers {
    /// After a first latch that was not the signalled endpoint, how long a better match may
    /// still take it over (rtpengine's heuristic learning waits 3 s).
    pub learning_window: Duration,
    /// How long the latched source must be silent before another source takes over.
    pub handover_after: Duration,
}

impl Default for LatchTimers {
    fn default() -> LatchTimers {
        LatchTimers {
            learning_window: Duration::from_secs(3),
            handover_after: Duration::from_secs(2),
        }
    }
}

/// Result of [`Sessions::latch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatchOutcome {
    pub accepted: bool,
    /// All entries the call needs now (diff against the previous set with
    /// [`crate::forwarding::diff`]).
    pub entries: Vec<ForwardingEntry>,
}

impl Sessions {
    /// Media arrived on `local` from `observed` with no matching entry, for a caller that keeps
    /// no time: no learning window, and no handover after silence. The daemon uses
    /// [`Sessions::latch_at`].
    pub fn latch(
        &mut self,
        local: SocketAddr,
        observed: SocketAddr,
    ) -> Result<LatchOutcome, SessionError> {
        self.latch_inner(None, local, observed, None)
    }

    /// Media arrived on `local` from `observed` with no matching entry, or from a source other
    /// than the latched one: latch (RFC 7362) if the leg's policy allows it. `latched_idle`: how
    /// long the latched source has been silent on `local`, if known.
    ///
    /// - A first packet latches. Unless it came from exactly the signalled address and port,
    ///   a learning window opens during which a better match (the signalled address and port,
    ///   then the signalled address) takes the latch over: a spray from elsewhere before the
    ///   real endpoint sends does not capture the stream (rtpengine's heuristic learning).
    /// - After that, another source takes over only once the latched one has been silent for
    ///   the handover interval (a NAT rebinding), or at once with `media-handover`.
    /// - Restricted legs only ever latch the signalled address.
    pub fn latch_at(
        &mut self,
        now: Instant,
        local: SocketAddr,
        observed: SocketAddr,
        latched_idle: Option<Duration>,
    ) -> Result<LatchOutcome, SessionError> {
        self.latch_inner(Some(now), local, observed, latched_idle)
    }

    fn latch_inner(
        &mut self,
        now: Option<Instant>,
        local: SocketAddr,
        observed: SocketAddr,
        latched_idle: Option<Duration>,
    ) -> Result<LatchOutcome, SessionError> {
        let at = self.locate(local)?.clone();
        let timers = self.latch_timers;
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
                let c = at.component.index();
                let signalled = signalled(&rs.desc, at.component);
                // 2: the signalled address and port; 1: the signalled address; 0: elsewhere.
                let quality = |a: SocketAddr| match signalled {
                    Some(s) if s == a => 2,
                    Some(s) if s.ip() == a.ip() => 1,
                    _ => 0,
                };
                let learning = rs.learning_until[c].zip(now).is_some_and(|(u, n)| n < u);
                let relatch = match (mode, rs.latched[c]) {
                    (LatchMode::Asymmetric, _) => return self.accept_unlatched(&at.call_id),
                    (_, Some(cur)) if cur == observed => false,
                    (LatchMode::Restricted, _) if quality(observed) == 0 => {
                        return self.refuse(&at.call_id);
                    }
                    (_, None) => true,
                    (_, Some(cur)) if learning && quality(observed) > quality(cur) => true,
                    (_, Some(_)) if handover => true,
                    (_, Some(_)) if latched_idle.is_some_and(|d| d >= timers.handover_after) => {
                        true
                    }
                    (_, Some(_)) => return self.refuse(&at.call_id),
                };
                if relatch {
                    let first = rs.latched[c].is_none();
                    rs.latched[c] = Some(observed);
                    rs.learning_until[c] = match now {
                        _ if quality(observed) == 2 => None,
                        Some(n) if first => Some(n + timers.learning_window),
                        _ if learning => rs.learning_until[c],
                        _ => None,
                    };
                }
                true
            }
            _ => false,
        };
        let entries = self.call_entries(&at.call_id);
        Ok(LatchOutcome { accepted, entries })
    }

    /// Closes the learning windows that ended by `now`; the calls returned have new entries
    /// (their other sources are now refused in the fast path while the latch is active).
    pub fn end_learning(&mut self, now: Instant) -> Vec<String> {
        let mut ended = Vec::new();
        for (call_id, call) in &mut self.calls {
            let mut any = false;
            for side in [Side::Offerer, Side::Answerer] {
                for mono in call[side].remotes.values_mut() {
                    for rs in &mut mono.streams {
                        for until in &mut rs.learning_until {
                            if until.is_some_and(|u| u <= now) {
                                *until = None;
                                any = true;
                            }
                        }
                    }
                }
            }
            if any {
                ended.push(call_id.clone());
            }
        }
        ended
    }

    fn accept_unlatched(&self, call_id: &str) -> Result<LatchOutcome, SessionError> {
        Ok(LatchOutcome {
            accepted: true,
            entries: self.call_entries(call_id),
        })
    }

    fn refuse(&self, call_id: &str) -> Result<LatchOutcome, SessionError> {
        Ok(LatchOutcome {
            accepted: false,
            entries: self.call_entries(call_id),
        })
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
                    // While the learning window is open the daemon must see other sources:
                    // one may be a better match that takes the latch over.
                    let learning = sent.learning_until[component.index()].is_some();
                    out.push(ForwardingEntry {
                        local: SocketAddr::new(bind_in, port),
                        expected_source: src,
                        mismatch: match policy {
                            MismatchPolicy::Handover if learning => MismatchPolicy::Userspace,
                            p => p,
                        },
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
