//! Resources at scale on a 20000-60000 port range: as many plain calls as the descriptor limit
//! allows, up to 10,000 (four sockets each; the daemon raises its limit for the range where it
//! may: with CAP_SYS_RESOURCE or a high LimitNOFILE), the daemon's memory per call at 1k calls
//! and at that count, the clear error past the real limit, and memory that does not grow across
//! create/delete cycles. Prints the figures.

use std::{sync::Arc, time::Instant};

use relay_tests::{
    call::sdp,
    daemon::{Daemon, ng_call},
    netns::Bpffs,
    topology::Topology,
};
use serde_json::json;

/// Client threads: a proxy has many workers, and the daemon commits their requests together.
const CLIENTS: usize = 8;

fn create(t: &Arc<Topology>, from: usize, to: usize) {
    let chunks: Vec<(usize, usize)> = (0..CLIENTS)
        .map(|k| {
            let n = (to - from).div_ceil(CLIENTS);
            (from + k * n, (from + (k + 1) * n).min(to))
        })
        .collect();
    std::thread::scope(|s| {
        for (a, b) in chunks {
            let t = Arc::clone(t);
            s.spawn(move || {
                for i in a..b {
                    let id = format!("load-{i}");
                    ng_call(
                        &t.relay,
                        json!({"command": "offer", "call-id": id, "from-tag": "a",
                        "sdp": sdp("10.1.1.2", 4000, &[])}),
                    )
                    .unwrap_or_else(|e| panic!("offer {i}: {e:#}"));
                    ng_call(
                        &t.relay,
                        json!({"command": "answer", "call-id": id, "from-tag": "a",
                        "to-tag": "b", "sdp": sdp("10.1.2.2", 5000, &[])}),
                    )
                    .unwrap_or_else(|e| panic!("answer {i}: {e:#}"));
                }
            });
        }
    });
}

fn delete(t: &Arc<Topology>, from: usize, to: usize) {
    std::thread::scope(|s| {
        for k in 0..CLIENTS {
            let t = Arc::clone(t);
            s.spawn(move || {
                for i in (from + k..to).step_by(CLIENTS) {
                    ng_call(
                        &t.relay,
                        json!({"command": "delete", "call-id": format!("load-{i}")}),
                    )
                    .unwrap_or_else(|e| panic!("delete {i}: {e:#}"));
                }
            });
        }
    });
}

#[test]
fn ten_thousand_calls_fit_in_bounded_memory() {
    if !relay_tests::privileged("ten_thousand_calls_fit_in_bounded_memory") {
        return;
    }
    let t = Arc::new(Topology::new().unwrap());
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let pin_dir = bpffs.path().join("relay");
    let mut d: Daemon = t
        .start_daemon(
            &pin_dir,
            &["--detach", "--port-min=20000", "--port-max=60000"],
        )
        .unwrap();
    let base = d.rss_kib().unwrap();

    // Calls that fit in the descriptor limit this process (and so the daemon) can reach.
    let limit = {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
        r.rlim_max
    };
    let fit = ((limit.saturating_sub(256) / 4) as usize)
        .saturating_sub(100)
        .min(10_000)
        / 100
        * 100;
    assert!(
        fit >= 1000,
        "descriptor limit {limit} too low for this test"
    );

    let t0 = Instant::now();
    create(&t, 0, 1000);
    let pairs_per_s = 1000.0 / t0.elapsed().as_secs_f64();
    let at_1k = d.rss_kib().unwrap();
    create(&t, 1000, fit);
    let at_fit = d.rss_kib().unwrap();
    let per_call_1k = (at_1k.saturating_sub(base)) as f64 / 1000.0;
    let per_call_fit = (at_fit.saturating_sub(base)) as f64 / fit as f64;
    let list = ng_call(&t.relay, json!({"command": "list", "limit": 20000})).unwrap();
    assert_eq!(list["calls"].as_array().unwrap().len(), fit);
    // Past the real limit: a clear error naming it, and nothing half-made.
    let mut refused = None;
    for i in fit..fit + 1000 {
        let id = format!("load-{i}");
        let r = ng_call(
            &t.relay,
            json!({"command": "offer", "call-id": id, "from-tag": "a",
            "sdp": sdp("10.1.1.2", 4000, &[])}),
        );
        if let Err(e) = r {
            refused = Some((i, e.to_string()));
            break;
        }
        ng_call(
            &t.relay,
            json!({"command": "answer", "call-id": id, "from-tag": "a",
            "to-tag": "b", "sdp": sdp("10.1.2.2", 5000, &[])}),
        )
        .unwrap();
    }
    let created = refused.as_ref().map_or(fit + 1000, |(i, _)| *i);
    if limit < 45_000 {
        let (_, why) = refused.clone().expect("the descriptor limit is reached");
        assert!(why.contains("Out of file descriptors (limit "), "{why}");
    }
    delete(&t, 0, created);
    let after_delete = d.rss_kib().unwrap();
    // Cycles of 1,000 calls created and deleted: memory must not keep growing.
    let mut cycles = Vec::new();
    for _ in 0..3 {
        create(&t, 0, 1000);
        delete(&t, 0, 1000);
        cycles.push(d.rss_kib().unwrap());
    }
    println!(
        "RESOURCES: descriptor limit {limit}; base {base} KiB; 1k calls {at_1k} KiB \
         ({per_call_1k:.1} KiB/call); {fit} calls {at_fit} KiB ({per_call_fit:.1} KiB/call); \
         {created} calls created before {refused:?}; after deleting {after_delete} KiB; 1k \
         create/delete cycles {cycles:?} KiB; {pairs_per_s:.0} offer+answer pairs/s with \
         {CLIENTS} clients (write-ahead)"
    );
    // 10,000 calls at this rate stay under 200 MB.
    assert!(per_call_fit <= 20.0, "{per_call_fit:.1} KiB per call");
    assert!(
        base as f64 + per_call_fit * 10_000.0 < 200.0 * 1024.0,
        "10k calls would take {:.0} KiB",
        base as f64 + per_call_fit * 10_000.0
    );
    assert!(
        cycles[2] <= cycles[0] + 4 * 1024,
        "memory grows across create/delete cycles: {cycles:?}"
    );
    assert!(d.stop().unwrap());
}
