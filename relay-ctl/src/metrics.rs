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
        "# HELP relay_fastpath_packets_total Frames seen by the XDP program, by reason and verdict.\n# TYPE relay_fastpath_packets_total counter"
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
        "# HELP relay_fastpath_bytes_total Bytes seen by the XDP program, by reason and verdict.\n# TYPE relay_fastpath_bytes_total counter"
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
            ng_requests: vec![("offer".into(), "ok".into(), 3)],
            ice_checks: vec![("success".into(), 5), ("unauthorized".into(), 1)],
            ice_consent_lapsed: 2,
            userspace_forwarded: 7,
            state_write_errors: 1,
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
}
