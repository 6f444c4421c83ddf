//! `relay-ctl stats`: the fast path's verdict counters from the pinned map, each device's hook,
//! and the daemon's sessions when it answers.

use anyhow::{Context as _, Result};
use relay_ctl::{
    cli::{self, Common},
    pins, xdp,
};

pub fn print(c: &Common, pin_dir: &std::path::Path) -> Result<()> {
    let map = xdp::open_pinned_stats(pin_dir).with_context(|| {
        format!(
            "opening the stats map pinned under {} (is the relay running?)",
            pin_dir.display()
        )
    })?;
    let totals = xdp::read_totals(&map)?;
    // Absent under pins of a daemon from before the events map: shown as none.
    let events = xdp::open_pinned_events(pin_dir)
        .and_then(|m| xdp::read_events(&m))
        .unwrap_or_default();
    // The daemon may be down while the fast path keeps forwarding; its part is optional.
    let daemon = cli::statistics(c).ok();
    // Which hook each device runs: the daemon says (with driver and state); without it, the
    // pinned links' names do.
    let datapaths = daemon
        .as_ref()
        .and_then(|d| d.get("statistics"))
        .and_then(|s| s.get("datapath"))
        .cloned()
        .unwrap_or_else(|| {
            serde_json::Value::Array(
                pins::pinned_links(pin_dir)
                    .into_iter()
                    .map(|(dev, hook)| serde_json::json!({"device": dev, "datapath": hook, "state": "pinned"}))
                    .collect(),
            )
        });
    if c.json {
        let rows: Vec<_> = totals
            .0
            .iter()
            .map(|(r, e)| {
                serde_json::json!({"reason": r.name(), "verdict": r.verdict().name(), "packets": e.packets, "bytes": e.bytes})
            })
            .collect();
        let events: serde_json::Map<String, serde_json::Value> = events
            .iter()
            .map(|(e, n)| (e.name().to_owned(), serde_json::json!(n)))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"fastpath": rows, "events": events, "datapath": datapaths, "daemon": daemon})
            )?
        );
        return Ok(());
    }
    println!("{:<16} {:<12} {:<12} STATE", "DEVICE", "DATAPATH", "DRIVER");
    for d in datapaths.as_array().into_iter().flatten() {
        let f = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
        println!(
            "{:<16} {:<12} {:<12} {}",
            f("device"),
            f("datapath"),
            f("driver"),
            f("state")
        );
    }
    println!();
    println!(
        "{:<22} {:<9} {:>14} {:>16}",
        "REASON", "VERDICT", "PACKETS", "BYTES"
    );
    for (r, e) in &totals.0 {
        println!(
            "{:<22} {:<9} {:>14} {:>16}",
            r.name(),
            r.verdict().name(),
            e.packets,
            e.bytes
        );
    }
    // Counted besides the reasons: e.g. forwarded frames whose next hop needed the FIB.
    println!();
    println!("{:<22} {:>14}", "EVENT", "PACKETS");
    for (e, n) in &events {
        println!("{:<22} {:>14}", e.name(), n);
    }
    match daemon
        .as_ref()
        .and_then(|d| d.get("statistics"))
        .and_then(|s| s.get("currentstatistics"))
    {
        Some(cur) => println!(
            "\nsessions: {} own, {} total",
            cur.get("sessionsown").unwrap_or(&serde_json::Value::Null),
            cur.get("sessionstotal").unwrap_or(&serde_json::Value::Null)
        ),
        None => println!(
            "\ndaemon: not answering on {} (the fast path runs without it)",
            c.ng
        ),
    }
    Ok(())
}
