//! NG offer+answer rate with Redis off and on, same run, same build, same topology: relay 0
//! without `--redis`, relay 1 with it (a pool topology, so each has its own address). Prints
//! `HA-FIGURES`. Debug builds under `cargo test`: compare the two numbers, not their size.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use relay_ctl::client::NgClient;
use relay_tests::{
    call::sdp,
    daemon::{Daemon, NG, cpu_ns},
    ha::{CALLEE, CALLER, ha_setup},
    netns::Netns,
};
use serde_json::{Map, Value, json};

const PAIRS: usize = 300;
const ROUNDS: usize = 9;
const TAGS: [[&str; ROUNDS]; 2] = [
    ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"],
    ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8"],
];

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// One round: pairs per second (wall clock, load-sensitive), and CPU µs per pair spent by the
/// daemon and by redis-server (schedstat, far less sensitive to the other builds on the host).
struct Round {
    rate: f64,
    daemon_us: f64,
    redis_us: f64,
}

fn round(ns: &Netns, tag: &'static str, daemon: u32, redis: u32) -> Round {
    let (d0, r0) = (cpu_ns(daemon), cpu_ns(redis));
    let rate = rate(ns, tag);
    let per = |a: u64, b: u64| (b - a) as f64 / 1000.0 / PAIRS as f64;
    // Deletes are in the window too: per pair that is offer + answer + delete.
    Round {
        rate,
        daemon_us: per(d0, cpu_ns(daemon)),
        redis_us: per(r0, cpu_ns(redis)),
    }
}

/// Sequential offer+answer pairs from one client: pairs per second (deletes not timed).
fn rate(ns: &Netns, tag: &'static str) -> f64 {
    ns.run(move || {
        let server: SocketAddr = NG.parse().unwrap();
        let c = NgClient::new(server, Duration::from_secs(2), 2).unwrap();
        let t0 = Instant::now();
        for i in 0..PAIRS {
            let id = format!("{tag}-{i}");
            c.call(&obj(json!({"command": "offer", "call-id": id, "from-tag": "A", "sdp": sdp(CALLER, 4000, &[])})))
                .unwrap();
            c.call(&obj(json!({"command": "answer", "call-id": id, "from-tag": "A", "to-tag": "B", "sdp": sdp(CALLEE, 5000, &[])})))
                .unwrap();
        }
        let r = PAIRS as f64 / t0.elapsed().as_secs_f64();
        for i in 0..PAIRS {
            let _ = c.call(&obj(json!({"command": "delete", "call-id": format!("{tag}-{i}")})));
        }
        r
    })
    .unwrap()
}

#[test]
fn ng_rate_with_and_without_redis() {
    let Some((t, bpffs, redis)) = ha_setup("ng_rate_with_and_without_redis", true, 6393) else {
        return;
    };
    let url = format!("--redis={}", redis.unix_url(1));
    let start = |r: usize, extra: &[&str]| {
        let mut a = t.pool_args(r);
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push("--detach".into());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        Daemon::start(&t.relays[r], &bpffs.path().join(format!("r{r}")), &a).unwrap()
    };
    let plain = start(0, &[]);
    let shared = start(1, &[&url, "--relay-id=r1"]);
    // Warm-up, then alternate so both see the same machine load.
    rate(&t.relays[0], "w0");
    rate(&t.relays[1], "w1");
    let (pid_off, pid_on) = (plain.pid().unwrap(), shared.pid().unwrap());
    let pid_redis = redis.pid().unwrap();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for (a, b) in TAGS[0].iter().zip(TAGS[1]) {
        off.push(round(&t.relays[0], a, pid_off, pid_redis));
        on.push(round(&t.relays[1], b, pid_on, pid_redis));
    }
    let median = |v: &[Round], f: fn(&Round) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let (off_m, on_m) = (median(&off, |r| r.rate), median(&on, |r| r.rate));
    let best = |v: &[Round]| v.iter().map(|r| r.rate).fold(0.0, f64::max);
    let rates = |v: &[Round]| v.iter().map(|r| r.rate.round()).collect::<Vec<_>>();
    println!(
        "HA-FIGURES NG offer+answer pairs/s (sequential, one client, {PAIRS} pairs, median of {ROUNDS} alternating rounds, best in brackets): Redis off {off_m:.0} ({:.0}), Redis on {on_m:.0} ({:.0}); rounds off {:?}, on {:?}",
        best(&off),
        best(&on),
        rates(&off),
        rates(&on)
    );
    println!(
        "HA-FIGURES CPU per call (offer+answer+delete, median): daemon {:.0} us with Redis off, {:.0} us with Redis on; redis-server {:.0} us",
        median(&off, |r| r.daemon_us),
        median(&on, |r| r.daemon_us),
        median(&on, |r| r.redis_us),
    );
    // Every call the Redis relay made was written and every delete removed its key.
    let leftover = "leftover keys after deletes";
    redis.wait_keys(1, "xdp-relay:call:*", 0, Duration::from_secs(10), leftover);
    assert!(on_m > 0.0 && off_m > 0.0);
    drop((plain, shared));
}
