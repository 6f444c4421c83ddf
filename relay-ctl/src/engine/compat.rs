//! The engine's side of issue 15, the NG vocabulary Kamailio and OpenSIPS configs send: offer,
//! answer, delete, query and statistics with labels, Via branches, codec filtering, media
//! address, loop protection, TOS, the session limit, and rtpengine's statistics and metric
//! names ([`crate::rtpe_compat`]). The option logic itself is in [`crate::ngopts`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use relay_core::call_options::{All, MediaOptions, Tos};
use serde_json::{Map, Value, json};

use super::{Engine, NgError, Now, ng::required_sdp, replies::obj};
use crate::ngmap::Request;
use crate::ngopts::{self, Names, Pre};
use crate::rtpe_compat::{self, Figures, PortPool};

type Reply = Result<Map<String, Value>, NgError>;

/// Per-call names and daemon-wide figures the compat layer keeps.
pub(super) struct Compat {
    pub(super) names: HashMap<String, Names>,
    /// This daemon's loop-protection id (`a=rtpengine:ID`), random per start as rtpengine's.
    instance: String,
    started: Instant,
    closed: BTreeMap<&'static str, u64>,
    call_seconds: f64,
    errors: u64,
}

impl Compat {
    pub(super) fn new(now: Instant) -> Compat {
        Compat {
            names: HashMap::new(),
            instance: format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            started: now,
            closed: BTreeMap::new(),
            call_seconds: 0.0,
            errors: 0,
        }
    }

    pub(super) fn count_error(&mut self) {
        self.errors += 1;
    }
}

fn with_warnings(mut reply: Map<String, Value>, warnings: &[String]) -> Map<String, Value> {
    if !warnings.is_empty() {
        for w in warnings {
            tracing::warn!(warning = %w, "NG request");
        }
        reply.insert("warning".into(), warnings.join("; ").into());
    }
    reply
}

impl Engine {
    /// `delete_now`, and when that ended the call, its count under `reason` (rtpengine's
    /// `closed_sessions_total` label) and its duration.
    pub(super) fn delete_counted(
        &mut self,
        call_id: &str,
        from: Option<&str>,
        to: Option<&str>,
        reason: &'static str,
        now: Now,
    ) -> Result<(), relay_core::session::SessionError> {
        let age = self
            .meta
            .get(call_id)
            .map(|m| now.instant.duration_since(m.created_at));
        self.delete_now(call_id, from, to)?;
        if !self.sessions.call_ids().any(|c| c == call_id) {
            self.compat.names.remove(call_id);
            self.table.set_tos(call_id, None);
            *self.compat.closed.entry(reason).or_default() += 1;
            self.compat.call_seconds += age.map_or(0.0, |a| a.as_secs_f64());
        }
        Ok(())
    }

    /// Sets the call's TOS (rtpengine's `TOS`: per request, absent reverts to the default,
    /// none here); the fast path rewrites the call's entries when it changed.
    fn set_tos(&mut self, call_id: &str, tos: Tos) {
        let names = self.compat.names.entry(call_id.to_owned()).or_default();
        names.tos = tos.resolve(names.tos, None);
        self.table.set_tos(call_id, names.tos);
    }

    pub(super) fn ng_offer(&mut self, now: Now, req: &mut Request) -> Reply {
        let call_id = req.required("call-id")?.to_owned();
        let from_tag = req.required("from-tag")?.to_owned();
        let sdp = required_sdp(req)?;
        let media = req.media_options()?;
        if media.force_answer && req.str("to-tag").is_some_and(|t| !t.is_empty()) {
            return self.ng_answer(now, req);
        }
        let mut opts = req.offer_options()?;
        let (crypto, implied) = crate::ngcrypto::crypto_options(req)?;
        if implied.ice_force {
            opts.ice = relay_core::session::IceOption::Force;
        }
        if implied.rtcp_mux_require {
            opts.rtcp_mux = relay_core::session::RtcpMuxOption::Require;
        } else if implied.rtcp_mux_offer {
            opts.rtcp_mux = relay_core::session::RtcpMuxOption::Offer;
        }
        self.ha_before_signal(now, &call_id)?;
        if !self.meta.contains_key(&call_id)
            && let Some(r) = ngopts::load_limit(
                self.meta.len(),
                self.cfg.max_sessions,
                media.supports_load_limit,
            )
        {
            *self.compat.closed.entry("rejected").or_default() += 1;
            tracing::warn!(%call_id, limit = ?self.cfg.max_sessions, "session limit reached; offer refused");
            return match r.get("error-reason").and_then(Value::as_str) {
                Some(_) => Err(NgError::SessionLimit(self.cfg.max_sessions.unwrap_or(0))),
                None => Ok(r),
            };
        }
        let sdp = match ngopts::pre(&sdp, &media, opts.received_from, &self.compat.instance) {
            Pre::PassThrough(s) => {
                tracing::info!(%call_id, "SDP already processed by us (loop protect): passed through");
                return Ok(obj(json!({"result": "ok", "sdp": s})));
            }
            Pre::Process(s) => s,
        };
        // The SRTP gateway: a dry run first, so an offer it refuses changes nothing.
        self.gateway
            .offer(&call_id, &from_tag, &sdp, &crypto, true)
            .map_err(NgError::Crypto)?;
        let mut out = self
            .sessions
            .offer(&call_id, &from_tag, &sdp, &opts)
            .map_err(|e| self.ports_error(e))?;
        let (sdp, warnings) = ngopts::post(
            std::mem::take(&mut out.sdp),
            &media.codecs,
            true,
            &media,
            &self.compat.instance,
        );
        out.sdp = self
            .gateway
            .offer(&call_id, &from_tag, &sdp, &crypto, false)
            .map_err(NgError::Crypto)?;
        self.noted(&call_id, &from_tag, &media, true);
        self.set_tos(&call_id, media.tos);
        let reply = self.rewritten(now, &call_id, out);
        Ok(with_warnings(reply, &warnings))
    }

    fn noted(&mut self, call_id: &str, tag: &str, media: &MediaOptions, offer: bool) {
        let names = self.compat.names.entry(call_id.to_owned()).or_default();
        names.note(tag, media);
        if offer {
            names.offer_codecs = media.codecs.clone();
        }
    }

    pub(super) fn ng_answer(&mut self, now: Now, req: &mut Request) -> Reply {
        let call_id = req.required("call-id")?.to_owned();
        let from_tag = req.required("from-tag")?.to_owned();
        // rtpengine's order of checks, so a request missing both gets the same error.
        let sdp = required_sdp(req)?;
        let to_tag = req.required("to-tag")?.to_owned();
        let media = req.media_options()?;
        let mut opts = req.answer_options()?;
        let (crypto, implied) = crate::ngcrypto::crypto_options(req)?;
        if implied.ice_force {
            opts.ice = Some(relay_core::session::IceOption::Force);
        }
        self.ha_before_signal(now, &call_id)?;
        let sdp = match ngopts::pre(&sdp, &media, opts.received_from, &self.compat.instance) {
            Pre::PassThrough(s) => return Ok(obj(json!({"result": "ok", "sdp": s}))),
            Pre::Process(s) => s,
        };
        self.gateway
            .answer(&call_id, &to_tag, &sdp, &crypto, true)
            .map_err(NgError::Crypto)?;
        let mut out = self
            .sessions
            .answer(&call_id, &from_tag, &to_tag, &sdp, &opts)
            .map_err(|e| self.ports_error(e))?;
        let offered = self
            .compat
            .names
            .get(&call_id)
            .map(|n| n.offer_codecs.clone())
            .unwrap_or_default();
        let codecs = ngopts::answer_codecs(&offered, &media.codecs);
        let (sdp, warnings) = ngopts::post(
            std::mem::take(&mut out.sdp),
            &codecs,
            false,
            &media,
            &self.compat.instance,
        );
        out.sdp = self
            .gateway
            .answer(&call_id, &to_tag, &sdp, &crypto, false)
            .map_err(NgError::Crypto)?;
        self.noted(&call_id, &to_tag, &media, false);
        self.set_tos(&call_id, media.tos);
        let reply = self.rewritten(now, &call_id, out);
        Ok(with_warnings(reply, &warnings))
    }

    /// `delete`: by tags, `label`, `via-branch`, `from-tags` or `all`; `delete delay`, `fatal`,
    /// `fast`. The reply carries the call's statistics (rtpengine's query shape) unless `fast`.
    pub(super) fn ng_delete(&mut self, now: Now, req: &mut Request) -> Reply {
        let call_id = req.required("call-id")?.to_owned();
        let d = req.delete_options()?;
        let names = self.compat.names.get(&call_id).cloned().unwrap_or_default();
        let mut from = d.from_tag.clone();
        let mut to = d.to_tag.clone();
        if let Some(l) = &d.label {
            match names.tag_of(l) {
                Some(t) => from = Some(t.to_owned()),
                None => return not_found(d.fatal),
            }
        }
        // A Via branch naming one answered fork (and no to-tag) drops that fork only.
        if to.is_none()
            && let Some(b) = &d.via_branch
            && let Some(t) = names.tag_of_branch(b, from.as_deref().unwrap_or(""))
            && self.sessions.check_tags(&call_id, None, Some(t)).is_ok()
            && from.as_deref() != Some(t)
        {
            to = Some(t.to_owned());
        }
        if d.all == All::All {
            (from, to) = (None, None);
        }
        let mut targets: Vec<(Option<String>, Option<String>)> = vec![(from, to)];
        if !d.from_tags.is_empty() && d.all != All::All {
            targets = d
                .from_tags
                .iter()
                .map(|t| (Some(t.clone()), None))
                .collect();
        }
        let known = self.meta.contains_key(&call_id)
            && targets.iter().all(|(f, t)| {
                self.sessions
                    .check_tags(&call_id, f.as_deref(), t.as_deref())
                    .is_ok()
            });
        if !known && self.ha_delete_foreign(&call_id) {
            return Ok(obj(json!({"result": "ok"})));
        }
        if !known {
            return not_found(d.fatal);
        }
        self.ha_force_delete(&call_id);
        let reply = if d.fast {
            obj(json!({"result": "ok"}))
        } else {
            self.query_full(now, &call_id)
        };
        let delay = d.delete_delay.unwrap_or(0);
        for (f, t) in targets {
            if delay > 0 {
                let at = now.instant + Duration::from_secs(delay);
                self.timers.delete_later(at, call_id.clone(), f, t);
            } else {
                self.delete_counted(&call_id, f.as_deref(), t.as_deref(), "terminated", now)
                    .map_err(NgError::Session)?;
            }
        }
        Ok(reply)
    }

    /// rtpengine's query reply: per tag its media and streams with their counters (per leg),
    /// labels and Via branches, and the call's `totals` (RTP and RTCP).
    pub(super) fn query_full(&self, now: Now, call_id: &str) -> Map<String, Value> {
        let mut reply = self.query_reply(now, call_id);
        if let Some(n) = self.compat.names.get(call_id) {
            n.annotate(&mut reply);
        }
        let mut totals = json!({"RTP": {"packets": 0, "bytes": 0, "errors": 0},
                                "RTCP": {"packets": 0, "bytes": 0, "errors": 0}});
        for st in self.sessions.streams(call_id) {
            for leg in &st.legs {
                for (component, local) in leg.endpoints() {
                    let kind = if component == relay_core::component::Component::Rtp {
                        "RTP"
                    } else {
                        "RTCP"
                    };
                    let s = self.stats.streams.get(&local).copied().unwrap_or_default();
                    let f = self.table.counters(&local);
                    for (k, v) in [
                        ("packets", s.packets + f.packets),
                        ("bytes", s.bytes + f.bytes),
                    ] {
                        if let Some(n) = totals[kind][k].as_u64() {
                            totals[kind][k] = (n + v).into();
                        }
                    }
                }
            }
        }
        reply.insert("totals".into(), totals);
        reply
    }

    pub(super) fn ng_query(&mut self, now: Now, req: &mut Request) -> Reply {
        let call_id = req.required("call-id")?;
        if !self.meta.contains_key(call_id) {
            return Err(NgError::UnknownCall);
        }
        let mut reply = self.query_full(now, call_id);
        // `label` (or `from-tag`) narrows the reply to that participant, as rtpengine does.
        let label = req.str("label").or_else(|| req.str("from-label"));
        if let Some(l) = label {
            let tag = self
                .compat
                .names
                .get(call_id)
                .and_then(|n| n.tag_of(l))
                .map(str::to_owned)
                .ok_or(NgError::UnknownCall)?;
            if let Some(Value::Object(tags)) = reply.get_mut("tags") {
                tags.retain(|t, _| *t == tag);
            }
        }
        Ok(reply)
    }

    /// Our figures under rtpengine's names.
    pub fn rtpe_figures(&self, now: Instant) -> Figures {
        let (mut kernel_p, mut kernel_b) = (0, 0);
        let mut media_kernel = 0;
        for (local, _) in self.table.slots() {
            let f = self.table.counters(&local);
            kernel_p += f.packets;
            kernel_b += f.bytes;
            media_kernel += u64::from(self.table.get(&local).is_some());
        }
        let user_b: u64 = self.stats.streams.values().map(|s| s.bytes).sum();
        let streams: u64 = self
            .sessions
            .call_ids()
            .map(|c| 2 * self.sessions.streams(c).len() as u64)
            .sum();
        let ports: Vec<PortPool> = self
            .cfg
            .interfaces
            .iter()
            .map(|i| PortPool {
                name: i.name.clone(),
                address: i.bind.to_string(),
                min: self.cfg.port_min,
                max: self.cfg.port_max,
                used: self.sessions.ports_in_use(i.bind) as u64,
            })
            .collect();
        let mut requests: BTreeMap<String, u64> = BTreeMap::new();
        for (cmd, _, n) in self.ng.counts() {
            *requests.entry(cmd).or_default() += n;
        }
        Figures {
            uptime_s: now.saturating_duration_since(self.compat.started).as_secs(),
            sessions_own: self.meta.len() as u64,
            sessions_managed: self.stats.sessions_total,
            closed: self.compat.closed.iter().map(|(r, n)| (*r, *n)).collect(),
            packets_user: self.stats.userspace_forwarded,
            bytes_user: user_b,
            packets_kernel: kernel_p,
            bytes_kernel: kernel_b,
            media_kernel,
            media_userspace: streams.saturating_sub(media_kernel),
            call_duration_total_s: self.compat.call_seconds,
            calls_ended: self.compat.closed.values().sum(),
            proxy: self.cfg.ng_listen.ip().to_string(),
            requests: requests.into_iter().collect(),
            request_errors: self.compat.errors,
            ports,
            ..Figures::default()
        }
    }

    /// `statistics`: rtpengine's reply shape with our figures, plus our own fast-path keys.
    pub(super) fn statistics_ng(&self, now: Now, ours: Map<String, Value>) -> Map<String, Value> {
        let mut reply = rtpe_compat::statistics_reply(&self.rtpe_figures(now.instant));
        if let (Some(Value::Object(s)), Some(Value::Object(o))) =
            (reply.get_mut("statistics"), ours.get("statistics"))
        {
            for (k, v) in o {
                if k != "currentstatistics" {
                    s.insert(k.clone(), v.clone());
                } else if let (Some(Value::Object(cur)), Value::Object(ours)) =
                    (s.get_mut("currentstatistics"), v)
                {
                    // Our session counts (own, foreign from Redis, total) are the real ones.
                    for (kk, vv) in ours {
                        cur.insert(kk.clone(), vv.clone());
                    }
                }
            }
        }
        reply
    }
}

/// rtpengine's reply to a delete for a call (or tags) it does not have: a warning, not an
/// error, unless the request carries the `fatal` flag.
fn not_found(fatal: bool) -> Reply {
    if fatal {
        return Err(NgError::NotFound);
    }
    let warning = NgError::NotFound.to_string();
    Ok(obj(json!({"result": "ok", "warning": warning})))
}
