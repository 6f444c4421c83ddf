//! Offer/answer (RFC 3264) with the RFC 7584 ICE modes and rtcp-mux (RFC 5761): which relay ports
//! each side gets, how ICE runs on each leg, and what each remote party signalled. Ports are taken
//! in a transaction that is committed only once the operation cannot fail.

use std::net::IpAddr;

use super::interfaces;
use super::model::{
    Call, CallSide, IceRole, LocalStream, Monologue, RemoteStream, Side, first_creds, on_hold,
    same_endpoint,
};
use super::options::{AnswerOptions, Flags, IceOption, OfferOptions, RtcpMuxOption};
use super::{Negotiated, SessionError, Sessions, side_of_tag};
use crate::forwarding::{MismatchPolicy, StreamId};
use crate::latch::choose_mode;
use crate::sdp::{Sdp, SessionDesc};

/// Ports taken or given back by one operation; applied only once the operation cannot fail.
#[derive(Default)]
pub(super) struct PortTxn {
    taken: Vec<(IpAddr, u16)>,
    freed: Vec<(IpAddr, u16)>,
}

impl Sessions {
    /// An offer from `from_tag`: returns the SDP to send to the other party and the call's new
    /// sockets, entries and ICE legs.
    pub fn offer(
        &mut self,
        call_id: &str,
        from_tag: &str,
        sdp_text: &str,
        opts: &OfferOptions,
    ) -> Result<Negotiated, SessionError> {
        let (mut sdp, desc) = self.parse_within_limits(sdp_text)?;
        let existing = self.calls.get(call_id);
        // The side the offer comes from: the first offerer's, unless the answerer re-offers.
        let from = match existing {
            None => Side::Offerer,
            Some(c) => side_of_tag(c, call_id, from_tag)?,
        };
        let to = from.other();
        let mut call = match existing {
            Some(c) => c.clone(),
            None => {
                let (a, b) = interfaces::pick(&self.interfaces, &desc, opts)?;
                Call::new(
                    CallSide::new(a),
                    CallSide::new(b),
                    (opts.rtcp_mux, opts.ice),
                )
            }
        };
        if call[from].streams.len() > desc.media.len() {
            return Err(SessionError::MediaRemoved {
                got: desc.media.len(),
                had: call[from].streams.len(),
            });
        }
        call.mux_option = opts.rtcp_mux;
        call.ice_option = opts.ice;
        let (role_from, role_to) = ice_roles(opts.ice, desc.has_ice());
        let prev = call[from].remotes.get(from_tag).cloned();
        let mut txn = PortTxn::default();
        let result = self.plan_offer(&mut call, from, &desc, prev.as_ref(), opts, &mut txn);
        if let Err(e) = result {
            self.rollback(&txn);
            return Err(e);
        }
        // ICE restart by the offerer (RFC 8445 s.9) gives its leg fresh credentials too.
        let restarted = prev
            .as_ref()
            .is_some_and(|p| p.creds.is_some() && p.creds != first_creds(&desc));
        for (side, role) in [(from, role_from), (to, role_to)] {
            for st in &mut call[side].streams {
                st.ice = if st.rtp.is_some() {
                    role
                } else {
                    IceRole::None
                };
            }
            if role == IceRole::Terminated
                && (call[side].creds.is_none() || (side == from && restarted))
            {
                call[side].creds = Some((self.creds)());
            }
        }
        let mono = monologue(
            &desc,
            sdp_text,
            prev.as_ref(),
            &opts.flags,
            opts.received_from,
            opts.source_mismatch,
        );
        call[from].set_active(from_tag, mono);

        let mux: Vec<bool> = call[to].streams.iter().map(|st| st.mux_offered).collect();
        let out = self.rewrite(&mut sdp, &desc, &call, to, opts.replace, &mux);
        Ok(self.conclude(call_id, call, &txn, out))
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
    ) -> Result<Negotiated, SessionError> {
        let (mut sdp, desc) = self.parse_within_limits(sdp_text)?;
        let existing = self.known_call(call_id)?;
        // `offerer`: the side the answered offer came from; `answerer`: the other one.
        let offerer = side_of_tag(existing, call_id, from_tag)?;
        let answerer = offerer.other();
        let mut call = existing.clone();
        let want = call[answerer].streams.len();
        if desc.media.len() != want {
            return Err(SessionError::AnswerMismatch {
                got: desc.media.len(),
                want,
            });
        }
        let offer_mux: Vec<bool> = call[offerer]
            .active()
            .map(|m| m.streams.iter().map(|r| r.desc.rtcp_mux).collect())
            .unwrap_or_default();
        let answer_ice = desc.has_ice();
        let mut txn = PortTxn::default();
        for (i, m) in desc.media.iter().enumerate() {
            if m.port == 0 {
                for side in [offerer, answerer] {
                    let bind = self.interfaces[call[side].iface].bind;
                    free_stream(&mut call[side].streams[i], bind, &mut txn);
                }
                continue;
            }
            let theirs = &mut call[answerer].streams[i];
            theirs.mux = theirs.mux_offered && m.rtcp_mux;
            let answerer_mux = theirs.mux;
            theirs.ice = match theirs.ice {
                IceRole::None => IceRole::None,
                r if answer_ice => r,
                _ => IceRole::None,
            };
            let mux_option = call.mux_option;
            let ours = &mut call[offerer].streams[i];
            let offered = offer_mux.get(i).copied().unwrap_or(false);
            ours.mux = offered
                && match mux_option {
                    RtcpMuxOption::Accept | RtcpMuxOption::Demux | RtcpMuxOption::Require => true,
                    RtcpMuxOption::Reject | RtcpMuxOption::OfferReject => false,
                    RtcpMuxOption::None | RtcpMuxOption::Offer => answerer_mux,
                };
            if ours.ice == IceRole::Optional && !answer_ice {
                // Nothing to pass through: the relay becomes the offerer's only candidate.
                ours.ice = IceRole::Terminated;
            }
        }
        let offerer_ice = call[offerer].active().is_some_and(|m| m.creds.is_some());
        let live = |st: &&mut LocalStream| st.rtp.is_some();
        match opts.ice {
            None | Some(IceOption::Default) if offerer_ice => {
                for st in call[offerer].streams.iter_mut().filter(live) {
                    if st.ice == IceRole::None {
                        st.ice = IceRole::Terminated;
                    }
                }
            }
            Some(IceOption::Force) => {
                for st in call[offerer].streams.iter_mut().filter(live) {
                    st.ice = IceRole::Terminated;
                }
            }
            Some(IceOption::Remove) => {
                for st in &mut call[offerer].streams {
                    st.ice = IceRole::None;
                }
            }
            _ => {}
        }
        let needs_creds = call[offerer]
            .streams
            .iter()
            .any(|st| st.ice == IceRole::Terminated);
        if needs_creds && call[offerer].creds.is_none() {
            call[offerer].creds = Some((self.creds)());
        }
        let prev = call[answerer].remotes.get(to_tag).cloned();
        let mono = monologue(
            &desc,
            sdp_text,
            prev.as_ref(),
            &opts.flags,
            opts.received_from,
            opts.source_mismatch,
        );
        call[answerer].set_active(to_tag, mono);
        let mux: Vec<bool> = call[offerer].streams.iter().map(|st| st.mux).collect();
        let out = self.rewrite(&mut sdp, &desc, &call, offerer, opts.replace, &mux);
        Ok(self.conclude(call_id, call, &txn, out))
    }

    /// The end of an offer or answer, once nothing can fail: the ports taken are committed, the
    /// call is stored and re-indexed, and `sdp` goes on.
    fn conclude(&mut self, call_id: &str, call: Call, txn: &PortTxn, sdp: String) -> Negotiated {
        self.commit(txn);
        self.calls.insert(call_id.to_owned(), call);
        Negotiated {
            sdp,
            update: self.reindex(call_id),
        }
    }

    /// Parses an SDP body that is within [`super::Limits`].
    fn parse_within_limits(&self, sdp_text: &str) -> Result<(Sdp, SessionDesc), SessionError> {
        let max = self.limits.max_sdp_bytes;
        if sdp_text.len() > max {
            return Err(SessionError::SdpTooLarge {
                size: sdp_text.len(),
                max,
            });
        }
        let sdp = Sdp::parse(sdp_text)?;
        let desc = sdp.describe()?;
        if desc.media.len() > self.limits.max_media {
            return Err(SessionError::TooManyMedia {
                got: desc.media.len(),
                max: self.limits.max_media,
            });
        }
        Ok((sdp, desc))
    }

    /// Ports and rtcp-mux of every stream of an offer coming from side `from`.
    fn plan_offer(
        &mut self,
        call: &mut Call,
        from: Side,
        desc: &SessionDesc,
        prev: Option<&Monologue>,
        opts: &OfferOptions,
        txn: &mut PortTxn,
    ) -> Result<(), SessionError> {
        let to = from.other();
        let bind_from = self.interfaces[call[from].iface].bind;
        let bind_to = self.interfaces[call[to].iface].bind;
        for m in &desc.media {
            let i = m.index;
            if call[from].streams.len() <= i {
                let id = StreamId(self.next_stream);
                self.next_stream += 1;
                for side in [from, to] {
                    call[side].streams.push(LocalStream::new(id));
                }
            }
            if m.port == 0 {
                free_stream(&mut call[from].streams[i], bind_from, txn);
                free_stream(&mut call[to].streams[i], bind_to, txn);
                continue;
            }
            let single_from = m.rtcp_mux
                && matches!(
                    opts.rtcp_mux,
                    RtcpMuxOption::Accept | RtcpMuxOption::Demux | RtcpMuxOption::Require
                );
            let single_to = opts.rtcp_mux == RtcpMuxOption::Require;
            let moved = prev
                .and_then(|p| p.streams.get(i))
                .is_some_and(|r| !same_endpoint(&r.desc, m));
            let keep_from = !moved || opts.flags.port_latching;
            self.ensure_ports(
                &mut call[from].streams[i],
                bind_from,
                single_from,
                keep_from,
                txn,
            )?;
            self.ensure_ports(&mut call[to].streams[i], bind_to, single_to, true, txn)?;
            // A re-offer keeps what the last answer settled until the next answer says otherwise.
            let ours = &mut call[from].streams[i];
            ours.mux = single_from || (ours.mux && m.rtcp_mux);
            ours.mux_offered = m.rtcp_mux;
            let theirs = &mut call[to].streams[i];
            theirs.mux_offered = match opts.rtcp_mux {
                RtcpMuxOption::Offer | RtcpMuxOption::Require | RtcpMuxOption::OfferReject => true,
                RtcpMuxOption::Demux => false,
                RtcpMuxOption::None | RtcpMuxOption::Accept | RtcpMuxOption::Reject => m.rtcp_mux,
            };
            theirs.mux = single_to || (theirs.mux && theirs.mux_offered);
        }
        Ok(())
    }

    /// Makes sure a stream has ports: one if `single`, else an RTP/RTCP pair.
    fn ensure_ports(
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

    pub(super) fn rollback(&mut self, txn: &PortTxn) {
        for (ip, p) in &txn.taken {
            if let Some(a) = self.allocators.get_mut(ip) {
                a.release(*p);
            }
        }
    }

    pub(super) fn commit(&mut self, txn: &PortTxn) {
        for (ip, p) in &txn.freed {
            if let Some(a) = self.allocators.get_mut(ip) {
                a.release(*p);
            }
        }
    }
}

/// ICE on the offerer's and the answerer's leg for an offer, per rtpengine's `ICE` option and
/// whether the offer carries ICE.
fn ice_roles(ice: IceOption, offer_has_ice: bool) -> (IceRole, IceRole) {
    match (ice, offer_has_ice) {
        (IceOption::Remove, _) | (IceOption::Default, false) => (IceRole::None, IceRole::None),
        (IceOption::Force | IceOption::Default, true) => (IceRole::Terminated, IceRole::Terminated),
        (IceOption::Force | IceOption::Optional | IceOption::ForceRelay, false) => {
            (IceRole::None, IceRole::Terminated)
        }
        (IceOption::Optional | IceOption::ForceRelay, true) => {
            (IceRole::Optional, IceRole::Optional)
        }
    }
}

/// Gives a stream's ports back (when the transaction commits).
pub(super) fn free_stream(st: &mut LocalStream, bind: IpAddr, txn: &mut PortTxn) {
    for p in [st.rtp.take(), st.rtcp.take()].into_iter().flatten() {
        txn.freed.push((bind, p));
    }
    st.mux = false;
}

/// What a remote party signalled, with the latches and nominations of its previous SDP that
/// still hold.
fn monologue(
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
    } else {
        // Secure by default (RTP injection, RFC 7362 s.5): another source gets through only
        // once the latched one has gone silent (a NAT rebinding).
        MismatchPolicy::Handover
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
                |a: &std::net::SocketAddr| !resumed || m.connection.is_some_and(|ip| a.ip() == ip);
            let keep =
                |slots: [Option<std::net::SocketAddr>; 2]| slots.map(|a| a.filter(still_there));
            RemoteStream {
                desc: m.clone(),
                latched: old.map_or([None; 2], |r| keep(r.latched)),
                nominated: old.map_or([None; 2], |r| keep(r.nominated)),
                learning_until: old.map_or([None; 2], |r| r.learning_until),
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
