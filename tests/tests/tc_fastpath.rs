//! The same fast-path table as xdp_fastpath, through the TC (clsact) entry point under
//! BPF_PROG_TEST_RUN on an skb: same verdict reasons and counters, same output frames checked
//! by etherparse, except where TC cannot do what XDP does and says so: an IPv4<->IPv6
//! translation of a frame whose VLAN tags sit in the packet (the kernel strips them into the
//! skb before TC on a real device) or whose IPv4 header has options goes to the daemon,
//! counted `pass_family_change`, with the frame untouched.

mod fastpath_table;

use aya::programs::{TestRun as _, TestRunOptions};
use fastpath_table::{
    Case, Expect, cases, entry, ifindex, load_with_table, run_case, sa, setup, v4,
};
use relay_common::{
    stats::{Reason, Verdict},
    stream::{FLAG_SOURCE_ANY, Mismatch, StreamKey},
};
use relay_tests::{
    frames::{self, Vlan},
    netns::Netns,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// A `struct __sk_buff` for BPF_PROG_TEST_RUN (192 bytes) naming the device the frame is on.
fn sk_buff(ifindex: u32) -> Vec<u8> {
    let mut ctx = vec![0u8; 192];
    ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes()); // ingress_ifindex
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes()); // ifindex
    ctx
}

fn tc_action(v: Verdict) -> u32 {
    match v {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Tx | Verdict::Redirect => TC_ACT_REDIRECT,
        Verdict::Drop | Verdict::Aborted => TC_ACT_SHOT,
    }
}

/// The XDP table's expectation, adjusted where TC differs (stated in the file's doc).
fn on_tc(mut c: Case) -> Case {
    let translated_tagged_or_options = c.name.contains("->")
        && (c.name.contains("802.1Q") || c.name.contains("QinQ") || c.name.contains("options"));
    if translated_tagged_or_options {
        c.reason = Reason::PassFamilyChange;
        c.expect = Expect::Unchanged;
    }
    c
}

#[test]
fn tc_next_hop_from_the_daemon_or_the_fib_under_prog_test_run() {
    if !relay_tests::privileged("tc_next_hop_from_the_daemon_or_the_fib_under_prog_test_run") {
        return;
    }
    let p = relay_tests::unique_prefix();
    let ns = Netns::new(&format!("{p}-tnh")).unwrap();
    let (a, b) = setup(&ns, &p);
    let failures = ns
        .run(move || {
            let (ia, ib) = (ifindex(&a), ifindex(&b));
            let mut relay = fastpath_table::load(ib);
            fastpath_table::next_hop_checks(&mut relay, ib, |relay, frame, out| {
                let ctx = sk_buff(ia);
                relay
                    .tc_program()
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
fn tc_fast_path_table_under_prog_test_run() {
    if !relay_tests::privileged("tc_fast_path_table_under_prog_test_run") {
        return;
    }
    let p = relay_tests::unique_prefix();
    let ns = Netns::new(&format!("{p}-tc")).unwrap();
    let (a, b) = setup(&ns, &p);
    let (failures, timings, insns) = ns
        .run(move || {
            let (ia, ib) = (ifindex(&a), ifindex(&b));
            let mut relay = load_with_table(ib);
            let mut failures = Vec::new();
            let mut timings = Vec::new();
            for case in cases().into_iter().map(on_tc) {
                let (action, effects) = run_case(&mut relay, &case, |relay, out| {
                    let ctx = sk_buff(ia);
                    relay
                        .tc_program()
                        .unwrap()
                        .test_run(TestRunOptions {
                            data_in: Some(&case.frame),
                            data_out: Some(out),
                            ctx_in: Some(&ctx),
                            ..TestRunOptions::default()
                        })
                        .unwrap_or_else(|e| panic!("{}: test_run: {e}", case.name))
                });
                if action != tc_action(case.reason.verdict()) {
                    failures.push(format!(
                        "{}: TC action {}, want {} ({:?})",
                        case.name,
                        action,
                        tc_action(case.reason.verdict()),
                        case.reason
                    ));
                }
                failures.extend(effects);
            }
            // ns/packet with `repeat`, on an entry whose rewrite leads back to itself.
            let rtp = frames::rtp_payload(5);
            let (src, key) = ("10.10.2.1:30050", "10.10.2.2:30100");
            relay.reset_stream_counters(20).unwrap();
            relay
                .insert_stream(
                    StreamKey::from(sa(key)),
                    entry(20, src, src, key, Mismatch::Drop, FLAG_SOURCE_ANY),
                )
                .unwrap();
            let frame = v4(Vlan::None, "10.10.1.2:4000", key, &rtp);
            let mut runs: Vec<u128> = (0..5)
                .map(|_| {
                    let mut out = vec![0u8; frame.len() + 256];
                    let ctx = sk_buff(ia);
                    let r = relay
                        .tc_program()
                        .unwrap()
                        .test_run(TestRunOptions {
                            data_in: Some(&frame),
                            data_out: Some(&mut out),
                            ctx_in: Some(&ctx),
                            repeat: 100_000,
                            ..TestRunOptions::default()
                        })
                        .unwrap();
                    if r.return_value != TC_ACT_REDIRECT {
                        failures.push(format!("repeat: TC action {}", r.return_value));
                    }
                    r.duration.as_nanos()
                })
                .collect();
            runs.sort_unstable();
            timings.push(format!(
                "TC v4 redirect {:>6} ns/packet (repeat 100000, median of 5)",
                runs[2]
            ));
            let insns = relay
                .tc_program()
                .unwrap()
                .info()
                .unwrap()
                .verified_instruction_count();
            (failures, timings, insns)
        })
        .unwrap();
    eprintln!("verifier (TC): {insns:?} instructions processed");
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
