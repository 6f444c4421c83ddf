//! Counters the engine keeps besides the fast path's (media the daemon forwarded itself, NG and
//! STUN outcomes), and the metrics snapshot built from both.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::SystemTime,
};

use super::Engine;
use crate::metrics::Snapshot;

/// Media the daemon forwarded on one relay endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct StreamStats {
    pub packets: u64,
    pub bytes: u64,
    pub last: Option<SystemTime>,
}

#[derive(Default)]
pub(super) struct Stats {
    pub streams: HashMap<SocketAddr, StreamStats>,
    pub userspace_forwarded: u64,
    pub sessions_total: u64,
    pub ice_checks: BTreeMap<&'static str, u64>,
    /// Nominated pairs whose checks stopped (informational; forwarding goes on).
    pub ice_consent_lapsed: u64,
}

impl Stats {
    pub fn userspace_media(&mut self, local: SocketAddr, len: usize, wall: SystemTime) {
        let s = self.streams.entry(local).or_default();
        s.packets += 1;
        s.bytes += len as u64;
        s.last = Some(wall);
    }
}

impl Engine {
    pub fn metrics(&self) -> Snapshot {
        let fast_path = self
            .table
            .verdict_totals()
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
            datapaths: crate::datapath::status()
                .into_iter()
                .map(|r| (r.dev, r.hook.name(), !r.gone))
                .collect(),
            ng_requests: self.ng.counts(),
            ice_checks: self
                .stats
                .ice_checks
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            ice_consent_lapsed: self.stats.ice_consent_lapsed,
            userspace_forwarded: self.stats.userspace_forwarded,
            state_write_errors: self.state.write_errors,
            extra: self.ha_metrics(),
            crypto: self.gateway.counters,
        }
    }
}
