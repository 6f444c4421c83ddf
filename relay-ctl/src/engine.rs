//! The daemon's state and protocol glue: NG requests in, replies out; relay-port datagrams in,
//! ICE responses, latching decisions and fast-path map changes out. All protocol truth lives in
//! relay-core; this module only applies its decisions to sockets and maps.

use std::{collections::BTreeMap, net::SocketAddr, time::Instant};

use serde_json::{Map, Value, json};

use crate::{
    config::Config,
    metrics::Snapshot,
    ports::{Inbound, PortSockets},
    xdp::{Relay, read_totals},
};

pub struct Engine {
    #[allow(dead_code, reason = "used as sessions land")]
    cfg: Config,
    relay: Relay,
    #[allow(dead_code, reason = "used as sessions land")]
    ports: PortSockets,
    ng_counts: BTreeMap<(String, String), u64>,
}

impl Engine {
    pub fn new(cfg: Config, relay: Relay, ports: PortSockets) -> Engine {
        Engine {
            cfg,
            relay,
            ports,
            ng_counts: BTreeMap::new(),
        }
    }

    /// One NG datagram: `COOKIE SP DICTIONARY`. Returns the reply datagram, or nothing for input
    /// that has no cookie to answer to.
    pub fn handle_ng(
        &mut self,
        _now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        let sp = datagram.iter().position(|&b| b == b' ')?;
        let (cookie, body) = (&datagram[..sp], &datagram[sp + 1..]);
        let (command, reply) = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(req)) => {
                let command = req
                    .get("command")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let reply = self.dispatch(&command, &req);
                (command, reply)
            }
            _ => ("invalid".to_owned(), error("Could not decode dictionary")),
        };
        let result = reply
            .get("result")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        tracing::debug!(%from, %command, %result, "NG request");
        *self.ng_counts.entry((command, result)).or_default() += 1;
        let mut out = cookie.to_vec();
        out.push(b' ');
        out.extend_from_slice(Value::Object(reply).to_string().as_bytes());
        Some(out)
    }

    fn dispatch(&mut self, command: &str, _req: &Map<String, Value>) -> Map<String, Value> {
        match command {
            "ping" => obj(json!({"result": "pong"})),
            "statistics" => self.statistics(),
            "" => error("No command in message"),
            _ => error("Unrecognized command"),
        }
    }

    fn statistics(&self) -> Map<String, Value> {
        let fast_path: Map<String, Value> =
            match self.relay.stats_map().and_then(|m| read_totals(&m)) {
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
        obj(json!({
            "result": "ok",
            "statistics": {"currentstatistics": {"sessionsown": 0, "sessionstotal": 0}, "fastpath": fast_path},
        }))
    }

    pub fn handle_inbound(&mut self, _now: Instant, inbound: Inbound) {
        tracing::trace!(local = %inbound.local, source = %inbound.source, len = inbound.data.len(), "datagram on relay port");
    }

    pub fn handle_tick(&mut self, _now: Instant) {}

    pub fn metrics(&self) -> Snapshot {
        let fast_path = self
            .relay
            .stats_map()
            .and_then(|m| read_totals(&m))
            .map(|t| {
                t.0.iter()
                    .map(|(r, e)| (r.name(), r.verdict().name(), *e))
                    .collect()
            })
            .unwrap_or_default();
        Snapshot {
            fast_path,
            ng_requests: self
                .ng_counts
                .iter()
                .map(|((c, r), n)| (c.clone(), r.clone(), *n))
                .collect(),
            ..Snapshot::default()
        }
    }

    pub fn shutdown(&mut self) {
        tracing::info!("daemon stopping; the fast path keeps running on its pinned maps");
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn error(reason: &str) -> Map<String, Value> {
    obj(json!({"result": "error", "error-reason": reason}))
}
