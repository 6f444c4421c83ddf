//! `cargo xtask bench --ha`: failover and the cost of shared state, on the HA test topology
//! (`tests/src/ha.rs`, two relays in namespaces, Redis in its own, release build):
//! - failover: an active relay with N live calls (half ICE-terminated, RTP both ways every
//!   10 ms) is SIGKILLed and its media address moved to the standby, several rounds; the media
//!   gap per call (the longer direction), median and max over every call of every round, and the
//!   calls preserved;
//! - NG offer+answer pairs per second from one sequential client, Redis off (one relay) and on
//!   (the other), alternating rounds in the same run.
//!
//! Writes `bench/results/ha.md`.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use relay_tests::{
    daemon::{Daemon, ng_call},
    ha::{FLOAT, HaTopology, fail_over_with_media, median_max_ms, open_call},
    netns::{Bpffs, Netns},
    redis::Redis,
};
use serde_json::json;

const TICK: Duration = Duration::from_millis(10);
const NG_TAGS: [&str; 18] = [
    "ha-off-0", "ha-on-0", "ha-off-1", "ha-on-1", "ha-off-2", "ha-on-2", "ha-off-3", "ha-on-3",
    "ha-off-4", "ha-on-4", "ha-off-5", "ha-on-5", "ha-off-6", "ha-on-6", "ha-off-7", "ha-on-7",
    "ha-off-8", "ha-on-8",
];

struct Round {
    calls: usize,
    resumed: usize,
    gaps: Vec<Duration>,
}

fn foreign(ns: &Netns) -> u64 {
    ng_call(ns, json!({"command": "statistics"}))
        .ok()
        .and_then(|s| s["statistics"]["currentstatistics"]["sessionsforeign"].as_u64())
        .unwrap_or(0)
}

fn start(t: &HaTopology, bpffs: &Bpffs, r: usize, args: Vec<String>) -> Result<Daemon> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&t.relays[r], &bpffs.path().join(format!("r{r}")), &a)
}

/// One failover round: `calls` calls on the active, the standby holding them all, then the
/// active's SIGKILL with media running.
fn failover_round(calls: usize) -> Result<Round> {
    let t = HaTopology::new(false)?;
    let bpffs = Bpffs::new(&t.prefix)?;
    let redis = Redis::start(&t.redis_ns, 6391)?;
    let common = [
        format!("--redis={}", redis.unix_url(0)),
        "--detach".to_owned(),
    ];
    let mut a0 = t.daemon_args(0);
    a0.extend(common.iter().cloned());
    a0.push("--relay-id=relay0".into());
    let mut a1 = t.daemon_args(1);
    a1.extend(common.iter().cloned());
    a1.extend(["--relay-id=relay1".into(), "--standby".into()]);
    let mut daemons = [start(&t, &bpffs, 0, a0)?, start(&t, &bpffs, 1, a1)?];
    let mut legs = Vec::new();
    for i in 0..calls {
        let (pa, pb) = (20_000 + 2 * i as u16, 22_000 + 2 * i as u16);
        let (a, b, _) = open_call(&t, 0, &format!("bench-ha-{i}"), pa, pb, i % 2 == 1)?;
        legs.push((a, b));
    }
    let t0 = Instant::now();
    while foreign(&t.relays[1]) != calls as u64 {
        if t0.elapsed() > Duration::from_secs(15) {
            bail!(
                "the standby holds {} calls, not {calls}",
                foreign(&t.relays[1])
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let f = fail_over_with_media(&t, &mut daemons, legs, FLOAT, (0, 1), TICK)?;
    drop(daemons);
    drop(redis);
    Ok(Round {
        calls,
        resumed: f.resumed,
        gaps: f.gaps,
    })
}

/// NG pairs per second, Redis off (relay 0) and on (relay 1), alternating `rounds` times.
fn ng_rates(rounds: usize, pairs: u32) -> Result<(Vec<f64>, Vec<f64>)> {
    let t = HaTopology::new(true)?;
    let bpffs = Bpffs::new(&t.prefix)?;
    let redis = Redis::start(&t.redis_ns, 6393)?;
    let mut a0 = t.pool_args(0);
    a0.push("--detach".into());
    let mut a1 = t.pool_args(1);
    a1.extend([
        format!("--redis={}", redis.unix_url(1)),
        "--relay-id=r1".into(),
        "--detach".into(),
    ]);
    let daemons = [start(&t, &bpffs, 0, a0)?, start(&t, &bpffs, 1, a1)?];
    let ng = crate::peers::OUR_NG;
    // Warm-up, then alternate so both see the same load.
    crate::peers::ng_pairs_per_second(&t.relays[0], ng, pairs / 4, 1, "ha-warm-0")?;
    crate::peers::ng_pairs_per_second(&t.relays[1], ng, pairs / 4, 1, "ha-warm-1")?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for tags in NG_TAGS.chunks(2).take(rounds) {
        off.push(crate::peers::ng_pairs_per_second(
            &t.relays[0],
            ng,
            pairs,
            1,
            tags[0],
        )?);
        on.push(crate::peers::ng_pairs_per_second(
            &t.relays[1],
            ng,
            pairs,
            1,
            tags[1],
        )?);
    }
    drop(daemons);
    Ok((off, on))
}

fn median(v: &[f64]) -> f64 {
    let mut x = v.to_vec();
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

fn range(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    )
}

pub fn run(out: &Path, quick: bool, machine: String, date: String) -> Result<()> {
    let (rounds, calls, ng_rounds, pairs) = if quick {
        (1, 10, 3, 300)
    } else {
        (3, 20, 9, 500)
    };
    let mut all = Vec::new();
    for r in 0..rounds {
        eprintln!(
            "bench --ha: failover round {} of {rounds} ({calls} calls)",
            r + 1
        );
        all.push(failover_round(calls)?);
    }
    eprintln!("bench --ha: NG offer+answer, Redis off / on, {ng_rounds} rounds");
    let (off, on) = ng_rates(ng_rounds, pairs)?;

    let gaps: Vec<Duration> = all.iter().flat_map(|r| r.gaps.iter().copied()).collect();
    let n_gaps = gaps.len();
    let (gap_med, gap_max) = median_max_ms(gaps);
    let (calls_all, resumed_all) = all
        .iter()
        .fold((0, 0), |(c, r), x| (c + x.calls, r + x.resumed));
    let mut s = String::new();
    let _ = writeln!(s, "## HA benchmark, {date}\n");
    let _ = writeln!(
        s,
        "Machine: {machine}. Release build; two relays and Redis (unix socket) in namespaces (tests/src/ha.rs). Failover: the active relay with {calls} live calls (half ICE-terminated, RTP both ways every 10 ms) is SIGKILLed, its links go down and its media address moves to the standby, which takes over on the netlink address event; {rounds} rounds. Gap per call = the longer silence of its two directions.\n"
    );
    let _ = writeln!(s, "| measure | result |\n|---|---:|");
    let _ = writeln!(
        s,
        "| calls preserved (media both ways after the failover) | {resumed_all}/{calls_all} |"
    );
    let _ = writeln!(
        s,
        "| media gap at failover, median / max over {n_gaps} calls (ms) | {gap_med:.0} / {gap_max:.0} |"
    );
    for (i, r) in all.iter().enumerate() {
        let (m, x) = median_max_ms(r.gaps.clone());
        let _ = writeln!(
            s,
            "| round {}: preserved, gap median / max (ms) | {}/{}, {m:.0} / {x:.0} |",
            i + 1,
            r.resumed,
            r.calls
        );
    }
    let (off_min, off_max) = range(&off);
    let (on_min, on_max) = range(&on);
    let (m_off, m_on) = (median(&off), median(&on));
    let _ = writeln!(
        s,
        "| NG offer+answer pairs/s, Redis off: median (min to max) of {ng_rounds} rounds of {pairs} | {m_off:.0} ({off_min:.0} to {off_max:.0}) |"
    );
    let _ = writeln!(
        s,
        "| NG offer+answer pairs/s, Redis on: median (min to max), alternating with the above | {m_on:.0} ({on_min:.0} to {on_max:.0}) |"
    );
    let _ = writeln!(s, "| Redis on / off (medians) | {:.2}x |", m_on / m_off);
    std::fs::create_dir_all(out)?;
    let path = out.join("ha.md");
    std::fs::write(&path, &s)?;
    println!("{s}");
    println!("written: {}", path.display());
    if resumed_all != calls_all {
        bail!(
            "{} of {calls_all} calls did not survive the failover",
            calls_all - resumed_all
        );
    }
    Ok(())
}
