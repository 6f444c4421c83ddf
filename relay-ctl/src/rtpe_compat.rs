//! rtpengine's names for our figures: the `statistics` NG reply (`currentstatistics`,
//! `totalstatistics`, `controlstatistics`, as rtpengine's docs/ng_control_protocol.md shows it)
//! and the `rtpengine_*` Prometheus families rtpengine's exporter writes (daemon/statistics.c),
//! so dashboards and alerts built for rtpengine read this relay unchanged. Pure functions of
//! [`Figures`]; the engine fills those in.
//!
//! What the names mean here: "kernel" is our XDP fast path (rtpengine's in-kernel forwarding),
//! "userspace" the daemon's own forwarding while a flow is learned. Figures we do not have
//! (transcoding, MOS, per-interval delays) are reported as zero, as an idle rtpengine would.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

/// NG commands in rtpengine's order: (command, short name used in `controlstatistics` as
/// `NAMEcount` and `totalNAMEcount`, as rtpengine 10.5 writes them).
pub const COMMANDS: &[(&str, &str)] = &[
    ("ping", "ping"),
    ("offer", "offer"),
    ("answer", "answer"),
    ("delete", "delete"),
    ("query", "query"),
    ("list", "list"),
    ("start recording", "startrec"),
    ("stop recording", "stoprec"),
    ("start forwarding", "startfwd"),
    ("stop forwarding", "stopfwd"),
    ("block DTMF", "blkdtmf"),
    ("unblock DTMF", "unblkdtmf"),
    ("block media", "blkmedia"),
    ("unblock media", "unblkmedia"),
    ("play media", "playmedia"),
    ("stop media", "stopmedia"),
    ("play DTMF", "playdtmf"),
    ("statistics", "stats"),
    ("silence media", "slnmedia"),
    ("unsilence media", "unslnmedia"),
    ("publish", "pub"),
    ("subscribe request", "subreq"),
    ("subscribe answer", "subans"),
    ("unsubscribe", "unsub"),
];

/// Why sessions ended, with rtpengine's `closed_sessions_total` reason labels and
/// `totalstatistics` keys.
pub const CLOSE_REASONS: &[(&str, &str)] = &[
    ("rejected", "rejectedsessions"),
    ("timeout", "timeoutsessions"),
    ("silent_timeout", "silenttimeoutsessions"),
    ("final_timeout", "finaltimeoutsessions"),
    ("offer_timeout", "offertimeoutsessions"),
    ("terminated", "regularterminatedsessions"),
    ("force_terminated", "forcedterminatedsessions"),
];

/// One logical interface's port pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortPool {
    pub name: String,
    pub address: String,
    pub min: u16,
    pub max: u16,
    pub used: u64,
}

impl PortPool {
    fn total(&self) -> u64 {
        u64::from(self.max.saturating_sub(self.min)) + 1
    }
    fn free(&self) -> u64 {
        self.total().saturating_sub(self.used)
    }
}

/// Our figures, in the units rtpengine reports.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub uptime_s: u64,
    pub sessions_own: u64,
    /// Sessions ever created (rtpengine's `managedsessions`, `sessions_total`).
    pub sessions_managed: u64,
    /// (reason label as in [`CLOSE_REASONS`], count).
    pub closed: Vec<(&'static str, u64)>,
    pub packets_user: u64,
    pub bytes_user: u64,
    pub errors_user: u64,
    pub packets_kernel: u64,
    pub bytes_kernel: u64,
    pub errors_kernel: u64,
    /// Streams forwarded by the fast path / only by the daemon right now.
    pub media_kernel: u64,
    pub media_userspace: u64,
    pub zero_way_streams: u64,
    pub one_way_streams: u64,
    pub call_duration_total_s: f64,
    pub calls_ended: u64,
    /// NG requests per command (rtpengine's command names) and errors, from one "proxy" (we do
    /// not keep them per source address, so all are reported under `proxy`).
    pub proxy: String,
    pub requests: Vec<(String, u64)>,
    pub request_errors: u64,
    pub ports: Vec<PortPool>,
}

impl Figures {
    fn closed(&self, reason: &str) -> u64 {
        self.closed
            .iter()
            .filter(|(r, _)| *r == reason)
            .map(|(_, n)| n)
            .sum()
    }

    fn requests(&self, command: &str) -> u64 {
        self.requests
            .iter()
            .filter(|(c, _)| c == command)
            .map(|(_, n)| n)
            .sum()
    }

    fn avg_call_duration(&self) -> f64 {
        if self.calls_ended == 0 {
            0.0
        } else {
            self.call_duration_total_s / self.calls_ended as f64
        }
    }
}

/// The `statistics` reply dictionary (with `result: ok`).
pub fn statistics_reply(f: &Figures) -> Map<String, Value> {
    let mut total = json!({
        "uptime": f.uptime_s.to_string(),
        "managedsessions": f.sessions_managed,
        "relayedpackets": f.packets_user + f.packets_kernel,
        "relayedpacketerrors": f.errors_user + f.errors_kernel,
        "relayedpacketerrors_user": f.errors_user,
        "relayedpacketerrors_kernel": f.errors_kernel,
        "totalcallsduration2": "0.000000",
        "totalcallsduration_stddev": "0.000000",
        "relayedbytes": f.bytes_user + f.bytes_kernel,
        "relayedpackets_user": f.packets_user,
        "relayedpackets_kernel": f.packets_kernel,
        "relayedbytes_user": f.bytes_user,
        "relayedbytes_kernel": f.bytes_kernel,
        "zerowaystreams": f.zero_way_streams,
        "onewaystreams": f.one_way_streams,
        "avgcallduration": format!("{:.6}", f.avg_call_duration()),
        "totalcallsduration": format!("{:.6}", f.call_duration_total_s),
    });
    if let Value::Object(t) = &mut total {
        for (reason, key) in CLOSE_REASONS {
            t.insert((*key).into(), f.closed(reason).into());
        }
    }
    let mut proxy = Map::new();
    proxy.insert("proxy".into(), f.proxy.clone().into());
    let mut control = Map::new();
    for (cmd, short) in COMMANDS {
        let n = f.requests(cmd);
        let key = format!("{short}count");
        proxy.insert(key.clone(), n.into());
        control.insert(format!("total{key}"), n.into());
    }
    proxy.insert("errorcount".into(), f.request_errors.into());
    control.insert("totalerrorcount".into(), f.request_errors.into());
    let proxies = if f.requests.is_empty() && f.request_errors == 0 {
        Vec::new()
    } else {
        vec![Value::Object(proxy)]
    };
    control.insert("proxies".into(), proxies.into());
    let interfaces: Vec<Value> = f
        .ports
        .iter()
        .map(|p| {
            json!({"name": p.name, "address": p.address, "ports": {
                "min": p.min, "max": p.max, "used": p.used, "free": p.free(), "totals": p.total(),
                "used_pct": format!("{:.2}", p.used as f64 * 100.0 / p.total() as f64),
            }})
        })
        .collect();
    let stats = json!({
        "currentstatistics": {
            "sessionsown": f.sessions_own,
            "sessionsforeign": 0,
            "sessionstotal": f.sessions_own,
            "transcodedmedia": 0,
            "packetrate": 0,
            "byterate": 0,
            "errorrate": 0,
            "packetrate_user": 0,
            "byterate_user": 0,
            "errorrate_user": 0,
            "packetrate_kernel": 0,
            "byterate_kernel": 0,
            "errorrate_kernel": 0,
            "media_userspace": f.media_userspace,
            "media_kernel": f.media_kernel,
            "media_mixed": 0,
        },
        // Graphite interval figures and MOS: not measured here, reported as an idle
        // rtpengine reports them.
        "intervalstatistics": interval_zeros(),
        "mos": {"mos_total": 0.0, "mos2_total": 0.0, "mos_samples_total": 0,
                "mos_average": 0.0, "mos_stddev": 0.0},
        "transcoders": [],
        "totalstatistics": total,
        "controlstatistics": control,
        "interfaces": interfaces,
    });
    let mut m = Map::new();
    m.insert("result".into(), "ok".into());
    m.insert("statistics".into(), stats);
    m
}

fn interval_zeros() -> Value {
    let mut m = Map::new();
    m.insert("totalcallsduration".into(), "0.000000".into());
    m.insert("minmanagedsessions".into(), 0.into());
    m.insert("maxmanagedsessions".into(), 0.into());
    for what in ["offer", "answer", "delete"] {
        for agg in ["min", "max", "avg"] {
            m.insert(format!("{agg}{what}delay"), "0.000000".into());
            m.insert(format!("{agg}{what}requestrate"), 0.into());
        }
    }
    Value::Object(m)
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        o,
        "# HELP rtpengine_{name} {help}\n# TYPE rtpengine_{name} {kind}"
    );
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `rtpengine_*` families, Prometheus text format 0.0.4.
pub fn render_metrics(f: &Figures) -> String {
    let mut o = String::new();
    family(
        &mut o,
        "sessions",
        "gauge",
        "Sessions by type (own, foreign).",
    );
    let _ = writeln!(o, "rtpengine_sessions{{type=\"own\"}} {}", f.sessions_own);
    let _ = writeln!(o, "rtpengine_sessions{{type=\"foreign\"}} 0");
    family(
        &mut o,
        "sessions_total",
        "counter",
        "Total managed sessions.",
    );
    let _ = writeln!(o, "rtpengine_sessions_total {}", f.sessions_managed);
    family(
        &mut o,
        "closed_sessions_total",
        "counter",
        "Sessions ended, by reason.",
    );
    for (reason, _) in CLOSE_REASONS {
        let _ = writeln!(
            o,
            "rtpengine_closed_sessions_total{{reason=\"{reason}\"}} {}",
            f.closed(reason)
        );
    }
    family(
        &mut o,
        "uptime_seconds",
        "gauge",
        "Uptime of the relay daemon.",
    );
    let _ = writeln!(o, "rtpengine_uptime_seconds {}", f.uptime_s);
    family(
        &mut o,
        "mediastreams",
        "gauge",
        "Media streams by forwarding path.",
    );
    let _ = writeln!(
        o,
        "rtpengine_mediastreams{{type=\"userspace\"}} {}",
        f.media_userspace
    );
    let _ = writeln!(
        o,
        "rtpengine_mediastreams{{type=\"kernel\"}} {}",
        f.media_kernel
    );
    let _ = writeln!(o, "rtpengine_mediastreams{{type=\"mixed\"}} 0");
    for (name, help, user, kernel) in [
        (
            "packets_total",
            "Relayed packets (kernel: the XDP fast path).",
            f.packets_user,
            f.packets_kernel,
        ),
        (
            "packet_errors_total",
            "Relayed packet errors.",
            f.errors_user,
            f.errors_kernel,
        ),
        (
            "bytes_total",
            "Relayed bytes (kernel: the XDP fast path).",
            f.bytes_user,
            f.bytes_kernel,
        ),
    ] {
        family(&mut o, name, "counter", help);
        let _ = writeln!(o, "rtpengine_{name}{{type=\"userspace\"}} {user}");
        let _ = writeln!(o, "rtpengine_{name}{{type=\"kernel\"}} {kernel}");
    }
    family(
        &mut o,
        "zero_packet_streams_total",
        "counter",
        "Streams that relayed no packet.",
    );
    let _ = writeln!(
        o,
        "rtpengine_zero_packet_streams_total {}",
        f.zero_way_streams
    );
    family(
        &mut o,
        "one_way_sessions_total",
        "counter",
        "One-way streams.",
    );
    let _ = writeln!(o, "rtpengine_one_way_sessions_total {}", f.one_way_streams);
    family(
        &mut o,
        "call_duration_avg",
        "gauge",
        "Average call duration, seconds.",
    );
    let _ = writeln!(
        o,
        "rtpengine_call_duration_avg {:.6}",
        f.avg_call_duration()
    );
    family(
        &mut o,
        "call_duration_total",
        "counter",
        "Total calls duration, seconds.",
    );
    let _ = writeln!(
        o,
        "rtpengine_call_duration_total {:.6}",
        f.call_duration_total_s
    );
    family(
        &mut o,
        "transcoded_media",
        "gauge",
        "Transcoded media (this relay does not transcode).",
    );
    let _ = writeln!(o, "rtpengine_transcoded_media 0");
    family(
        &mut o,
        "requests_total",
        "counter",
        "NG requests by proxy and command.",
    );
    let proxy = escape(&f.proxy);
    for (cmd, _) in COMMANDS {
        let _ = writeln!(
            o,
            "rtpengine_requests_total{{proxy=\"{proxy}\",request=\"{cmd}\"}} {}",
            f.requests(cmd)
        );
    }
    family(
        &mut o,
        "errors_total",
        "counter",
        "NG requests answered with an error, by proxy.",
    );
    let _ = writeln!(
        o,
        "rtpengine_errors_total{{proxy=\"{proxy}\"}} {}",
        f.request_errors
    );
    for (name, help, get) in [
        (
            "ports_used",
            "Relay ports in use, by interface.",
            PortPool::used as fn(&PortPool) -> u64,
        ),
        (
            "ports_free",
            "Relay ports free, by interface.",
            PortPool::free,
        ),
        ("ports", "Relay ports, by interface.", PortPool::total),
    ] {
        family(&mut o, name, "gauge", help);
        for p in &f.ports {
            let _ = writeln!(
                o,
                "rtpengine_{name}{{name=\"{}\",address=\"{}\"}} {}",
                escape(&p.name),
                escape(&p.address),
                get(p)
            );
        }
    }
    o
}

impl PortPool {
    fn used(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        Figures {
            uptime_s: 18,
            sessions_own: 2,
            sessions_managed: 5,
            closed: vec![("terminated", 2), ("timeout", 1)],
            packets_user: 3,
            bytes_user: 500,
            packets_kernel: 1000,
            bytes_kernel: 172_000,
            media_kernel: 4,
            call_duration_total_s: 30.0,
            calls_ended: 3,
            proxy: "127.0.0.1".into(),
            requests: vec![
                ("offer".into(), 5),
                ("answer".into(), 4),
                ("statistics".into(), 1),
            ],
            request_errors: 1,
            ports: vec![PortPool {
                name: "pub".into(),
                address: "10.99.0.1".into(),
                min: 30000,
                max: 30099,
                used: 8,
            }],
            ..Figures::default()
        }
    }

    #[test]
    fn statistics_reply_has_rtpengine_shape() {
        let r = Value::Object(statistics_reply(&figures()));
        let s = &r["statistics"];
        assert_eq!(r["result"], "ok");
        assert_eq!(s["currentstatistics"]["sessionsown"], 2);
        assert_eq!(s["currentstatistics"]["sessionstotal"], 2);
        let t = &s["totalstatistics"];
        assert_eq!(t["uptime"], "18");
        assert_eq!(t["managedsessions"], 5);
        assert_eq!(t["regularterminatedsessions"], 2);
        assert_eq!(t["timeoutsessions"], 1);
        assert_eq!(t["relayedpackets"], 1003);
        assert_eq!(t["avgcallduration"], "10.000000");
        let c = &s["controlstatistics"];
        assert_eq!(c["totaloffercount"], 5);
        assert_eq!(c["totalstatscount"], 1);
        assert_eq!(c["totalerrorcount"], 1);
        assert_eq!(c["proxies"][0]["proxy"], "127.0.0.1");
        assert_eq!(c["proxies"][0]["answercount"], 4);
        assert_eq!(c["proxies"][0]["blkmediacount"], 0);
        assert_eq!(s["interfaces"][0]["ports"]["free"], 92);
    }

    #[test]
    fn metrics_use_rtpengine_names() {
        let t = render_metrics(&figures());
        for line in [
            "rtpengine_sessions{type=\"own\"} 2",
            "rtpengine_sessions_total 5",
            "rtpengine_closed_sessions_total{reason=\"terminated\"} 2",
            "rtpengine_closed_sessions_total{reason=\"rejected\"} 0",
            "rtpengine_packets_total{type=\"kernel\"} 1000",
            "rtpengine_packets_total{type=\"userspace\"} 3",
            "rtpengine_bytes_total{type=\"kernel\"} 172000",
            "rtpengine_ports_used{name=\"pub\",address=\"10.99.0.1\"} 8",
            "rtpengine_ports_free{name=\"pub\",address=\"10.99.0.1\"} 92",
            "rtpengine_requests_total{proxy=\"127.0.0.1\",request=\"offer\"} 5",
            "rtpengine_uptime_seconds 18",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(t.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
        }
    }

    /// Every rtpengine_* family the shipped dashboard queries is one we export.
    #[test]
    fn dashboard_queries_exported_families() {
        let dash = include_str!("../../dist/grafana/rtpengine-compatible.json");
        let t = render_metrics(&figures());
        let mut rest = dash;
        let mut n = 0;
        while let Some(i) = rest.find("rtpengine_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            // "rtpengine_*" in prose names no family.
            if name == "rtpengine_" {
                continue;
            }
            assert!(
                t.contains(&format!("# TYPE {name} ")),
                "dashboard uses {name}"
            );
            n += 1;
        }
        assert!(n > 10);
    }
}
