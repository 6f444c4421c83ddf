//! The fast path as the engine sees it: a map of forwarding entries keyed by relay endpoint,
//! per-stream counters by slot, verdict totals. [`StreamTable`] mirrors what was applied, so
//! each change to a call installs only the difference, and owns the counter-slot allocator.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
};

use relay_common::{
    stats::Event,
    stream::{
        Endpoint, FLAG_RTCP_DEMUX, FLAG_SET_TOS, FLAG_SOURCE_ANY, MAX_NEXT_HOPS, Mismatch, NextHop,
        StreamCounters, StreamEntry, StreamKey,
    },
};
use relay_core::{
    forwarding::{ForwardingEntry, MismatchPolicy, diff},
    session::LatchTimers,
};

use crate::{
    next_hop::{NetSnapshot, NextHops},
    xdp::{Totals, XdpError},
};

#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("the stream table is full")]
    Full,
}

/// The XDP program's maps, behind a trait so the engine runs on a fake in unit tests.
pub trait FastPath {
    /// Installs or replaces the entry of relay endpoint `key`.
    fn insert(&mut self, key: StreamKey, entry: StreamEntry) -> Result<(), FastPathError>;
    /// Removes the entry of `key`; a missing entry is not an error.
    fn remove(&mut self, key: &StreamKey) -> Result<(), FastPathError>;
    /// Counters of a slot (`last_seen_ns` in CLOCK_MONOTONIC ns).
    fn counters(&self, slot: u32) -> Result<StreamCounters, FastPathError>;
    /// Zeroes a slot before it is given to a new stream.
    fn reset_counters(&mut self, slot: u32) -> Result<(), FastPathError>;
    /// Per-reason verdict counters, summed over CPUs.
    fn verdict_totals(&self) -> Result<Totals, FastPathError>;
    /// Entries the table holds (and counter slots it has), as created.
    fn capacity(&self) -> Result<u32, FastPathError>;
    /// The relay endpoints that have an entry now.
    fn keys(&mut self) -> Result<Vec<StreamKey>, FastPathError>;
    /// Writes one slot of the next-hop array.
    fn set_next_hop(&mut self, slot: u32, hop: NextHop) -> Result<(), FastPathError>;
    /// Per-event counters ([`Event`]), summed over CPUs.
    fn events(&self) -> Result<Vec<(Event, u64)>, FastPathError>;
}

/// A change to the fast path's maps, held until the state that explains it is durable.
pub(crate) enum MapOp {
    Remove(StreamKey),
    ResetCounters(u32),
    Insert(StreamKey, StreamEntry),
    /// Writes a new next-hop slot (its value as it is when applied) before an entry names it.
    SetNextHop(u32),
}

/// The entries applied to the fast path and the counter slot of each relay endpoint. Changes
/// reach the maps only at [`StreamTable::apply_ops`], which the engine calls once the journal holds
/// them: the maps are never newer than the saved state.
pub struct StreamTable {
    fast_path: Box<dyn FastPath>,
    pending: Vec<MapOp>,
    entries: HashMap<SocketAddr, ForwardingEntry>,
    by_call: HashMap<String, Vec<ForwardingEntry>>,
    slots: HashMap<SocketAddr, u32>,
    free_slots: Vec<u32>,
    /// The TOS byte each call's packets get (rtpengine's `TOS`); absent: left as sent.
    tos: HashMap<String, u8>,
    /// Endpoints whose media the daemon must see (SRTP conversion): their entries are applied
    /// (latching and rewrites use them) but never put into the map.
    held: HashSet<SocketAddr>,
    /// The latch handover interval as the fast path reads it (tenths of a second).
    handover_ds: u8,
    /// Next-hop slots, shared by the streams going to one destination.
    next_hops: NextHops,
    /// The next-hop slots (RTP, RTCP; 0: none) each installed entry names.
    hops_of: HashMap<SocketAddr, [u32; 2]>,
}

impl StreamTable {
    /// `saved_slots`: slots an earlier daemon gave out (their counters live on in pinned maps).
    pub fn new(
        fast_path: Box<dyn FastPath>,
        saved_slots: Vec<(SocketAddr, u32)>,
    ) -> Result<StreamTable, FastPathError> {
        // Counter slots as the table really is (a re-opened pinned one keeps its size).
        let capacity = fast_path.capacity()?;
        let taken: HashSet<u32> = saved_slots.iter().map(|(_, s)| *s).collect();
        Ok(StreamTable {
            fast_path,
            pending: Vec::new(),
            held: HashSet::new(),
            entries: HashMap::new(),
            by_call: HashMap::new(),
            slots: saved_slots.into_iter().collect(),
            // Slot 0 stays unused so a zeroed entry never counts into a live stream.
            free_slots: (1..capacity).rev().filter(|s| !taken.contains(s)).collect(),
            tos: HashMap::new(),
            next_hops: NextHops::new(MAX_NEXT_HOPS, HashSet::new()),
            hops_of: HashMap::new(),
            handover_ds: handover_ds(LatchTimers::default().handover_after),
        })
    }

    /// The silence after which another source may take a latch over (entries installed from
    /// now on carry it).
    pub fn set_handover_after(&mut self, after: std::time::Duration) {
        self.handover_ds = handover_ds(after);
    }

    /// The kernel's routing state changed (or was read for the first time): every next-hop
    /// slot is resolved again and those that changed are written at once (they are derived
    /// from the kernel, not from saved state). `owned`: the devices the fast path runs on.
    pub fn net_changed(&mut self, snap: NetSnapshot, owned: HashSet<u32>) {
        for (slot, hop) in self.next_hops.update(snap, owned) {
            if let Err(err) = self.fast_path.set_next_hop(slot, hop) {
                tracing::warn!(slot, error = %err, "writing a next hop; its streams use the FIB lookup");
            }
        }
    }

    /// Next-hop slots in use and how many of them are resolved.
    pub fn next_hop_counts(&self) -> (usize, usize) {
        (self.next_hops.len(), self.next_hops.resolved())
    }

    /// Per-event counters of the fast path.
    pub fn events(&self) -> Result<Vec<(Event, u64)>, FastPathError> {
        self.fast_path.events()
    }

    /// The next-hop slot for `dst` (0 when the array is full: the FIB decides); a new slot is
    /// written before the entry that names it.
    fn hop_slot(&mut self, dst: SocketAddr) -> u32 {
        match self.next_hops.acquire((dst.ip(), 0)) {
            Some((slot, true)) => {
                self.pending.push(MapOp::SetNextHop(slot));
                slot
            }
            Some((slot, false)) => slot,
            None => 0,
        }
    }

    /// The entry of `local` left the map: its next-hop slots lose a user.
    fn drop_hops(&mut self, local: &SocketAddr) {
        if let Some(slots) = self.hops_of.remove(local) {
            for s in slots {
                self.next_hops.release(s);
            }
        }
    }

    pub fn get(&self, local: &SocketAddr) -> Option<&ForwardingEntry> {
        self.entries.get(local)
    }

    /// The counter slot of one relay endpoint, if it has one.
    pub fn slot(&self, local: &SocketAddr) -> Option<u32> {
        self.slots.get(local).copied()
    }

    pub fn slots(&self) -> impl Iterator<Item = (SocketAddr, u32)> + '_ {
        self.slots.iter().map(|(a, s)| (*a, *s))
    }

    /// Makes `call_id`'s entries `new`, touching only what changed.
    pub fn apply(&mut self, call_id: &str, new: Vec<ForwardingEntry>) {
        let old = self.by_call.remove(call_id).unwrap_or_default();
        let changes = diff(&old, &new);
        for local in &changes.removals {
            self.entries.remove(local);
            self.drop_hops(local);
            self.pending.push(MapOp::Remove(StreamKey::from(*local)));
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
            self.by_call.insert(call_id.to_owned(), new);
        }
    }

    /// Sets the TOS of `call_id`'s forwarded packets (None: left as sent); its installed
    /// entries are rewritten when it changed.
    pub fn set_tos(&mut self, call_id: &str, tos: Option<u8>) {
        let old = match tos {
            Some(t) => self.tos.insert(call_id.to_owned(), t),
            None => self.tos.remove(call_id),
        };
        if old == tos {
            return;
        }
        let entries = self.by_call.get(call_id).cloned().unwrap_or_default();
        for e in &entries {
            self.install(call_id, e);
        }
    }

    /// Keeps these endpoints out of the map from now on (an entry already there is removed).
    pub fn hold_in_userspace(&mut self, locals: impl IntoIterator<Item = SocketAddr>) {
        for local in locals {
            if self.held.insert(local) && self.entries.contains_key(&local) {
                self.drop_hops(&local);
                self.pending.push(MapOp::Remove(StreamKey::from(local)));
            }
        }
    }

    /// The applied entry whose rewrite sends from `local` (the way to that leg's peer).
    pub fn sending_from(&self, local: &SocketAddr) -> Option<&ForwardingEntry> {
        self.entries.values().find(|e| e.rewrite.from == *local)
    }

    /// Whether the daemon, not the fast path, forwards this endpoint's media.
    pub fn is_held(&self, local: &SocketAddr) -> bool {
        self.held.contains(local)
    }

    /// A relay endpoint went away: its counter slot is free again.
    pub fn release(&mut self, local: &SocketAddr) {
        self.held.remove(local);
        if let Some(slot) = self.slots.remove(local) {
            self.free_slots.push(slot);
        }
    }

    /// Packets, bytes and last-seen time the fast path counted for an endpoint.
    pub fn counters(&self, local: &SocketAddr) -> StreamCounters {
        self.slots
            .get(local)
            .and_then(|s| self.fast_path.counters(*s).ok())
            .unwrap_or_default()
    }

    pub fn verdict_totals(&self) -> Result<Totals, FastPathError> {
        self.fast_path.verdict_totals()
    }

    /// Puts one entry into the XDP stream table; on failure the daemon keeps forwarding that
    /// stream itself, so a full map degrades speed, not service.
    fn install(&mut self, call_id: &str, e: &ForwardingEntry) {
        if self.held.contains(&e.local) {
            tracing::debug!(%call_id, local = %e.local, "stream held in userspace (SRTP conversion)");
            return;
        }
        let slot = match self.slots.get(&e.local) {
            Some(s) => *s,
            None => {
                let Some(s) = self.free_slots.pop() else {
                    tracing::warn!(%call_id, local = %e.local, "fast-path counter slots exhausted; stream stays in userspace");
                    return;
                };
                self.pending.push(MapOp::ResetCounters(s));
                self.slots.insert(e.local, s);
                s
            }
        };
        let tos = self.tos.get(call_id).copied();
        let mut entry = stream_entry(e, slot, tos, self.handover_ds);
        // New slots first, then the old ones released: a destination that stays keeps its slot.
        let hops = [
            self.hop_slot(e.rewrite.to),
            e.rtcp_rewrite.map_or(0, |r| self.hop_slot(r.to)),
        ];
        entry.next_hop = hops[0];
        entry.rtcp_next_hop = hops[1];
        self.drop_hops(&e.local);
        self.hops_of.insert(e.local, hops);
        self.pending
            .push(MapOp::Insert(StreamKey::from(e.local), entry));
    }

    /// True when changes wait for [`StreamTable::take_pending`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The held changes, for a commit whose journal write is still in flight.
    pub(crate) fn take_pending(&mut self) -> Vec<MapOp> {
        std::mem::take(&mut self.pending)
    }

    /// Applies changes taken by [`StreamTable::take_pending`], in order. A failed insert leaves
    /// that stream to the daemon (a full map degrades speed, not service).
    pub(crate) fn apply_ops(&mut self, ops: Vec<MapOp>) {
        for op in ops {
            match op {
                MapOp::Remove(key) => {
                    if let Err(err) = self.fast_path.remove(&key) {
                        tracing::warn!(local = ?key.socket_addr(), error = %err, "fast-path remove failed");
                    }
                }
                MapOp::ResetCounters(slot) => {
                    if let Err(err) = self.fast_path.reset_counters(slot) {
                        tracing::warn!(slot, error = %err, "resetting counter slot");
                    }
                }
                MapOp::SetNextHop(slot) => {
                    let hop = self.next_hops.value(slot);
                    if let Err(err) = self.fast_path.set_next_hop(slot, hop) {
                        tracing::warn!(slot, error = %err, "writing a next hop; its streams use the FIB lookup");
                    }
                }
                MapOp::Insert(key, entry) => match self.fast_path.insert(key, entry) {
                    Ok(()) => {
                        tracing::debug!(local = ?key.socket_addr(), "fast-path entry installed")
                    }
                    Err(err) => {
                        tracing::warn!(local = ?key.socket_addr(), error = %err, "fast-path insert failed; userspace forwards")
                    }
                },
            }
        }
        // The entries that named released slots are out of the map now.
        self.next_hops.recycle();
    }

    /// Removes every map entry the applied set does not know (an earlier daemon's, whose call
    /// the saved state no longer has).
    pub fn remove_unknown(&mut self) -> usize {
        let keys = match self.fast_path.keys() {
            Ok(k) => k,
            Err(err) => {
                tracing::warn!(error = %err, "listing fast-path entries");
                return 0;
            }
        };
        let mut removed = 0;
        for key in keys {
            if key
                .socket_addr()
                .is_none_or(|a| !self.entries.contains_key(&a))
            {
                self.pending.push(MapOp::Remove(key));
                removed += 1;
            }
        }
        removed
    }
}

/// A forwarding entry in the XDP program's layout.
/// Tenths of a second, rounded up, at most 25.5 s.
fn handover_ds(after: std::time::Duration) -> u8 {
    u8::try_from(after.as_millis().div_ceil(100)).unwrap_or(u8::MAX)
}

fn stream_entry(e: &ForwardingEntry, slot: u32, tos: Option<u8>, handover_ds: u8) -> StreamEntry {
    let (mut flags, expected) = match e.expected_source {
        Some(a) => (0, Endpoint::from(a)),
        None => (FLAG_SOURCE_ANY, Endpoint::default()),
    };
    if tos.is_some() {
        flags |= FLAG_SET_TOS;
    }
    let (rtcp_src, rtcp_dst) = match e.rtcp_rewrite {
        Some(r) => {
            flags |= FLAG_RTCP_DEMUX;
            (Endpoint::from(r.from), Endpoint::from(r.to))
        }
        None => (Endpoint::default(), Endpoint::default()),
    };
    StreamEntry {
        stream_id: e.stream.0,
        expected,
        src: Endpoint::from(e.rewrite.from),
        dst: Endpoint::from(e.rewrite.to),
        flags,
        mismatch: match e.mismatch {
            MismatchPolicy::Drop => Mismatch::Drop,
            MismatchPolicy::Userspace => Mismatch::Userspace,
            // Injected media is dropped here while the latched source is active; the daemon
            // sees the rest (Engine::media decides a rebinding with the session's timers).
            MismatchPolicy::Handover => Mismatch::Handover,
            MismatchPolicy::Forward => Mismatch::Forward,
        } as u8,
        tos: tos.unwrap_or(0),
        handover_ds,
        counter_slot: slot,
        egress_ifindex: 0,
        next_hop: 0,
        rtcp_next_hop: 0,
        rtcp_src,
        rtcp_dst,
    }
}

/// Entries by call, for tests and `entries()` views.
#[cfg(test)]
impl StreamTable {
    pub fn applied(&self) -> std::collections::BTreeMap<SocketAddr, ForwardingEntry> {
        self.entries.iter().map(|(a, e)| (*a, *e)).collect()
    }
}

impl super::Engine {
    /// A new view of the kernel's routes and neighbours (from the netlink watcher): the
    /// next-hop slots follow it.
    pub fn net_changed(&mut self, snap: NetSnapshot) {
        let owned = crate::datapath::status()
            .into_iter()
            .filter(|r| !r.gone)
            .map(|r| r.ifindex)
            .collect();
        self.net_changed_on(snap, owned);
    }

    /// [`Engine::net_changed`](super::Engine::net_changed) with the fast path's devices given.
    pub fn net_changed_on(&mut self, snap: NetSnapshot, owned: HashSet<u32>) {
        self.table.net_changed(snap, owned);
        let (slots, resolved) = self.table.next_hop_counts();
        tracing::debug!(slots, resolved, "next hops re-resolved");
    }
}
