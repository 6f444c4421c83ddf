//! The datapath choice as an operator meets it: a device or mode the daemon cannot run on is
//! refused at start-up with the device named and the fix, before anything is attached; the
//! chosen hook per device shows in `statistics`, `relay-ctl stats` and the metrics; a device
//! that disappears while the daemon runs is reported gone and nothing else changes.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use relay_tests::{
    call::{Relay, bind, burst, rtp, sdp},
    daemon::relay_ctl_bin,
    netns::{Bpffs, Netns, veth},
    topology::{RELAY_SERVICE, Wire, media_addr},
};
use serde_json::{Value, json};

/// `relay-ctl ARGS` in `ns`: (success, stdout + stderr).
fn relay_ctl(ns: &Netns, args: &[&str]) -> (bool, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg(relay_ctl_bin().unwrap())
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn bad_devices_and_modes_are_refused_before_anything_is_attached() {
    if !relay_tests::privileged("bad_devices_and_modes_are_refused_before_anything_is_attached") {
        return;
    }
    let p = relay_tests::unique_prefix();
    let bpffs = Bpffs::new(&p).unwrap();
    let pin_dir = bpffs.path().join("relay");
    let (host, relay) = (
        Netns::new(&format!("{p}-h")).unwrap(),
        Netns::new(&format!("{p}-r")).unwrap(),
    );
    let vr = format!("{p}r");
    veth(
        &host,
        &format!("{p}h"),
        "10.204.0.2/24",
        &relay,
        &vr,
        "10.204.0.1/24",
    )
    .unwrap();
    let pins = pin_dir.to_str().unwrap();
    let state = std::env::temp_dir().join(format!("{p}-dp-state.json"));
    let state = format!("--state-file={}", state.display());
    let base = [
        "daemon",
        "--listen=pub/10.204.0.1",
        "--pin-dir",
        pins,
        &state,
        "--ng-listen=127.0.0.1:2224",
    ];
    let nosuch = format!("--interface={p}zz");
    let bad_mode = format!("--interface={vr}:fast");
    let loopback = "--interface=lo".to_owned();
    let bad_default = format!("--interface={vr}");
    for (extra, want) in [
        (
            vec![nosuch.as_str()],
            vec![format!("{p}zz"), "ip link".into()],
        ),
        (
            vec![bad_mode.as_str()],
            vec![format!("{vr}:fast"), "auto, xdp, tc".into()],
        ),
        (
            vec![loopback.as_str()],
            vec!["\"lo\"".into(), "not an Ethernet device".into()],
        ),
        (
            vec![bad_default.as_str(), "--datapath=fastest"],
            vec!["datapath = \"fastest\"".into(), "auto, xdp, tc".into()],
        ),
        // One good device then a bad one: the good one must not have been attached either.
        (
            vec![bad_default.as_str(), nosuch.as_str()],
            vec![format!("{p}zz")],
        ),
    ] {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        let (ok, text) = relay_ctl(&relay, &args);
        assert!(!ok, "{args:?} started: {text}");
        for w in &want {
            assert!(text.contains(w.as_str()), "{args:?}: {w:?} not in {text}");
        }
        assert!(
            relay_ctl::pins::pinned_links(&pin_dir).is_empty(),
            "{args:?} attached something before failing"
        );
    }
}

fn http_get(ns: &Netns, addr: &'static str) -> String {
    ns.run(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

/// Container defaults, one veth per host (`auto` runs TC on each): the hook shows everywhere
/// an operator looks; the attacker's link is then deleted under the running daemon, which
/// reports it gone while the call between the other two hosts keeps its fast path.
#[test]
fn datapath_is_reported_and_a_vanished_device_is_survived() {
    if !relay_tests::privileged("datapath_is_reported_and_a_vanished_device_is_survived") {
        return;
    }
    let r = Relay::start_on(Wire::ContainerSplit, &["--metrics-listen=127.0.0.1:9104"]).unwrap();
    let t = &r.t;
    let st = r.ng(json!({"command": "statistics"}));
    let paths = st["statistics"]["datapath"].as_array().unwrap();
    assert_eq!(paths.len(), 3, "{st:#?}");
    assert!(paths.iter().all(|d| d["datapath"] == "tc"), "{st:#?}");
    let metrics = http_get(&t.relay, "127.0.0.1:9104");
    for d in t.relay_devices() {
        let line = format!("relay_datapath{{device=\"{d}\",datapath=\"tc\"}} 1");
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }
    let pins = r.pin_dir.to_str().unwrap().to_owned();
    let (ok, text) = relay_ctl(&t.relay, &["stats", "--pin-dir", &pins]);
    assert!(ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(t.caller.relay_dev.as_str()) && l.contains(" tc ")),
        "{text}"
    );
    let (ok, json_text) = relay_ctl(&t.relay, &["stats", "--json", "--pin-dir", &pins]);
    assert!(ok, "{json_text}");
    let v: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(
        v["datapath"].as_array().unwrap().len(),
        t.relay_devices().len(),
        "{v:#}"
    );

    let caller = bind(&t.caller.ns, "10.1.1.2:4000");
    let callee = bind(&t.callee.ns, "10.1.2.2:5000");
    let to_b = r.offer("dp", "A", &sdp("10.1.1.2", 4000, &[]), json!({}));
    let relay_b = media_addr(&to_b);
    let to_a = r.answer("dp", "A", "B", &sdp("10.1.2.2", 5000, &[]), json!({}));
    let relay_a = media_addr(&to_a);
    assert_eq!(relay_a.ip().to_string(), RELAY_SERVICE);
    burst(&caller, relay_a, &callee, relay_b, 5, rtp(0));
    burst(&callee, relay_b, &caller, relay_a, 5, rtp(0));
    r.assert_wire();

    t.relay.ip(&["link", "del", &t.attacker.relay_dev]).unwrap();
    let gone = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let st = r.ng(json!({"command": "statistics"}));
        st["statistics"]["datapath"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device"] == t.attacker.relay_dev.as_str() && d["state"] == "gone")
    });
    assert!(gone, "the vanished device is reported gone");
    let metrics = http_get(&t.relay, "127.0.0.1:9104");
    let line = format!(
        "relay_datapath{{device=\"{}\",datapath=\"tc\"}} 0",
        t.attacker.relay_dev
    );
    assert!(metrics.contains(&line), "{line} not in {metrics}");
    let f0 = r.fast_forwarded();
    burst(&caller, relay_a, &callee, relay_b, 20, rtp(100));
    burst(&callee, relay_b, &caller, relay_a, 20, rtp(100));
    assert!(r.fast_forwarded() >= f0 + 40, "the call kept its fast path");
    let q = r.query("dp");
    let paths = q["datapath"].as_array().unwrap();
    assert_eq!(paths.len(), 3, "{q:#?}");
}
