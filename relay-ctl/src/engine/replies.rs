//! The JSON bodies of `query`, `list` and `statistics` (and `delete`, which answers like a
//! query), in rtpengine's structure with our additions (ICE role, fast-path counters).

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use relay_core::session::IceRole;
use serde_json::{Map, Value, json};

use super::{Engine, Now, state::epoch};
use crate::ngmap::Request;

impl Engine {
    pub(super) fn list_reply(&self, req: &Request) -> Map<String, Value> {
        let limit = req.int("limit").ok().flatten().unwrap_or(32) as usize;
        let calls: Vec<&str> = self.sessions.call_ids().take(limit).collect();
        obj(json!({"result": "ok", "calls": calls}))
    }

    /// rtpengine's query structure: tags -> medias -> streams, plus our ICE role per stream.
    pub(super) fn query_reply(&self, now: Now, call_id: &str) -> Map<String, Value> {
        let mut tags: Map<String, Value> = Map::new();
        for st in self.sessions.streams(call_id) {
            for leg in &st.legs {
                let tag = leg.tag.clone().unwrap_or_else(|| "-".into());
                let mut streams = Vec::new();
                for (component, local) in leg.endpoints() {
                    let s = self.stats.streams.get(&local).copied().unwrap_or_default();
                    let f = self.table.counters(&local);
                    let last = match (s.last, f.last_seen_ns) {
                        (_, 0) => s.last.map_or(0, epoch),
                        (u, ns) => epoch(fast_path_to_wall(now, ns)).max(u.map_or(0, epoch)),
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
                        .peer(component)
                        .or_else(|| self.table.get(&local).and_then(|e| e.expected_source));
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
        obj(
            json!({"result": "ok", "created": created, "last signal": last_signal, "tags": tags, "datapath": crate::datapath::status_json()}),
        )
    }

    pub(super) fn statistics_reply(&self) -> Map<String, Value> {
        let fast_path: Map<String, Value> = match self.table.verdict_totals() {
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
        let events: Map<String, Value> = self
            .table
            .events()
            .unwrap_or_default()
            .into_iter()
            .map(|(e, n)| (e.name().to_owned(), json!(n)))
            .collect();
        let (slots, resolved) = self.table.next_hop_counts();
        obj(json!({
            "result": "ok",
            "statistics": {
                "fastpath events": events,
                "next hops": {"slots": slots, "resolved": resolved},
                "currentstatistics": {"sessionsown": self.meta.len(), "sessionsforeign": self.foreign_count(), "sessionstotal": self.stats.sessions_total},
                "userspace forwarded packets": self.stats.userspace_forwarded,
                "crypto": serde_json::to_value(self.gateway.counters).unwrap_or_default(),
                "fastpath": fast_path,
                "datapath": crate::datapath::status_json(),
            },
        }))
    }
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

/// A fast-path last-seen time (CLOCK_MONOTONIC ns) as wall-clock time.
fn fast_path_to_wall(now: Now, ns: u64) -> SystemTime {
    let ago = Duration::from_nanos(now.fast_path_ns.saturating_sub(ns));
    now.wall.checked_sub(ago).unwrap_or(UNIX_EPOCH)
}

pub(super) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub(super) fn error(reason: &str) -> Map<String, Value> {
    obj(json!({"result": "error", "error-reason": reason}))
}
