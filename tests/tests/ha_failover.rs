//! High availability on Redis, end to end: two relays in namespaces sharing a floating media
//! address (active-passive) or each with its own (a pool), calls with RTP flowing both ways,
//! SIGKILL of a relay, its address moved, the survivor taking its calls over with no NG command.
//! Prints the failover gap per call (median, max) as `HA-FIGURES`.

use std::time::{Duration, Instant};

use relay_tests::{
    daemon::{Daemon, ng_call},
    ha::{
        FLOAT, FLOAT1, HaTopology, MediaRun, consent_check, fail_over_with_media, ha_setup,
        median_max_ms, open_call,
    },
    netns::Bpffs,
};
use serde_json::json;

const CALLS: usize = 20;
const TICK: Duration = Duration::from_millis(10);

fn stat(ns: &relay_tests::netns::Netns, key: &str) -> u64 {
    ng_call(ns, json!({"command": "statistics"}))
        .ok()
        .and_then(|s| s["statistics"]["currentstatistics"][key].as_u64())
        .unwrap_or(0)
}

/// Waits (bounded) until relay `ns` holds `n` foreign calls.
fn wait_foreign(ns: &relay_tests::netns::Netns, n: u64) {
    let t0 = Instant::now();
    while stat(ns, "sessionsforeign") != n {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the other relay holds {} foreign calls, not {n}",
            stat(ns, "sessionsforeign")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(t: &HaTopology, bpffs: &Bpffs, r: usize, args: Vec<String>, extra: &[&str]) -> Daemon {
    let mut a = args;
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push(format!("--relay-id=relay{r}"));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    Daemon::start(&t.relays[r], &bpffs.path().join(format!("r{r}")), &a).unwrap()
}

#[test]
fn standby_takes_over_twenty_calls_after_sigkill() {
    let Some((t, bpffs, mut redis)) =
        ha_setup("standby_takes_over_twenty_calls_after_sigkill", false, 6391)
    else {
        return;
    };
    let url = format!("--redis={}", redis.unix_url(2));
    let common = [url.as_str(), "--redis-expires=30", "--detach"];
    let active = start(&t, &bpffs, 0, t.daemon_args(0), &common);
    let mut standby_args = common.to_vec();
    standby_args.push("--standby");
    let standby = start(&t, &bpffs, 1, t.daemon_args(1), &standby_args);
    let mut daemons = [active, standby];

    let (mut legs, mut ice) = (Vec::new(), Vec::new());
    for i in 0..CALLS {
        let (pa, pb) = (20_000 + 2 * i as u16, 22_000 + 2 * i as u16);
        let (a, b, creds) = open_call(&t, 0, &format!("ha-{i}"), pa, pb, i % 2 == 1).unwrap();
        legs.push((a, b));
        ice.push(creds);
    }
    wait_foreign(&t.relays[1], CALLS as u64);

    // Redis dies and comes back empty mid-run: the active rewrites every call, the standby
    // sees them all again.
    redis.kill();
    std::thread::sleep(Duration::from_millis(500));
    redis.restart().unwrap();
    redis.wait_keys(
        2,
        "xdp-relay:call:*",
        CALLS,
        Duration::from_secs(15),
        "calls not rewritten after Redis restarted",
    );
    wait_foreign(&t.relays[1], CALLS as u64);

    let f = fail_over_with_media(&t, &mut daemons, legs, FLOAT, (0, 1), TICK).unwrap();
    let (resumed, callers) = (f.resumed, f.callers);
    let (median, max) = median_max_ms(f.gaps);
    println!(
        "HA-FIGURES active-passive: calls preserved {resumed}/{CALLS}; media gap at failover median {median:.0} ms, max {max:.0} ms"
    );
    assert_eq!(
        resumed, CALLS,
        "every call resumes both ways on the standby"
    );
    assert_eq!(stat(&t.relays[1], "sessionsown"), CALLS as u64);
    // The ICE-terminated legs' agents moved too: consent checks get signed successes.
    for (leg, creds) in callers.iter().zip(&ice) {
        if let Some(c) = creds {
            assert_eq!(
                consent_check(leg, c),
                Some((None, true)),
                "consent after takeover"
            );
        }
    }

    // The old active comes back (links up, no address): it restores its calls from its state
    // file, finds them owned by relay1 at a higher epoch, and releases them. No fight.
    for d in &t.devs[0] {
        t.relays[0].ip(&["link", "set", "dev", d, "up"]).unwrap();
    }
    let back = start(&t, &bpffs, 0, t.daemon_args(0), &common);
    wait_foreign(&t.relays[0], CALLS as u64);
    assert_eq!(stat(&t.relays[0], "sessionsown"), 0);
    assert_eq!(stat(&t.relays[1], "sessionsown"), CALLS as u64);

    // Calls end on the new owner: every key goes, and the old active drops its copies.
    for i in 0..CALLS {
        ng_call(
            &t.relays[1],
            json!({"command": "delete", "call-id": format!("ha-{i}")}),
        )
        .unwrap();
    }
    let t0 = Instant::now();
    while redis.count_keys(2, "xdp-relay:call:*").unwrap() != 0
        || stat(&t.relays[0], "sessionsforeign") != 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "leftover keys or foreign calls"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(back);
    drop(daemons);
}

#[test]
fn pool_survivor_takes_over_the_dead_relays_calls() {
    let Some((t, bpffs, redis)) =
        ha_setup("pool_survivor_takes_over_the_dead_relays_calls", true, 6392)
    else {
        return;
    };
    let url = format!("--redis={}", redis.unix_url(0));
    let common = [url.as_str(), "--detach"];
    let r0 = start(&t, &bpffs, 0, t.pool_args(0), &common);
    let r1 = start(&t, &bpffs, 1, t.pool_args(1), &common);
    let mut daemons = [r0, r1];
    // Calls spread over both relays, as Kamailio's set would.
    let mut legs = Vec::new();
    for i in 0..10 {
        let r = i % 2;
        let (pa, pb) = (24_000 + 2 * i as u16, 26_000 + 2 * i as u16);
        let (a, b, _) = open_call(&t, r, &format!("pool-{i}"), pa, pb, i % 4 == 1).unwrap();
        let want = if r == 0 { FLOAT } else { FLOAT1 };
        assert_eq!(
            a.relay.ip().to_string(),
            want,
            "new calls use the relay's own address"
        );
        legs.push((a, b));
    }
    wait_foreign(&t.relays[0], 5);
    wait_foreign(&t.relays[1], 5);
    assert_eq!(stat(&t.relays[0], "sessionsown"), 5);

    let f = fail_over_with_media(&t, &mut daemons, legs, FLOAT, (0, 1), TICK).unwrap();
    let resumed = f.resumed;
    let (median, max) = median_max_ms(f.gaps);
    println!(
        "HA-FIGURES active-active: calls preserved {resumed}/10; media gap at failover median {median:.0} ms, max {max:.0} ms"
    );
    assert_eq!(
        resumed, 10,
        "the survivor carries its own and the dead relay's calls"
    );
    assert_eq!(stat(&t.relays[1], "sessionsown"), 10);
    // New calls go to the survivor.
    let (a, ..) = open_call(&t, 1, "pool-new", 28_000, 28_500, false).unwrap();
    assert_eq!(a.relay.ip().to_string(), FLOAT1);
    drop(daemons);
    drop(redis);
}

/// A call whose record is in the previous format (version 1: JSON only, no takeover epoch), as
/// an older relay left it: a standby started afterwards restores it and takes it over.
#[test]
fn previous_format_record_is_restored_and_taken_over() {
    let Some((t, bpffs, redis)) = ha_setup(
        "previous_format_record_is_restored_and_taken_over",
        false,
        6394,
    ) else {
        return;
    };
    let url = format!("--redis={}", redis.unix_url(0));
    let common = [url.as_str(), "--detach"];
    let mut active = start(&t, &bpffs, 0, t.daemon_args(0), &common);
    let (a, b, _) = open_call(&t, 0, "old-1", 21_000, 23_000, false).unwrap();
    let written = "record not written";
    redis.wait_keys(0, "xdp-relay:call:*", 1, Duration::from_secs(10), written);
    active.kill().unwrap();
    // Rewrite the key as a version 1 relay would have written it.
    let client = redis::Client::open(redis.unix_url(0)).unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .unwrap();
    let key = "xdp-relay:call:old-1";
    let v2: Vec<u8> = redis::cmd("GET").arg(key).query(&mut conn).unwrap();
    let rec = relay_ctl::state::record::CallRecord::decode(&v2).unwrap();
    let v1 = rec.encode_v1();
    assert_eq!(v1.first(), Some(&b'{'), "version 1 is JSON only");
    redis::cmd("SET")
        .arg(key)
        .arg(v1)
        .query::<()>(&mut conn)
        .unwrap();

    t.fail_over(FLOAT, 0, 1, true).unwrap();
    let mut standby_args = common.to_vec();
    standby_args.push("--standby");
    let standby = start(&t, &bpffs, 1, t.daemon_args(1), &standby_args);
    let t0 = Instant::now();
    while stat(&t.relays[1], "sessionsown") != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "version 1 call not taken over"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ra, rb) = (
        MediaRun::start(vec![a], TICK, Duration::from_secs(10)),
        MediaRun::start(vec![b], TICK, Duration::from_secs(10)),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let t_mid = Instant::now() - Duration::from_millis(500);
    let ((aa, _), (ab, _)) = (ra.finish(), rb.finish());
    assert_eq!(
        (aa.alive_after(t_mid), ab.alive_after(t_mid)),
        (1, 1),
        "media both ways on the restored call"
    );
    // Taken over means rewritten in the current format, owned by relay1 at epoch 1.
    let now: Vec<u8> = redis::cmd("GET").arg(key).query(&mut conn).unwrap();
    let rec = relay_ctl::state::record::CallRecord::decode(&now).unwrap();
    assert_eq!((rec.owner.as_str(), rec.epoch), ("relay1", 1));
    assert!(now.starts_with(b"xdp-relay-call 2 relay1 1\n"));
    drop(standby);
    drop(active);
}
