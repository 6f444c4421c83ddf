//! `relay-ctl top`: a live view of the relay over NG alone (`list`, `query` per call,
//! `statistics`), so it works wherever `relay-ctl show` does. Rates are the difference of two
//! samples; `--once` takes two samples one interval apart and prints the frame as plain text.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use ratatui::{
    Frame, Terminal,
    backend::TestBackend,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    widgets::{Block, Paragraph, Row, Table},
};
use serde_json::{Map, Value};

use crate::{
    cli::{TopArgs, ng_client, request, s},
    client::NgClient,
};

/// One stream's counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSample {
    pub call_id: String,
    pub tag: String,
    pub local: String,
    pub peer: String,
    /// Packets the XDP program forwarded for this stream.
    pub fast: u64,
    /// Packets in all (fast path plus daemon).
    pub total: u64,
}

/// Everything one refresh reads.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub calls: usize,
    pub streams: Vec<StreamSample>,
    /// Fast-path reason -> packets.
    pub reasons: BTreeMap<String, u64>,
    /// Media the daemon forwarded itself.
    pub userspace: u64,
}

/// A stream's rates between two samples (packets per second).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRate {
    pub s: StreamSample,
    pub fast_pps: f64,
    pub daemon_pps: f64,
}

/// What one screen shows.
#[derive(Clone, Debug)]
pub struct View {
    pub calls: usize,
    pub streams: Vec<StreamRate>,
    /// (reason, packets, packets per second); drops first.
    pub reasons: Vec<(String, u64, f64)>,
    pub userspace_pps: f64,
    pub error: Option<String>,
}

pub fn sample(c: &NgClient) -> Result<Sample> {
    let at = Instant::now();
    let list = c.call(&request("list")).context("NG list")?;
    let ids: Vec<String> = list
        .get("calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut streams = Vec::new();
    for id in &ids {
        let mut r = request("query");
        r.insert("call-id".into(), id.as_str().into());
        // A call may end between list and query.
        if let Ok(q) = c.call(&r) {
            streams.extend(streams_of(id, &q));
        }
    }
    let st = c.call(&request("statistics")).context("NG statistics")?;
    let stats = st.get("statistics");
    let reasons = stats
        .and_then(|s| s.get("fastpath"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v["packets"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let userspace = stats
        .and_then(|s| s.get("userspace forwarded packets"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(Sample {
        at,
        calls: ids.len(),
        streams,
        reasons,
        userspace,
    })
}

/// The streams of one `query` reply.
pub fn streams_of(call_id: &str, q: &Map<String, Value>) -> Vec<StreamSample> {
    let mut out = Vec::new();
    let tags = q.get("tags").and_then(Value::as_object);
    for (tag, leg) in tags.into_iter().flatten() {
        let medias = leg.get("medias").and_then(Value::as_array);
        for st in medias
            .into_iter()
            .flatten()
            .flat_map(|m| m.get("streams").and_then(Value::as_array))
            .flatten()
        {
            out.push(StreamSample {
                call_id: call_id.to_owned(),
                tag: tag.clone(),
                local: s(st.get("local endpoint").or(st.get("local port"))),
                peer: s(st.get("endpoint")),
                fast: st["fast path"]["packets"].as_u64().unwrap_or(0),
                total: st["stats"]["packets"].as_u64().unwrap_or(0),
            });
        }
    }
    out
}

/// Rates between `prev` and `cur`; with no previous sample (or a stream new in `cur`) 0.
pub fn view(prev: Option<&Sample>, cur: &Sample) -> View {
    let secs = prev
        .map(|p| cur.at.duration_since(p.at).as_secs_f64())
        .filter(|s| *s > 0.0);
    let rate = |now: u64, then: Option<u64>| match (secs, then) {
        (Some(dt), Some(t)) => now.saturating_sub(t) as f64 / dt,
        _ => 0.0,
    };
    let key = |s: &StreamSample| (s.call_id.clone(), s.tag.clone(), s.local.clone());
    let before: BTreeMap<_, _> = prev
        .map(|p| p.streams.iter().map(|s| (key(s), s)).collect())
        .unwrap_or_default();
    let streams = cur
        .streams
        .iter()
        .map(|s| {
            let b = before.get(&key(s));
            StreamRate {
                s: s.clone(),
                fast_pps: rate(s.fast, b.map(|b| b.fast)),
                daemon_pps: rate(
                    s.total.saturating_sub(s.fast),
                    b.map(|b| b.total.saturating_sub(b.fast)),
                ),
            }
        })
        .collect();
    // Every drop reason, even at 0, then whatever else fired.
    let mut reasons: Vec<(String, u64, f64)> = cur
        .reasons
        .iter()
        .filter(|(r, n)| r.starts_with("drop_") || **n > 0)
        .map(|(r, n)| {
            let then = prev.map(|p| p.reasons.get(r).copied().unwrap_or(0));
            (r.clone(), *n, rate(*n, then))
        })
        .collect();
    reasons.sort_by_key(|(r, ..)| (!r.starts_with("drop_"), r.clone()));
    View {
        calls: cur.calls,
        streams,
        reasons,
        userspace_pps: rate(cur.userspace, prev.map(|p| p.userspace)),
        error: None,
    }
}

fn pps(v: f64) -> String {
    format!("{v:.1}")
}

/// Lines of screen each part needs.
fn heights(v: &View) -> (u16, u16) {
    (
        (v.streams.len() as u16).saturating_add(3),
        (v.reasons.len() as u16).saturating_add(3),
    )
}

pub fn draw(f: &mut Frame, v: &View) {
    let (streams_h, reasons_h) = heights(v);
    let [head, streams, reasons] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(streams_h.min(f.area().height.saturating_sub(reasons_h + 2))),
        Constraint::Length(reasons_h),
    ])
    .areas(f.area());
    let mut title = format!(
        "relay-ctl top  calls {}  streams {}  daemon-forwarded {} pkt/s",
        v.calls,
        v.streams.len(),
        pps(v.userspace_pps)
    );
    if let Some(e) = &v.error {
        title.push_str(&format!("  error: {e}"));
    }
    f.render_widget(
        Paragraph::new(format!("{title}\nq: quit"))
            .style(Style::new().add_modifier(Modifier::BOLD)),
        head,
    );
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let rows = v.streams.iter().map(|r| {
        Row::new(vec![
            r.s.call_id.clone(),
            r.s.tag.clone(),
            r.s.local.clone(),
            r.s.peer.clone(),
            pps(r.fast_pps),
            pps(r.daemon_pps),
            r.s.total.to_string(),
        ])
    });
    let width = |f: &dyn Fn(&StreamRate) -> usize, min: usize| {
        Constraint::Length(v.streams.iter().map(f).max().unwrap_or(0).max(min) as u16)
    };
    let table = Table::new(
        rows,
        [
            width(&|r| r.s.call_id.len(), 7),
            width(&|r| r.s.tag.len(), 3),
            width(&|r| r.s.local.len(), 5),
            width(&|r| r.s.peer.len(), 4),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    )
    .header(
        Row::new(vec![
            "CALL", "TAG", "LOCAL", "PEER", "FAST/s", "DAEMON/s", "PACKETS",
        ])
        .style(bold),
    )
    .block(Block::bordered().title(" streams "));
    f.render_widget(table, streams);
    let rows = v
        .reasons
        .iter()
        .map(|(r, n, rate)| Row::new(vec![r.clone(), n.to_string(), pps(*rate)]));
    let table = Table::new(
        rows,
        [
            Constraint::Length(22),
            Constraint::Length(14),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(vec!["FAST-PATH REASON", "PACKETS", "PER SEC"]).style(bold))
    .block(Block::bordered().title(" drops and other fast-path verdicts "));
    f.render_widget(table, reasons);
}

/// The frame as plain text, `width` columns wide and as tall as it needs.
pub fn text(v: &View, width: u16) -> String {
    let (a, b) = heights(v);
    let height = 2 + a + b;
    let mut t = Terminal::new(TestBackend::new(width, height)).expect("test backend");
    t.draw(|f| draw(f, v)).expect("drawing on a test backend");
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn run(a: &TopArgs) -> Result<()> {
    if !(a.interval.is_finite() && a.interval >= 0.1) {
        anyhow::bail!("--interval must be at least 0.1 seconds");
    }
    let interval = Duration::from_secs_f64(a.interval);
    let c = ng_client(a.ng, a.reply_timeout)?;
    if a.once {
        let first = sample(&c)?;
        std::thread::sleep(interval);
        let v = view(Some(&first), &sample(&c)?);
        print!("{}", text(&v, 132));
        return Ok(());
    }
    // Fail before taking over the terminal when the daemon does not answer.
    let mut prev = sample(&c)?;
    let mut v = view(None, &prev);
    let mut term = ratatui::init();
    let result = (|| -> Result<()> {
        let mut next = Instant::now() + interval;
        loop {
            term.draw(|f| draw(f, &v))?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                    && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                        || (k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL)))
                {
                    return Ok(());
                }
                continue;
            }
            next = Instant::now() + interval;
            match sample(&c) {
                Ok(cur) => {
                    v = view(Some(&prev), &cur);
                    prev = cur;
                }
                Err(e) => v.error = Some(format!("{e:#}")),
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_at(at: Instant, fast: u64, total: u64, drops: u64) -> Sample {
        Sample {
            at,
            calls: 1,
            streams: vec![StreamSample {
                call_id: "c1".into(),
                tag: "a".into(),
                local: "10.0.0.1:30000".into(),
                peer: "10.0.0.2:4000".into(),
                fast,
                total,
            }],
            reasons: BTreeMap::from([
                ("drop_source_mismatch".into(), drops),
                ("tx_forward".into(), fast),
                ("pass_not_ip".into(), 0),
            ]),
            userspace: total - fast,
        }
    }

    #[test]
    fn rates_are_differences_over_time() {
        let t0 = Instant::now();
        let a = sample_at(t0, 100, 110, 0);
        let b = sample_at(t0 + Duration::from_secs(2), 300, 330, 4);
        let v = view(Some(&a), &b);
        assert_eq!(v.streams[0].fast_pps, 100.0);
        assert_eq!(v.streams[0].daemon_pps, (30.0 - 10.0) / 2.0);
        assert_eq!(
            v.reasons,
            vec![
                ("drop_source_mismatch".into(), 4, 2.0),
                ("tx_forward".into(), 300, 100.0)
            ],
            "drops first, silent non-drop reasons left out"
        );
        let first = view(None, &b);
        assert_eq!(first.streams[0].fast_pps, 0.0);
    }

    #[test]
    fn plain_text_frame_has_the_tables() {
        let t0 = Instant::now();
        let v = view(
            Some(&sample_at(t0, 0, 0, 0)),
            &sample_at(t0 + Duration::from_secs(1), 50, 50, 0),
        );
        let t = text(&v, 132);
        assert!(t.starts_with("relay-ctl top  calls 1  streams 1"), "{t}");
        let row = t
            .lines()
            .find(|l| l.contains("c1"))
            .unwrap_or_else(|| panic!("{t}"));
        for cell in ["10.0.0.1:30000", "10.0.0.2:4000", "50.0", "0.0"] {
            assert!(row.contains(cell), "{cell} missing in {row:?}");
        }
        assert!(t.contains("drop_source_mismatch"), "{t}");
        assert!(t.contains("FAST/s") && t.contains("DAEMON/s"), "{t}");
    }

    #[test]
    fn query_replies_become_stream_samples() {
        let q: Map<String, Value> = serde_json::from_str(
            r#"{"tags":{"a1":{"medias":[{"streams":[{"local endpoint":{"address":"10.0.0.1","port":30000},"endpoint":{"address":"10.1.1.2","port":4000},"stats":{"packets":12},"fast path":{"packets":10}}]}]}}}"#,
        )
        .unwrap();
        let s = streams_of("c", &q);
        assert_eq!(
            s,
            vec![StreamSample {
                call_id: "c".into(),
                tag: "a1".into(),
                local: "10.0.0.1:30000".into(),
                peer: "10.1.1.2:4000".into(),
                fast: 10,
                total: 12
            }]
        );
    }
}
