//! The state file: what a restarted daemon needs to take its calls over (sessions, each call's
//! creation time, the fast path's counter slots). Writes are batched (see [`STATE_FLUSH_DELAY`]).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use super::Engine;

/// Longest time a session change waits before the state file is written.
pub const STATE_FLUSH_DELAY: Duration = Duration::from_millis(50);

/// What the state file holds.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Saved {
    pub sessions: relay_core::session::SessionsState,
    /// Call-ID and creation time, seconds since the epoch.
    pub calls: Vec<(String, u64)>,
    pub slots: Vec<(SocketAddr, u32)>,
}

impl Saved {
    /// The saved state at `path`; none when there is no file.
    pub fn read(path: &Path) -> anyhow::Result<Option<Saved>> {
        let Some(bytes) =
            crate::state_file::read(path).with_context(|| format!("reading {}", path.display()))?
        else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a saved session state; move it away to start without its calls",
                path.display()
            )
        })?))
    }
}

/// Where the state goes and whether it is behind the sessions.
pub(super) struct StateFile {
    path: PathBuf,
    /// When the sessions first changed since the last write.
    dirty_since: Option<Instant>,
}

impl StateFile {
    pub fn new(path: PathBuf) -> StateFile {
        StateFile {
            path,
            dirty_since: None,
        }
    }

    /// Notes a change; it is written within [`STATE_FLUSH_DELAY`].
    pub fn mark_dirty(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.dirty_since.map(|t| t + STATE_FLUSH_DELAY)
    }
}

impl Engine {
    /// True when the state file is behind the sessions.
    pub fn state_dirty(&self) -> bool {
        self.state.dirty_since.is_some()
    }

    /// Writes the sessions to the state file (atomically) if they changed. Writes are batched:
    /// each costs an fsync (milliseconds) and serialises every call, so writing per NG command
    /// would cap the daemon at a few dozen calls per second. A crash loses at most the changes
    /// of the last [`STATE_FLUSH_DELAY`]; a stop (SIGTERM) loses nothing.
    pub fn flush_state(&mut self) {
        if self.state.dirty_since.take().is_none() {
            return;
        }
        let saved = Saved {
            sessions: self.sessions.snapshot(),
            calls: self
                .meta
                .iter()
                .map(|(c, m)| (c.clone(), epoch(m.created)))
                .collect(),
            slots: self.table.slots().collect(),
        };
        let result = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::state_file::write_atomic(&self.state.path, &b));
        if let Err(e) = result {
            tracing::warn!(path = %self.state.path.display(), error = %e, "saving sessions");
        }
    }
}

pub(super) fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
