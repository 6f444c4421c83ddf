//! The NG control server (rtpengine's protocol): decode a `COOKIE SP DICTIONARY` datagram,
//! dispatch the command, answer in the request's encoding. Retransmissions (same cookie) are
//! answered from a cache and not executed twice. Errors carry rtpengine's wording, which proxies
//! log and some match on.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use relay_core::{sdp::SdpError, session::SessionError};
use serde_json::{Map, Value};

use super::{
    Engine, Now,
    replies::{error, obj},
};
use crate::{
    ngmap::{OptionError, Request},
    ngwire::{self, Encoding, WireError},
};

#[derive(Debug, thiserror::Error)]
pub enum NgError {
    #[error("Dictionary contains no key \"command\"")]
    NoCommand,
    #[error("Unrecognized command")]
    UnknownCommand,
    #[error("Unknown call-id")]
    UnknownCall,
    #[error("No SDP body in message")]
    NoSdp,
    /// A delete for a call or tags the relay does not have (with the `fatal` flag).
    #[error("Call-ID not found or tags didn't match")]
    NotFound,
    #[error("Incomplete SDP specification: {0}")]
    IncompleteSdp(SdpError),
    #[error("Failed to parse SDP: {0}")]
    BadSdp(SdpError),
    /// "No KEY in message", or an invalid option value.
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error(transparent)]
    Wire(#[from] WireError),
    /// What the sessions refused, in our words (rtpengine has none for it).
    #[error(transparent)]
    Session(SessionError),
    /// `--max-sessions` reached and the proxy does not support `load limit` (rtpengine's
    /// wording first).
    #[error("Parallel session limit reached ({0} calls, --max-sessions)")]
    SessionLimit(u64),
    #[error("Relay is a standby; it takes no new calls before a takeover")]
    Standby,
    #[error("No shared state configured (--redis)")]
    NoSharedState,
    /// SRTP the gateway cannot handle (a malformed a=crypto, no usable keying).
    #[error("{0}")]
    Crypto(String),
    #[error(
        "Out of file descriptors (limit {limit}): relay ports are left but cannot be opened; \
         raise LimitNOFILE (the port range needs {needed})"
    )]
    OutOfDescriptors { limit: u64, needed: u64 },
}

impl From<SessionError> for NgError {
    /// An offer or answer the sessions refused, in rtpengine's words where it has them.
    fn from(e: SessionError) -> NgError {
        match e {
            SessionError::UnknownCall(_) => NgError::UnknownCall,
            SessionError::Sdp(d @ SdpError::NoConnection { .. }) => NgError::IncompleteSdp(d),
            SessionError::Sdp(d) => NgError::BadSdp(d),
            other => NgError::Session(other),
        }
    }
}

type Reply = Result<Map<String, Value>, NgError>;

/// The server's own state: the reply cache and what it counts and logs.
#[derive(Default)]
pub(super) struct NgServer {
    cache: ReplyCache,
    counts: BTreeMap<(String, String), u64>,
    logged_unknown: HashSet<String>,
}

impl NgServer {
    pub fn counts(&self) -> Vec<(String, String, u64)> {
        self.counts
            .iter()
            .map(|((c, r), n)| (c.clone(), r.clone(), *n))
            .collect()
    }
}

impl Engine {
    /// One NG datagram: `COOKIE SP DICTIONARY`. Returns the reply datagram, or nothing for input
    /// without a cookie to answer to. A retransmission (same cookie) gets the cached reply and is
    /// not executed again.
    pub fn handle_ng(&mut self, now: Now, from: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        let sp = datagram.iter().position(|&b| b == b' ')?;
        let (cookie, body) = (&datagram[..sp], &datagram[sp + 1..]);
        if cookie.is_empty() {
            return None;
        }
        if let Some(reply) = self.ng.cache.get(now.instant, cookie) {
            tracing::debug!(%from, "NG retransmission answered from the cache");
            return Some(reply);
        }
        let (command, reply, enc) = match ngwire::decode(body) {
            Ok((raw, enc)) => {
                // A malformed rtpp-flags string is an error; nothing of the request is used.
                let (command, call_id, reply, unknown) = match Request::parse(&raw) {
                    Ok(mut req) => {
                        let command = req.str("command").unwrap_or("").to_owned();
                        let call_id = req.str("call-id").unwrap_or("").to_owned();
                        let reply = self
                            .dispatch(now, &command, &mut req)
                            .unwrap_or_else(|e| error(&e.to_string()));
                        let mut unknown = std::mem::take(&mut req.unknown);
                        unknown.extend(req.unknown_keys());
                        (command, call_id, reply, unknown)
                    }
                    Err(e) => {
                        let req = Request::new(&raw);
                        let command = req.str("command").unwrap_or("").to_owned();
                        let call_id = req.str("call-id").unwrap_or("").to_owned();
                        (
                            command,
                            call_id,
                            error(&NgError::from(e).to_string()),
                            Vec::new(),
                        )
                    }
                };
                for u in unknown {
                    if self.ng.logged_unknown.insert(u.clone()) {
                        tracing::info!(option = %u, "ignoring unknown NG option (logged once)");
                    }
                }
                let result = reply.get("result").and_then(Value::as_str).unwrap_or("?");
                tracing::info!(%from, %command, call_id = %call_id, %result, "NG request");
                (command, reply, enc)
            }
            Err(e) => {
                tracing::info!(%from, error = %e, "undecodable NG request");
                // Reply in the encoding the sender most likely speaks.
                let enc = if body.first() == Some(&b'{') {
                    Encoding::Json
                } else {
                    Encoding::Bencode
                };
                let e = NgError::from(e);
                ("invalid".to_owned(), error(&e.to_string()), enc)
            }
        };
        let result = reply
            .get("result")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        if result == "error" {
            self.compat.count_error();
        }
        *self.ng.counts.entry((command, result)).or_default() += 1;
        let mut out = cookie.to_vec();
        out.push(b' ');
        out.extend_from_slice(&ngwire::encode(&reply, enc));
        self.ng.cache.insert(now.instant, cookie, &out);
        Some(out)
    }

    fn dispatch(&mut self, now: Now, command: &str, req: &mut Request) -> Reply {
        match command {
            "ping" => Ok(obj(serde_json::json!({"result": "pong"}))),
            "offer" => self.ng_offer(now, req),
            "answer" => self.ng_answer(now, req),
            "delete" => self.ng_delete(now, req),
            "query" => self.ng_query(now, req),
            "list" => Ok(self.list_reply(req)),
            "statistics" => Ok(self.statistics_ng(now, self.statistics_reply())),
            "takeover" => self.ng_takeover(now),
            "" => Err(NgError::NoCommand),
            _ => Err(NgError::UnknownCommand),
        }
    }

    /// "No free ports" when the real shortage is file descriptors says so, with the numbers.
    pub(super) fn ports_error(&self, e: SessionError) -> NgError {
        match e {
            SessionError::Ports(relay_core::ports::PortError::Exhausted { .. })
                if self.sockets.descriptors_exhausted() =>
            {
                let limit = crate::fd_limit::current().unwrap_or(0);
                let ports = u64::from(self.cfg.port_max - self.cfg.port_min) + 1;
                NgError::OutOfDescriptors {
                    limit,
                    needed: crate::fd_limit::needed(ports, self.cfg.interfaces.len() as u64),
                }
            }
            other => other.into(),
        }
    }

    /// After an offer or answer: the call's sockets, entries and agents follow the new state.
    pub(super) fn rewritten(
        &mut self,
        now: Now,
        call_id: &str,
        out: relay_core::session::Negotiated,
    ) -> Map<String, Value> {
        self.touch(now, call_id);
        self.sync_call(call_id, out.update.into());
        obj(serde_json::json!({"result": "ok", "sdp": out.sdp}))
    }
}

/// The `sdp` key, or rtpengine's error for its absence.
pub(super) fn required_sdp(req: &Request) -> Result<String, NgError> {
    req.required("sdp")
        .map(str::to_owned)
        .map_err(|_| NgError::NoSdp)
}

/// Replies by cookie for NG retransmissions: kept 30 s (as rtpengine), at most 16384 entries
/// (the oldest go first), so a flood of distinct cookies cannot grow memory without bound.
#[derive(Default)]
struct ReplyCache {
    map: HashMap<Vec<u8>, (Instant, Vec<u8>)>,
    order: VecDeque<(Instant, Vec<u8>)>,
}

impl ReplyCache {
    const TTL: Duration = Duration::from_secs(30);
    const MAX: usize = 16_384;

    fn expire(&mut self, now: Instant) {
        while let Some((at, cookie)) = self.order.front() {
            if now.duration_since(*at) < Self::TTL && self.order.len() <= Self::MAX {
                break;
            }
            if self.map.get(cookie).is_some_and(|(t, _)| t == at) {
                self.map.remove(cookie);
            }
            self.order.pop_front();
        }
    }

    fn get(&mut self, now: Instant, cookie: &[u8]) -> Option<Vec<u8>> {
        self.expire(now);
        self.map.get(cookie).map(|(_, r)| r.clone())
    }

    fn insert(&mut self, now: Instant, cookie: &[u8], reply: &[u8]) {
        self.map.insert(cookie.to_vec(), (now, reply.to_vec()));
        self.order.push_back((now, cookie.to_vec()));
        self.expire(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_errors_use_rtpengine_wording_first() {
        let e = |s| NgError::from(s).to_string();
        assert_eq!(e(SessionError::UnknownCall("x".into())), "Unknown call-id");
        let bad = SessionError::Sdp(SdpError::BadLine { line: 2 });
        assert!(e(bad).starts_with("Failed to parse SDP: SDP line 2"));
        let incomplete = SessionError::Sdp(SdpError::NoConnection { index: 0 });
        assert!(e(incomplete).starts_with("Incomplete SDP specification: "));
        assert_eq!(
            NgError::from(OptionError::Missing("from-tag")).to_string(),
            "No from-tag in message"
        );
    }

    #[test]
    fn reply_cache_keeps_30s_and_is_bounded() {
        let mut c = ReplyCache::default();
        let t0 = Instant::now();
        c.insert(t0, b"a", b"reply");
        assert_eq!(
            c.get(t0 + Duration::from_secs(29), b"a").as_deref(),
            Some(&b"reply"[..])
        );
        assert_eq!(c.get(t0 + Duration::from_secs(30), b"a"), None);
        for i in 0..=ReplyCache::MAX {
            c.insert(t0, format!("{i}").as_bytes(), b"r");
        }
        assert!(c.map.len() <= ReplyCache::MAX && c.get(t0, b"0").is_none());
    }
}
