//! Kamailio drives the relay as it would drive rtpengine (issue 15): Debian's Kamailio 5.6 with
//! its rtpengine module, configured with the everyday flags (`replace-origin
//! replace-session-connection ICE=remove RTP/AVP SIP-source-address label=... via-branch=...
//! codec-strip=PCMA`), runs in the relay namespace of a topology; sipp is the caller (caller
//! namespace) and the callee(s) (callee namespace). The SDP sipp receives is read from its message
//! trace; RTP goes both ways between the test's own sockets, whose ports the scenarios announce.
//!
//! - `everyday_flags_call`: one callee (183 then 200 with SDP), media both ways, BYE deletes.
//! - `forked_invite`: Kamailio forks to two callees; one answers 183 and is cancelled, the other
//!   answers 183 then 200; via-branch=auto-next gives each branch its own Via branch. Media goes
//!   between the caller and the fork that answered.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use relay_tests::{
    daemon::ng_call,
    kamailio::{self, SippRun, Workdir, relay_port},
    netns::{Bpffs, Netns},
    topology::{RELAY_SERVICE, Topology},
};
use serde_json::{Value, json};

const SIP_PORT: u16 = 5060;
const EVERYDAY: &str =
    "replace-origin replace-session-connection ICE=remove RTP/AVP SIP-source-address";

/// Whether the test can run here; under CI=true a missing prerequisite fails it.
fn can_run(test: &str) -> bool {
    if !relay_tests::privileged(test) {
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

fn bind(ns: &Netns, addr: &str) -> Result<UdpSocket> {
    let addr: SocketAddr = addr.parse()?;
    let s = ns.run(move || UdpSocket::bind(addr))??;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(s)
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// Sends RTP from `from` to `to` until `rx` receives one (at most 50 tries, 100 ms apart);
/// returns the source `rx` saw.
fn media_flows(from: &UdpSocket, to: SocketAddr, rx: &UdpSocket) -> Result<SocketAddr> {
    let mut buf = [0u8; 1500];
    for seq in 0..50u16 {
        from.send_to(&rtp(seq), to)?;
        if let Ok((n, src)) = rx.recv_from(&mut buf)
            && n == 172
            && buf[0] == 0x80
        {
            return Ok(src);
        }
    }
    bail!(
        "no RTP from {} via {to} arrived at {}",
        from.local_addr()?,
        rx.local_addr()?
    )
}

/// Waits (at most 10 s) until the daemon has one call whose tags include all of `who`.
fn wait_for_call(ns: &Netns, who: &[&str]) -> Result<serde_json::Map<String, Value>> {
    for _ in 0..100 {
        let list = ng_call(ns, json!({"command": "list"}))?;
        if let Some(id) = list
            .get("calls")
            .and_then(|c| c.get(0))
            .and_then(Value::as_str)
        {
            let q = ng_call(ns, json!({"command": "query", "call-id": id}))?;
            if who.iter().all(|w| relay_port(&q, w).is_some()) {
                return Ok(q);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the relay never had a call with tags {who:?}")
}

fn check_sdp(what: &str, sdp: &str, port: u16) {
    let want_c = format!("c=IN IP4 {RELAY_SERVICE}\r\n");
    assert!(sdp.contains(&want_c), "{what}: no {want_c:?} in\n{sdp}");
    assert!(
        sdp.contains(&format!("m=audio {port} RTP/AVP 0 101\r\n")),
        "{what}: m= line not the relay's port {port} with PCMA stripped:\n{sdp}"
    );
    assert!(
        sdp.lines()
            .any(|l| l.starts_with("o=") && l.ends_with(RELAY_SERVICE)),
        "{what}: o= not replaced:\n{sdp}"
    );
    assert!(!sdp.contains("a=rtpmap:8 "), "{what}: PCMA left:\n{sdp}");
    assert!(!sdp.contains("a=ice-"), "{what}: ICE left:\n{sdp}");
}

struct Call<'a> {
    fork: bool,
    offer_flags: &'a str,
    answer_flags: &'a str,
}

fn run_call(test: &str, c: &Call<'_>) -> Result<()> {
    let topo = Topology::new()?;
    let bpffs = Bpffs::new(&topo.prefix)?;
    let _daemon = topo.start_daemon(bpffs.path(), &[])?;
    let dir = Workdir::new(&topo.prefix)?;
    let caller_rtp = bind(&topo.caller.ns, "10.1.1.2:4000")?;
    let callee_rtp = bind(&topo.callee.ns, "10.1.2.2:5000")?;
    let _early_rtp = bind(&topo.callee.ns, "10.1.2.2:5002")?;
    let sip_addr = format!("{RELAY_SERVICE}:{SIP_PORT}");
    let fork = if c.fork {
        "append_branch(\"sip:early@10.1.2.2:5072\");"
    } else {
        ""
    };
    let port = SIP_PORT.to_string();
    let mut kam = kamailio::start_kamailio(
        &topo.relay,
        &dir,
        &[
            ("SIP_ADDR", RELAY_SERVICE),
            ("SIP_PORT", &port),
            ("NG_ADDR", relay_tests::daemon::NG),
            ("RTPENGINE_EXTRA", ""),
            ("CALLEE1", "sip:callee@10.1.2.2:5070"),
            ("FORK", fork),
            ("OFFER_FLAGS", c.offer_flags),
            ("ANSWER_FLAGS", c.answer_flags),
            ("DELETE_FLAGS", ""),
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    if !kam.running() {
        bail!("kamailio exited at start-up: {}", kam.stop());
    }
    let answer_ms = if c.fork { 1000 } else { 300 };
    let callee = SippRun {
        name: "callee",
        scenario: "uas.xml",
        local: "10.1.2.2",
        sip_port: 5070,
        media_port: 7000,
        rtp_port: 5000,
        pause_ms: answer_ms,
        remote: None,
        calls: 1,
    };
    let early = SippRun {
        name: "early",
        scenario: "uas_early.xml",
        local: "10.1.2.2",
        sip_port: 5072,
        media_port: 7100,
        rtp_port: 5002,
        pause_ms: 0,
        remote: None,
        calls: 1,
    };
    let caller = SippRun {
        name: "caller",
        scenario: "uac.xml",
        local: "10.1.1.2",
        sip_port: 5060,
        media_port: 7000,
        rtp_port: 4000,
        pause_ms: 5000,
        remote: Some(&sip_addr),
        calls: 1,
    };
    let mut callee_p = callee.start(&topo.callee.ns, &dir)?;
    let mut early_p = if c.fork {
        Some(early.start(&topo.callee.ns, &dir)?)
    } else {
        None
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut caller_p = caller.start(&topo.caller.ns, &dir)?;

    let q = wait_for_call(&topo.relay, &["caller", "callee"])?;
    // label=caller / label=callee are kept per participant and reported by query.
    for who in ["caller", "callee"] {
        let tags = q.get("tags").and_then(Value::as_object).context("tags")?;
        let (_, t) = tags.iter().find(|(k, _)| k.contains(who)).context("tag")?;
        assert_eq!(t.get("label"), Some(&json!(who)), "{test}: label of {who}");
    }
    // After the final answer (the callee's 200), media must go caller <-> callee.
    std::thread::sleep(Duration::from_millis(answer_ms + 700));
    let a_port = relay_port(&q, "caller").context("caller's relay port")?;
    let b_port = relay_port(&q, "callee").context("callee's relay port")?;
    let seen = media_flows(&caller_rtp, a_port, &callee_rtp)?;
    assert_eq!(
        seen, b_port,
        "{test}: callee got RTP from {seen}, not {b_port}"
    );
    let seen = media_flows(&callee_rtp, b_port, &caller_rtp)?;
    assert_eq!(
        seen, a_port,
        "{test}: caller got RTP from {seen}, not {a_port}"
    );

    let (st, err) = caller_p.wait(Duration::from_secs(30))?;
    assert!(st.success(), "{test}: sipp caller failed ({st}): {err}");
    let (st, err) = callee_p.wait(Duration::from_secs(10))?;
    assert!(st.success(), "{test}: sipp callee failed ({st}): {err}");
    if let Some(p) = early_p.as_mut() {
        let (st, err) = p.wait(Duration::from_secs(10))?;
        assert!(st.success(), "{test}: sipp early fork failed ({st}): {err}");
    }
    // The BYE's rtpengine_delete ended the call.
    let list = ng_call(&topo.relay, json!({"command": "list"}))?;
    assert_eq!(
        list.get("calls"),
        Some(&json!([])),
        "{test}: call left after BYE"
    );

    let to_caller = kamailio::received_sdps(&caller.messages(&dir), "SIP/2.0 200")?;
    assert_eq!(to_caller.len(), 1, "{test}: 200 OK SDPs {to_caller:?}");
    check_sdp("200 OK to the caller", &to_caller[0], a_port.port());
    for p in kamailio::received_sdps(&caller.messages(&dir), "SIP/2.0 183")? {
        assert!(
            p.contains(&format!("c=IN IP4 {RELAY_SERVICE}\r\n")),
            "183: {p}"
        );
        assert!(!p.contains("a=rtpmap:8 "), "183: {p}");
    }
    let to_callee = kamailio::received_sdps(&callee.messages(&dir), "INVITE")?;
    assert_eq!(to_callee.len(), 1, "{test}: INVITE SDPs {to_callee:?}");
    check_sdp("INVITE to the callee", &to_callee[0], b_port.port());
    if c.fork {
        let to_early = kamailio::received_sdps(&early.messages(&dir), "INVITE")?;
        assert_eq!(to_early.len(), 1, "{test}: INVITE SDPs to the early fork");
        assert!(!to_early[0].contains("a=rtpmap:8 "), "{}", to_early[0]);
    }
    let log = kam.stop();
    assert!(
        !log.contains("ERROR"),
        "{test}: Kamailio logged errors:\n{log}"
    );
    Ok(())
}

#[test]
fn everyday_flags_call() {
    let test = "everyday_flags_call";
    if !can_run(test) {
        return;
    }
    run_call(
        test,
        &Call {
            fork: false,
            offer_flags: &format!("{EVERYDAY} label=caller via-branch=auto codec-strip=PCMA"),
            answer_flags: &format!("{EVERYDAY} label=callee via-branch=auto"),
        },
    )
    .unwrap();
}

#[test]
fn forked_invite() {
    let test = "forked_invite";
    if !can_run(test) {
        return;
    }
    run_call(
        test,
        &Call {
            fork: true,
            offer_flags: &format!("{EVERYDAY} label=caller via-branch=auto-next codec-strip=PCMA"),
            answer_flags: &format!("{EVERYDAY} label=callee via-branch=auto-next"),
        },
    )
    .unwrap();
}
