//! Prometheus text exposition (format 0.0.4). Values are snapshots read at scrape time from the
//! daemon and the fast path's maps, so a client library's registry would add nothing; the
//! renderer is a pure function and the server answers `GET /metrics` only.

use std::fmt::Write as _;

use relay_common::stats::StatEntry;

/// One scrape's worth of values.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sessions: u64,
    pub streams: u64,
    /// (reason, verdict, totals) from the per-CPU verdict counters.
    pub fast_path: Vec<(&'static str, &'static str, StatEntry)>,
    /// (device, datapath, up) per attached device.
    pub datapaths: Vec<(String, &'static str, bool)>,
    /// (command, result, count) of NG requests.
    pub ng_requests: Vec<(String, String, u64)>,
    /// (outcome, count) of STUN Binding requests seen by the ICE-lite agents.
    pub ice_checks: Vec<(String, u64)>,
    /// Nominated pairs with no check for 30 s: informational, forwarding goes on.
    pub ice_consent_lapsed: u64,
    /// Media the daemon forwarded itself while a flow was being learned.
    pub userspace_forwarded: u64,
    /// Journal writes that failed (changes not durable until the next write succeeds).
    pub state_write_errors: u64,
    /// Further families, already in exposition format (shared state: [`crate::state`]).
    pub extra: String,
    /// The SRTP gateway's counters.
    pub crypto: crate::gateway::GatewayCounters,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# HELP relay_sessions Calls the relay holds.\n# TYPE relay_sessions gauge\nrelay_sessions {}",
        s.sessions
    );
    let _ = writeln!(
        o,
        "# HELP relay_streams Media streams with relay ports.\n# TYPE relay_streams gauge\nrelay_streams {}",
        s.streams
    );
    let _ = writeln!(
        o,
        "# HELP relay_datapath The fast path's hook per device (xdp, xdp-generic, tc): 1 while the device is up, 0 once it disappeared.\n# TYPE relay_datapath gauge"
    );
    for (dev, hook, up) in &s.datapaths {
        let _ = writeln!(
            o,
            "relay_datapath{{device=\"{}\",datapath=\"{hook}\"}} {}",
            escape(dev),
            u8::from(*up)
        );
    }
    let _ = writeln!(
        o,
        "# HELP relay_fastpath_packets_total Frames seen by the fast path (XDP and TC), by reason and verdict.\n# TYPE relay_fastpath_packets_total counter"
    );
    for (reason, verdict, e) in &s.fast_path {
        let _ = writeln!(
            o,
            "relay_fastpath_packets_total{{reason=\"{reason}\",verdict=\"{verdict}\"}} {}",
            e.packets
        );
    }
    let _ = writeln!(
        o,
        "# HELP relay_fastpath_bytes_total Bytes seen by the fast path (XDP and TC), by reason and verdict.\n# TYPE relay_fastpath_bytes_total counter"
    );
    for (reason, verdict, e) in &s.fast_path {
        let _ = writeln!(
            o,
            "relay_fastpath_bytes_total{{reason=\"{reason}\",verdict=\"{verdict}\"}} {}",
            e.bytes
        );
    }
    let _ = writeln!(
        o,
        "# HELP relay_ng_requests_total NG control requests, by command and result.\n# TYPE relay_ng_requests_total counter"
    );
    for (cmd, result, n) in &s.ng_requests {
        let _ = writeln!(
            o,
            "relay_ng_requests_total{{command=\"{}\",result=\"{}\"}} {n}",
            escape(cmd),
            escape(result)
        );
    }
    let _ = writeln!(
        o,
        "# HELP relay_ice_checks_total STUN Binding requests on ICE-terminated legs, by outcome.\n# TYPE relay_ice_checks_total counter"
    );
    for (outcome, n) in &s.ice_checks {
        let _ = writeln!(
            o,
            "relay_ice_checks_total{{outcome=\"{}\"}} {n}",
            escape(outcome)
        );
    }
    let _ = writeln!(
        o,
        "# HELP relay_ice_consent_lapsed_total Nominated ICE pairs that went 30 s without a check (informational: a lite agent keeps forwarding; media liveness is the media timeout).\n# TYPE relay_ice_consent_lapsed_total counter\nrelay_ice_consent_lapsed_total {}",
        s.ice_consent_lapsed
    );
    let _ = writeln!(
        o,
        "# HELP relay_userspace_forwarded_packets_total Media forwarded by the daemon before a fast-path entry existed.\n# TYPE relay_userspace_forwarded_packets_total counter\nrelay_userspace_forwarded_packets_total {}",
        s.userspace_forwarded
    );
    let _ = writeln!(
        o,
        "# HELP relay_state_write_errors_total Journal writes that failed: those changes are not durable until a later write succeeds.\n# TYPE relay_state_write_errors_total counter\nrelay_state_write_errors_total {}",
        s.state_write_errors
    );
    o.push_str(&s.extra);
    let c = &s.crypto;
    let _ = writeln!(
        o,
        "# HELP relay_dtls_handshakes_total DTLS-SRTP handshakes the relay terminated, by outcome.\n# TYPE relay_dtls_handshakes_total counter\nrelay_dtls_handshakes_total{{outcome=\"ok\"}} {}\nrelay_dtls_handshakes_total{{outcome=\"failed\"}} {}\nrelay_dtls_handshakes_total{{outcome=\"fingerprint_mismatch\"}} {}",
        c.dtls_handshakes_ok, c.dtls_handshakes_failed, c.dtls_fingerprint_mismatch
    );
    let _ = writeln!(
        o,
        "# HELP relay_srtp_dropped_total SRTP/SRTCP packets the daemon refused, by reason.\n# TYPE relay_srtp_dropped_total counter\nrelay_srtp_dropped_total{{reason=\"auth\"}} {}\nrelay_srtp_dropped_total{{reason=\"replay\"}} {}\nrelay_srtp_dropped_total{{reason=\"other\"}} {}",
        c.srtp_auth_failures, c.srtp_replays, c.srtp_dropped_other
    );
    let _ = writeln!(
        o,
        "# HELP relay_crypto_forwarded_packets_total Media the daemon forwarded with SRTP conversion (never in the fast path).\n# TYPE relay_crypto_forwarded_packets_total counter\nrelay_crypto_forwarded_packets_total {}",
        c.crypto_forwarded
    );
    o
}

/// The HTTP response for a raw request head: 200 with the body for `GET /metrics`, else 404/405.
pub fn http_response(request_head: &[u8], body: impl FnOnce() -> String) -> Vec<u8> {
    let line = request_head
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body()),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_labels() {
        let s = Snapshot {
            sessions: 2,
            streams: 4,
            fast_path: vec![(
                "tx_forward",
                "tx",
                StatEntry {
                    packets: 10,
                    bytes: 2140,
                },
            )],
            datapaths: vec![("veth0".into(), "tc", true), ("eth1".into(), "xdp", false)],
            ng_requests: vec![("offer".into(), "ok".into(), 3)],
            ice_checks: vec![("success".into(), 5), ("unauthorized".into(), 1)],
            ice_consent_lapsed: 2,
            userspace_forwarded: 7,
            state_write_errors: 1,
            extra: "# TYPE relay_calls_foreign gauge\nrelay_calls_foreign 1\n".into(),
            crypto: crate::gateway::GatewayCounters {
                srtp_replays: 2,
                ..Default::default()
            },
        };
        let t = render(&s);
        for line in [
            "relay_sessions 2",
            "relay_streams 4",
            "relay_fastpath_packets_total{reason=\"tx_forward\",verdict=\"tx\"} 10",
            "relay_fastpath_bytes_total{reason=\"tx_forward\",verdict=\"tx\"} 2140",
            "relay_ng_requests_total{command=\"offer\",result=\"ok\"} 3",
            "relay_ice_checks_total{outcome=\"unauthorized\"} 1",
            "relay_ice_consent_lapsed_total 2",
            "relay_userspace_forwarded_packets_total 7",
            "relay_state_write_errors_total 1",
            "relay_datapath{device=\"veth0\",datapath=\"tc\"} 1",
            "relay_datapath{device=\"eth1\",datapath=\"xdp\"} 0",
            "relay_calls_foreign 1",
            "relay_srtp_dropped_total{reason=\"replay\"} 2",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        // Every sample line belongs to a family announced by a TYPE line.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(t.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
        }
    }

    #[test]
    fn http_answers_metrics_only() {
        let r = String::from_utf8(http_response(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            || "a 1\n".into(),
        ))
        .unwrap();
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n")
                && r.ends_with("\r\n\r\na 1\n")
                && r.contains("Content-Length: 4\r\n")
        );
        let r = String::from_utf8(http_response(b"GET / HTTP/1.1\r\n", String::new)).unwrap();
        assert!(r.starts_with("HTTP/1.1 404"));
        let r =
            String::from_utf8(http_response(b"POST /metrics HTTP/1.1\r\n", String::new)).unwrap();
        assert!(r.starts_with("HTTP/1.1 405"));
        let r = String::from_utf8(http_response(b"\xff\xfe", String::new)).unwrap();
        assert!(r.starts_with("HTTP/1.1 405"));
    }

    /// A metric a PromQL expression selects, with its label matchers (label, op, value).
    #[derive(Debug)]
    struct Selector {
        metric: String,
        matchers: Vec<(String, String, String)>,
    }

    /// The selectors of a PromQL expression and the labels it groups by. A small scanner, not
    /// a parser: strings, ranges and function calls are skipped, `by (...)`-style lists read.
    fn promql(expr: &str) -> (Vec<Selector>, Vec<String>) {
        const GROUPING: &[&str] = &[
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ];
        // Keywords, and aggregations (which may put `by (...)` before their parenthesis).
        const KEYWORDS: &[&str] = &[
            "bool",
            "offset",
            "and",
            "or",
            "unless",
            "sum",
            "min",
            "max",
            "avg",
            "count",
            "group",
            "stddev",
            "stdvar",
            "topk",
            "bottomk",
            "quantile",
            "count_values",
            "limitk",
        ];
        let c: Vec<char> = expr.chars().collect();
        let (mut sel, mut grouping) = (Vec::<Selector>::new(), Vec::new());
        let ident = |i: &mut usize| {
            let start = *i;
            while *i < c.len() && (c[*i].is_ascii_alphanumeric() || c[*i] == '_' || c[*i] == ':') {
                *i += 1;
            }
            c[start..*i].iter().collect::<String>()
        };
        let skip_ws = |i: &mut usize| {
            while *i < c.len() && c[*i].is_whitespace() {
                *i += 1;
            }
        };
        let string = |i: &mut usize| {
            let q = c[*i];
            *i += 1;
            let start = *i;
            while *i < c.len() && c[*i] != q {
                *i += if c[*i] == '\\' { 2 } else { 1 };
            }
            *i += 1;
            c[start..*i - 1].iter().collect::<String>()
        };
        let mut i = 0;
        let mut last_was_metric = false;
        while i < c.len() {
            let ch = c[i];
            if ch == '"' || ch == '\'' {
                string(&mut i);
                last_was_metric = false;
            } else if ch == '[' {
                while i < c.len() && c[i] != ']' {
                    i += 1;
                }
                i += 1;
            } else if ch == '{' {
                i += 1;
                let mut matchers = Vec::new();
                loop {
                    skip_ws(&mut i);
                    if i >= c.len() || c[i] == '}' {
                        i += 1;
                        break;
                    }
                    if c[i] == ',' {
                        i += 1;
                        continue;
                    }
                    let label = ident(&mut i);
                    skip_ws(&mut i);
                    let op: String = c[i..].iter().take_while(|x| "=!~".contains(**x)).collect();
                    i += op.len();
                    skip_ws(&mut i);
                    let value = string(&mut i);
                    assert!(!label.is_empty(), "matcher without a label in {expr}");
                    matchers.push((label, op, value));
                }
                if last_was_metric && let Some(s) = sel.last_mut() {
                    s.matchers = matchers;
                } else {
                    sel.push(Selector {
                        metric: String::new(),
                        matchers,
                    });
                }
                last_was_metric = false;
            } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
                let word = ident(&mut i);
                let mut j = i;
                skip_ws(&mut j);
                let call = j < c.len() && c[j] == '(';
                last_was_metric = false;
                if GROUPING.contains(&word.as_str()) {
                    if call {
                        i = j + 1;
                        while i < c.len() && c[i] != ')' {
                            skip_ws(&mut i);
                            let l = ident(&mut i);
                            if !l.is_empty() {
                                grouping.push(l);
                            } else {
                                i += 1;
                            }
                        }
                        i += 1;
                    }
                } else if !call && !KEYWORDS.contains(&word.as_str()) {
                    sel.push(Selector {
                        metric: word,
                        matchers: Vec::new(),
                    });
                    last_was_metric = true;
                }
            } else {
                if ch.is_ascii_digit() || ch == '$' {
                    // Numbers and $variables are no names.
                    i += 1;
                    while i < c.len()
                        && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == '.')
                    {
                        i += 1;
                    }
                    continue;
                }
                if !ch.is_whitespace() {
                    last_was_metric = false;
                }
                i += 1;
            }
        }
        (sel, grouping)
    }

    fn all_strings<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        serde_json::Value::String(s) if k == key => out.push(s),
                        _ => all_strings(v, key, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| all_strings(v, key, out)),
            _ => {}
        }
    }

    #[test]
    fn promql_scanner_finds_selectors_and_grouping() {
        let (s, g) = promql(
            r#"sum by (reason) (rate(relay_x_total{instance=~"$i",verdict="drop"}[$__rate_interval])) / on(instance) relay_y * 8"#,
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].metric, "relay_x_total");
        assert_eq!(
            s[0].matchers[1],
            ("verdict".into(), "=".into(), "drop".into())
        );
        assert_eq!(s[1].metric, "relay_y");
        assert_eq!(g, ["reason", "instance"]);
    }

    /// Every metric the Grafana dashboard queries is one the daemon exports, with labels it
    /// has and, for fast-path reasons and verdicts, values the XDP program counts.
    #[test]
    fn grafana_dashboard_queries_only_exported_metrics() {
        use relay_common::stats::Reason;
        use std::collections::{BTreeMap, BTreeSet};
        let snapshot = Snapshot {
            sessions: 1,
            streams: 2,
            datapaths: vec![("veth0".into(), "tc", true)],
            fast_path: Reason::ALL
                .iter()
                .map(|r| (r.name(), r.verdict().name(), StatEntry::default()))
                .collect(),
            ng_requests: vec![
                ("offer".into(), "ok".into(), 1),
                ("offer".into(), "error".into(), 1),
            ],
            ice_checks: vec![("answered".into(), 1)],
            ice_consent_lapsed: 0,
            userspace_forwarded: 0,
            state_write_errors: 0,
            extra: String::new(),
            crypto: Default::default(),
        };
        // name -> label -> values, as rendered.
        let mut exported: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for line in render(&snapshot).lines().filter(|l| !l.starts_with('#')) {
            let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap());
            let labels = exported.entry(name.to_owned()).or_default();
            if let Some(inner) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) {
                for kv in inner.0.split(',') {
                    let (k, v) = kv.split_once('=').unwrap();
                    labels
                        .entry(k.into())
                        .or_default()
                        .insert(v.trim_matches('"').into());
                }
            }
        }
        // Labels Prometheus adds to every scraped series.
        let target_labels = ["instance", "job"];

        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../dist/grafana/xdp-relay.json")).unwrap();
        let mut exprs = Vec::new();
        all_strings(&dashboard, "expr", &mut exprs);
        assert!(exprs.len() >= 10, "dashboard has {} queries", exprs.len());
        let mut used = BTreeSet::new();
        for expr in &exprs {
            let (selectors, grouping) = promql(expr);
            assert!(!selectors.is_empty(), "no metric in {expr}");
            let mut labels_here: BTreeSet<&str> = target_labels.into();
            for s in &selectors {
                let Some(labels) = exported.get(&s.metric) else {
                    panic!("{expr}: the daemon exports no metric {:?}", s.metric);
                };
                used.insert(s.metric.clone());
                labels_here.extend(labels.keys().map(String::as_str));
                for (label, op, value) in &s.matchers {
                    if target_labels.contains(&label.as_str()) {
                        continue;
                    }
                    let Some(values) = labels.get(label) else {
                        panic!("{expr}: {} has no label {label}", s.metric);
                    };
                    if matches!(label.as_str(), "reason" | "verdict") {
                        let wanted: Vec<&str> = if op.contains('~') {
                            value.split('|').collect()
                        } else {
                            vec![value]
                        };
                        for w in wanted {
                            assert!(values.contains(w), "{expr}: {label}={w:?} never exported");
                        }
                    }
                }
            }
            for g in &grouping {
                assert!(
                    labels_here.contains(g.as_str()),
                    "{expr}: grouping by unknown label {g}"
                );
            }
        }
        // Template variables query metrics too: label_values(METRIC, LABEL).
        let mut queries = Vec::new();
        all_strings(&dashboard["templating"], "query", &mut queries);
        for q in queries
            .iter()
            .filter_map(|q| q.strip_prefix("label_values("))
        {
            let (metric, label) = q.trim_end_matches(')').split_once(',').unwrap();
            assert!(
                exported.contains_key(metric.trim()),
                "template: no metric {metric}"
            );
            assert!(
                target_labels.contains(&label.trim()),
                "template label {label}"
            );
        }
        // What the dashboard is for: calls, streams, fast path vs daemon, drops, NG, ICE.
        for m in [
            "relay_sessions",
            "relay_streams",
            "relay_fastpath_packets_total",
            "relay_userspace_forwarded_packets_total",
            "relay_ng_requests_total",
            "relay_ice_checks_total",
        ] {
            assert!(used.contains(m), "the dashboard does not show {m}");
        }
    }
}
