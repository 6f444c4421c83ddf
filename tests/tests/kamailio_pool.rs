//! Active-active behind Kamailio (issue 16): Kamailio's rtpengine module with ONE set of two
//! relays (`rtpengine_sock` with two NG URLs, weight 1 each) that share one Redis. sipp places
//! calls through Kamailio; the set spreads them over both relays and RTP flows on every call.
//! Relay 0 is SIGKILLed and its media address moved to relay 1 (what keepalived does): relay 1
//! takes its calls over and media resumes both ways with no NG command; Kamailio finds relay 0
//! dead (an NG timeout), disables it and sends new calls to relay 1. The BYEs of relay 1's own
//! and the new calls delete their keys at once. Kamailio 5.6 keeps each call on the relay its
//! offer went to (a hash table) and does not move a disabled relay's calls: the deletes of relay
//! 0's calls fail there ("no available proxies"), and relay 1 ends them at its media timeout.
//! No key is left.
//!
//! Topology: [`HaTopology`]'s pool. Kamailio (SIP 10.50.0.2:5060) and the sipp caller (:5062)
//! run in the caller namespace, the sipp callee (10.50.0.3:5070) in the callee namespace; SIP
//! between them is routed through relay 1 (plain forwarding). Each relay's NG socket listens on
//! every address; Kamailio reaches it on the relay's link to the caller namespace. One RTP
//! socket per side carries every call (the scenarios announce one port): arrivals are told apart
//! by the relay endpoint they come from. Prints `HA-FIGURES kamailio-pool`.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use relay_tests::{
    daemon::{Daemon, ng_call},
    ha::{Arrivals, CALLEE, CALLER, FLOAT, FLOAT1, FanRun, HaTopology, median_max_ms, resumption},
    kamailio::{self, SippRun, Workdir, relay_port},
    netns::{Bpffs, Netns},
    redis::Redis,
};
use serde_json::{Value, json};

/// Calls placed before the failover.
const CALLS: usize = 10;
/// Calls placed after it (they must all go to the survivor).
const NEW_CALLS: usize = 2;
const TICK: Duration = Duration::from_millis(10);
/// How long the first calls stay up before their BYEs (covers set-up, failover and new calls).
const HOLD_MS: u64 = 16_000;
/// The relays' media timeout (`--timeout`): calls whose BYE Kamailio cannot route end by it.
const MEDIA_TIMEOUT_S: u64 = 5;
/// Each relay's NG socket as Kamailio reaches it (the relay's end of its link to the caller
/// namespace, see [`HaTopology`]).
const NG0: &str = "10.10.1.1:2223";
const NG1: &str = "10.10.2.1:2223";

fn can_run(test: &str) -> bool {
    if !relay_tests::privileged(test) || !relay_tests::redis::available(test) {
        return false;
    }
    match kamailio::missing() {
        None => true,
        Some(m) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {m} missing under CI=true (cargo xtask setup installs it)")
        }
        Some(m) => {
            eprintln!("SKIPPED {test}: {m} missing (cargo xtask setup installs it)");
            false
        }
    }
}

fn stat(ns: &Netns, key: &str) -> u64 {
    ng_call(ns, json!({"command": "statistics"}))
        .ok()
        .and_then(|s| s["statistics"]["currentstatistics"][key].as_u64())
        .unwrap_or(0)
}

fn bind(ns: &Netns, addr: &str) -> Result<UdpSocket> {
    let addr: SocketAddr = addr.parse()?;
    Ok(ns.run(move || UdpSocket::bind(addr))??)
}

/// One call as the relays see it: the relay endpoints facing the caller and the callee.
#[derive(Clone, Debug)]
struct Call {
    id: String,
    to_caller: SocketAddr,
    to_callee: SocketAddr,
}

/// The calls relay `ns` owns (query answers only for those) with both the caller's and the
/// callee's endpoints.
fn own_calls(ns: &Netns) -> Result<Vec<Call>> {
    let list = ng_call(ns, json!({"command": "list", "limit": 100}))?;
    let ids = list
        .get("calls")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut calls = Vec::new();
    for id in ids.iter().filter_map(Value::as_str) {
        let Ok(q) = ng_call(ns, json!({"command": "query", "call-id": id})) else {
            continue; // foreign here
        };
        if let (Some(a), Some(b)) = (relay_port(&q, "caller"), relay_port(&q, "callee")) {
            calls.push(Call {
                id: id.to_owned(),
                to_caller: a,
                to_callee: b,
            });
        }
    }
    Ok(calls)
}

/// Waits (at most 15 s) until the relays own `n` complete calls between them and each holds
/// the other's as foreign (`alive`: the relays still running); returns the calls per relay.
fn wait_calls(t: &HaTopology, alive: &[usize], n: usize) -> Result<[Vec<Call>; 2]> {
    let t0 = Instant::now();
    loop {
        let mut per: [Vec<Call>; 2] = Default::default();
        for &r in alive {
            per[r] = own_calls(&t.relays[r])?;
        }
        let total = per[0].len() + per[1].len();
        let held = alive.iter().all(|&r| {
            let others: usize = alive
                .iter()
                .filter(|&&o| o != r)
                .map(|&o| per[o].len())
                .sum();
            stat(&t.relays[r], "sessionsforeign") == others as u64
        });
        if total == n && held {
            return Ok(per);
        }
        if t0.elapsed() > Duration::from_secs(15) {
            bail!(
                "the relays own {} and {} complete calls, not {n} between them",
                per[0].len(),
                per[1].len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_relay(t: &HaTopology, bpffs: &Bpffs, r: usize, redis_url: &str) -> Result<Daemon> {
    let mut a = t.pool_args(r);
    a.extend([
        format!("--redis={redis_url}"),
        format!("--relay-id=relay{r}"),
        "--ng-listen=0.0.0.0:2223".into(),
        format!("--timeout={MEDIA_TIMEOUT_S}"),
        "--detach".into(),
    ]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    Daemon::start(&t.relays[r], &bpffs.path().join(format!("r{r}")), &a)
}

#[test]
fn kamailio_set_of_two_relays_survives_one() {
    let test = "kamailio_set_of_two_relays_survives_one";
    if !can_run(test) {
        return;
    }
    run(test).unwrap();
}

fn run(test: &str) -> Result<()> {
    let t = HaTopology::new(true)?;
    // SIP between the namespaces goes through relay 1 (routed like any other traffic).
    t.caller
        .ip(&["route", "add", &format!("{CALLEE}/32"), "via", "10.10.2.1"])?;
    t.callee
        .ip(&["route", "add", &format!("{CALLER}/32"), "via", "10.11.2.1"])?;
    let bpffs = Bpffs::new(&t.prefix)?;
    let redis = Redis::start(&t.redis_ns, 6395)?;
    let url = redis.unix_url(3);
    let r0 = start_relay(&t, &bpffs, 0, &url)?;
    let r1 = start_relay(&t, &bpffs, 1, &url)?;
    let mut daemons = [r0, r1];
    let dir = Workdir::new(&t.prefix)?;
    // One set, two relays, equal weights. Short NG timeout and one retry: a dead relay is
    // found out in a second, not in Kamailio's default 5 x 1 s.
    let sock = format!("{NG0}=1 udp:{NG1}=1");
    let extra = "modparam(\"rtpengine\", \"rtpengine_tout_ms\", 500)\nmodparam(\"rtpengine\", \"rtpengine_retr\", 1)";
    let port = "5060";
    let mut kam = kamailio::start_kamailio(
        &t.caller,
        &dir,
        &[
            ("SIP_ADDR", CALLER),
            ("SIP_PORT", port),
            ("NG_ADDR", &sock),
            ("RTPENGINE_EXTRA", extra),
            ("CALLEE1", &format!("sip:callee@{CALLEE}:5070")),
            ("FORK", ""),
            (
                "OFFER_FLAGS",
                "replace-origin replace-session-connection ICE=remove RTP/AVP label=caller",
            ),
            (
                "ANSWER_FLAGS",
                "replace-origin replace-session-connection ICE=remove RTP/AVP label=callee",
            ),
            ("DELETE_FLAGS", ""),
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    if !kam.running() {
        bail!("kamailio exited at start-up: {}", kam.stop());
    }
    // Kamailio's log and sipp's errors are shown when anything below fails.
    let outcome = (|| -> Result<()> {
        let caller_rtp = bind(&t.caller, &format!("{CALLER}:4000"))?;
        let callee_rtp = bind(&t.callee, &format!("{CALLEE}:5000"))?;
        let sip = format!("{CALLER}:{port}");
        let callee = SippRun {
            name: "callee",
            scenario: "uas.xml",
            local: CALLEE,
            sip_port: 5070,
            media_port: 7000,
            rtp_port: 5000,
            pause_ms: 200,
            remote: None,
            calls: (CALLS + NEW_CALLS) as u32,
        };
        let caller = SippRun {
            name: "caller",
            scenario: "uac.xml",
            local: CALLER,
            sip_port: 5062,
            media_port: 7000,
            rtp_port: 4000,
            pause_ms: HOLD_MS,
            remote: Some(&sip),
            calls: CALLS as u32,
        };
        let mut callee_p = callee.start(&t.callee, &dir)?;
        std::thread::sleep(Duration::from_millis(300));
        let mut caller_p = caller.start(&t.caller, &dir)?;
        let sipp_start = Instant::now();

        // The set spread the calls: each relay owns some, on its own address, and holds the
        // other's as foreign.
        let [c0, c1] = wait_calls(&t, &[0, 1], CALLS)?;
        let (on0, on1) = (c0.len(), c1.len());
        println!(
            "HA-FIGURES kamailio-pool: the set placed {on0} calls on relay 0, {on1} on relay 1"
        );
        assert!(
            on0 > 0 && on1 > 0,
            "{test}: Kamailio's set spread the calls ({on0} / {on1})"
        );
        assert!(c0.iter().all(|c| c.to_caller.ip().to_string() == FLOAT));
        assert!(c1.iter().all(|c| c.to_caller.ip().to_string() == FLOAT1));
        let calls: Vec<Call> = c0.into_iter().chain(c1).collect();

        // Media on every call, both ways, until just before the first BYEs; relay 0 dies
        // after 1.5 s and its address moves.
        let limit = Duration::from_millis(HOLD_MS + 5000);
        let ra = FanRun::start(
            caller_rtp,
            calls.iter().map(|c| c.to_caller).collect(),
            TICK,
            limit,
        );
        let rb = FanRun::start(
            callee_rtp,
            calls.iter().map(|c| c.to_callee).collect(),
            TICK,
            limit,
        );
        std::thread::sleep(Duration::from_millis(1500));
        let t_fail = Instant::now();
        daemons[0].kill()?;
        t.fail_over(FLOAT, 0, 1, true)?;
        std::thread::sleep(Duration::from_secs(4));
        let end = Instant::now();
        assert_eq!(stat(&t.relays[1], "sessionsown"), CALLS as u64);

        // New calls: Kamailio finds relay 0 dead (NG timeout), disables it, uses relay 1.
        let caller2 = SippRun {
            name: "caller2",
            scenario: "uac.xml",
            local: CALLER,
            sip_port: 5064,
            media_port: 7100,
            rtp_port: 4000,
            pause_ms: 3000,
            remote: Some(&sip),
            calls: NEW_CALLS as u32,
        };
        let mut caller2_p = caller2.start(&t.caller, &dir)?;
        let [_, all] = wait_calls(&t, &[1], CALLS + NEW_CALLS)?;
        let new: Vec<Call> = all
            .into_iter()
            .filter(|c| !calls.iter().any(|o| o.id == c.id))
            .collect();
        assert_eq!(new.len(), NEW_CALLS);
        for c in &new {
            assert_eq!(
                c.to_caller.ip().to_string(),
                FLOAT1,
                "{test}: a new call on the survivor's own address"
            );
        }
        ra.add(new.iter().map(|c| c.to_caller));
        rb.add(new.iter().map(|c| c.to_callee));
        std::thread::sleep(Duration::from_millis(1000));
        let mid = Instant::now() - Duration::from_millis(500);
        // Media stops before the BYEs, so calls whose BYE does not reach a relay time out.
        let bye = sipp_start + Duration::from_millis(HOLD_MS);
        std::thread::sleep(bye.saturating_duration_since(Instant::now() + Duration::from_secs(1)));
        let (aa, ab) = (ra.finish().0, rb.finish().0);

        let before = t_fail - Duration::from_millis(500);
        for (i, c) in calls.iter().enumerate() {
            assert!(
                aa.0[i].iter().any(|x| *x > before && *x < t_fail)
                    && ab.0[i].iter().any(|x| *x > before && *x < t_fail),
                "{test}: {}: media both ways before the failure",
                c.id
            );
        }
        let first = Arrivals(aa.0[..CALLS].to_vec());
        let first_b = Arrivals(ab.0[..CALLS].to_vec());
        let (gaps, resumed) = resumption(&first, &first_b, before, end);
        let (median, max) = median_max_ms(gaps.iter().flatten().copied().collect());
        let dead: Vec<Duration> = calls
            .iter()
            .zip(&gaps)
            .filter(|(c, _)| c.to_caller.ip().to_string() == FLOAT)
            .filter_map(|(_, g)| *g)
            .collect();
        let (dmedian, dmax) = median_max_ms(dead);
        println!(
            "HA-FIGURES kamailio-pool: calls preserved {resumed}/{CALLS}; media gap at failover, the dead relay's {on0} calls median {dmedian:.0} ms, max {dmax:.0} ms; all calls median {median:.0} ms, max {max:.0} ms"
        );
        assert_eq!(resumed, CALLS, "{test}: every call resumes both ways");
        let new_alive = (CALLS..CALLS + NEW_CALLS)
            .filter(|i| aa.0[*i].iter().any(|x| *x > mid) && ab.0[*i].iter().any(|x| *x > mid))
            .count();
        assert_eq!(
            new_alive, NEW_CALLS,
            "{test}: media both ways on the new calls"
        );

        // Every call ends by BYE.
        for (p, what) in [(&mut caller2_p, "caller2"), (&mut caller_p, "caller")] {
            let (st, err) = p.wait(Duration::from_secs(30))?;
            assert!(st.success(), "{test}: sipp {what} failed ({st}): {err}");
        }
        let (st, err) = callee_p.wait(Duration::from_secs(10))?;
        assert!(st.success(), "{test}: sipp callee failed ({st}): {err}");
        let t_bye = Instant::now();
        // Kamailio 5.6 keeps each call on the relay its offer went to and does not move the
        // later commands of a disabled relay's calls ("no available proxies"): the deletes of
        // relay 0's calls never reach relay 1, which ends them at the media timeout. Every other
        // call's delete removes its key at once.
        let keys = |redis: &Redis| redis.count_keys(3, "xdp-relay:call:*");
        let t0 = Instant::now();
        while keys(&redis)? > on0 {
            if t0.elapsed() > Duration::from_secs(5) {
                bail!("{test}: {} keys left after the BYEs", keys(&redis)?);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let left_by_bye = keys(&redis)?;
        while keys(&redis)? != 0 || stat(&t.relays[1], "sessionsown") != 0 {
            if t0.elapsed() > Duration::from_secs(MEDIA_TIMEOUT_S + 10) {
                bail!(
                    "{test}: {} keys left, relay 1 owns {} calls, {MEDIA_TIMEOUT_S} s after the media stopped",
                    keys(&redis)?,
                    stat(&t.relays[1], "sessionsown")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "HA-FIGURES kamailio-pool: after the BYEs {left_by_bye} calls (relay 0's, their deletes not routed by Kamailio) stayed until relay 1's media timeout, {:.1} s later",
            t_bye.elapsed().as_secs_f64()
        );
        Ok(())
    })();
    if let Err(e) = outcome {
        eprintln!("kamailio log:\n{}", kam.stop());
        for f in std::fs::read_dir(&dir.path)?.flatten() {
            if f.file_name().to_string_lossy().ends_with("-errors.log") {
                eprintln!(
                    "{}:\n{}",
                    f.path().display(),
                    std::fs::read_to_string(f.path())?
                );
            }
        }
        return Err(e);
    }
    // Kamailio found relay 0 dead by an NG timeout and disabled it.
    let log = kam.stop();
    let lines = |what: &str| {
        log.lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let timeouts: Vec<String> = lines("timeout waiting reply")
        .into_iter()
        .filter(|l| l.contains(NG0))
        .collect();
    for l in timeouts.iter().chain(&lines("no available proxies")) {
        println!("kamailio: {l}");
    }
    assert!(
        !timeouts.is_empty(),
        "{test}: Kamailio never timed out on relay 0"
    );
    drop(daemons);
    Ok(())
}
