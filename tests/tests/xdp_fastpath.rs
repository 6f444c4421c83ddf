//! The fast path as a Katran-style table under BPF_PROG_TEST_RUN, through the XDP entry point
//! (the table itself, shared with the TC run, is in fastpath_table). It runs inside a namespace
//! whose routes and static neighbours make the FIB results deterministic.

mod fastpath_table;

use aya::programs::{TestRun as _, TestRunOptions};
use fastpath_table::{cases, entry, ifindex, load_with_table, run_case, sa, setup, v4, v6};
use relay_common::{
    stats::{Reason, Verdict},
    stream::{FLAG_SOURCE_ANY, Mismatch, StreamKey},
};
use relay_tests::{
    frames::{self, Vlan, xdp_md},
    netns::Netns,
};

#[test]
fn next_hop_from_the_daemon_or_the_fib_under_prog_test_run() {
    if !relay_tests::privileged("next_hop_from_the_daemon_or_the_fib_under_prog_test_run") {
        return;
    }
    let p = relay_tests::unique_prefix();
    let ns = Netns::new(&format!("{p}-nh")).unwrap();
    let (a, b) = setup(&ns, &p);
    let failures = ns
        .run(move || {
            let (ia, ib) = (ifindex(&a), ifindex(&b));
            let mut relay = fastpath_table::load(ib);
            fastpath_table::next_hop_checks(&mut relay, ib, |relay, frame, out| {
                let ctx = xdp_md(frame.len(), ia);
                relay
                    .program()
                    .unwrap()
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        data_out: Some(out),
                        ctx_in: Some(&ctx),
                        ..TestRunOptions::default()
                    })
                    .unwrap()
            })
        })
        .unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fast_path_table_under_prog_test_run() {
    if !relay_tests::privileged("fast_path_table_under_prog_test_run") {
        return;
    }
    let p = relay_tests::unique_prefix();
    let ns = Netns::new(&format!("{p}-fp")).unwrap();
    let (a, b) = setup(&ns, &p);
    let report = ns
        .run(move || {
            let (ia, ib) = (ifindex(&a), ifindex(&b));
            let mut relay = load_with_table(ib);
            let d = Mismatch::Drop;
            let mut failures = Vec::new();
            let mut timings = Vec::new();
            for case in cases() {
                let (verdict, effects) = run_case(&mut relay, &case, |relay, out| {
                    let ctx = xdp_md(case.frame.len(), ia);
                    relay
                        .program()
                        .unwrap()
                        .test_run(TestRunOptions {
                            data_in: Some(&case.frame),
                            data_out: Some(out),
                            ctx_in: Some(&ctx),
                            ..TestRunOptions::default()
                        })
                        .unwrap_or_else(|e| panic!("{}: test_run: {e}", case.name))
                });
                if Verdict::from_u32(verdict) != Some(case.reason.verdict()) {
                    failures.push(format!(
                        "{}: verdict {}, want {:?}",
                        case.name,
                        verdict,
                        case.reason.verdict()
                    ));
                }
                failures.extend(effects);
                if matches!(
                    case.reason,
                    Reason::RedirectForward
                        | Reason::TxForward
                        | Reason::PassUnknownStream
                        | Reason::DropSourceMismatch
                ) {
                    // `repeat` reruns on the already rewritten buffer, so time single runs on a
                    // fresh copy each and report the median (printed only, never asserted).
                    let mut ns: Vec<u128> = (0..501)
                        .map(|_| {
                            let mut sink = vec![0u8; case.frame.len() + 256];
                            let ctx = xdp_md(case.frame.len(), ia);
                            let opts = TestRunOptions {
                                data_in: Some(&case.frame),
                                data_out: Some(&mut sink),
                                ctx_in: Some(&ctx),
                                ..TestRunOptions::default()
                            };
                            let r = relay.program().unwrap().test_run(opts).unwrap();
                            r.duration.as_nanos()
                        })
                        .collect();
                    ns.sort_unstable();
                    timings.push(format!(
                        "{:<36} {:>6} ns/packet (median of 501 single runs)",
                        case.name, ns[250]
                    ));
                }
            }
            // `repeat` reruns the program on the frame it rewrote, so these entries lead back to
            // themselves (the v4/v6 pair to each other): every iteration takes the whole path.
            let any = FLAG_SOURCE_ANY;
            let rtp = frames::rtp_payload(5);
            let (from_a, from_a6) = ("10.10.1.2:4000", "[fd10:1::2]:4000");
            for (slot, key, src, dst) in [
                (20, "10.10.2.2:30100", "10.10.2.1:30050", "10.10.2.2:30100"),
                (
                    21,
                    "[fd10:2::2]:30100",
                    "[fd10:2::1]:30050",
                    "[fd10:2::2]:30100",
                ),
                (
                    22,
                    "10.10.2.2:30098",
                    "[fd10:2::1]:30050",
                    "[fd10:2::2]:30098",
                ),
                (
                    23,
                    "[fd10:2::2]:30098",
                    "10.10.2.1:30050",
                    "10.10.2.2:30098",
                ),
            ] {
                relay.reset_stream_counters(slot).unwrap();
                relay
                    .insert_stream(StreamKey::from(sa(key)), entry(slot, src, src, dst, d, any))
                    .unwrap();
            }
            for (name, frame) in [
                (
                    "v4 redirect",
                    v4(Vlan::None, from_a, "10.10.2.2:30100", &rtp),
                ),
                ("v6 redirect", v6(from_a6, "[fd10:2::2]:30100", &rtp)),
                (
                    "v4 <-> v6, alternating",
                    v4(Vlan::None, from_a, "10.10.2.2:30098", &rtp),
                ),
            ] {
                let mut runs: Vec<u128> = (0..5)
                    .map(|_| {
                        let mut out = vec![0u8; frame.len() + 256];
                        let ctx = xdp_md(frame.len(), ia);
                        let r = relay
                            .program()
                            .unwrap()
                            .test_run(TestRunOptions {
                                data_in: Some(&frame),
                                data_out: Some(&mut out),
                                ctx_in: Some(&ctx),
                                repeat: 100_000,
                                ..TestRunOptions::default()
                            })
                            .unwrap();
                        if Verdict::from_u32(r.return_value) != Some(Verdict::Redirect) {
                            failures.push(format!("repeat {name}: verdict {}", r.return_value));
                        }
                        r.duration.as_nanos()
                    })
                    .collect();
                runs.sort_unstable();
                timings.push(format!(
                    "{name:<36} {:>6} ns/packet (repeat 100000, median of 5)",
                    runs[2]
                ));
            }
            let translated = relay.stream_counters(22).unwrap().packets
                + relay.stream_counters(23).unwrap().packets;
            if translated != 500_000 {
                failures.push(format!("alternating v4/v6 loop forwarded {translated}"));
            }

            // The v6 stream forwarded one table frame and 501 timed ones.
            let c8 = relay.stream_counters(8).unwrap();
            let v6_len = cases()
                .iter()
                .find(|c| c.name.starts_with("v6 RTP"))
                .unwrap()
                .frame
                .len() as u64;
            if c8.packets != 502 || c8.bytes != 502 * v6_len || c8.last_seen_ns == 0 {
                failures.push(format!("stream slot 8 (v6) counters: {c8:?}"));
            }
            let c6 = relay.stream_counters(6).unwrap();
            if c6.packets != 0 {
                failures.push(format!(
                    "FIB-miss stream must not count as forwarded: {c6:?}"
                ));
            }
            // Removing an entry that is not there is not an error (the daemon's removals are
            // idempotent).
            if let Err(e) = relay.remove_stream(&StreamKey::from(sa("10.10.1.1:30999"))) {
                failures.push(format!("removing an absent entry: {e}"));
            }
            let insns = relay
                .program()
                .unwrap()
                .info()
                .unwrap()
                .verified_instruction_count();
            (failures, timings, insns)
        })
        .unwrap();
    let (failures, timings, insns) = report;
    eprintln!("verifier: {insns:?} instructions processed");
    for t in &timings {
        eprintln!("{t}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
