//! `cargo xtask demo`: an ICE call through the relay on a throwaway namespace topology. The
//! caller is a full ICE agent (str0m's `is` crate) and the relay terminates ICE for it (RFC 7584
//! mandatory termination); the callee is a plain RTP endpoint. The demo prints the offer and the
//! answer as the relay rewrote them, the ICE checks, then a live per-stream table of packets
//! forwarded by XDP, and removes everything on every exit path.

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use is::IceCreds;
use relay_tests::{
    call::{Relay, packets},
    daemon::relay_ctl_bin,
    ice::{attr, candidates, check},
    topology::media_addr,
};
use serde_json::json;

const CALL: &str = "demo-ice-call";
const SECONDS: u64 = 5;
const PPS: u64 = 50;
const CALLER: &str = "10.1.1.2:4000";
const CALLEE: &str = "10.1.2.2:5000";

fn main() -> Result<()> {
    if std::env::var_os("RUST_LOG").is_none() {
        // The daemon's per-request log lines would interleave with the demo's own output.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    let r = Relay::start(&[]).context("starting the relay on a namespace topology")?;
    let prefix = r.t.prefix.clone();
    let result = demo(&r);
    drop(r);
    let left = relay_tests::run("ip", &["netns", "list"])?;
    let ours: Vec<_> = left.lines().filter(|l| l.starts_with(&prefix)).collect();
    if ours.is_empty() {
        println!("\ncleaned up: daemon stopped and detached, namespaces and bpffs removed");
    } else {
        eprintln!("left behind: {ours:?}");
    }
    result
}

fn banner(what: &str) {
    println!("\n=== {what}");
}

fn indent(sdp: &str) -> String {
    sdp.lines().map(|l| format!("    {l}\n")).collect()
}

fn demo(r: &Relay) -> Result<()> {
    banner("topology");
    println!(
        "caller {CALLER} (ICE agent) -> relay {} (XDP on {}) -> callee {CALLEE} (plain RTP)",
        relay_tests::topology::RELAY_SERVICE,
        r.t.relay_devices().join(", ")
    );

    let caller_creds = IceCreds::new();
    let offer = format!(
        "v=0\r\no=alice 1 1 IN IP4 10.1.1.2\r\ns=-\r\nc=IN IP4 10.1.1.2\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=candidate:1 1 UDP 2130706431 10.1.1.2 4000 typ host\r\n\
         a=sendrecv\r\n",
        caller_creds.ufrag, caller_creds.pass
    );
    banner("offer from the caller, as the SIP proxy passes it on (NG offer, ICE=force)");
    print!("{}", indent(&offer));
    let to_b = r.offer(CALL, "alice", &offer, json!({"ICE": "force"}));
    banner("offer as rewritten for the callee: relay address and ports, caller's ICE removed");
    print!("{}", indent(&to_b));
    let relay_b = media_addr(&to_b);

    let answer = "v=0\r\no=bob 2 2 IN IP4 10.1.2.2\r\ns=-\r\nc=IN IP4 10.1.2.2\r\nt=0 0\r\n\
                  m=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    let to_a = r.answer(CALL, "alice", "bob", answer, json!({}));
    banner("answer as rewritten for the caller: the relay is an ICE-lite agent with one candidate");
    print!("{}", indent(&to_a));
    let relay_a = media_addr(&to_a);
    let relay_creds = IceCreds {
        ufrag: attr(&to_a, "ice-ufrag").to_owned(),
        pass: attr(&to_a, "ice-pwd").to_owned(),
    };
    let remote: Vec<SocketAddr> = candidates(&to_a).into_iter().map(|c| c.0).collect();

    banner("ICE: the caller's agent (controlling) checks the relay's candidate");
    let t0 = Instant::now();
    let checked =
        r.t.caller
            .ns
            .run(move || -> Result<relay_tests::ice::Checked> {
                let local: SocketAddr = CALLER.parse()?;
                let sock = UdpSocket::bind(local)?;
                Ok(check(
                    sock,
                    local,
                    caller_creds,
                    relay_creds,
                    &remote,
                    true,
                    Duration::from_secs(10),
                ))
            })??;
    let Some(nominated) = checked.nominated else {
        bail!("the caller's ICE agent nominated no pair within 10 s");
    };
    println!(
        "nominated {CALLER} -> {nominated} after {} ms (USERNAME, MESSAGE-INTEGRITY and FINGERPRINT checked by the relay)",
        t0.elapsed().as_millis()
    );
    let q = r.query(CALL);
    for tag in ["alice", "bob"] {
        let s = &q["tags"][tag]["medias"][0]["streams"][0];
        println!(
            "  leg {tag:<5}: relay {}:{}  peer {}  ICE {}",
            s["local endpoint"]["address"].as_str().unwrap_or("?"),
            s["local endpoint"]["port"],
            s["endpoint"]["address"]
                .as_str()
                .map_or("(not yet latched)".to_owned(), |a| format!(
                    "{a}:{}",
                    s["endpoint"]["port"]
                )),
            s["ICE"]
                .as_str()
                .or(q["tags"][tag]["ICE"].as_str())
                .unwrap_or("-"),
        );
    }

    banner(&format!(
        "media: {PPS} RTP packets/s each way for {SECONDS} s; packets counted by XDP per stream"
    ));
    let callee = r.t.callee.ns.run(|| UdpSocket::bind(CALLEE))??;
    callee.set_read_timeout(Some(Duration::from_millis(200)))?;
    let caller = checked.sock;
    caller.set_read_timeout(Some(Duration::from_millis(200)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let mut workers = Vec::new();
    for (sock, to, got) in [
        (caller, relay_a, Arc::clone(&received[0])),
        (callee, relay_b, Arc::clone(&received[1])),
    ] {
        let stop = Arc::clone(&stop);
        workers.push(std::thread::spawn(move || -> Result<()> {
            let rx = sock.try_clone()?;
            let stop_rx = Arc::clone(&stop);
            let reader = std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop_rx.load(Ordering::Relaxed) {
                    // STUN consent checks arrive here too; only RTP is counted.
                    if let Ok((n, _)) = rx.recv_from(&mut buf)
                        && n > 0
                        && (128..=191).contains(&buf[0])
                    {
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let start = Instant::now();
            for i in 0..SECONDS * PPS {
                sock.send_to(&relay_tests::frames::rtp_payload(i as u16), to)?;
                let due = Duration::from_millis((i + 1) * 1000 / PPS);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            let _ = reader.join();
            Ok(())
        }));
    }
    println!(
        "\n{:>4}  {:>16} {:>16} {:>18}",
        "t(s)", "A->B via XDP", "B->A via XDP", "daemon-forwarded"
    );
    for t in 1..=SECONDS {
        std::thread::sleep(Duration::from_secs(1));
        let q = r.query(CALL);
        let (a, _) = packets(&q, "alice", 0);
        let (b, _) = packets(&q, "bob", 0);
        println!("{t:>4}  {a:>16} {b:>16} {:>18}", r.userspace_forwarded());
    }
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("media thread panicked"))??;
    }
    let sent = SECONDS * PPS;
    let (at_callee, at_caller) = (
        received[1].load(Ordering::Relaxed),
        received[0].load(Ordering::Relaxed),
    );
    println!(
        "\ncallee received {at_callee} of {sent} RTP packets; caller received {at_caller} of {sent}"
    );

    banner("relay-ctl show, then relay-ctl stats");
    for args in [vec!["show", CALL], vec!["stats"]] {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", r.t.relay.name))
            .arg(relay_ctl_bin()?)
            .args(&args)
            .args(if args[0] == "stats" {
                vec!["--pin-dir".to_owned(), r.pin_dir.display().to_string()]
            } else {
                Vec::new()
            })
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    r.ng(json!({"command": "delete", "call-id": CALL}));
    if at_callee + 5 < sent || at_caller + 5 < sent {
        bail!("media was lost: callee {at_callee}, caller {at_caller} of {sent}");
    }
    Ok(())
}
