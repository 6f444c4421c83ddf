//! The relay on 2-queue veths with both CPUs receiving: one latched stream, sent by two
//! threads pinned to CPU 0 and CPU 1 (the kernel processes a veth's frames on the sending CPU).
//! Every packet arrives exactly once; both CPUs' per-CPU slots count (verdict and stream
//! counters), and the sums the daemon reports (`query`, `statistics`) are the per-CPU sums.
//! On both hooks: TC (veth defaults) and XDP (GRO on the receiver, TX checksum offload off on
//! the sender, as a NIC wire).

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use relay_common::{
    names,
    stats::Reason,
    stream::{StreamCounters, StreamEntry, StreamKey},
};
use relay_tests::{
    call::{bind, sdp},
    daemon::{Daemon, ng_call},
    netns::{Bpffs, Netns, veth},
    topology::media_addr,
};
use serde_json::json;

/// Packets per sending thread.
const PER_CPU: u16 = 1500;

#[test]
fn two_queues_two_cpus_tc() {
    two_queues_two_cpus("tc");
}

#[test]
fn two_queues_two_cpus_xdp() {
    two_queues_two_cpus("xdp");
}

fn per_cpu<T: aya::Pod + Copy>(pin_dir: &std::path::Path, map: &str, slot: u32) -> Vec<T> {
    let data = MapData::from_pin(pin_dir.join(map)).unwrap();
    let arr: PerCpuArray<MapData, T> = PerCpuArray::try_from(Map::PerCpuArray(data)).unwrap();
    arr.get(&slot, 0).unwrap().iter().copied().collect()
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pinning to CPU {cpu}"
        );
    }
}

fn two_queues_two_cpus(hook: &str) {
    if !relay_tests::privileged("two_queues_two_cpus") {
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        panic!("needs 2 CPUs");
    }
    let p = relay_tests::unique_prefix();
    let (snd, relay, rcv) = (
        Netns::new(&format!("{p}-snd")).unwrap(),
        Netns::new(&format!("{p}-rly")).unwrap(),
        Netns::new(&format!("{p}-rcv")).unwrap(),
    );
    let (s0, r0, r1, c0) = (
        format!("{p}s0"),
        format!("{p}r0"),
        format!("{p}r1"),
        format!("{p}c0"),
    );
    // The sender's link has two queues each way.
    relay_tests::run(
        "ip",
        &[
            "link",
            "add",
            &s0,
            "netns",
            &snd.name,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            &r0,
            "netns",
            &relay.name,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
        ],
    )
    .unwrap();
    for (ns, dev, addr) in [(&snd, &s0, "10.71.1.2/24"), (&relay, &r0, "10.71.1.1/24")] {
        ns.ip(&["addr", "add", addr, "dev", dev]).unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    veth(&relay, &r1, "10.71.2.1/24", &rcv, &c0, "10.71.2.2/24").unwrap();
    relay.enable_forwarding().unwrap();
    relay
        .ip(&["addr", "add", "10.99.0.1/32", "dev", "lo"])
        .unwrap();
    snd.ip(&["route", "add", "10.99.0.0/16", "via", "10.71.1.1"])
        .unwrap();
    rcv.ip(&["route", "add", "10.99.0.0/16", "via", "10.71.2.1"])
        .unwrap();
    if hook == "xdp" {
        // As a NIC wire: complete checksums from the sender, NAPI on the receiver.
        let sh = |ns: &Netns, cmd: String| {
            relay_tests::run("ip", &["netns", "exec", &ns.name, "sh", "-c", &cmd]).unwrap()
        };
        sh(&snd, format!("ethtool -K {s0} tx off >/dev/null"));
        sh(&rcv, format!("ethtool -K {c0} gro on >/dev/null"));
    }
    let bpffs = Bpffs::new(&p).unwrap();
    let pin_dir = bpffs.path().join("relay");
    let mut daemon = Daemon::start(
        &relay,
        &pin_dir,
        &[
            "--listen=pub/10.99.0.1",
            &format!("--interface={r0}"),
            &format!("--interface={r1}"),
            &format!("--datapath={hook}"),
            "--port-min=30000",
            "--port-max=30100",
            "--detach",
        ],
    )
    .unwrap();

    let tx = bind(&snd, "10.71.1.2:4000");
    let rx = bind(&rcv, "10.71.2.2:5000");
    let big: libc::c_int = 16 << 20;
    // SAFETY: setsockopt on a socket we own with a live int.
    unsafe {
        use std::os::fd::AsRawFd as _;
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&big as *const libc::c_int).cast(),
            4,
        );
    }
    let ng = |req| ng_call(&relay, req).unwrap();
    ng(
        json!({"command": "offer", "call-id": "mq", "from-tag": "A", "sdp": sdp("10.71.1.2", 4000, &[])}),
    );
    let answer = ng(
        json!({"command": "answer", "call-id": "mq", "from-tag": "A", "to-tag": "B", "sdp": sdp("10.71.2.2", 5000, &[])}),
    );
    let relay_a = media_addr(answer["sdp"].as_str().unwrap());
    // Latch (through the daemon), then wait for the entry.
    tx.send_to(&relay_tests::frames::rtp_payload(0), relay_a)
        .unwrap();
    assert!(relay_tests::call::recv(&rx).is_some(), "latching packet");
    let streams = || -> BpfHashMap<MapData, StreamKey, StreamEntry> {
        let data = MapData::from_pin(pin_dir.join(names::STREAMS_MAP)).unwrap();
        BpfHashMap::try_from(Map::HashMap(data)).unwrap()
    };
    let t0 = Instant::now();
    let entry = loop {
        if let Ok(e) = streams().get(&StreamKey::from(relay_a), 0) {
            break e;
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "no entry installed");
        std::thread::sleep(Duration::from_millis(20));
    };
    let slot = entry.counter_slot;
    let fwd_reasons = [Reason::RedirectForward as u32, Reason::TxForward as u32];
    let forwarded_per_cpu = || -> Vec<u64> {
        let mut v = vec![0u64; 0];
        for r in fwd_reasons {
            let c: Vec<relay_common::stats::StatEntry> = per_cpu(&pin_dir, names::STATS_MAP, r);
            v.resize(c.len(), 0);
            for (i, e) in c.iter().enumerate() {
                v[i] += e.packets;
            }
        }
        v
    };
    let stream_per_cpu =
        || -> Vec<StreamCounters> { per_cpu(&pin_dir, names::STREAM_COUNTERS_MAP, slot) };
    let fwd0 = forwarded_per_cpu();
    let str0 = stream_per_cpu();

    // Two senders, one per CPU, same latched source; payloads unique per (CPU, sequence).
    let senders: Vec<_> = (0..2u8)
        .map(|cpu| {
            let tx = tx.try_clone().unwrap();
            std::thread::spawn(move || {
                pin_to(usize::from(cpu));
                for i in 0..PER_CPU {
                    let mut p = relay_tests::frames::rtp_payload(i);
                    p[8] = cpu; // SSRC's first byte: the sending CPU
                    tx.send_to(&p, relay_a).unwrap();
                    if i % 50 == 49 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut dups = 0u32;
    let mut buf = [0u8; 2048];
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 * usize::from(PER_CPU) && Instant::now() < deadline {
        let Ok((n, _)) = rx.recv_from(&mut buf) else {
            if senders.iter().all(|s| s.is_finished()) {
                break;
            }
            continue;
        };
        let key = (buf[8], u16::from_be_bytes([buf[2], buf[3]]), n);
        if !seen.insert(key) {
            dups += 1;
        }
    }
    for s in senders {
        s.join().unwrap();
    }
    // Late duplicates would show up here.
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while let Ok((n, _)) = rx.recv_from(&mut buf) {
        let key = (buf[8], u16::from_be_bytes([buf[2], buf[3]]), n);
        if !seen.insert(key) {
            dups += 1;
        }
    }
    let total = 2 * u64::from(PER_CPU);
    assert_eq!(dups, 0, "{hook}: packets delivered twice");
    assert_eq!(seen.len() as u64, total, "{hook}: every packet delivered");

    let fwd: Vec<u64> = forwarded_per_cpu()
        .iter()
        .zip(&fwd0)
        .map(|(a, b)| a - b)
        .collect();
    let per_stream: Vec<u64> = stream_per_cpu()
        .iter()
        .zip(&str0)
        .map(|(a, b)| a.packets - b.packets)
        .collect();
    eprintln!("{hook}: forwarded per CPU {fwd:?}, stream counters per CPU {per_stream:?}");
    assert!(
        fwd[0] > 0 && fwd[1] > 0,
        "{hook}: both CPUs forwarded {fwd:?}"
    );
    assert_eq!(
        fwd.iter().sum::<u64>(),
        total,
        "{hook}: forwarded once each"
    );
    assert_eq!(
        per_stream.iter().sum::<u64>(),
        total,
        "{hook}: stream counted once each"
    );
    assert!(per_stream[0] > 0 && per_stream[1] > 0, "{per_stream:?}");
    // What the daemon reports is the per-CPU sum (the stream's whole life: latching packet
    // through the daemon, the rest in the fast path).
    let q = ng(json!({"command": "query", "call-id": "mq"}));
    let s = &q["tags"]["A"]["medias"][0]["streams"][0];
    let all_cpus: u64 = stream_per_cpu().iter().map(|c| c.packets).sum();
    assert_eq!(s["fast path"]["packets"].as_u64(), Some(all_cpus), "{s:#}");
    let st = ng(json!({"command": "statistics"}));
    let reported: u64 = ["redirect_forward", "tx_forward"]
        .iter()
        .map(|r| {
            st["statistics"]["fastpath"][r]["packets"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(reported, forwarded_per_cpu().iter().sum::<u64>());
    daemon.stop().unwrap();
}
