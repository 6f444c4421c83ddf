//! The engine's hooks for shared state (Redis): own calls written after each change, other
//! relays' calls held as foreign, takeovers carried out on the fast path. The decisions are in
//! [`crate::state::ha`]; this module only applies them to sockets, entries and agents.

use std::{
    collections::BTreeSet,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::{CallSync, Engine, Now, ng::NgError, replies::obj, state::epoch};
use crate::state::{
    Remote,
    ha::{Action, Ha},
    host_addrs::{AddrChange, Getifaddrs, HostAddrs},
    redis::{RedisConfig, RedisStore},
};

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Shared-state part of the engine.
pub(super) struct HaState {
    pub ha: Ha<RedisStore>,
    pub events: Option<mpsc::UnboundedReceiver<Remote>>,
    /// Calls an NG delete ended: their keys go whoever owns them.
    pub forced: BTreeSet<String>,
    /// A standby takes no new calls until it has taken over.
    pub standby: bool,
    /// The host's addresses (netlink events, a slow full read as a safety net).
    pub addrs: HostAddrs<Getifaddrs>,
}

impl Engine {
    /// Connects the store (lazily: Redis may be down) and reconciles the restored calls with
    /// it. Called once the restored calls are installed.
    pub(super) fn ha_start(&mut self, now: Now) -> anyhow::Result<()> {
        let Some(url) = self.cfg.ha.redis.clone() else {
            return Ok(());
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let store = RedisStore::start(
            RedisConfig {
                url,
                prefix: self.cfg.ha.key_prefix.clone(),
                expires: self.cfg.ha.expires,
                relay_id: self.cfg.ha.relay_id.clone(),
            },
            tx,
        )?;
        let binds: Vec<_> = self.cfg.interfaces.iter().map(|i| i.bind).collect();
        let mut ha = Ha::new(
            store,
            &self.cfg.ha.relay_id,
            self.cfg.ha.auto_takeover,
            binds,
        );
        let own: BTreeSet<String> = self.meta.keys().cloned().collect();
        let actions = ha.start(&mut self.sessions, &own);
        tracing::info!(
            relay_id = %self.cfg.ha.relay_id,
            own = own.len(),
            foreign = ha.foreign_calls().count(),
            standby = self.cfg.ha.standby,
            "shared call state in Redis"
        );
        self.ha = Some(HaState {
            ha,
            events: Some(rx),
            forced: BTreeSet::new(),
            standby: self.cfg.ha.standby,
            addrs: HostAddrs::new(Getifaddrs),
        });
        self.ha_actions(now, actions);
        // Every own call is (re)written: Redis may have lost them while we were down.
        for call_id in own {
            self.state.mark(&call_id);
        }
        Ok(())
    }

    /// The store's events, for the daemon loop to poll.
    pub fn take_remote_events(&mut self) -> Option<mpsc::UnboundedReceiver<Remote>> {
        self.ha.as_mut().and_then(|h| h.events.take())
    }

    pub fn ha_enabled(&self) -> bool {
        self.ha.is_some()
    }

    pub fn handle_remote(&mut self, now: Now, ev: Remote) {
        let own: BTreeSet<String> = self.meta.keys().cloned().collect();
        let Some(h) = self.ha.as_mut() else { return };
        let actions = h.ha.handle(&mut self.sessions, &own, ev);
        self.ha_actions(now, actions);
    }

    /// Address events from the netlink watch: in automatic mode, foreign calls are taken over
    /// as soon as their addresses are here.
    pub fn address_changes(&mut self, now: Now, changes: impl IntoIterator<Item = AddrChange>) {
        let Some(h) = self.ha.as_mut() else { return };
        h.addrs.apply(changes);
        let actions = h.ha.host_addrs(h.addrs.current(), ms(now.wall));
        self.ha_actions(now, actions);
    }

    /// The safety net beside the events (every few seconds): the host's addresses read whole.
    pub fn poll_addresses(&mut self, now: Now) {
        let Some(h) = self.ha.as_mut() else { return };
        h.addrs.refresh();
        let actions = h.ha.host_addrs(h.addrs.current(), ms(now.wall));
        self.ha_actions(now, actions);
    }

    fn ha_actions(&mut self, now: Now, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Install(call_id) => {
                    self.touch(now, &call_id);
                    let update = self.sessions.call_update(&call_id);
                    self.sync_call(&call_id, update.into());
                    if let Some(h) = self.ha.as_mut() {
                        h.standby = false;
                    }
                }
                Action::Release(call_id) => {
                    // Sockets, entries and agents go; the session stays, as foreign.
                    self.sync_call(&call_id, CallSync::default());
                    self.meta.remove(&call_id);
                    tracing::info!(%call_id, "call released (owned by another relay now)");
                }
            }
        }
    }

    /// True for a call held for another relay (the journal does not keep those).
    pub(super) fn ha_is_foreign(&self, call_id: &str) -> bool {
        self.ha.as_ref().is_some_and(|h| h.ha.is_foreign(call_id))
    }

    /// The same changes the journal gets, to the store: a record per changed own call, a delete
    /// per ended one (the store batches them into one pipeline).
    /// The store stamps each record's write time itself.
    pub(super) fn ha_commit(&mut self, dirty: &BTreeSet<String>) {
        let Some(h) = self.ha.as_mut() else { return };
        for call_id in dirty {
            if let Some(m) = self.meta.get(call_id) {
                h.ha.put_call(&self.sessions, call_id, epoch(m.created), 0);
            } else if !self.sessions.call_ids().any(|c| c == call_id) {
                let force = h.forced.remove(call_id);
                h.ha.call_deleted(&mut self.sessions, call_id, force);
            }
        }
    }

    /// An NG delete is about to end `call_id`: its key goes whoever owns it.
    pub(super) fn ha_force_delete(&mut self, call_id: &str) {
        if let Some(h) = self.ha.as_mut() {
            h.forced.insert(call_id.to_owned());
        }
    }

    /// Before an offer or answer: signalling for a foreign call means it is ours now (the
    /// proxy moved it here); a standby takes no new call.
    pub(super) fn ha_before_signal(&mut self, now: Now, call_id: &str) -> Result<(), NgError> {
        let Some(h) = self.ha.as_mut() else {
            return Ok(());
        };
        if h.ha.is_foreign(call_id) {
            let action = h.ha.takeover_call(call_id, ms(now.wall));
            self.ha_actions(now, action.into_iter().collect());
            return Ok(());
        }
        if h.standby && !self.meta.contains_key(call_id) {
            return Err(NgError::Standby);
        }
        Ok(())
    }

    /// NG delete of a call held as foreign: it ended; its key goes everywhere.
    pub(super) fn ha_delete_foreign(&mut self, call_id: &str) -> bool {
        let Some(h) = self.ha.as_mut() else {
            return false;
        };
        if !h.ha.is_foreign(call_id) {
            return false;
        }
        h.ha.call_deleted(&mut self.sessions, call_id, true);
        tracing::info!(%call_id, "foreign call deleted by signalling");
        true
    }

    /// NG `takeover`: every foreign call whose addresses are on this host becomes ours.
    pub(super) fn ng_takeover(&mut self, now: Now) -> Result<Map<String, Value>, NgError> {
        let Some(h) = self.ha.as_mut() else {
            return Err(NgError::NoSharedState);
        };
        let host = crate::state::local_addrs().unwrap_or_default();
        let actions = h.ha.takeover_present(&host, ms(now.wall));
        h.standby = false;
        let n = actions.len();
        let left = h.ha.foreign_calls().count();
        self.ha_actions(now, actions);
        Ok(obj(
            json!({"result": "ok", "taken over": n, "foreign left": left}),
        ))
    }

    /// The shared-state metric families (empty without --redis).
    pub(super) fn ha_metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(h) = self.ha.as_ref() else {
            return String::new();
        };
        let st = &h.ha.store.stats;
        let c = h.ha.counters;
        let families: [(&str, &str, &str, String); 8] = [
            (
                "relay_calls_foreign",
                "gauge",
                "Other relays' calls held here (ports reserved, nothing installed).",
                h.ha.foreign_calls().count().to_string(),
            ),
            (
                "relay_redis_connected",
                "gauge",
                "1 when the last Redis write succeeded.",
                u8::from(st.connected.load(Relaxed)).to_string(),
            ),
            (
                "relay_redis_writes_total",
                "counter",
                "Call record writes and deletes sent to Redis.",
                st.writes.load(Relaxed).to_string(),
            ),
            (
                "relay_redis_writes_failed_total",
                "counter",
                "Call record writes and deletes that failed (retried with backoff, then every own call is rewritten).",
                st.writes_failed.load(Relaxed).to_string(),
            ),
            (
                "relay_redis_resyncs_total",
                "counter",
                "Full rewrites of own calls after Redis came back.",
                st.resyncs.load(Relaxed).to_string(),
            ),
            (
                "relay_redis_records_refused_total",
                "counter",
                "Stored call records skipped, by reason (corrupt, version).",
                format!(
                    "{{reason=\"corrupt\"}} {}\nrelay_redis_records_refused_total{{reason=\"version\"}} {}",
                    st.records_corrupt.load(Relaxed),
                    st.records_version.load(Relaxed)
                ),
            ),
            (
                "relay_takeovers_total",
                "counter",
                "Calls taken over from another relay.",
                c.taken_over.to_string(),
            ),
            (
                "relay_calls_released_total",
                "counter",
                "Own calls released because another relay took them over.",
                (c.demoted).to_string(),
            ),
        ];
        let mut o = String::new();
        for (name, kind, help, value) in families {
            let sep = if value.starts_with('{') { "" } else { " " };
            o.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{sep}{value}\n"
            ));
        }
        o.push_str(&format!(
            "# HELP relay_calls_import_failed_total Stored calls that could not be held here (interfaces or ports).\n# TYPE relay_calls_import_failed_total counter\nrelay_calls_import_failed_total {}\n",
            c.import_failed
        ));
        o
    }

    /// Foreign call count, for statistics.
    pub(super) fn foreign_count(&self) -> usize {
        self.ha.as_ref().map_or(0, |h| h.ha.foreign_calls().count())
    }
}
