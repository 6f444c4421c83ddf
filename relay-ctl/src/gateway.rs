//! The WebRTC <-> SIP gateway of the daemon: SRTP decisions per stream (relay-core's
//! [`session_crypto`]) applied to the SDP the session model produced, and the media of every
//! stream whose SRTP the relay terminates ([`CryptoStream`]), by relay endpoint.
//!
//! The engine calls [`Gateway::offer`] / [`Gateway::answer`] on the rewritten SDP (every a=crypto,
//! a=fingerprint and a=setup line is still the endpoint's there), [`Gateway::bind`] once the
//! call's relay endpoints are known, and routes a relay endpoint's packets here when
//! [`Gateway::converts`] says so: such endpoints never get a fast-path entry.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use relay_core::sdp::Sdp;
use relay_core::sdp::{Line, LineEnding};
use relay_core::session::StreamInfo;
use relay_core::session_crypto::{self, CryptoOptions, LegCrypto, Pending, StreamCrypto};
use relay_core::srtp_sdp::Fingerprint;

use crate::crypto_media::{CryptoStream, MediaDrop};
use crate::dtls::{DtlsError, DtlsIdentity, SrtpKeys};

/// Counters of the crypto path (metrics, `statistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GatewayCounters {
    pub dtls_handshakes_ok: u64,
    pub dtls_handshakes_failed: u64,
    pub dtls_fingerprint_mismatch: u64,
    pub srtp_auth_failures: u64,
    pub srtp_replays: u64,
    pub srtp_dropped_other: u64,
    pub crypto_forwarded: u64,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct GwStream {
    /// The active fork's legs (what media runs with), and the offer's pending SRTP until an
    /// answer settles it.
    crypto: StreamCrypto,
    /// Side (0: the call's first offerer) whose endpoint made the offer `crypto` describes.
    offerer_side: usize,
    /// Keys DTLS exported, by leg, kept for a restart.
    #[serde(default)]
    dtls_keys: [Option<SrtpKeys>; 2],
    /// The offer's a=mid, for an answer that has none (WebRTC stacks insist on it).
    #[serde(default)]
    mid: Option<String>,
    /// What the relay offered, kept after the first answer: a forked offer's later answers
    /// settle from it too.
    #[serde(default)]
    offered: Option<Pending>,
    /// Every answering fork's own legs and DTLS keys, by its tag (RFC 3261 forking: each
    /// answer has its own SDES keys or DTLS association).
    /// Boxed: a map node holds room for eleven values, and every plain call has one fork.
    #[serde(default)]
    forks: BTreeMap<String, Box<Fork>>,
    /// The fork whose legs are in `crypto` (None in state saved before forks were kept).
    #[serde(default)]
    fork: Option<String>,
}

/// One answering fork's SRTP.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Fork {
    legs: [LegCrypto; 2],
    #[serde(default)]
    dtls_keys: [Option<SrtpKeys>; 2],
}

/// One call's SRTP as the journal keeps it (see [`Gateway::export_call`]).
pub type CallCrypto = GwCall;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GwCall {
    /// from-tag of the call's first offer: side 0 of the session model.
    first_tag: String,
    /// Boxed: a map node holds room for eleven values, and most calls have one stream.
    streams: BTreeMap<usize, Box<GwStream>>,
}

/// What the state file keeps of the gateway.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GatewayState {
    calls: BTreeMap<String, GwCall>,
}

/// Where a relay endpoint's packets go in the gateway.
#[derive(Clone, Debug)]
struct Route {
    call_id: String,
    index: usize,
    leg: usize,
}

pub struct Gateway {
    identity: DtlsIdentity,
    calls: BTreeMap<String, GwCall>,
    /// The active fork's media of each converting stream.
    media: HashMap<(String, usize), CryptoStream>,
    /// Media of forks that are not active now, by (call, stream, fork tag): their SRTP state
    /// (replay windows, DTLS associations) waits for them to become active again.
    parked: HashMap<(String, usize, String), CryptoStream>,
    routes: HashMap<SocketAddr, Route>,
    pub counters: GatewayCounters,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gateway({} calls)", self.calls.len())
    }
}

fn keygen(len: usize) -> Vec<u8> {
    use rand::RngCore as _;
    let mut k = vec![0u8; len];
    rand::rng().fill_bytes(&mut k);
    k
}

impl Gateway {
    pub fn new(identity: DtlsIdentity, state: GatewayState) -> Gateway {
        Gateway {
            identity,
            calls: state.calls,
            media: HashMap::new(),
            parked: HashMap::new(),
            routes: HashMap::new(),
            counters: GatewayCounters::default(),
        }
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.identity.fingerprint
    }

    /// The call's SRTP state with the keys DTLS exported; None for a call with no conversion.
    pub fn export_call(&self, call_id: &str) -> Option<CallCrypto> {
        let mut call = self.calls.get(call_id)?.clone();
        if !call
            .streams
            .values()
            .any(|s| s.crypto.converts() || s.crypto.pending.is_some())
        {
            return None;
        }
        for (index, st) in &mut call.streams {
            self.fold_keys(call_id, *index, st);
        }
        Some(call)
    }

    /// A call restored from the journal ([`Gateway::bind`] then starts its media).
    pub fn import_call(&mut self, call_id: &str, call: CallCrypto) {
        self.calls.insert(call_id.to_owned(), call);
    }

    /// The earliest DTLS retransmission deadline of any stream.
    /// Copies the keys DTLS exported on running and parked media into the saved stream.
    fn fold_keys(&self, call_id: &str, index: usize, st: &mut GwStream) {
        if let Some(cs) = self.media.get(&(call_id.to_owned(), index)) {
            let keys = cs.dtls_keys();
            if keys.iter().any(Option::is_some) {
                st.dtls_keys = keys.clone();
                if let Some(f) = st.fork.as_ref().and_then(|t| st.forks.get_mut(t)) {
                    f.dtls_keys = keys;
                }
            }
        }
        for (tag, f) in &mut st.forks {
            if let Some(cs) = self.parked.get(&(call_id.to_owned(), index, tag.clone())) {
                let keys = cs.dtls_keys();
                if keys.iter().any(Option::is_some) {
                    f.dtls_keys = keys;
                }
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.media
            .values()
            .filter_map(CryptoStream::poll_timeout)
            .min()
    }

    pub fn snapshot(&self) -> GatewayState {
        let mut calls = self.calls.clone();
        for (call_id, call) in &mut calls {
            for (index, st) in &mut call.streams {
                self.fold_keys(call_id, *index, st);
            }
        }
        GatewayState { calls }
    }

    /// The offer's SDP (already rewritten by the session model) with its SRTP rewritten. With
    /// `dry`, nothing is kept: the engine runs it on the incoming SDP first, so an offer the
    /// gateway would refuse never reaches the session model.
    pub fn offer(
        &mut self,
        call_id: &str,
        from_tag: &str,
        sdp: &str,
        opts: &CryptoOptions,
        dry: bool,
    ) -> Result<String, String> {
        let mut s = match Sdp::parse(sdp) {
            Ok(s) => s,
            // The session model reports SDP errors in its own words.
            Err(_) if dry => return Ok(sdp.to_owned()),
            Err(e) => return Err(e.to_string()),
        };
        let eol = s.ending();
        let fp = self.identity.fingerprint.clone();
        let first_tag = self
            .calls
            .get(call_id)
            .map_or(from_tag, |c| c.first_tag.as_str())
            .to_owned();
        let side = usize::from(first_tag != from_tag);
        let mut out = BTreeMap::new();
        let mut strip = false;
        for (i, section) in s.media.iter_mut().enumerate() {
            let st = session_crypto::offer(i, &s.session, section, eol, opts, &fp, &mut keygen)
                .map_err(|e| format!("Failed to parse SDP: {e}"))?;
            strip |= st.pending.as_ref().is_some_and(|p| p.offerer.is_some());
            if st.pending.as_ref().is_some_and(|p| p.dtls.is_some()) {
                explicit_direction(&s.session, section, eol);
            }
            let mid = section.iter().find_map(|l| match l.attr() {
                Some(("mid", Some(v))) => Some(v.to_owned()),
                _ => None,
            });
            out.insert(
                i,
                GwStream {
                    crypto: st,
                    offerer_side: side,
                    mid,
                    ..GwStream::default()
                },
            );
        }
        if strip {
            session_crypto::strip_session(&mut s.session);
        }
        if dry {
            return Ok(s.to_string());
        }
        let call = self.calls.entry(call_id.to_owned()).or_insert(GwCall {
            first_tag,
            ..GwCall::default()
        });
        // Until the answer settles a re-offer, the running legs (and their DTLS/SRTP) stay.
        for (i, mut new) in out {
            new.offered = new.crypto.pending.clone();
            if let Some(old) = call.streams.remove(&i) {
                new.crypto.legs = old.crypto.legs;
                new.dtls_keys = old.dtls_keys;
                new.forks = old.forks;
                new.fork = old.fork;
            }
            call.streams.insert(i, Box::new(new));
        }
        Ok(s.to_string())
    }

    /// The answer's SDP (rewritten by the session model) with its SRTP rewritten; settles the
    /// legs of every stream.
    pub fn answer(
        &mut self,
        call_id: &str,
        to_tag: &str,
        sdp: &str,
        opts: &CryptoOptions,
        dry: bool,
    ) -> Result<String, String> {
        let mut s = match Sdp::parse(sdp) {
            Ok(s) => s,
            // The session model reports SDP errors in its own words.
            Err(_) if dry => return Ok(sdp.to_owned()),
            Err(e) => return Err(e.to_string()),
        };
        let eol = s.ending();
        let fp = self.identity.fingerprint.clone();
        let Some(call) = self.calls.get_mut(call_id) else {
            return Ok(sdp.to_owned());
        };
        let mut strip = false;
        let mut settled = Vec::new();
        for (i, section) in s.media.iter_mut().enumerate() {
            let Some(gs) = call.streams.get(&i) else {
                continue;
            };
            let mut st = gs.crypto.clone();
            // A later fork answers the same offer: it settles from what the relay offered.
            if st.pending.is_none() {
                st.pending = gs.offered.clone();
            }
            session_crypto::answer(i, &s.session, section, eol, &mut st, opts, &fp, &mut keygen)
                .map_err(|e| format!("Failed to parse SDP: {e}"))?;
            if matches!(st.legs[0], LegCrypto::Dtls { .. }) {
                explicit_direction(&s.session, section, eol);
            }
            // A WebRTC offerer matches answer sections to its own by a=mid (RFC 8843 s.7.3):
            // the relay answering its SRTP answers with its mid too.
            if let (true, Some(mid)) = (st.legs[0].terminated(), &gs.mid)
                && !section.iter().any(|l| l.is_attr("mid"))
            {
                let at = section
                    .iter()
                    .rposition(|l| l.ending != LineEnding::None)
                    .map_or(section.len(), |p| p + 1);
                section.insert(at, Line::new(format!("a=mid:{mid}"), eol));
            }
            strip |= st.legs[0].terminated();
            settled.push((i, st));
        }
        if strip {
            session_crypto::strip_session(&mut s.session);
        }
        if dry {
            return Ok(s.to_string());
        }
        for (i, st) in settled {
            let Some(gs) = call.streams.get_mut(&i) else {
                continue;
            };
            // Same legs (DTLS: same roles and fingerprints) keep the fork's association.
            let fork = gs.forks.entry(to_tag.to_owned()).or_default();
            if fork.legs != st.legs {
                **fork = Fork {
                    legs: st.legs.clone(),
                    dtls_keys: Default::default(),
                };
                self.parked
                    .remove(&(call_id.to_owned(), i, to_tag.to_owned()));
            }
            if gs.fork.is_none() || gs.fork.as_deref() == Some(to_tag) {
                if gs.crypto.legs != st.legs {
                    gs.dtls_keys = Default::default();
                    self.media.remove(&(call_id.to_owned(), i));
                }
                gs.crypto = st;
                gs.fork = Some(to_tag.to_owned());
            } else {
                // Another fork answered: the latest answer is the active one (as in the
                // session model), with its own keys.
                gs.crypto.pending = None;
                activate(&mut self.media, &mut self.parked, call_id, i, gs, to_tag);
            }
        }
        Ok(s.to_string())
    }

    /// Maps the call's relay endpoints to legs and starts the media side of settled streams.
    pub fn bind(&mut self, call_id: &str, streams: &[StreamInfo], now: Instant) {
        self.routes.retain(|_, r| r.call_id != call_id);
        // The session model's active fork (a deleted fork hands over to an earlier one).
        if let Some(call) = self.calls.get_mut(call_id) {
            for info in streams {
                let Some(gs) = call.streams.get_mut(&info.index) else {
                    continue;
                };
                let active = info.legs[1 - gs.offerer_side.min(1)].tag.clone();
                if let Some(tag) = active
                    && gs.fork.as_ref() != Some(&tag)
                    && gs.forks.contains_key(&tag)
                {
                    activate(
                        &mut self.media,
                        &mut self.parked,
                        call_id,
                        info.index,
                        gs,
                        &tag,
                    );
                }
            }
        }
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        for info in streams {
            let Some(gs) = call.streams.get(&info.index) else {
                continue;
            };
            if !gs.crypto.legs.iter().any(|l| l.terminated()) {
                continue;
            }
            for (side, leg) in info.legs.iter().enumerate() {
                let leg_no = usize::from(side != gs.offerer_side);
                for local in [leg.rtp, leg.rtcp].into_iter().flatten() {
                    self.routes.insert(
                        local,
                        Route {
                            call_id: call_id.to_owned(),
                            index: info.index,
                            leg: leg_no,
                        },
                    );
                }
            }
            let key = (call_id.to_owned(), info.index);
            if !self.media.contains_key(&key) {
                match CryptoStream::new(&gs.crypto, &self.identity, gs.dtls_keys.clone(), now) {
                    Ok(cs) => {
                        tracing::info!(%call_id, index = info.index, crypto = cs.label(), "daemon forwards this stream (SRTP terminated)");
                        self.media.insert(key, cs);
                    }
                    Err(e) => tracing::warn!(%call_id, error = %e, "DTLS endpoint"),
                }
            }
        }
    }

    /// Forgets a call (deleted or timed out).
    pub fn remove(&mut self, call_id: &str) {
        self.calls.remove(call_id);
        self.media.retain(|(c, _), _| c != call_id);
        self.parked.retain(|(c, _, _), _| c != call_id);
        self.routes.retain(|_, r| r.call_id != call_id);
    }

    /// Why the daemon, not the fast path, forwards this endpoint's media ("crypto: ...").
    pub fn converts(&self, local: &SocketAddr) -> Option<String> {
        let r = self.routes.get(local)?;
        let gs = self.calls.get(&r.call_id)?.streams.get(&r.index)?;
        gs.crypto.describe().map(|d| format!("crypto: {d}"))
    }

    /// One media packet from the peer of `local`, converted for the other leg.
    pub fn media(&mut self, local: &SocketAddr, data: &[u8]) -> Result<Vec<u8>, MediaDrop> {
        let Some(r) = self.routes.get(local) else {
            return Err(MediaDrop::NotReady);
        };
        let Some(cs) = self.media.get_mut(&(r.call_id.clone(), r.index)) else {
            return Err(MediaDrop::NotReady);
        };
        let res = cs.media(r.leg, data);
        let c = &mut self.counters;
        match &res {
            Ok(_) => c.crypto_forwarded += 1,
            Err(MediaDrop::Auth) => c.srtp_auth_failures += 1,
            Err(MediaDrop::Replay) => c.srtp_replays += 1,
            Err(_) => c.srtp_dropped_other += 1,
        }
        res
    }

    /// A DTLS datagram on `local`: the records to send back, or None when DTLS on that leg is
    /// not the relay's (it passes through as before).
    pub fn dtls(&mut self, local: &SocketAddr, now: Instant, data: &[u8]) -> Option<Vec<Vec<u8>>> {
        let r = self.routes.get(local)?.clone();
        let cs = self.media.get_mut(&(r.call_id.clone(), r.index))?;
        if !cs.terminates_dtls(r.leg) {
            return None;
        }
        let o = cs.dtls(r.leg, now, data);
        if o.connected {
            self.counters.dtls_handshakes_ok += 1;
            tracing::info!(call_id = %r.call_id, index = r.index, leg = r.leg, "DTLS-SRTP handshake done");
        }
        if let Some(e) = &o.failed {
            self.counters.dtls_handshakes_failed += 1;
            if matches!(e, DtlsError::Fingerprint) {
                self.counters.dtls_fingerprint_mismatch += 1;
            }
            tracing::warn!(call_id = %r.call_id, index = r.index, leg = r.leg, error = %e, "DTLS-SRTP handshake failed");
        }
        Some(o.replies)
    }

    /// Timer work: retransmissions and the first flight of active endpoints, as (relay
    /// endpoint of the leg, record); the engine sends each to that leg's peer.
    pub fn poll(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        for ((call_id, index), cs) in &mut self.media {
            let due = cs.poll_timeout().is_some_and(|t| t <= now);
            let sends = if due {
                cs.handle_timeout(now)
            } else {
                cs.poll_transmit()
            };
            for (leg, data) in sends {
                let local = self
                    .routes
                    .iter()
                    .filter(|(_, r)| &r.call_id == call_id && r.index == *index && r.leg == leg)
                    .map(|(l, _)| *l)
                    .min();
                if let Some(local) = local {
                    out.push((local, data));
                }
            }
        }
        out
    }

    /// (call, media index) -> "crypto: ..." for every converting stream of a call.
    pub fn describe(&self, call_id: &str) -> BTreeMap<usize, String> {
        self.calls
            .get(call_id)
            .map(|c| {
                c.streams
                    .iter()
                    .filter_map(|(i, s)| Some((*i, format!("crypto: {}", s.crypto.describe()?))))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Makes fork `tag` of stream `index` the one media runs with: the running fork's media is
/// parked (unless both forks have the same legs, e.g. one DTLS association with the offerer and
/// plain RTP to every fork: it keeps running), the new fork's parked media resumes, or starts
/// at the next [`Gateway::bind`] from its own keys.
fn activate(
    media: &mut HashMap<(String, usize), CryptoStream>,
    parked: &mut HashMap<(String, usize, String), CryptoStream>,
    call_id: &str,
    index: usize,
    gs: &mut GwStream,
    tag: &str,
) {
    let key = (call_id.to_owned(), index);
    let Some(mut new) = gs.forks.get(tag).cloned() else {
        return;
    };
    let running = media.get(&key).map(CryptoStream::dtls_keys);
    // A leg both forks share keeps its DTLS keys: its peer will not shake hands again.
    if let Some(keys) = &running {
        for (l, k) in keys.iter().enumerate() {
            if new.legs[l] == gs.crypto.legs[l] && new.dtls_keys[l].is_none() {
                new.dtls_keys[l] = k.clone();
            }
        }
    }
    if new.legs != gs.crypto.legs {
        if let Some(cs) = media.remove(&key)
            && let Some(old) = gs.fork.clone()
        {
            if let Some(f) = gs.forks.get_mut(&old) {
                let k = cs.dtls_keys();
                if k.iter().any(Option::is_some) {
                    f.dtls_keys = k;
                }
            }
            parked.insert((call_id.to_owned(), index, old), cs);
        }
        if let Some(cs) = parked.remove(&(call_id.to_owned(), index, tag.to_owned())) {
            media.insert(key, cs);
        }
    }
    gs.crypto.legs = new.legs.clone();
    gs.dtls_keys = new.dtls_keys.clone();
    gs.fork = Some(tag.to_owned());
    gs.forks.insert(tag.to_owned(), new);
}

/// RFC 3264's default (sendrecv) written out for a WebRTC leg: JSEP stacks do not assume it.
fn explicit_direction(session: &[Line], section: &mut Vec<Line>, eol: LineEnding) {
    let dir = |l: &Line| {
        ["sendrecv", "sendonly", "recvonly", "inactive"]
            .iter()
            .any(|d| l.is_attr(d))
    };
    if session.iter().any(dir) || section.iter().any(dir) {
        return;
    }
    let at = section
        .iter()
        .rposition(|l| l.ending != LineEnding::None)
        .map_or(section.len(), |p| p + 1);
    section.insert(at, Line::new("a=sendrecv", eol));
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
