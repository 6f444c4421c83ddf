//! The engine's timers: the agents' own deadlines, delayed deletes, the media/silent/final
//! timeouts (checked on a coarse sweep) and the batched state write. The daemon sleeps until
//! [`Engine::poll_timeout`] and then calls [`Engine::handle_timeout`].

use std::time::{Duration, Instant};

use super::{Engine, Now};

/// How often calls are checked for media timeouts (seconds-granular, as rtpengine's).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Timers {
    /// (when, call-id, from-tag, to-tag) of deletes with a `delete-delay`.
    pending_deletes: Vec<(Instant, String, Option<String>, Option<String>)>,
    next_sweep: Instant,
}

impl Timers {
    pub fn new(now: Instant) -> Timers {
        Timers {
            pending_deletes: Vec::new(),
            next_sweep: now + SWEEP_INTERVAL,
        }
    }

    pub fn delete_later(
        &mut self,
        at: Instant,
        call_id: String,
        from: Option<String>,
        to: Option<String>,
    ) {
        self.pending_deletes.push((at, call_id, from, to));
    }
}

impl Engine {
    /// When [`Engine::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Instant {
        [
            Some(self.timers.next_sweep),
            self.ice.poll_timeout(),
            self.timers.pending_deletes.iter().map(|(t, ..)| *t).min(),
            self.gateway.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.timers.next_sweep)
    }

    pub fn handle_timeout(&mut self, now: Now) {
        let events = self.ice.handle_timeout(now.instant);
        self.ice_events(events);
        self.dtls_poll(now);
        self.run_due_deletes(now);
        if now.instant >= self.timers.next_sweep {
            self.timers.next_sweep = now.instant + SWEEP_INTERVAL;
            self.expire_idle_calls(now);
            self.end_learning_windows(now);
        }
    }

    /// Latches whose learning window ended get entries that refuse other sources in the fast
    /// path (within a sweep interval of the window's end).
    fn end_learning_windows(&mut self, now: Now) {
        for call_id in self.sessions.end_learning(now.instant) {
            let entries = self.sessions.call_entries(&call_id);
            self.table.apply(&call_id, entries);
        }
    }

    fn run_due_deletes(&mut self, now: Now) {
        let (due, later) = std::mem::take(&mut self.timers.pending_deletes)
            .into_iter()
            .partition(|(at, ..)| *at <= now.instant);
        self.timers.pending_deletes = later;
        let due: Vec<_> = due;
        if due.is_empty() {
            return;
        }
        for (_, call_id, from, to) in due {
            let done =
                self.delete_counted(&call_id, from.as_deref(), to.as_deref(), "terminated", now);
            if let Err(e) = done {
                tracing::debug!(%call_id, error = %e, "delayed delete");
            }
        }
    }

    /// Deletes calls whose media stopped (rtpengine's timeout, silent timeout on hold) or that
    /// reached the final timeout. Media the fast path forwarded counts as activity.
    fn expire_idle_calls(&mut self, now: Now) {
        for (local, call_id) in &self.call_of {
            let ns = self.table.counters(local).last_seen_ns;
            if ns == 0 || ns > now.fast_path_ns {
                continue;
            }
            let ago = Duration::from_nanos(now.fast_path_ns - ns);
            if let (Some(t), Some(m)) = (now.instant.checked_sub(ago), self.meta.get_mut(call_id))
                && t > m.last_activity
            {
                m.last_activity = t;
            }
        }
        // With rtpengine's reason labels (`rtpengine_closed_sessions_total{reason=...}`).
        let expired: Vec<(String, &'static str)> = self
            .meta
            .iter()
            .filter_map(|(c, m)| {
                // Calls on hold get rtpengine's silent timeout instead of the media timeout.
                let (limit, reason) = if self.sessions.is_muted(c) {
                    (self.cfg.silent_timeout, "silent_timeout")
                } else {
                    (self.cfg.media_timeout, "timeout")
                };
                let idle = now.instant.duration_since(m.last_activity) > limit;
                let final_ = !self.cfg.final_timeout.is_zero()
                    && now.instant.duration_since(m.created_at) > self.cfg.final_timeout;
                match (idle, final_) {
                    (_, true) => Some((c.clone(), "final_timeout")),
                    (true, false) => Some((c.clone(), reason)),
                    _ => None,
                }
            })
            .collect();
        if expired.is_empty() {
            return;
        }
        for (call_id, reason) in expired {
            tracing::info!(%call_id, reason, "call timed out");
            if let Err(e) = self.delete_counted(&call_id, None, None, reason, now) {
                tracing::warn!(%call_id, error = %e, "deleting timed-out call");
                self.meta.remove(&call_id);
            }
        }
    }
}
