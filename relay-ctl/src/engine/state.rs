//! The saved state, write-ahead: every change to a call is appended to the journal and synced
//! (see [`crate::journal`]) before the NG reply that acknowledges it goes out and before the fast
//! path sees it ([`Engine::commit`]). The daemon commits once per batch of requests, so requests
//! that arrive together share one sync (group commit).

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use super::Engine;
use crate::journal::{Journal, Loaded, Op, SavedCall};

/// The whole-state file of daemons before the journal (snapshot formats 1 and 2).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct LegacySaved {
    pub sessions: relay_core::session::SessionsState,
    /// Call-ID and creation time, seconds since the epoch.
    pub calls: Vec<(String, u64)>,
    pub slots: Vec<(SocketAddr, u32)>,
}

/// What an engine starts from.
pub(super) enum Restored {
    Nothing,
    Calls(Vec<SavedCall>),
    Legacy(LegacySaved),
}

/// Opens the journal of `path` and reads what it holds.
pub(super) fn open(path: &Path) -> anyhow::Result<(Journal, Restored)> {
    let (journal, loaded) = Journal::open(path)?;
    let restored = match loaded {
        Loaded::Empty => Restored::Nothing,
        Loaded::Calls(calls) => Restored::Calls(calls.into_values().collect()),
        Loaded::Legacy(bytes) => {
            Restored::Legacy(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a saved session state; move it away to start without its calls",
                    path.display()
                )
            })?)
        }
    };
    Ok((journal, restored))
}

/// The journal and the calls changed since the last commit.
pub(super) struct StateStore {
    pub path: PathBuf,
    pub journal: Journal,
    dirty: BTreeSet<String>,
    /// Commits that could not be written (a full disk, no file descriptors): logged and counted.
    pub write_errors: u64,
}

impl StateStore {
    pub fn new(path: PathBuf, journal: Journal) -> StateStore {
        StateStore {
            path,
            journal,
            dirty: BTreeSet::new(),
            write_errors: 0,
        }
    }

    /// Notes that a call changed; [`Engine::commit`] makes it durable.
    pub fn mark(&mut self, call_id: &str) {
        if !self.dirty.contains(call_id) {
            self.dirty.insert(call_id.to_owned());
        }
    }
}

impl Engine {
    /// True when changes wait for [`Engine::commit`].
    pub fn state_dirty(&self) -> bool {
        !self.state.dirty.is_empty() || self.table.has_pending()
    }

    /// Makes every change since the last commit durable (one journal sync for all of them),
    /// then lets the fast path see it. The daemon calls this before it sends the replies of a
    /// batch of NG requests, and after every other event.
    pub fn commit(&mut self) {
        if !self.state.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.state.dirty);
            // The same changes go to the shared store (Redis), when there is one.
            self.ha_commit(&dirty);
            let ops: Vec<Op> = dirty
                .into_iter()
                .map(|call_id| match self.saved_call(&call_id) {
                    Some(c) => Op::Put(Box::new(c)),
                    None => Op::Delete(call_id),
                })
                .collect();
            if let Err(e) = self.state.journal.append(&ops) {
                // The change stands in memory and in the fast path; a crash before the next
                // successful write would lose it, so say so loudly.
                self.state.write_errors += 1;
                tracing::error!(path = %self.state.path.display(), error = %e, calls = ops.len(), "saving call state failed; a crash now would lose these changes");
            }
            self.compact_if_due();
        }
        self.table.flush();
        self.send_queued();
    }

    /// One call as the journal keeps it.
    fn saved_call(&self, call_id: &str) -> Option<SavedCall> {
        // Another relay's call held here is that relay's state, not ours.
        if self.ha_is_foreign(call_id) {
            return None;
        }
        let record = self.sessions.export_call(call_id)?;
        let endpoints = self.bound.get(call_id);
        Some(SavedCall {
            record,
            created: self.meta.get(call_id).map_or(0, |m| epoch(m.created)),
            // The call's own endpoints, not a scan of every slot: this runs per changed call.
            slots: endpoints
                .into_iter()
                .flatten()
                .filter_map(|a| Some((*a, self.table.slot(a)?)))
                .collect(),
            crypto: self.gateway.export_call(call_id),
        })
    }

    /// Rewrites the snapshot once the journal is long (four operations per call, at least
    /// 4096), so a restart replays little.
    fn compact_if_due(&mut self) {
        let calls = self.meta.len() as u64;
        if self.state.journal.appended() < (4 * calls).max(4096) {
            return;
        }
        self.write_snapshot();
    }

    /// Writes the whole state as a snapshot (at start-up after a restore, and on stop).
    pub fn flush_state(&mut self) {
        self.commit();
        self.write_snapshot();
    }

    /// Every own call as the snapshot, and the journal emptied.
    fn write_snapshot(&mut self) {
        let all: Vec<SavedCall> = self
            .meta
            .keys()
            .filter_map(|c| self.saved_call(c))
            .collect();
        if let Err(e) = self.state.journal.compact(all) {
            self.state.write_errors += 1;
            tracing::error!(path = %self.state.path.display(), error = %e, "writing the state snapshot");
        }
    }
}

pub(super) fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn from_epoch(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
