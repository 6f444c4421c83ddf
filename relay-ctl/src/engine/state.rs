//! The saved state, write-ahead: every change to a call is appended to the journal and synced
//! (see [`crate::journal`]) before the NG reply that acknowledges it goes out and before the fast
//! path sees it. A commit has two halves: [`Engine::begin_commit`] takes the changes (journal
//! operations, held map operations, queued datagrams) and [`Engine::finish_commit`] releases them
//! once the write is durable. The daemon runs the write on a blocking thread and keeps handling
//! requests meanwhile; they form the next batch (group commit: batches grow with the load, one
//! sync each). [`Engine::commit`] does both halves in place.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use super::{Engine, Outgoing, fast_path::MapOp};
use crate::journal::{Journal, JournalError, Loaded, Op, SavedCall};

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
    /// Shared with the thread that runs a commit's write; one write is in flight at a time.
    journal: Arc<Mutex<Journal>>,
    dirty: BTreeSet<String>,
    /// Operations handed to the journal since its last snapshot (decides compaction).
    appended: u64,
    /// Commits that could not be written (a full disk, no file descriptors): logged and counted.
    pub write_errors: u64,
}

impl StateStore {
    pub fn new(path: PathBuf, journal: Journal) -> StateStore {
        StateStore {
            path,
            appended: journal.appended(),
            journal: Arc::new(Mutex::new(journal)),
            dirty: BTreeSet::new(),
            write_errors: 0,
        }
    }

    /// Notes that a call changed; a commit makes it durable.
    pub fn mark(&mut self, call_id: &str) {
        if !self.dirty.contains(call_id) {
            self.dirty.insert(call_id.to_owned());
        }
    }
}

/// A journal write: the operations of one batch, or a whole snapshot when compaction is due.
/// Self-contained, so it can run on another thread.
pub struct JournalWrite {
    journal: Arc<Mutex<Journal>>,
    job: WriteJob,
}

enum WriteJob {
    Append(Vec<Op>),
    Snapshot(Vec<SavedCall>),
}

impl JournalWrite {
    /// Writes and syncs (blocking): when this returns Ok the batch survives a crash.
    pub fn run(self) -> Result<(), JournalError> {
        // A poisoned lock only means an earlier write panicked; the file is still ours.
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        match self.job {
            WriteJob::Append(ops) => journal.append(&ops),
            WriteJob::Snapshot(calls) => journal.compact(calls),
        }
    }
}

/// What a commit lets happen once its write is durable: the fast-path changes and the datagrams
/// that follow from it, in order.
pub struct Release {
    map_ops: Vec<MapOp>,
    outbox: Vec<Outgoing>,
}

impl Engine {
    /// True when changes wait for a commit. False: nothing since the last
    /// [`Engine::begin_commit`] changed a call or the maps, so what is queued (replies,
    /// datagrams) depends on no unwritten state.
    pub fn state_dirty(&self) -> bool {
        !self.state.dirty.is_empty() || self.table.has_pending()
    }

    /// Takes every change since the last commit: the journal write that makes it durable (None
    /// when no call changed) and what may happen after it. The caller runs the write, then
    /// calls [`Engine::finish_commit`]; nothing else may be committed in between.
    pub fn begin_commit(&mut self) -> (Option<JournalWrite>, Release) {
        let write = if self.state.dirty.is_empty() {
            None
        } else {
            let dirty = std::mem::take(&mut self.state.dirty);
            // The same changes go to the shared store (Redis), when there is one.
            self.ha_commit(&dirty);
            let job = if self.compaction_due(dirty.len() as u64) {
                self.state.appended = 0;
                WriteJob::Snapshot(self.own_calls())
            } else {
                self.state.appended += dirty.len() as u64;
                WriteJob::Append(
                    dirty
                        .into_iter()
                        .map(|call_id| match self.saved_call(&call_id) {
                            Some(c) => Op::Put(Box::new(c)),
                            None => Op::Delete(call_id),
                        })
                        .collect(),
                )
            };
            Some(JournalWrite {
                journal: Arc::clone(&self.state.journal),
                job,
            })
        };
        let release = Release {
            map_ops: self.table.take_pending(),
            outbox: std::mem::take(&mut self.outbox),
        };
        (write, release)
    }

    /// Ends a commit: counts a failed write, then applies its map changes and sends its
    /// datagrams. A failed write still releases them: the change stands in memory and in the
    /// fast path, and the error is loud (a crash before the next successful write loses it).
    pub fn finish_commit(&mut self, written: Option<Result<(), JournalError>>, release: Release) {
        if let Some(Err(e)) = written {
            self.state.write_errors += 1;
            tracing::error!(path = %self.state.path.display(), error = %e, "saving call state failed; a crash now would lose these changes");
        }
        self.table.apply_ops(release.map_ops);
        self.outbox = release.outbox;
        self.send_queued();
    }

    /// Makes every change since the last commit durable (one journal sync for all of them),
    /// then lets the fast path see it, in place.
    pub fn commit(&mut self) {
        let (write, release) = self.begin_commit();
        let written = write.map(JournalWrite::run);
        self.finish_commit(written, release);
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
            names: self
                .compat
                .names
                .get(call_id)
                .filter(|n| **n != crate::ngopts::Names::default())
                .cloned(),
        })
    }

    /// True once the journal is long (four operations per call, at least 4096) counting
    /// `adding`: the batch is then written as a snapshot, so a restart replays little.
    fn compaction_due(&self, adding: u64) -> bool {
        let calls = self.meta.len() as u64;
        self.state.appended + adding >= (4 * calls).max(4096)
    }

    /// Writes the whole state as a snapshot (at start-up after a restore, and on stop).
    pub fn flush_state(&mut self) {
        self.commit();
        let write = JournalWrite {
            journal: Arc::clone(&self.state.journal),
            job: WriteJob::Snapshot(self.own_calls()),
        };
        self.state.appended = 0;
        if let Err(e) = write.run() {
            self.state.write_errors += 1;
            tracing::error!(path = %self.state.path.display(), error = %e, "writing the state snapshot");
        }
    }

    /// Every own call, as the snapshot keeps them.
    fn own_calls(&self) -> Vec<SavedCall> {
        self.meta
            .keys()
            .filter_map(|c| self.saved_call(c))
            .collect()
    }
}

pub(super) fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn from_epoch(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
