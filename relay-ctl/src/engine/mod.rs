//! The daemon's state and protocol glue, sans-IO in the quinn-proto/str0m shape: NG requests,
//! relay-port datagrams and timeouts come in with the time ([`Now`]); the fast-path map
//! ([`FastPath`]) and the relay sockets ([`RelaySockets`]) are behind traits, so the engine runs
//! on fakes in unit tests. Protocol truth lives in relay-core; this module applies its decisions.
//!
//! | module | owns |
//! |---|---|
//! | this one | the engine, per-call bookkeeping, [`CallSync`] (one call's sockets, entries, agents in line), media from userspace |
//! | `fast_path` | the [`FastPath`] trait and the [`StreamTable`] mirror with its counter slots |
//! | `sockets` | the [`RelaySockets`] trait |
//! | `ice` | the ICE-lite agents and STUN routing by USERNAME |
//! | `ng` | the NG server: decode, dispatch, reply cache, [`NgError`] |
//! | `replies` | JSON bodies of query, list, statistics |
//! | `timeouts` | agents' deadlines, delete-delay, media timeouts, the batched state write |
//! | `state` | the state file (restore, flush) |
//! | `stats` | engine counters and the metrics snapshot |
//! | `compat` | issue 15's NG vocabulary: offer/answer/delete/query with labels, branches, codecs, TOS, session limit; rtpengine-named statistics |

mod compat;
mod fast_path;
mod gateway;
mod ha;
mod ice;
mod ng;
mod replies;
mod sockets;
mod state;
mod stats;
#[cfg(test)]
mod tests;
mod timeouts;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

pub use fast_path::{FastPath, FastPathError, StreamTable};
pub use ng::NgError;
use relay_core::{
    forwarding::{ForwardingEntry, MismatchPolicy},
    ice::IceEvent,
    session::{CallUpdate, Config as SessionConfig, IceLeg, Sessions},
};
pub use sockets::RelaySockets;
pub use state::{JournalWrite, Release};
pub use timeouts::SWEEP_INTERVAL;

use self::{
    ice::{AgentKey, IceRegistry},
    ng::NgServer,
    state::{LegacySaved, Restored, StateStore},
    stats::Stats,
    timeouts::Timers,
};
use crate::{config::Config, gateway::Gateway, ports::Inbound};

/// The clocks, read once per event by the daemon shell and passed in; tests advance them.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Monotonic: timeouts and deadlines.
    pub instant: Instant,
    /// Wall clock: times in replies and the state file.
    pub wall: SystemTime,
    /// CLOCK_MONOTONIC in ns, the time base of the fast path's last-seen counters.
    pub fast_path_ns: u64,
}

impl Now {
    /// The same clocks `d` later.
    pub fn after(self, d: Duration) -> Now {
        Now {
            instant: self.instant + d,
            wall: self.wall + d,
            fast_path_ns: self.fast_path_ns + d.as_nanos() as u64,
        }
    }
}

/// What one call needs from the outside world now: its relay endpoints bound, its forwarding
/// entries in the fast path, an ICE-lite agent per ICE leg. Built from the [`CallUpdate`] every
/// session change returns; applied by one function, so nothing is ever half in line.
#[derive(Clone, Debug, Default)]
pub struct CallSync {
    pub endpoints: BTreeSet<SocketAddr>,
    pub entries: Vec<ForwardingEntry>,
    pub ice_legs: Vec<IceLeg>,
    /// The tag of the active fork on each relay endpoint: STUN whose USERNAME names no agent's
    /// remote ufrag goes to this one's agent.
    pub active_tags: BTreeMap<SocketAddr, String>,
}

impl From<CallUpdate> for CallSync {
    fn from(u: CallUpdate) -> CallSync {
        let active_tags = u
            .ice_legs
            .iter()
            .filter(|l| l.active)
            .flat_map(|l| l.local_endpoints.iter().map(|e| (*e, l.tag.clone())))
            .collect();
        CallSync {
            endpoints: u.endpoints.into_iter().collect(),
            entries: u.entries,
            ice_legs: u.ice_legs,
            active_tags,
        }
    }
}

struct CallMeta {
    created: SystemTime,
    created_at: Instant,
    last_signal: SystemTime,
    last_activity: Instant,
}

pub struct Engine {
    cfg: Config,
    sessions: Sessions,
    sockets: Box<dyn RelaySockets>,
    table: StreamTable,
    ice: IceRegistry,
    meta: HashMap<String, CallMeta>,
    /// Relay endpoints bound per call, and the call of each.
    bound: HashMap<String, BTreeSet<SocketAddr>>,
    call_of: HashMap<SocketAddr, String>,
    ng: NgServer,
    stats: Stats,
    timers: Timers,
    state: StateStore,
    /// Datagrams to send once the state they follow from is durable and in the fast path
    /// ([`Engine::commit`]): a peer answering them then finds the entry in place.
    outbox: Vec<Outgoing>,
    /// Labels, Via branches, TOS and rtpengine-named figures (issue 15).
    compat: compat::Compat,
    /// Shared state (Redis), when configured.
    ha: Option<ha::HaState>,
    /// SRTP termination (WebRTC <-> SIP): its streams never enter the fast path (`gateway`).
    gateway: Gateway,
}

struct Outgoing {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
    /// Media the daemon forwards (counted), as opposed to its own STUN replies.
    media: bool,
}

impl Engine {
    /// A new engine; calls saved in the state file by an earlier daemon are restored: their
    /// sockets re-bound, agents re-created and entries re-applied over the pinned maps.
    pub fn new(
        cfg: Config,
        fast_path: Box<dyn FastPath>,
        sockets: Box<dyn RelaySockets>,
        now: Now,
    ) -> anyhow::Result<Engine> {
        use anyhow::Context as _;
        let scfg = SessionConfig {
            interfaces: cfg.interfaces.clone(),
            port_min: cfg.port_min,
            port_max: cfg.port_max,
        };
        let (journal, restored) = state::open(&cfg.state_file)?;
        // (call, creation time) of every restored call, and the counter slots they hold.
        let mut calls: Vec<(String, u64)> = Vec::new();
        let mut slots: Vec<(SocketAddr, u32)> = Vec::new();
        let mut crypto = Vec::new();
        let mut names = Vec::new();
        let mut sessions = match restored {
            Restored::Nothing => Sessions::new(scfg)?,
            Restored::Legacy(LegacySaved {
                sessions,
                calls: c,
                slots: s,
            }) => {
                calls = c;
                slots = s;
                Sessions::restore(scfg, sessions)
                    .with_context(|| format!("restoring calls from {}", cfg.state_file.display()))?
            }
            Restored::Calls(saved) => {
                let mut sessions = Sessions::new(scfg)?;
                for c in saved {
                    let call_id = c.record.call_id.clone();
                    // One bad record costs its call, not the others: said, never half-loaded.
                    match sessions.import_call(c.record) {
                        Ok(_) => {
                            if let Some(k) = c.crypto {
                                crypto.push((call_id.clone(), k));
                            }
                            if let Some(n) = c.names {
                                names.push((call_id.clone(), n));
                            }
                            calls.push((call_id, c.created));
                            slots.extend(c.slots);
                        }
                        Err(e) => tracing::error!(%call_id, error = %e, "saved call not restored"),
                    }
                }
                sessions
            }
        };
        sessions.set_port_check(sockets.port_check());
        let outside = sessions.ports_outside_range();
        if !outside.is_empty() {
            tracing::warn!(
                endpoints = outside.len(),
                calls = ?outside.iter().map(|(c, _)| c.as_str()).collect::<std::collections::BTreeSet<_>>(),
                range = %format!("{}-{}", cfg.port_min, cfg.port_max),
                "restored calls keep relay ports outside the configured range; new calls get ports inside it"
            );
        }
        let identity = crate::dtls::DtlsIdentity::load_or_create(&cfg.dtls_cert)
            .with_context(|| format!("DTLS certificate {}", cfg.dtls_cert.display()))?;
        tracing::info!(fingerprint = %identity.fingerprint, "DTLS identity");
        let mut gateway = Gateway::new(identity, Default::default());
        for (call_id, k) in crypto {
            gateway.import_call(&call_id, k);
        }
        let mut engine = Engine {
            gateway,
            state: StateStore::new(cfg.state_file.clone(), journal),
            timers: Timers::new(now.instant),
            cfg,
            sessions,
            sockets,
            table: StreamTable::new(fast_path, slots)?,
            ice: IceRegistry::default(),
            meta: HashMap::new(),
            bound: HashMap::new(),
            call_of: HashMap::new(),
            ng: NgServer::default(),
            stats: Stats::default(),
            outbox: Vec::new(),
            compat: compat::Compat::new(now.instant),
            ha: None,
        };
        engine.apply_latch_handover();
        // Before the entries are re-applied: they carry the call's TOS.
        for (call_id, n) in names {
            engine.table.set_tos(&call_id, n.tos);
            engine.compat.names.insert(call_id, n);
        }
        for (call_id, created) in calls {
            let created = state::from_epoch(created);
            engine.meta.insert(
                call_id.clone(),
                CallMeta {
                    created,
                    created_at: now.instant,
                    last_signal: created,
                    last_activity: now.instant,
                },
            );
            let update = engine.sessions.call_update(&call_id);
            engine.sync_call(&call_id, update.into());
        }
        engine.stats.sessions_total = engine.meta.len() as u64;
        // The state is the truth: entries it knows are re-applied (above), entries it does not
        // know (a call deleted, or never acknowledged, before a crash) are removed.
        let orphans = engine.table.remove_unknown();
        tracing::info!(
            calls = engine.meta.len(),
            orphan_entries_removed = orphans,
            "state restored"
        );
        engine.ha_start(now)?;
        // One snapshot in the current format; the journal starts empty.
        engine.flush_state();
        Ok(engine)
    }

    /// Brings one call's sockets, forwarding entries and ICE agents in line with `want`.
    fn sync_call(&mut self, call_id: &str, want: CallSync) {
        self.state.mark(call_id);
        let old = self.bound.remove(call_id).unwrap_or_default();
        for gone in old.difference(&want.endpoints) {
            self.sockets.unbind(gone);
            self.call_of.remove(gone);
            self.stats.streams.remove(gone);
            self.table.release(gone);
        }
        for local in &want.endpoints {
            if let Err(e) = self.sockets.bind(*local) {
                // The session model owns the port; a bind failure means something else holds it.
                tracing::warn!(%call_id, %local, error = %e, "cannot bind relay port");
            }
            self.call_of.insert(*local, call_id.to_owned());
        }
        // gateway: endpoints of streams whose SRTP the relay terminates stay out of the fast path.
        let streams = self.sessions.streams(call_id);
        self.gateway.bind(call_id, &streams, Instant::now());
        self.table.hold_in_userspace(
            want.endpoints
                .iter()
                .filter(|l| self.gateway.converts(l).is_some())
                .copied(),
        );
        self.table.apply(call_id, want.entries);
        self.ice.sync(call_id, &want.ice_legs, &want.active_tags);
        if !want.endpoints.is_empty() {
            self.bound.insert(call_id.to_owned(), want.endpoints);
        }
    }

    fn touch(&mut self, now: Now, call_id: &str) {
        let m = self.meta.entry(call_id.to_owned()).or_insert_with(|| {
            self.stats.sessions_total += 1;
            CallMeta {
                created: now.wall,
                created_at: now.instant,
                last_signal: now.wall,
                last_activity: now.instant,
            }
        });
        m.last_signal = now.wall;
        m.last_activity = now.instant;
    }

    fn delete_now(
        &mut self,
        call_id: &str,
        from_tag: Option<&str>,
        to_tag: Option<&str>,
    ) -> Result<(), relay_core::session::SessionError> {
        let update = self.sessions.delete(call_id, from_tag, to_tag)?;
        self.sync_call(call_id, update.into());
        if !self.sessions.call_ids().any(|c| c == call_id) {
            self.meta.remove(call_id);
            self.gateway.remove(call_id);
            tracing::info!(%call_id, "call deleted");
        }
        Ok(())
    }

    /// A datagram the fast path passed up: STUN, DTLS, or media of a stream with no entry yet.
    pub fn handle_inbound(&mut self, now: Now, inbound: Inbound) {
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

    /// A STUN datagram on a relay endpoint: the leg's agent answers (or not) from the same
    /// socket; a nomination becomes forwarding entries.
    fn stun(&mut self, now: Now, local: SocketAddr, source: SocketAddr, data: &[u8]) {
        let out = self.ice.handle_stun(now.instant, local, source, data);
        if let Some(t) = out.transmit {
            self.outbox.push(Outgoing {
                from: t.source,
                to: t.destination,
                data: t.bytes,
                media: false,
            });
        }
        *self.stats.ice_checks.entry(out.outcome).or_default() += 1;
        self.ice_events(out.events);
    }

    fn ice_events(&mut self, events: Vec<(AgentKey, IceEvent)>) {
        for (key, ev) in events {
            let call_id = &key.call_id;
            match ev {
                IceEvent::PairNominated { local, remote, .. }
                | IceEvent::NominatedPairChanged { local, remote, .. } => {
                    match self.sessions.ice_nominated(local, &key.tag, remote) {
                        Ok(entries) => {
                            tracing::info!(%call_id, %local, %remote, "ICE pair nominated");
                            self.table.apply(call_id, entries);
                            self.state.mark(call_id);
                        }
                        Err(e) => {
                            tracing::warn!(%call_id, %local, %remote, error = %e, "ICE nomination")
                        }
                    }
                }
                IceEvent::PairValidated {
                    local,
                    remote,
                    peer_reflexive,
                    ..
                } => {
                    tracing::info!(%call_id, %local, %remote, peer_reflexive, "ICE pair validated");
                }
                // Informational (see relay_core::ice): a lite agent does not own consent, and a
                // peer may keep the pair alive with indications or media only.
                IceEvent::ConsentExpired { local, remote, .. } => {
                    self.stats.ice_consent_lapsed += 1;
                    tracing::debug!(%call_id, %local, %remote, "no ICE check for 30 s on the nominated pair; forwarding goes on");
                }
            }
        }
    }

    fn media(&mut self, now: Now, local: SocketAddr, source: SocketAddr, data: &[u8]) {
        let verdict = |e: Option<&ForwardingEntry>| match e {
            Some(e) if e.expected_source.is_none_or(|s| s == source) => Some(true),
            Some(e) if e.mismatch == MismatchPolicy::Forward => Some(true),
            Some(e) if e.mismatch == MismatchPolicy::Drop => Some(false),
            _ => None,
        };
        let mut ok = verdict(self.table.get(&local));
        if ok.is_none() {
            // No entry, or the policy hands mismatches to us: let the session decide (latching).
            let Some(call_id) = self.call_of.get(&local).cloned() else {
                return;
            };
            let idle = self.latched_idle(now, local);
            match self.sessions.latch_at(now.instant, local, source, idle) {
                Ok(outcome) if outcome.accepted => {
                    tracing::info!(%call_id, %local, %source, "latched");
                    self.table.apply(&call_id, outcome.entries);
                    self.state.mark(&call_id);
                    ok = verdict(self.table.get(&local));
                }
                Ok(_) => {
                    tracing::debug!(%call_id, %local, %source, "source refused by latching policy")
                }
                Err(e) => tracing::debug!(%call_id, %local, %source, error = %e, "latch"),
            }
        }
        let Some(e) = self.table.get(&local).copied().filter(|_| ok == Some(true)) else {
            return;
        };
        let rewrite = match e.rtcp_rewrite {
            Some(r) if is_rtcp(data) => r,
            _ => e.rewrite,
        };
        // gateway: SRTP <-> RTP; a packet failing auth or replayed is dropped (and counted).
        let out = if self.gateway.converts(&local).is_some() {
            match self.gateway.media(&local, data) {
                Ok(v) => v,
                Err(why) => {
                    tracing::trace!(%local, %source, %why, "media dropped");
                    return;
                }
            }
        } else {
            data.to_vec()
        };
        self.outbox.push(Outgoing {
            from: rewrite.from,
            to: rewrite.to,
            data: out,
            media: true,
        });
        self.stats.userspace_media(local, data.len(), now.wall);
        if let Some(call_id) = self.call_of.get(&local)
            && let Some(m) = self.meta.get_mut(call_id)
        {
            m.last_activity = now.instant;
        }
    }

    /// How long media has not arrived on `local` from its latched source, through either path.
    fn latched_idle(&self, now: Now, local: SocketAddr) -> Option<Duration> {
        let f = self.table.counters(&local);
        let fast = (f.last_seen_ns != 0)
            .then(|| Duration::from_nanos(now.fast_path_ns.saturating_sub(f.last_seen_ns)));
        let user = self
            .stats
            .streams
            .get(&local)
            .and_then(|s| s.last)
            .map(|t| now.wall.duration_since(t).unwrap_or_default());
        match (fast, user) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends what the engine queued, in order.
    fn send_queued(&mut self) {
        for o in std::mem::take(&mut self.outbox) {
            if self.sockets.send(&o.from, o.to, &o.data) && o.media {
                self.stats.userspace_forwarded += 1;
            }
        }
    }

    /// The configured latch handover, to the sessions (the daemon's decision) and the stream
    /// table (the fast path's, in entries installed from now on).
    fn apply_latch_handover(&mut self) {
        self.sessions
            .set_latch_timers(relay_core::session::LatchTimers {
                handover_after: self.cfg.latch_handover,
                ..Default::default()
            });
        self.table.set_handover_after(self.cfg.latch_handover);
    }

    /// A reload's new timeouts (media, silent, final) and latch handover; they apply from the
    /// next sweep and to entries installed from then on.
    pub fn set_timeouts(&mut self, cfg: &Config) {
        self.cfg.media_timeout = cfg.media_timeout;
        self.cfg.silent_timeout = cfg.silent_timeout;
        self.cfg.latch_handover = cfg.latch_handover;
        self.apply_latch_handover();
        self.cfg.final_timeout = cfg.final_timeout;
    }

    pub fn shutdown(&mut self) {
        self.flush_state();
        tracing::info!(
            calls = self.meta.len(),
            "daemon stopping; the fast path keeps running on its pinned maps"
        );
    }
}

/// RFC 5761 s.4: on a muxed port, RTCP has payload types 192-223 in the second byte.
fn is_rtcp(data: &[u8]) -> bool {
    data.get(1).is_some_and(|pt| (192..=223).contains(pt))
}
