//! The daemon's side of shared state, without sockets or maps: which calls are own and which
//! foreign, what to write to the store after a change, what to do with what other relays wrote,
//! and takeovers. It changes [`Sessions`] only to hold foreign calls (ports reserved) and
//! returns [`Action`]s for the engine to carry out on the fast path.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use relay_core::session::Sessions;

use super::{
    CallStore, Remote,
    record::CallRecord,
    takeover::{self, AddrWatch, Held, Verdict},
};

/// What the engine does after a store event or a takeover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The call is own here now: bind its sockets, install its entries and ICE-lite agents.
    Install(String),
    /// The call is not own here any more: remove its sockets, entries and agents (the session
    /// stays as foreign, ports reserved).
    Release(String),
}

#[derive(Debug, Default, Clone, Copy)]
pub struct HaCounters {
    pub taken_over: u64,
    pub demoted: u64,
    pub import_failed: u64,
}

pub struct Ha<S: CallStore> {
    pub store: S,
    me: String,
    auto: bool,
    foreign: BTreeMap<String, CallRecord>,
    /// Takeover epoch of each own call.
    epochs: HashMap<String, u64>,
    watch: AddrWatch,
    pub counters: HaCounters,
}

impl<S: CallStore> Ha<S> {
    /// `binds`: the bind addresses of this relay's logical interfaces (watched for takeover).
    pub fn new(
        store: S,
        relay_id: &str,
        auto: bool,
        binds: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        Ha {
            store,
            me: relay_id.to_owned(),
            auto,
            foreign: BTreeMap::new(),
            epochs: HashMap::new(),
            watch: AddrWatch::new(binds),
            counters: HaCounters::default(),
        }
    }

    pub fn relay_id(&self) -> &str {
        &self.me
    }

    pub fn is_foreign(&self, call_id: &str) -> bool {
        self.foreign.contains_key(call_id)
    }

    pub fn foreign_calls(&self) -> impl Iterator<Item = &CallRecord> {
        self.foreign.values()
    }

    pub fn epoch(&self, call_id: &str) -> u64 {
        self.epochs.get(call_id).copied().unwrap_or(0)
    }

    /// Start-up: reads every record and reconciles it with the restored sessions, whose own
    /// calls are `own` (any other restored call was foreign in the last run).
    pub fn start(&mut self, sessions: &mut Sessions, own: &BTreeSet<String>) -> Vec<Action> {
        let records = match self.store.load_all() {
            Ok(l) => {
                for (call_id, e) in &l.refused {
                    tracing::warn!(%call_id, error = %e, "skipping a stored call record");
                }
                l.records
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read calls from the store at start-up: serving own calls from the state file; other relays' calls arrive when it is back");
                Vec::new()
            }
        };
        self.snapshot(sessions, own, records)
    }

    /// Reconciles with every record the store holds.
    fn snapshot(
        &mut self,
        sessions: &mut Sessions,
        own: &BTreeSet<String>,
        records: Vec<CallRecord>,
    ) -> Vec<Action> {
        let known: BTreeSet<String> = records.iter().map(|r| r.call_id.clone()).collect();
        let stale: Vec<String> = sessions
            .call_ids()
            .filter(|c| !own.contains(*c) && !known.contains(*c))
            .map(str::to_owned)
            .collect();
        for c in stale {
            remove_call(sessions, &c);
            self.foreign.remove(&c);
        }
        let mut actions = Vec::new();
        for rec in records {
            let held = if own.contains(&rec.call_id) {
                Some(Held {
                    own: true,
                    epoch: self.epoch(&rec.call_id),
                })
            } else {
                self.held(&rec.call_id)
            };
            actions.extend(self.apply(sessions, held, rec));
        }
        actions
    }

    fn held(&self, call_id: &str) -> Option<Held> {
        if let Some(r) = self.foreign.get(call_id) {
            return Some(Held {
                own: false,
                epoch: r.epoch,
            });
        }
        self.epochs.get(call_id).map(|e| Held {
            own: true,
            epoch: *e,
        })
    }

    fn apply(
        &mut self,
        sessions: &mut Sessions,
        held: Option<Held>,
        rec: CallRecord,
    ) -> Vec<Action> {
        let id = rec.call_id.clone();
        match takeover::on_record(&self.me, held, &rec) {
            Verdict::Ignore => {
                if held.is_some_and(|h| h.own) && rec.owner == self.me {
                    let e = self.epochs.entry(id).or_default();
                    *e = (*e).max(rec.epoch);
                }
                Vec::new()
            }
            Verdict::HoldForeign => {
                self.hold_foreign(sessions, rec);
                Vec::new()
            }
            Verdict::Demote => {
                self.epochs.remove(&id);
                self.store.forget(&id);
                self.counters.demoted += 1;
                tracing::warn!(call_id = %id, owner = %rec.owner, epoch = rec.epoch, "call taken over by another relay: releasing it here, keeping it as foreign");
                // The new owner's version replaces ours (ports stay reserved either way).
                if let Err(e) = sessions.import_call(rec.call.clone()) {
                    tracing::debug!(call_id = %id, error = %e, "keeping our version of a released call");
                }
                self.foreign.insert(id.clone(), rec);
                vec![Action::Release(id)]
            }
            Verdict::RestoreOwn => {
                let present = sessions.call_ids().any(|c| c == id);
                if present {
                    self.foreign.remove(&id);
                } else if let Err(e) = sessions.import_call(rec.call.clone()) {
                    self.counters.import_failed += 1;
                    tracing::warn!(call_id = %id, error = %e, "cannot restore an own call from the store");
                    return Vec::new();
                }
                self.epochs.insert(id.clone(), rec.epoch);
                vec![Action::Install(id)]
            }
        }
    }

    fn hold_foreign(&mut self, sessions: &mut Sessions, rec: CallRecord) {
        let id = rec.call_id.clone();
        // Replaces the version held so far, if any; refused whole otherwise.
        match sessions.import_call(rec.call.clone()) {
            Ok(_) => {
                self.foreign.insert(id, rec);
            }
            Err(e) => {
                self.foreign.remove(&id);
                self.counters.import_failed += 1;
                tracing::warn!(call_id = %id, owner = %rec.owner, error = %e, "cannot hold another relay's call (no takeover possible for it)");
            }
        }
    }

    /// An own call changed (or was created): write its record.
    pub fn put_call(&mut self, sessions: &Sessions, call_id: &str, created: u64, now_ms: u64) {
        if self.foreign.contains_key(call_id) {
            return;
        }
        let Some(export) = sessions.export_call(call_id) else {
            return;
        };
        let epoch = *self.epochs.entry(call_id.to_owned()).or_default();
        self.store.put(CallRecord::new(
            call_id, &self.me, epoch, created, now_ms, export,
        ));
    }

    /// A call ended here: by signalling (`force`: its key goes whoever owns it) or a timeout.
    /// A foreign call ended by signalling leaves the sessions too.
    pub fn call_deleted(&mut self, sessions: &mut Sessions, call_id: &str, force: bool) {
        self.epochs.remove(call_id);
        if self.foreign.remove(call_id).is_some() {
            remove_call(sessions, call_id);
        }
        self.store.delete(call_id, force);
    }

    /// What another relay did.
    pub fn handle(
        &mut self,
        sessions: &mut Sessions,
        own: &BTreeSet<String>,
        ev: Remote,
    ) -> Vec<Action> {
        let mut actions = match ev {
            Remote::Snapshot(records) => self.snapshot(sessions, own, records),
            Remote::Put(rec) => {
                let held = self.held(&rec.call_id);
                self.apply(sessions, held, *rec)
            }
            Remote::Gone(call_id) => {
                if self.foreign.remove(&call_id).is_some() {
                    remove_call(sessions, &call_id);
                    tracing::info!(%call_id, "foreign call ended");
                }
                Vec::new()
            }
            Remote::Fenced(call_id) => {
                let Some(epoch) = self.epochs.remove(&call_id) else {
                    return Vec::new();
                };
                self.counters.demoted += 1;
                if let Some(export) = sessions.export_call(&call_id) {
                    // The new owner's record follows as a notification and replaces this one.
                    let placeholder = CallRecord::new(&call_id, "", epoch + 1, 0, 0, export);
                    self.foreign.insert(call_id.clone(), placeholder);
                }
                vec![Action::Release(call_id)]
            }
        };
        if self.auto {
            let present = self.watch.present().clone();
            actions.extend(self.takeover_present(&present, 0));
        }
        actions
    }

    /// The host's addresses (after a netlink address event or the slow safety-net read): in
    /// automatic mode, foreign calls whose addresses are all here are taken over.
    pub fn host_addrs(&mut self, host: &BTreeSet<IpAddr>, now_ms: u64) -> Vec<Action> {
        for a in self.watch.update(host) {
            tracing::info!(address = %a, "media address appeared on this host");
        }
        if !self.auto {
            return Vec::new();
        }
        let present = self.watch.present().clone();
        self.takeover_present(&present, now_ms)
    }

    /// Takes one foreign call over whatever the addresses (signalling for it came here).
    pub fn takeover_call(&mut self, call_id: &str, now_ms: u64) -> Option<Action> {
        let rec = self.foreign.remove(call_id)?;
        let mine = takeover::taken_over(&rec, &self.me, now_ms);
        tracing::info!(%call_id, from = %rec.owner, epoch = mine.epoch, "taking the call over (signalling for it came here)");
        self.epochs.insert(call_id.to_owned(), mine.epoch);
        self.store.put(mine);
        self.counters.taken_over += 1;
        Some(Action::Install(call_id.to_owned()))
    }

    /// Takes over every foreign call whose addresses are all in `host` (the `takeover`
    /// command, or the automatic mode); returns what to install.
    pub fn takeover_present(&mut self, host: &BTreeSet<IpAddr>, now_ms: u64) -> Vec<Action> {
        if self.foreign.is_empty() {
            return Vec::new();
        }
        let ids = takeover::takeover_candidates(self.foreign.values(), host);
        let mut actions = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(rec) = self.foreign.remove(&id) else {
                continue;
            };
            let mine = takeover::taken_over(&rec, &self.me, now_ms);
            tracing::info!(call_id = %id, from = %rec.owner, epoch = mine.epoch, "taking the call over");
            self.epochs.insert(id.clone(), mine.epoch);
            self.store.put(mine);
            self.counters.taken_over += 1;
            actions.push(Action::Install(id));
        }
        actions
    }
}

/// Removes a call and frees its ports, if it is there.
fn remove_call(sessions: &mut Sessions, call_id: &str) {
    if sessions.call_ids().any(|c| c == call_id) {
        let _ = sessions.delete(call_id, None, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;
    use relay_core::session::{Config, OfferOptions};

    fn sessions() -> Sessions {
        Sessions::new(Config {
            interfaces: vec!["pub/10.0.0.1".parse().unwrap()],
            port_min: 30000,
            port_max: 30100,
        })
        .unwrap()
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn ha(id: &str, records: BTreeMap<String, Vec<u8>>) -> Ha<MemoryStore> {
        let store = MemoryStore {
            relay_id: id.into(),
            records,
            ..Default::default()
        };
        Ha::new(store, id, true, ["10.0.0.1".parse().unwrap()])
    }

    #[test]
    fn standby_holds_takes_over_and_the_old_active_steps_back() {
        // a owns c1.
        let (mut sa, mut a) = (sessions(), ha("a", BTreeMap::new()));
        sa.offer("c1", "ft", SDP, &OfferOptions::default()).unwrap();
        a.put_call(&sa, "c1", 1, 1);
        // b starts as standby: holds c1 as foreign, ports reserved, nothing to install.
        let (mut sb, mut b) = (sessions(), ha("b", a.store.records.clone()));
        assert!(b.start(&mut sb, &BTreeSet::new()).is_empty());
        assert!(b.is_foreign("c1"));
        assert!(sb.ports_in_use("10.0.0.1".parse().unwrap()) > 0);
        // The address is not here yet: nothing happens; then it appears: b takes c1 over.
        assert!(b.host_addrs(&BTreeSet::new(), 2).is_empty());
        let here: BTreeSet<IpAddr> = ["10.0.0.1".parse().unwrap()].into();
        assert_eq!(b.host_addrs(&here, 3), vec![Action::Install("c1".into())]);
        assert!(!b.is_foreign("c1"));
        assert_eq!(b.epoch("c1"), 1);
        // a comes back: its write is refused, and reading b's record demotes its call.
        a.store.records = b.store.records.clone();
        a.put_call(&sa, "c1", 1, 4);
        assert_eq!(a.store.fenced, vec!["c1".to_owned()]);
        let rec = CallRecord::decode(&b.store.records["c1"]).unwrap();
        let own: BTreeSet<String> = ["c1".to_owned()].into();
        a.epochs.insert("c1".into(), 0);
        let act = a.handle(&mut sa, &own, Remote::Put(Box::new(rec)));
        assert_eq!(act, vec![Action::Release("c1".into())]);
        assert!(a.is_foreign("c1"));
        // a's address watch sees nothing of its own (the address is on b): no fight.
        assert!(a.host_addrs(&BTreeSet::new(), 5).is_empty());
        // b deletes the call by signalling: the key goes; a drops its foreign copy.
        b.call_deleted(&mut sb, "c1", true);
        assert!(b.store.records.is_empty());
        a.handle(&mut sa, &own, Remote::Gone("c1".into()));
        assert!(!a.is_foreign("c1"));
        assert_eq!(sa.call_ids().count(), 0);
    }

    /// The glue between the address watch and the takeover: a netlink event that the floating
    /// address appeared takes the foreign call over at once; a lost event is made good by the
    /// resync's full read.
    #[test]
    fn address_events_take_foreign_calls_over() {
        use crate::state::host_addrs::{AddrChange, AddrSource, HostAddrs};
        struct Reads(Vec<BTreeSet<IpAddr>>);
        impl AddrSource for Reads {
            fn read_all(&mut self) -> std::io::Result<BTreeSet<IpAddr>> {
                Ok(self.0.remove(0))
            }
        }
        let float: IpAddr = "10.0.0.1".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let (mut sa, mut a) = (sessions(), ha("a", BTreeMap::new()));
        sa.offer("c1", "ft", SDP, &OfferOptions::default()).unwrap();
        sa.offer("c2", "ft", SDP, &OfferOptions::default()).unwrap();
        a.put_call(&sa, "c1", 1, 1);
        let (mut sb, mut b) = (sessions(), ha("b", a.store.records.clone()));
        b.start(&mut sb, &BTreeSet::new());
        let mut addrs = HostAddrs::new(Reads(vec![[lo].into(), [lo, float].into()]));
        assert!(b.host_addrs(addrs.current(), 2).is_empty());
        // keepalived adds the address: one RTM_NEWADDR.
        assert!(addrs.apply([AddrChange::Added(float)]));
        assert_eq!(
            b.host_addrs(addrs.current(), 3),
            vec![Action::Install("c1".into())]
        );
        // Another relay's call arrives while the address is here: taken over on arrival.
        a.put_call(&sa, "c2", 1, 4);
        let rec = CallRecord::decode(&a.store.records["c2"]).unwrap();
        let act = b.handle(&mut sb, &BTreeSet::new(), Remote::Put(Box::new(rec)));
        assert_eq!(act, vec![Action::Install("c2".into())]);
        // The address goes and comes back with the event lost: the resync's read finds it.
        assert!(addrs.apply([AddrChange::Removed(float)]));
        assert!(b.host_addrs(addrs.current(), 5).is_empty());
        assert!(addrs.apply([AddrChange::Resync]));
        assert!(addrs.current().contains(&float));
    }

    #[test]
    fn fenced_write_releases_and_snapshot_drops_stale_foreign_calls() {
        let (mut s, mut a) = (sessions(), ha("a", BTreeMap::new()));
        s.offer("c1", "ft", SDP, &OfferOptions::default()).unwrap();
        a.put_call(&s, "c1", 1, 1);
        let own: BTreeSet<String> = ["c1".to_owned()].into();
        let act = a.handle(&mut s, &own, Remote::Fenced("c1".into()));
        assert_eq!(act, vec![Action::Release("c1".into())]);
        assert!(a.is_foreign("c1"));
        // The store no longer has it: the foreign copy goes, ports freed.
        a.handle(&mut s, &BTreeSet::new(), Remote::Snapshot(Vec::new()));
        assert_eq!(s.call_ids().count(), 0);
        assert_eq!(s.ports_in_use("10.0.0.1".parse().unwrap()), 0);
    }
}
