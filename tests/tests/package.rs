//! The Debian package as an operator meets it: contents (`dpkg-deb -c`), `dpkg -i`,
//! `systemd-analyze verify` of the unit, the installed daemon run with the installed config
//! exactly as the unit's ExecStartPre/ExecStart would (as the xdp-relay user with only CAP_BPF,
//! CAP_NET_ADMIN and CAP_PERFMON, via setpriv: this machine's PID 1 is not systemd), a call with
//! RTP both ways, a reload, an upgrade to a later version while the call runs (the new daemon
//! takes over the pinned program and the state file), and a purge that leaves nothing.
//!
//! `cargo xtask test` builds the two packages and names them in XDP_RELAY_DEB and
//! XDP_RELAY_DEB_UPGRADE.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use relay_tests::{
    call::{burst, packets, rtp, sdp},
    daemon::ng_call,
    netns::{Bpffs, Netns},
    service::{self, Service, Unit},
    topology::{RELAY_SERVICE, Topology, media_addr},
};
use serde_json::json;

const UNIT: &str = "/lib/systemd/system/xdp-relay.service";
const CONFIG: &str = "/etc/xdp-relay/relay.toml";
const STATE_DIR: &str = "/var/lib/xdp-relay";
const METRICS: &str = "127.0.0.1:9109";

/// The two packages, or None (skip) when not under CI and not built; a failure under CI.
fn debs() -> Option<(PathBuf, PathBuf)> {
    if !relay_tests::privileged("debian_package_installs_runs_a_call_upgrades_and_purges") {
        return None;
    }
    let get = |k: &str| std::env::var_os(k).map(PathBuf::from);
    match (get("XDP_RELAY_DEB"), get("XDP_RELAY_DEB_UPGRADE")) {
        (Some(a), Some(b)) => Some((a, b)),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "CI=true and XDP_RELAY_DEB / XDP_RELAY_DEB_UPGRADE unset: run `cargo xtask test`, which builds the packages"
        ),
        _ => {
            eprintln!(
                "SKIPPED debian_package_installs_runs_a_call_upgrades_and_purges: XDP_RELAY_DEB unset (`cargo xtask test` builds the packages)"
            );
            None
        }
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    relay_tests::run(cmd, args).unwrap_or_else(|e| panic!("{e:#}"))
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "xdp-relay"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
}

/// Purges the package on every exit path (it is this test's own).
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if installed() {
            let _ = relay_tests::run("dpkg", &["--purge", "xdp-relay"]);
        }
    }
}

fn metrics(ns: &Netns) -> String {
    ns.run(|| {
        let mut s = TcpStream::connect(METRICS).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

fn xdp_attached(ns: &Netns, dev: &str) -> bool {
    ns.ip(&["link", "show", "dev", dev])
        .unwrap()
        .contains("xdp")
}

/// Polls `cond` for up to 5 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(5), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn debian_package_installs_runs_a_call_upgrades_and_purges() {
    let Some((deb, upgrade)) = debs() else {
        return;
    };
    let t0 = Instant::now();
    // A package left by an aborted run would change what this test sees.
    if installed() {
        sh("dpkg", &["--purge", "xdp-relay"]);
    }

    // Contents.
    let listing = sh("dpkg-deb", &["-c", deb.to_str().unwrap()]);
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for want in [
        "./usr/bin/relay-ctl",
        "./lib/systemd/system/xdp-relay.service",
        "./etc/xdp-relay/relay.toml",
        "./usr/share/man/man1/relay-ctl.1.gz",
        "./usr/share/man/man1/relay-ctl-daemon.1.gz",
        "./usr/share/man/man1/relay-ctl-top.1.gz",
        "./usr/share/man/man5/xdp-relay.toml.5.gz",
        "./usr/share/bash-completion/completions/relay-ctl",
        "./usr/share/zsh/vendor-completions/_relay-ctl",
        "./usr/share/fish/vendor_completions.d/relay-ctl.fish",
        "./usr/share/xdp-relay/grafana/xdp-relay.json",
        "./usr/share/doc/xdp-relay/copyright",
    ] {
        assert!(
            paths.contains(&want),
            "{want} not in the package:\n{listing}"
        );
    }
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "files not owned by root:\n{listing}"
    );
    assert!(
        !paths.iter().any(|p| p.contains("relay-ctl-generate")),
        "hidden subcommands get no man page"
    );
    assert_eq!(
        sh("dpkg-deb", &["-I", deb.to_str().unwrap(), "conffiles"]).trim(),
        CONFIG
    );
    let version = sh("dpkg-deb", &["-f", deb.to_str().unwrap(), "Version"])
        .trim()
        .to_owned();
    let new_version = sh("dpkg-deb", &["-f", upgrade.to_str().unwrap(), "Version"])
        .trim()
        .to_owned();

    // Install.
    let _purge = Purge;
    sh("dpkg", &["-i", deb.to_str().unwrap()]);
    let pw = sh("getent", &["passwd", "xdp-relay"]);
    let uid: u32 = pw.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000 && uid != 0, "a system user: {pw}");
    assert!(pw.trim_end().ends_with(":/usr/sbin/nologin"), "{pw}");
    let st = std::fs::metadata(STATE_DIR).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(st.uid(), uid, "{STATE_DIR} belongs to the service user");
    let man = sh(
        "sh",
        &["-c", "zcat /usr/share/man/man1/relay-ctl-daemon.1.gz"],
    );
    assert!(
        man.contains("port\\-min") && !man.contains("reply\\-timeout"),
        "{man}"
    );

    // The unit as systemd reads it. systemd-analyze verify works without systemd as PID 1.
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .expect("systemd-analyze (the systemd package; cargo xtask installs it)");
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !verify_err.contains("xdp-relay.service"),
        "systemd-analyze verify: {verify_err}"
    );
    let unit = Unit::parse(&std::fs::read_to_string(UNIT).unwrap());
    assert_eq!(unit.get("Type"), Some("notify"));
    assert_eq!(unit.get("User"), Some("xdp-relay"));
    assert_eq!(
        unit.get("AmbientCapabilities"),
        Some("CAP_BPF CAP_NET_ADMIN CAP_PERFMON")
    );

    // The operator's configuration: the test topology's address and devices, and a pin
    // directory on the test's own bpffs instead of /sys/fs/bpf.
    let t = Topology::new().unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let pin_dir = bpffs.path().join("xdp-relay");
    let devs: Vec<String> = t
        .relay_devices()
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect();
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(CONFIG)
        .unwrap();
    write!(
        conf,
        "\n# install test\nlisten = [\"pub/{RELAY_SERVICE}\"]\ninterface = [{}]\nport-min = 31000\nport-max = 31100\n# the test topology's host ends are NIC-like (GRO on): XDP, as on a NIC\ndatapath = \"xdp\"\nmetrics-listen = \"{METRICS}\"\npin-dir = \"{}\"\n",
        devs.join(", "),
        pin_dir.display()
    )
    .unwrap();
    drop(conf);
    let installed_at = t0.elapsed();

    let mut d = Service::start(&unit, &t.relay, &t.prefix).unwrap();
    // Only the unit's capabilities, as the unit's user.
    assert_eq!(service::uid(d.pid).unwrap(), uid);
    let caps = service::capabilities(d.pid).unwrap();
    let want = (1u64 << 39) | (1 << 38) | (1 << 12); // CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN
    for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(caps[set], want, "{set} {caps:?}");
    }
    for dev in t.relay_devices() {
        assert!(xdp_attached(&t.relay, dev), "XDP on {dev}");
    }

    // A call, media both ways through XDP.
    let caller = relay_tests::call::bind(&t.caller.ns, "10.1.1.2:4000");
    let callee = relay_tests::call::bind(&t.callee.ns, "10.1.2.2:5000");
    let ng = |req: serde_json::Value| ng_call(&t.relay, req).unwrap();
    let offer = ng(
        json!({"command": "offer", "call-id": "pkg-call", "from-tag": "a", "sdp": sdp("10.1.1.2", 4000, &[])}),
    );
    let relay_b = media_addr(offer["sdp"].as_str().unwrap());
    let answer = ng(
        json!({"command": "answer", "call-id": "pkg-call", "from-tag": "a", "to-tag": "b", "sdp": sdp("10.1.2.2", 5000, &[])}),
    );
    let relay_a = media_addr(answer["sdp"].as_str().unwrap());
    burst(&caller, relay_a, &callee, relay_b, 20, rtp(0));
    burst(&callee, relay_b, &caller, relay_a, 20, rtp(100));
    let q = || ng(json!({"command": "query", "call-id": "pkg-call"}));
    let fast_before = packets(&q(), "a", 0).0 + packets(&q(), "b", 0).0;
    assert!(fast_before > 0, "media went through XDP: {:#?}", q());
    let m = metrics(&t.relay);
    assert!(m.lines().any(|l| l == "relay_sessions 1"), "{m}");
    // Write-ahead: the call is in the journal before its reply.
    eventually("call journaled", || {
        std::fs::read_to_string(format!("{STATE_DIR}/sessions.json.journal"))
            .is_ok_and(|s| s.contains("pkg-call"))
    });

    // Reload (systemctl reload = SIGHUP): a broken file is refused and the running
    // configuration stays; a good one applies the timeout and names what needs a restart.
    let good = std::fs::read_to_string(CONFIG).unwrap();
    std::fs::write(CONFIG, format!("{good}timeout = \"soon\"\n")).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_ready(Duration::from_secs(5)).unwrap();
    eventually("reload refused", || d.log_text().contains("reload refused"));
    let lines = good.lines().count() + 1;
    assert!(
        d.log_text()
            .contains(&format!("{CONFIG} line {lines}, key timeout")),
        "{}",
        d.log_text()
    );
    std::fs::write(
        CONFIG,
        good.replace("port-max = 31100", "port-max = 31200") + "timeout = 120\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_ready(Duration::from_secs(5)).unwrap();
    eventually("reload applied", || {
        d.log_text().contains("applied=timeout")
    });
    assert!(d.log_text().contains("port-max"), "{}", d.log_text());
    assert_eq!(ng(json!({"command": "ping"}))["result"], "pong");
    std::fs::write(CONFIG, &good).unwrap();

    // Upgrade while the call runs: dpkg -i of the later version. Without systemd the
    // postinst's try-restart is a no-op; the test does what it would do: stop, start.
    let t_upgrade = Instant::now();
    sh("dpkg", &["-i", upgrade.to_str().unwrap()]);
    assert_eq!(
        sh("dpkg-query", &["-W", "-f=${Version}", "xdp-relay"]),
        new_version
    );
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        good,
        "the operator's configuration survives the upgrade"
    );
    assert!(d.stop().unwrap(), "the old daemon stops cleanly");
    // No daemon: the pinned program forwards on its own.
    burst(&caller, relay_a, &callee, relay_b, 10, rtp(200));
    let mut d = Service::start(&unit, &t.relay, &t.prefix).unwrap();
    let restored = q();
    assert_eq!(restored["result"], "ok", "{restored:?}");
    burst(&caller, relay_a, &callee, relay_b, 20, rtp(300));
    burst(&callee, relay_b, &caller, relay_a, 20, rtp(400));
    let after = q();
    let fast_after = packets(&after, "a", 0).0 + packets(&after, "b", 0).0;
    assert!(
        fast_after >= fast_before + 40,
        "the new daemon's fast path forwards the call: {fast_before} -> {fast_after}"
    );
    assert!(
        d.log_text().contains("state restored calls=1"),
        "{}",
        d.log_text()
    );
    let upgrade_took = t_upgrade.elapsed();
    assert_ne!(version, new_version);

    // Purge: stop (as prerm's systemctl stop would), then nothing is left.
    let files = sh("dpkg", &["-L", "xdp-relay"]);
    assert!(d.stop().unwrap());
    drop(d);
    sh("dpkg", &["--purge", "xdp-relay"]);
    for f in files.lines().map(Path::new) {
        if !f.is_dir() {
            assert!(!service::exists(f), "{} left after purge", f.display());
        }
    }
    for p in [
        CONFIG,
        "/etc/xdp-relay",
        STATE_DIR,
        "/usr/bin/relay-ctl",
        UNIT,
    ] {
        assert!(!service::exists(Path::new(p)), "{p} left after purge");
    }
    assert!(!pin_dir.exists(), "pins left after purge");
    for dev in t.relay_devices() {
        assert!(!xdp_attached(&t.relay, dev), "XDP still attached to {dev}");
    }
    assert!(relay_tests::run("getent", &["passwd", "xdp-relay"]).is_err());
    assert!(relay_tests::run("getent", &["group", "xdp-relay"]).is_err());
    eprintln!(
        "package test: install {:.1}s, upgrade with a running call {:.1}s, all {:.1}s",
        installed_at.as_secs_f64(),
        upgrade_took.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    drop(bpffs);
}
