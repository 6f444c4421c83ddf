//! The daemon's state and protocol glue: NG requests in, replies out; relay-port datagrams in,
//! latching decisions and forwarding out. Protocol truth lives in relay-core; this module applies
//! its decisions. Every change to a call recomputes that call's forwarding entries and applies
//! only the difference, so nothing is ever half-installed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use relay_common::stream::{
    Endpoint, FLAG_RTCP_DEMUX, FLAG_SOURCE_ANY, Mismatch, StreamCounters, StreamEntry, StreamKey,
};
use relay_core::{
    ice::{Component, IceEvent, IceLiteAgent},
    latch::{ForwardingEntry, MismatchPolicy, diff},
    sdp::SdpError,
    session::{Config as SessionConfig, IceRole, SessionError, Sessions},
};
use serde_json::{Map, Value, json};

use crate::{
    config::Config,
    gateway::{Gateway, GatewayState},
    metrics::Snapshot,
    ngmap::{Request, normalise},
    ngwire::{self, Encoding},
    ports::{Inbound, PortSockets},
    xdp::{Relay, monotonic_ns, read_totals},
};

#[derive(Clone, Copy, Debug, Default)]
struct StreamStats {
    packets: u64,
    bytes: u64,
    last: Option<SystemTime>,
}

struct CallMeta {
    created: SystemTime,
    created_at: Instant,
    last_signal: SystemTime,
    last_activity: Instant,
}

/// Longest time a session change waits before the state file is written.
pub const STATE_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

pub struct Engine {
    cfg: Config,
    relay: Relay,
    ports: PortSockets,
    sessions: Sessions,
    /// Entries applied, by relay endpoint, and which call each endpoint belongs to.
    entries: BTreeMap<SocketAddr, ForwardingEntry>,
    call_entries: HashMap<String, Vec<ForwardingEntry>>,
    bound: HashMap<String, BTreeSet<SocketAddr>>,
    call_of: HashMap<SocketAddr, String>,
    meta: HashMap<String, CallMeta>,
    stats: HashMap<SocketAddr, StreamStats>,
    pending_deletes: Vec<(Instant, String, Option<String>, Option<String>)>,
    ng_counts: BTreeMap<(String, String), u64>,
    ng_cache: ReplyCache,
    logged_unknown: HashSet<String>,
    userspace_forwarded: u64,
    sessions_total: u64,
    /// Fast-path counter slot of each installed relay endpoint, and the free slots.
    slots: HashMap<SocketAddr, u32>,
    free_slots: Vec<u32>,
    /// One ICE-lite agent per ICE leg (call, tag, stream), and the leg each relay endpoint's STUN
    /// goes to (with forks sharing endpoints, the latest leg).
    agents: HashMap<(String, String, u64), IceLiteAgent>,
    agent_of: HashMap<SocketAddr, ((String, String, u64), Component)>,
    ice_checks: BTreeMap<&'static str, u64>,
    /// Sessions changed since the state file was last written (see [`Engine::flush_state`]).
    dirty: bool,
    /// gateway: SRTP termination (WebRTC <-> SIP); its streams never enter the fast path.
    gateway: Gateway,
}

impl Engine {
    /// A new engine; calls saved in the state file by an earlier daemon are restored: their
    /// sockets re-bound, agents re-created and entries re-applied over the pinned maps.
    pub fn new(cfg: Config, relay: Relay, ports: PortSockets) -> anyhow::Result<Engine> {
        use anyhow::Context as _;
        let scfg = SessionConfig {
            interfaces: cfg.interfaces.clone(),
            port_min: cfg.port_min,
            port_max: cfg.port_max,
        };
        let saved: Option<Saved> = match crate::state_file::read(&cfg.state_file)
            .with_context(|| format!("reading {}", cfg.state_file.display()))?
        {
            Some(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a saved session state; move it away to start without its calls",
                    cfg.state_file.display()
                )
            })?),
            None => None,
        };
        let mut sessions = match &saved {
            Some(sv) => Sessions::restore(scfg, sv.sessions.clone())
                .with_context(|| format!("restoring calls from {}", cfg.state_file.display()))?,
            None => Sessions::new(scfg)?,
        };
        // A port another program holds is skipped at allocation, not discovered at bind time.
        sessions.set_port_check(Box::new(|ip, port| {
            std::net::UdpSocket::bind(SocketAddr::new(ip, port)).is_ok()
        }));
        // Counter slots as the table really is (a re-opened pinned one keeps its size).
        let capacity = relay.stream_capacity()?;
        let identity = crate::dtls::DtlsIdentity::load_or_create(&cfg.dtls_cert)
            .with_context(|| format!("DTLS certificate {}", cfg.dtls_cert.display()))?;
        tracing::info!(fingerprint = %identity.fingerprint, "DTLS identity");
        let gateway = Gateway::new(
            identity,
            saved
                .as_ref()
                .map(|s| s.gateway.clone())
                .unwrap_or_default(),
        );
        let mut engine = Engine {
            cfg,
            relay,
            ports,
            sessions,
            entries: BTreeMap::new(),
            call_entries: HashMap::new(),
            bound: HashMap::new(),
            call_of: HashMap::new(),
            meta: HashMap::new(),
            stats: HashMap::new(),
            pending_deletes: Vec::new(),
            ng_counts: BTreeMap::new(),
            ng_cache: ReplyCache::default(),
            logged_unknown: HashSet::new(),
            userspace_forwarded: 0,
            sessions_total: 0,
            slots: HashMap::new(),
            // Slot 0 stays unused so a zeroed entry never counts into a live stream.
            free_slots: (1..capacity).rev().collect(),
            dirty: false,
            agents: HashMap::new(),
            agent_of: HashMap::new(),
            ice_checks: BTreeMap::new(),
            gateway,
        };
        if let Some(sv) = saved {
            let now = Instant::now();
            for (local, slot) in sv.slots {
                engine.free_slots.retain(|s| *s != slot);
                engine.slots.insert(local, slot);
            }
            for (call_id, created) in sv.calls {
                let created = UNIX_EPOCH + std::time::Duration::from_secs(created);
                engine.meta.insert(
                    call_id.clone(),
                    CallMeta {
                        created,
                        created_at: now,
                        last_signal: created,
                        last_activity: now,
                    },
                );
                engine.sync_call(&call_id);
            }
            engine.sessions_total = engine.meta.len() as u64;
            tracing::info!(
                calls = engine.meta.len(),
                "calls restored from the state file"
            );
        }
        Ok(engine)
    }

    /// Notes that the sessions changed; the daemon writes them within [`STATE_FLUSH_DELAY`].
    fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// True when the state file is behind the sessions.
    pub fn state_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the sessions to the state file (atomically) if they changed. Writes are batched:
    /// each costs an fsync (milliseconds) and serialises every call, so writing per NG command
    /// would cap the daemon at a few dozen calls per second. A crash loses at most the changes
    /// of the last [`STATE_FLUSH_DELAY`]; a stop (SIGTERM) loses nothing.
    pub fn flush_state(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let saved = Saved {
            sessions: self.sessions.snapshot(),
            calls: self
                .meta
                .iter()
                .map(|(c, m)| (c.clone(), epoch(m.created)))
                .collect(),
            slots: self.slots.iter().map(|(a, s)| (*a, *s)).collect(),
            gateway: self.gateway.snapshot(),
        };
        let result = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::state_file::write_atomic(&self.cfg.state_file, &b));
        if let Err(e) = result {
            tracing::warn!(path = %self.cfg.state_file.display(), error = %e, "saving sessions");
        }
    }

    /// One NG datagram: `COOKIE SP DICTIONARY`. Returns the reply datagram, or nothing for input
    /// without a cookie to answer to. A retransmission (same cookie) gets the cached reply and is
    /// not executed again.
    pub fn handle_ng(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        let sp = datagram.iter().position(|&b| b == b' ')?;
        let (cookie, body) = (&datagram[..sp], &datagram[sp + 1..]);
        if cookie.is_empty() {
            return None;
        }
        if let Some(reply) = self.ng_cache.get(now, cookie) {
            tracing::debug!(%from, "NG retransmission answered from the cache");
            return Some(reply);
        }
        let (command, reply, enc) = match ngwire::decode(body) {
            Ok((raw, enc)) => {
                let mut req = Request::new(&raw);
                let command = req.str("command").unwrap_or("").to_owned();
                let call_id = req.str("call-id").unwrap_or("").to_owned();
                let reply = self.dispatch(now, &command, &mut req);
                for u in std::mem::take(&mut req.unknown) {
                    if self.logged_unknown.insert(u.clone()) {
                        tracing::info!(option = %u, "ignoring unknown NG option (logged once)");
                    }
                }
                let result = reply.get("result").and_then(Value::as_str).unwrap_or("?");
                tracing::info!(%from, %command, call_id = %call_id, %result, "NG request");
                (command, reply, enc)
            }
            Err(e) => {
                tracing::info!(%from, error = %e, "undecodable NG request");
                // Reply in the encoding the sender most likely speaks.
                let enc = if body.first() == Some(&b'{') {
                    Encoding::Json
                } else {
                    Encoding::Bencode
                };
                ("invalid".to_owned(), error(&e.to_string()), enc)
            }
        };
        let result = reply
            .get("result")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        if result == "ok" && matches!(command.as_str(), "offer" | "answer" | "delete") {
            self.mark_dirty();
        }
        *self.ng_counts.entry((command, result)).or_default() += 1;
        let mut out = cookie.to_vec();
        out.push(b' ');
        out.extend_from_slice(&ngwire::encode(&reply, enc));
        self.ng_cache.insert(now, cookie, &out);
        Some(out)
    }

    fn dispatch(&mut self, now: Instant, command: &str, req: &mut Request) -> Map<String, Value> {
        let r = match command {
            "ping" => Ok(obj(json!({"result": "pong"}))),
            "offer" => self.offer(now, req),
            "answer" => self.answer(now, req),
            "delete" => self.delete(now, req),
            "query" => self.query(req),
            "list" => Ok(self.list(req)),
            "statistics" => Ok(self.statistics()),
            // rtpengine's wording, which proxies log and some match on.
            "" => Err("Dictionary contains no key \"command\"".to_owned()),
            _ => Err("Unrecognized command".to_owned()),
        };
        r.unwrap_or_else(|reason| error(&reason))
    }

    fn offer(&mut self, now: Instant, req: &mut Request) -> Result<Map<String, Value>, String> {
        let call_id = required(req, "call-id")?;
        let from_tag = required(req, "from-tag")?;
        let sdp = required_sdp(req)?;
        let mut opts = req.offer_options().map_err(|e| e.to_string())?;
        let (crypto, implied) = crate::ngcrypto::crypto_options(req).map_err(|e| e.to_string())?;
        if implied.ice_force {
            opts.ice = relay_core::session::IceOption::Force;
        }
        if implied.rtcp_mux_require {
            opts.rtcp_mux = relay_core::session::RtcpMuxOption::Require;
        } else if implied.rtcp_mux_offer {
            opts.rtcp_mux = relay_core::session::RtcpMuxOption::Offer;
        }
        // gateway: a dry run first, so an offer it refuses changes nothing.
        self.gateway
            .offer(&call_id, &from_tag, &sdp, &crypto, true)?;
        let out = self
            .sessions
            .offer(&call_id, &from_tag, &sdp, &opts)
            .map_err(|e| session_error_reason(&e))?;
        let out = self
            .gateway
            .offer(&call_id, &from_tag, &out, &crypto, false)?;
        Ok(self.rewritten(now, &call_id, out))
    }

    fn answer(&mut self, now: Instant, req: &mut Request) -> Result<Map<String, Value>, String> {
        let call_id = required(req, "call-id")?;
        let from_tag = required(req, "from-tag")?;
        // rtpengine's order of checks, so a request missing both gets the same error.
        let sdp = required_sdp(req)?;
        let to_tag = required(req, "to-tag")?;
        let mut opts = req.answer_options().map_err(|e| e.to_string())?;
        let (crypto, implied) = crate::ngcrypto::crypto_options(req).map_err(|e| e.to_string())?;
        if implied.ice_force {
            opts.ice = Some(relay_core::session::IceOption::Force);
        }
        self.gateway.answer(&call_id, &sdp, &crypto, true)?;
        let out = self
            .sessions
            .answer(&call_id, &from_tag, &to_tag, &sdp, &opts)
            .map_err(|e| session_error_reason(&e))?;
        let out = self.gateway.answer(&call_id, &out, &crypto, false)?;
        Ok(self.rewritten(now, &call_id, out))
    }

    /// After an offer or answer: the call's sockets, entries and agents follow the new state.
    fn rewritten(&mut self, now: Instant, call_id: &str, sdp: String) -> Map<String, Value> {
        self.touch(now, call_id);
        self.sync_call(call_id);
        obj(json!({"result": "ok", "sdp": sdp}))
    }

    fn delete(&mut self, now: Instant, req: &mut Request) -> Result<Map<String, Value>, String> {
        let call_id = required(req, "call-id")?;
        let from_tag = req
            .str("from-tag")
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let to_tag = req
            .str("to-tag")
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let delay = req
            .int("delete-delay")
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        let fatal = req.list("flags").iter().any(|f| normalise(f) == "fatal");
        let known = self.meta.contains_key(&call_id)
            && self
                .sessions
                .check_tags(&call_id, from_tag.as_deref(), to_tag.as_deref())
                .is_ok();
        if !known {
            return delete_not_found(fatal);
        }
        let reply = self.query_reply(&call_id);
        if delay > 0 {
            let at = now + std::time::Duration::from_secs(delay);
            self.pending_deletes.push((at, call_id, from_tag, to_tag));
        } else {
            self.delete_now(&call_id, from_tag.as_deref(), to_tag.as_deref())?;
        }
        Ok(reply)
    }

    fn delete_now(
        &mut self,
        call_id: &str,
        from_tag: Option<&str>,
        to_tag: Option<&str>,
    ) -> Result<(), String> {
        self.sessions
            .delete(call_id, from_tag, to_tag)
            .map_err(|e| e.to_string())?;
        self.sync_call(call_id);
        if !self.sessions.call_ids().any(|c| c == call_id) {
            self.meta.remove(call_id);
            self.gateway.remove(call_id);
            tracing::info!(%call_id, "call deleted");
        }
        Ok(())
    }

    fn list(&self, req: &Request) -> Map<String, Value> {
        let limit = req.int("limit").ok().flatten().unwrap_or(32) as usize;
        let calls: Vec<&str> = self.sessions.call_ids().take(limit).collect();
        obj(json!({"result": "ok", "calls": calls}))
    }

    fn query(&self, req: &Request) -> Result<Map<String, Value>, String> {
        let call_id = req.required("call-id").map_err(|e| e.to_string())?;
        if !self.meta.contains_key(call_id) {
            return Err("Unknown call-id".to_owned());
        }
        Ok(self.query_reply(call_id))
    }

    /// rtpengine's query structure: tags -> medias -> streams, plus our ICE role per stream.
    fn query_reply(&self, call_id: &str) -> Map<String, Value> {
        let mut tags: Map<String, Value> = Map::new();
        for st in self.sessions.streams(call_id) {
            for leg in &st.legs {
                let tag = leg.tag.clone().unwrap_or_else(|| "-".into());
                let mut streams = Vec::new();
                for local in [leg.rtp, leg.rtcp].into_iter().flatten() {
                    let s = self.stats.get(&local).copied().unwrap_or_default();
                    let f = self.fast_counters(&local);
                    let last = match (s.last, f.last_seen_ns) {
                        (_, 0) => s.last.map_or(0, epoch),
                        (u, ns) => epoch(monotonic_to_wall(ns)).max(u.map_or(0, epoch)),
                    };
                    let mut stream = json!({
                        "local port": local.port(),
                        "local endpoint": {"family": family(local), "address": local.ip().to_string(), "port": local.port()},
                        "interface": leg.interface,
                        "ICE": ice_role(leg.ice),
                        "stats": {"packets": s.packets + f.packets, "bytes": s.bytes + f.bytes, "errors": 0},
                        "fast path": {"packets": f.packets, "bytes": f.bytes},
                        "last packet": last,
                        "forwarding": match self.gateway.converts(&local) {
                            Some(why) => format!("daemon ({why})"),
                            None => "fast path".to_owned(),
                        },
                    });
                    // Latched peer, or for ICE legs the nominated one the entry accepts from.
                    let peer = leg
                        .latched
                        .or_else(|| self.entries.get(&local).and_then(|e| e.expected_source));
                    if let (Some(peer), Value::Object(m)) = (peer, &mut stream) {
                        m.insert(
                            "endpoint".into(),
                            json!({"family": family(peer), "address": peer.ip().to_string(), "port": peer.port()}),
                        );
                    }
                    streams.push(stream);
                }
                let entry = tags
                    .entry(tag.clone())
                    .or_insert_with(|| json!({"tag": tag, "medias": []}));
                if let Some(Value::Array(medias)) = entry.get_mut("medias") {
                    medias
                        .push(json!({"index": st.index + 1, "type": st.media, "streams": streams}));
                }
            }
        }
        let (created, last_signal) = self
            .meta
            .get(call_id)
            .map_or((0, 0), |m| (epoch(m.created), epoch(m.last_signal)));
        obj(json!({"result": "ok", "created": created, "last signal": last_signal, "tags": tags}))
    }

    fn statistics(&self) -> Map<String, Value> {
        let fast_path: Map<String, Value> =
            match self.relay.stats_map().and_then(|m| read_totals(&m)) {
                Ok(t) => {
                    t.0.iter()
                        .map(|(r, e)| {
                            (
                                r.name().to_owned(),
                                json!({"packets": e.packets, "bytes": e.bytes}),
                            )
                        })
                        .collect()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading fast-path counters");
                    Map::new()
                }
            };
        obj(json!({
            "result": "ok",
            "statistics": {
                "currentstatistics": {"sessionsown": self.meta.len(), "sessionstotal": self.sessions_total},
                "userspace forwarded packets": self.userspace_forwarded,
                "crypto": serde_json::to_value(self.gateway.counters).unwrap_or_default(),
                "fastpath": fast_path,
            },
        }))
    }

    fn touch(&mut self, now: Instant, call_id: &str) {
        let wall = SystemTime::now();
        let m = self.meta.entry(call_id.to_owned()).or_insert_with(|| {
            self.sessions_total += 1;
            CallMeta {
                created: wall,
                created_at: now,
                last_signal: wall,
                last_activity: now,
            }
        });
        m.last_signal = wall;
        m.last_activity = now;
    }

    /// Brings sockets and forwarding entries of one call in line with the session model.
    fn sync_call(&mut self, call_id: &str) {
        let locals: BTreeSet<SocketAddr> = self
            .sessions
            .streams(call_id)
            .iter()
            .flat_map(|s| s.legs.iter().flat_map(|l| [l.rtp, l.rtcp]))
            .flatten()
            .collect();
        let old_locals = self.bound.remove(call_id).unwrap_or_default();
        for gone in old_locals.difference(&locals) {
            self.ports.unbind(gone);
            self.call_of.remove(gone);
            self.stats.remove(gone);
            if let Some(slot) = self.slots.remove(gone) {
                self.free_slots.push(slot);
            }
        }
        for local in &locals {
            if let Err(e) = self.ports.bind(*local) {
                // The session model owns the port; a bind failure means something else holds it.
                tracing::warn!(%call_id, %local, error = %e, "cannot bind relay port");
            }
            self.call_of.insert(*local, call_id.to_owned());
        }
        if !locals.is_empty() {
            self.bound.insert(call_id.to_owned(), locals);
        }
        // gateway: endpoints of streams whose SRTP the relay terminates stay out of the fast path.
        let streams = self.sessions.streams(call_id);
        self.gateway.bind(call_id, &streams, Instant::now());
        let new = self.sessions.call_entries(call_id);
        self.apply(call_id, new);
        for local in self.bound.get(call_id).into_iter().flatten() {
            if self.entries.contains_key(local) && self.gateway.converts(local).is_some() {
                let _ = self.relay.remove_stream(&StreamKey::from(*local));
            }
        }
        self.sync_ice(call_id);
    }

    /// Creates, updates (new remote credentials, ICE restart) or drops the call's agents.
    fn sync_ice(&mut self, call_id: &str) {
        let legs = self.sessions.ice_legs(call_id);
        let mut keep = HashSet::new();
        self.agent_of.retain(|_, (k, _)| k.0 != call_id);
        for leg in legs {
            if leg.role == IceRole::None {
                continue;
            }
            let key = (call_id.to_owned(), leg.tag.clone(), leg.stream.0);
            let agent = self.agents.entry(key.clone()).or_insert_with(|| {
                IceLiteAgent::new(
                    leg.local.clone(),
                    leg.local_endpoints.len().clamp(1, 2) as u8,
                )
            });
            if agent.local_credentials() != &leg.local {
                agent.restart(leg.local.clone(), leg.remote.clone());
            } else if let Some(r) = &leg.remote {
                agent.set_remote_credentials(r.clone());
            }
            for c in &leg.remote_candidates {
                let comp = if c.component == 2 {
                    Component::Rtcp
                } else {
                    Component::Rtp
                };
                agent.add_remote_candidate(comp, SocketAddr::new(c.addr, c.port));
            }
            for (i, local) in leg.local_endpoints.iter().enumerate() {
                let comp = if i == 0 {
                    Component::Rtp
                } else {
                    Component::Rtcp
                };
                self.agent_of.insert(*local, (key.clone(), comp));
            }
            keep.insert(key);
        }
        self.agents
            .retain(|k, _| k.0 != call_id || keep.contains(k));
    }

    /// A STUN datagram on a relay endpoint: the leg's agent answers (or not) from the same
    /// socket; a nomination becomes forwarding entries.
    fn stun(&mut self, now: Instant, local: SocketAddr, source: SocketAddr, data: &[u8]) {
        let Some((key, comp)) = self.agent_of.get(&local).cloned() else {
            *self.ice_checks.entry("no_agent").or_default() += 1;
            tracing::debug!(%local, %source, "STUN on a relay port without an ICE agent");
            return;
        };
        let Some(agent) = self.agents.get_mut(&key) else {
            return;
        };
        let outcome = match agent.handle_stun(now, comp, local, source, data) {
            Ok(Some(t)) => {
                self.ports.send(&t.source, t.destination, &t.bytes);
                "answered"
            }
            Ok(None) => "ignored",
            Err(e) => {
                tracing::debug!(call_id = %key.0, %local, %source, error = %e, "STUN dropped");
                "dropped"
            }
        };
        *self.ice_checks.entry(outcome).or_default() += 1;
        self.ice_events(&key);
    }

    fn ice_events(&mut self, key: &(String, String, u64)) {
        let mut nominated = Vec::new();
        if let Some(agent) = self.agents.get_mut(key) {
            while let Some(ev) = agent.poll_event() {
                match ev {
                    IceEvent::PairNominated { local, remote, .. }
                    | IceEvent::NominatedPairChanged { local, remote, .. } => {
                        nominated.push((local, remote))
                    }
                    IceEvent::PairValidated {
                        local,
                        remote,
                        peer_reflexive,
                        ..
                    } => {
                        tracing::info!(call_id = %key.0, %local, %remote, peer_reflexive, "ICE pair validated");
                    }
                    IceEvent::ConsentExpired { local, remote, .. } => {
                        tracing::info!(call_id = %key.0, %local, %remote, "ICE consent expired");
                    }
                }
            }
        }
        for (local, remote) in nominated {
            match self.sessions.ice_nominated(local, &key.1, remote) {
                Ok(entries) => {
                    tracing::info!(call_id = %key.0, %local, %remote, "ICE pair nominated");
                    self.apply(&key.0, entries);
                    self.mark_dirty();
                }
                Err(e) => {
                    tracing::warn!(call_id = %key.0, %local, %remote, error = %e, "ICE nomination")
                }
            }
        }
    }

    fn apply(&mut self, call_id: &str, new: Vec<ForwardingEntry>) {
        let old = self.call_entries.remove(call_id).unwrap_or_default();
        let changes = diff(&old, &new);
        for local in &changes.removals {
            self.entries.remove(local);
            self.uninstall(call_id, *local);
        }
        for e in changes.inserts.iter().chain(&changes.updates) {
            self.entries.insert(e.local, *e);
            self.install(call_id, e);
        }
        if !changes.is_empty() {
            tracing::info!(
                %call_id,
                inserts = changes.inserts.len(),
                updates = changes.updates.len(),
                removals = changes.removals.len(),
                "forwarding entries changed"
            );
        }
        if !new.is_empty() {
            self.call_entries.insert(call_id.to_owned(), new);
        }
    }

    /// Puts one entry into the XDP stream table; on failure the daemon keeps forwarding that
    /// stream itself, so a full map degrades speed, not service.
    fn install(&mut self, call_id: &str, e: &ForwardingEntry) {
        if let Some(why) = self.gateway.converts(&e.local) {
            tracing::debug!(%call_id, local = %e.local, %why, "stream forwarded by the daemon");
            let _ = self.relay.remove_stream(&StreamKey::from(e.local));
            return;
        }
        let slot = match self.slots.get(&e.local) {
            Some(s) => *s,
            None => {
                let Some(s) = self.free_slots.pop() else {
                    tracing::warn!(%call_id, local = %e.local, "fast-path counter slots exhausted; stream stays in userspace");
                    return;
                };
                if let Err(err) = self.relay.reset_stream_counters(s) {
                    tracing::warn!(%call_id, error = %err, "resetting counter slot");
                }
                self.slots.insert(e.local, s);
                s
            }
        };
        let (mut flags, expected) = match e.expected_source {
            Some(a) => (0, Endpoint::from(a)),
            None => (FLAG_SOURCE_ANY, Endpoint::default()),
        };
        let (rtcp_src, rtcp_dst) = match e.rtcp_rewrite {
            Some(r) => {
                flags |= FLAG_RTCP_DEMUX;
                (Endpoint::from(r.from), Endpoint::from(r.to))
            }
            None => (Endpoint::default(), Endpoint::default()),
        };
        let entry = StreamEntry {
            stream_id: e.stream.0,
            expected,
            src: Endpoint::from(e.rewrite.from),
            dst: Endpoint::from(e.rewrite.to),
            flags,
            mismatch: match e.mismatch {
                MismatchPolicy::Drop => Mismatch::Drop,
                MismatchPolicy::Userspace => Mismatch::Userspace,
                MismatchPolicy::Forward => Mismatch::Forward,
            } as u8,
            _pad: [0; 2],
            counter_slot: slot,
            egress_ifindex: 0,
            rtcp_src,
            rtcp_dst,
        };
        match self.relay.insert_stream(StreamKey::from(e.local), entry) {
            Ok(()) => {
                tracing::debug!(%call_id, local = %e.local, to = %e.rewrite.to, "fast-path entry installed")
            }
            Err(err) => {
                tracing::warn!(%call_id, local = %e.local, error = %err, "fast-path insert failed; userspace forwards")
            }
        }
    }

    fn uninstall(&mut self, call_id: &str, local: SocketAddr) {
        if let Err(err) = self.relay.remove_stream(&StreamKey::from(local)) {
            tracing::warn!(%call_id, %local, error = %err, "fast-path remove failed");
        }
    }

    /// Packets, bytes and the last-seen time (CLOCK_MONOTONIC ns) the fast path counted for an
    /// endpoint.
    fn fast_counters(&self, local: &SocketAddr) -> StreamCounters {
        self.slots
            .get(local)
            .and_then(|s| self.relay.stream_counters(*s).ok())
            .unwrap_or_default()
    }

    /// A datagram the fast path passed up: STUN, DTLS, or media of a stream with no entry yet.
    pub fn handle_inbound(&mut self, now: Instant, inbound: Inbound) {
        let Inbound {
            local,
            source,
            data,
        } = inbound;
        let Some(&first) = data.first() else { return };
        match first {
            0..=3 => self.stun(now, local, source, &data),
            20..=63 if self.gateway.converts(&local).is_some() => {
                self.dtls(now, local, source, &data)
            }
            // DTLS-SRTP is end to end (the fingerprints in the SDP pass unchanged): its records
            // follow the media's path, checked against the same latch or nomination.
            20..=63 | 128..=191 => self.media(now, local, source, &data),
            _ => {
                tracing::debug!(%local, %source, first, "unknown payload on a relay port, dropped")
            }
        }
    }

    fn media(&mut self, now: Instant, local: SocketAddr, source: SocketAddr, data: &[u8]) {
        let verdict = |e: Option<&ForwardingEntry>| match e {
            Some(e) if e.expected_source.is_none_or(|s| s == source) => Some(true),
            Some(e) if e.mismatch == MismatchPolicy::Forward => Some(true),
            Some(e) if e.mismatch == MismatchPolicy::Drop => Some(false),
            _ => None,
        };
        let mut ok = verdict(self.entries.get(&local));
        if ok.is_none() {
            // No entry, or the policy hands mismatches to us: let the session decide (latching).
            let Some(call_id) = self.call_of.get(&local).cloned() else {
                return;
            };
            match self.sessions.latch(local, source) {
                Ok(outcome) if outcome.accepted => {
                    tracing::info!(%call_id, %local, %source, "latched");
                    self.apply(&call_id, outcome.entries);
                    self.mark_dirty();
                    ok = verdict(self.entries.get(&local));
                }
                Ok(_) => {
                    tracing::debug!(%call_id, %local, %source, "source refused by latching policy")
                }
                Err(e) => tracing::debug!(%call_id, %local, %source, error = %e, "latch"),
            }
        }
        let Some(e) = self
            .entries
            .get(&local)
            .copied()
            .filter(|_| ok == Some(true))
        else {
            return;
        };
        let rewrite = match e.rtcp_rewrite {
            Some(r) if is_rtcp(data) => r,
            _ => e.rewrite,
        };
        // gateway: SRTP <-> RTP; a packet failing auth or replayed is dropped (and counted).
        let converted;
        let data = if self.gateway.converts(&local).is_some() {
            match self.gateway.media(&local, data) {
                Ok(v) => {
                    converted = v;
                    &converted[..]
                }
                Err(why) => {
                    tracing::trace!(%local, %source, %why, "media dropped");
                    return;
                }
            }
        } else {
            data
        };
        if self.ports.send(&rewrite.from, rewrite.to, data) {
            self.userspace_forwarded += 1;
        }
        let s = self.stats.entry(local).or_default();
        s.packets += 1;
        s.bytes += data.len() as u64;
        s.last = Some(SystemTime::now());
        if let Some(call_id) = self.call_of.get(&local)
            && let Some(m) = self.meta.get_mut(call_id)
        {
            m.last_activity = now;
        }
    }

    /// gateway: a DTLS record on an endpoint whose leg the relay terminates, from the peer the
    /// entry expects; replies go back to it.
    fn dtls(&mut self, now: Instant, local: SocketAddr, source: SocketAddr, data: &[u8]) {
        let expected = self.entries.get(&local).and_then(|e| e.expected_source);
        if expected.is_some_and(|s| s != source) {
            tracing::debug!(%local, %source, "DTLS from a source other than the leg's peer, dropped");
            return;
        }
        let before = self.gateway.counters.dtls_handshakes_ok;
        let Some(replies) = self.gateway.dtls(&local, now, data) else {
            return self.media(now, local, source, data);
        };
        for r in replies {
            self.ports.send(&local, source, &r);
        }
        if self.gateway.counters.dtls_handshakes_ok != before {
            // The exported keys go to the state file: a restart resumes without a handshake.
            self.mark_dirty();
        }
    }

    /// gateway: DTLS retransmissions and first flights, to each leg's peer.
    fn dtls_poll(&mut self, now: Instant) {
        for (local, rec) in self.gateway.poll(now) {
            let peer = self
                .entries
                .get(&local)
                .and_then(|e| e.expected_source)
                .or_else(|| {
                    self.entries
                        .values()
                        .find(|e| e.rewrite.from == local)
                        .map(|e| e.rewrite.to)
                });
            if let Some(peer) = peer {
                self.ports.send(&local, peer, &rec);
            }
        }
    }

    pub fn handle_tick(&mut self, now: Instant) {
        // Media the fast path forwarded counts as activity: its last-seen times are monotonic ns.
        let mono_now = monotonic_ns();
        let mut seen: Vec<(String, Instant)> = Vec::new();
        for (local, call_id) in &self.call_of {
            let ns = self.fast_counters(local).last_seen_ns;
            if ns != 0 && ns <= mono_now {
                let ago = std::time::Duration::from_nanos(mono_now - ns);
                if let Some(t) = now.checked_sub(ago) {
                    seen.push((call_id.clone(), t));
                }
            }
        }
        self.dtls_poll(now);
        let keys: Vec<_> = self.agents.keys().cloned().collect();
        for key in keys {
            if let Some(a) = self.agents.get_mut(&key) {
                a.handle_timeout(now);
            }
            self.ice_events(&key);
        }
        for (call_id, t) in seen {
            if let Some(m) = self.meta.get_mut(&call_id)
                && t > m.last_activity
            {
                m.last_activity = t;
            }
        }

        let due: Vec<_> = self
            .pending_deletes
            .iter()
            .filter(|(at, ..)| *at <= now)
            .cloned()
            .collect();
        self.pending_deletes.retain(|(at, ..)| *at > now);
        let mut changed = !due.is_empty();
        for (_, call_id, from, to) in due {
            if let Err(e) = self.delete_now(&call_id, from.as_deref(), to.as_deref()) {
                tracing::debug!(%call_id, error = %e, "delayed delete");
            }
        }
        let expired: Vec<String> = self
            .meta
            .iter()
            .filter(|(c, m)| {
                // Calls on hold get rtpengine's silent timeout instead of the media timeout.
                let limit = if self.sessions.is_muted(c) {
                    self.cfg.silent_timeout
                } else {
                    self.cfg.media_timeout
                };
                let idle = now.duration_since(m.last_activity) > limit;
                let final_ = !self.cfg.final_timeout.is_zero()
                    && now.duration_since(m.created_at) > self.cfg.final_timeout;
                idle || final_
            })
            .map(|(c, _)| c.clone())
            .collect();
        changed |= !expired.is_empty();
        for call_id in expired {
            tracing::info!(%call_id, "call timed out");
            if let Err(e) = self.delete_now(&call_id, None, None) {
                tracing::warn!(%call_id, error = %e, "deleting timed-out call");
                self.meta.remove(&call_id);
            }
        }
        if changed {
            self.mark_dirty();
        }
    }

    pub fn metrics(&self) -> Snapshot {
        let fast_path = self
            .relay
            .stats_map()
            .and_then(|m| read_totals(&m))
            .map(|t| {
                t.0.iter()
                    .map(|(r, e)| (r.name(), r.verdict().name(), *e))
                    .collect()
            })
            .unwrap_or_default();
        Snapshot {
            sessions: self.meta.len() as u64,
            streams: self
                .sessions
                .call_ids()
                .map(|c| self.sessions.streams(c).len() as u64)
                .sum(),
            fast_path,
            ng_requests: self
                .ng_counts
                .iter()
                .map(|((c, r), n)| (c.clone(), r.clone(), *n))
                .collect(),
            ice_checks: self
                .ice_checks
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            userspace_forwarded: self.userspace_forwarded,
            crypto: self.gateway.counters,
        }
    }

    pub fn shutdown(&mut self) {
        self.flush_state();
        tracing::info!(
            calls = self.meta.len(),
            "daemon stopping; the fast path keeps running on its pinned maps"
        );
    }
}

/// Replies by cookie for NG retransmissions: kept 30 s (as rtpengine), at most 16384 entries
/// (the oldest go first), so a flood of distinct cookies cannot grow memory without bound.
#[derive(Default)]
struct ReplyCache {
    map: HashMap<Vec<u8>, (Instant, Vec<u8>)>,
    order: std::collections::VecDeque<(Instant, Vec<u8>)>,
}

impl ReplyCache {
    const TTL: std::time::Duration = std::time::Duration::from_secs(30);
    const MAX: usize = 16_384;

    fn expire(&mut self, now: Instant) {
        while let Some((at, cookie)) = self.order.front() {
            if now.duration_since(*at) < Self::TTL && self.order.len() <= Self::MAX {
                break;
            }
            if self.map.get(cookie).is_some_and(|(t, _)| t == at) {
                self.map.remove(cookie);
            }
            self.order.pop_front();
        }
    }

    fn get(&mut self, now: Instant, cookie: &[u8]) -> Option<Vec<u8>> {
        self.expire(now);
        self.map.get(cookie).map(|(_, r)| r.clone())
    }

    fn insert(&mut self, now: Instant, cookie: &[u8], reply: &[u8]) {
        self.map.insert(cookie.to_vec(), (now, reply.to_vec()));
        self.order.push_back((now, cookie.to_vec()));
        self.expire(now);
    }
}

/// What the state file holds: the sessions, each call's creation time, the counter slots.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    sessions: relay_core::session::SessionsState,
    calls: Vec<(String, u64)>,
    slots: Vec<(SocketAddr, u32)>,
    #[serde(default)]
    gateway: GatewayState,
}

/// RFC 5761 s.4: on a muxed port, RTCP has payload types 192-223 in the second byte.
fn is_rtcp(data: &[u8]) -> bool {
    data.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

fn ice_role(r: IceRole) -> &'static str {
    match r {
        IceRole::None => "none",
        IceRole::Terminated => "terminated",
        IceRole::Optional => "optional",
    }
}

fn family(a: SocketAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// A CLOCK_MONOTONIC time in ns as wall-clock time.
fn monotonic_to_wall(ns: u64) -> SystemTime {
    let ago = std::time::Duration::from_nanos(monotonic_ns().saturating_sub(ns));
    SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH)
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// rtpengine's reply to a delete for a call (or tags) it does not have: a warning, not an error,
/// unless the request carries the `fatal` flag.
fn delete_not_found(fatal: bool) -> Result<Map<String, Value>, String> {
    const WHY: &str = "Call-ID not found or tags didn't match";
    if fatal {
        return Err(WHY.to_owned());
    }
    Ok(obj(json!({"result": "ok", "warning": WHY})))
}

/// An offer or answer the sessions refused, in rtpengine's words where it has them (proxies
/// log these, some match on them), with our detail after a colon.
fn session_error_reason(e: &SessionError) -> String {
    match e {
        SessionError::UnknownCall(_) => "Unknown call-id".to_owned(),
        SessionError::Sdp(d @ SdpError::NoConnection { .. }) => {
            format!("Incomplete SDP specification: {d}")
        }
        SessionError::Sdp(d) => format!("Failed to parse SDP: {d}"),
        other => other.to_string(),
    }
}

/// The `sdp` key, or rtpengine's error for its absence.
fn required_sdp(req: &Request) -> Result<String, String> {
    req.required("sdp")
        .map(str::to_owned)
        .map_err(|_| "No SDP body in message".to_owned())
}

/// A mandatory string key, or rtpengine's "No KEY in message" error.
fn required(req: &Request, key: &'static str) -> Result<String, String> {
    req.required(key)
        .map(str::to_owned)
        .map_err(|e| e.to_string())
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn error(reason: &str) -> Map<String, Value> {
    obj(json!({"result": "error", "error-reason": reason}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_of_an_unknown_call_warns_unless_fatal() {
        let r = delete_not_found(false).unwrap();
        assert_eq!(r["result"], "ok");
        assert_eq!(r["warning"], "Call-ID not found or tags didn't match");
        assert_eq!(
            delete_not_found(true).unwrap_err(),
            "Call-ID not found or tags didn't match"
        );
    }

    #[test]
    fn session_errors_use_rtpengine_wording_first() {
        assert_eq!(
            session_error_reason(&SessionError::UnknownCall("x".into())),
            "Unknown call-id"
        );
        let bad = SessionError::Sdp(SdpError::BadLine { line: 2 });
        assert!(session_error_reason(&bad).starts_with("Failed to parse SDP: SDP line 2"));
        let incomplete = SessionError::Sdp(SdpError::NoConnection { index: 0 });
        assert!(session_error_reason(&incomplete).starts_with("Incomplete SDP specification: "));
    }
}
