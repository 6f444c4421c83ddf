//! Operating the daemon: a broken configuration file at start names its line and key and
//! changes nothing; SIGHUP refuses a broken file and keeps running, applies a good one and
//! names what needs a restart; `relay-ctl top` prints a frame with `--once` and runs live under
//! a pseudo-terminal (`script`), quitting on `q`.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use relay_tests::{
    call::{Relay, bind, burst, rtp, sdp},
    daemon::{ng_call, relay_ctl_bin},
    netns::{Bpffs, Netns, veth},
    topology::media_addr,
};
use serde_json::json;

/// A relay namespace with one veth to a peer namespace and a private bpffs.
struct Host {
    _peer: Netns,
    relay: Netns,
    dev: String,
    bpffs: Bpffs,
    prefix: String,
}

fn host(net: u8) -> Host {
    let p = relay_tests::unique_prefix();
    let bpffs = Bpffs::new(&p).unwrap();
    let peer = Netns::new(&format!("{p}-p")).unwrap();
    let relay = Netns::new(&format!("{p}-r")).unwrap();
    let dev = format!("{p}r");
    veth(
        &peer,
        &format!("{p}p"),
        &format!("10.{net}.0.2/24"),
        &relay,
        &dev,
        &format!("10.{net}.0.1/24"),
    )
    .unwrap();
    Host {
        _peer: peer,
        relay,
        dev,
        bpffs,
        prefix: p,
    }
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let p = std::env::temp_dir().join(name);
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn daemon(ns: &Netns, config: &Path, log: &Path) -> Child {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg(relay_ctl_bin().unwrap())
        .arg("daemon")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_exit(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// SIGTERM, wait, and kill if it lingers.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        if wait_exit(&mut self.0, Duration::from_secs(10)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn bad_config_at_start_names_line_and_key_and_changes_nothing() {
    if !relay_tests::privileged("bad_config_at_start_names_line_and_key_and_changes_nothing") {
        return;
    }
    let h = host(205);
    let pin_dir = h.bpffs.path().join("relay");
    let state = std::env::temp_dir().join(format!("{}-state.json", h.prefix));
    let head = format!(
        "listen = [\"pub/10.205.0.1\"]\npin-dir = \"{}\"\nstate-file = \"{}\"\n",
        pin_dir.display(),
        state.display()
    );
    let cases = [
        (
            format!("{head}interface = [\"{}\"]\nport-min = 30001\n", h.dev),
            5,
            "port-min",
            "port range",
        ),
        (
            format!("{head}interface = [\"{}\"]\ntimout = 5\n", h.dev),
            5,
            "timout",
            "unknown field",
        ),
        (
            format!("{head}interface = [\"{}\", \"{}nope\"]\n", h.dev, h.prefix),
            4,
            "interface",
            "no such network device",
        ),
        (
            format!(
                "{head}interface = [\"{}\"]\nmetrics-listen = \"localhost\"\n",
                h.dev
            ),
            5,
            "metrics-listen",
            "invalid",
        ),
    ];
    for (i, (text, line, key, why)) in cases.iter().enumerate() {
        let f = TempFile::new(&format!("{}-bad{i}.toml", h.prefix), text);
        let log = TempFile::new(&format!("{}-bad{i}.log", h.prefix), "");
        let mut d = daemon(&h.relay, &f.0, &log.0);
        let st = wait_exit(&mut d, Duration::from_secs(10)).expect("the daemon refuses to start");
        let err = std::fs::read_to_string(&log.0).unwrap();
        assert_eq!(st.code(), Some(1), "{err}");
        let at = format!("{} line {line}, key {key}", f.0.display());
        assert!(
            err.contains(why) && err.contains(&at),
            "case {i}: wanted {at:?} and {why:?} in {err:?}"
        );
        if *key == "interface" {
            assert!(err.contains(&format!("{}nope", h.prefix)), "{err}");
        }
        assert!(!pin_dir.exists(), "case {i}: pins created");
        assert!(!state.exists(), "case {i}: state written");
        assert!(
            !h.relay
                .ip(&["link", "show", "dev", &h.dev])
                .unwrap()
                .contains("xdp"),
            "case {i}: XDP attached"
        );
    }
}

#[test]
fn reload_refuses_a_bad_file_and_applies_a_good_one() {
    if !relay_tests::privileged("reload_refuses_a_bad_file_and_applies_a_good_one") {
        return;
    }
    let h = host(206);
    let state = std::env::temp_dir().join(format!("{}-state.json", h.prefix));
    let good = format!(
        "listen = [\"pub/10.206.0.1\"]\ninterface = [\"{}\"]\npin-dir = \"{}\"\nstate-file = \"{}\"\ndetach = true\n",
        h.dev,
        h.bpffs.path().join("relay").display(),
        state.display()
    );
    let f = TempFile::new(&format!("{}-reload.toml", h.prefix), &good);
    let log = TempFile::new(&format!("{}-reload.log", h.prefix), "");
    let _state = TempFile(state);
    let d = Stop(daemon(&h.relay, &f.0, &log.0));
    let ping = || ng_call(&h.relay, json!({"command": "ping"}));
    let t0 = Instant::now();
    while ping().is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{}",
            std::fs::read_to_string(&log.0).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let hup_and_wait = |needle: &str| {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(d.0.id() as i32, libc::SIGHUP) };
        let t0 = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log.0).unwrap();
            if text.contains(needle) {
                return text;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no {needle:?} in {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    std::fs::write(&f.0, format!("{good}ice = \"sometimes\"\n")).unwrap();
    let text = hup_and_wait("reload refused");
    assert!(
        text.contains(&format!("{} line 6, key ice", f.0.display())),
        "{text}"
    );
    assert!(ping().is_ok(), "still serving after a refused reload");

    std::fs::write(
        &f.0,
        format!("{good}timeout = 5\nlog-level = \"debug\"\nport-min = 20000\n"),
    )
    .unwrap();
    let text = hup_and_wait("configuration reloaded applied");
    assert!(text.contains("applied=timeout, log-level"), "{text}");
    assert!(text.contains("keys=port-min"), "{text}");
    // The new log level is live: NG requests are logged at debug level now.
    assert!(ping().is_ok());
}

/// A call with media flowing through XDP for `top` to show.
fn call(r: &Relay) -> (std::net::UdpSocket, std::net::SocketAddr) {
    let caller = bind(&r.t.caller.ns, "10.1.1.2:4000");
    let callee = bind(&r.t.callee.ns, "10.1.2.2:5000");
    let offer = r.offer("call-top", "a", &sdp("10.1.1.2", 4000, &[]), json!({}));
    let answer = r.answer("call-top", "a", "b", &sdp("10.1.2.2", 5000, &[]), json!({}));
    let (relay_a, relay_b) = (media_addr(&answer), media_addr(&offer));
    burst(&caller, relay_a, &callee, relay_b, 5, rtp(0));
    burst(&callee, relay_b, &caller, relay_a, 5, rtp(50));
    (caller, relay_a)
}

/// Sends RTP from `tx` to `to` for `secs`, 100 packets a second, on a thread.
fn stream_for(
    tx: std::net::UdpSocket,
    to: std::net::SocketAddr,
    secs: f64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut i = 1000u16;
        while t0.elapsed().as_secs_f64() < secs {
            let _ = tx.send_to(&relay_tests::frames::rtp_payload(i), to);
            i = i.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

#[test]
fn top_prints_a_frame_and_runs_under_a_pty() {
    if !relay_tests::privileged("top_prints_a_frame_and_runs_under_a_pty") {
        return;
    }
    let r = Relay::start(&[]).unwrap();
    let (caller, relay_a) = call(&r);
    let bin = relay_ctl_bin().unwrap();
    let ns = format!("--net=/run/netns/{}", r.t.relay.name);

    // --once: two samples a second apart while media flows; the caller's stream has a rate.
    let sender = stream_for(caller.try_clone().unwrap(), relay_a, 1.8);
    let out = Command::new("nsenter")
        .arg(&ns)
        .arg(&bin)
        .args(["top", "--once"])
        .output()
        .unwrap();
    sender.join().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("relay-ctl top  calls 1  streams "),
        "{text}"
    );
    let rates: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("call-top"))
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            // CALL TAG LOCAL PEER FAST/s DAEMON/s PACKETS, inside the table's borders.
            let n = cells.len();
            cells[n - 4].parse().unwrap_or_else(|_| panic!("{l:?}"))
        })
        .collect();
    assert!(rates.len() >= 2, "one row per stream: {text}");
    assert!(
        rates.iter().any(|r| *r > 20.0),
        "a fast-path rate near 100/s: {text}"
    );
    assert!(text.contains("drop_source_mismatch"), "{text}");

    // Live, under a pseudo-terminal: draws the call, quits on q, restores the terminal.
    let sender = stream_for(caller, relay_a, 3.0);
    let cmd = format!(
        "stty cols 132 rows 30; exec nsenter {ns} {} top --interval 0.5",
        bin.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    stdin.write_all(b"q").unwrap();
    stdin.flush().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(5));
    if status.is_none() {
        let _ = child.kill();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    sender.join().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.is_some_and(|s| s.success()),
        "top did not quit on q: {screen:?}"
    );
    for want in [
        "relay-ctl top",
        "call-top",
        "FAST/s",
        "drop_source_mismatch",
    ] {
        assert!(screen.contains(want), "{want:?} not on screen: {screen:?}");
    }
    assert!(
        screen.contains("\x1b[?1049h") && screen.contains("\x1b[?1049l"),
        "alternate screen entered and left"
    );
}

/// `setpriv` as an unprivileged user with `caps` (setpriv's syntax: `+bpf,+net_admin`) in the
/// bounding, inheritable and ambient sets, inside `ns`.
fn as_nobody(ns: &Netns, caps: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", ns.name))
        .args([
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ])
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps=-all,{caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .args(["--no-new-privs", "--"])
        .arg(relay_ctl_bin().unwrap());
    c
}

#[test]
fn daemon_runs_a_call_with_only_bpf_net_admin_and_perfmon() {
    if !relay_tests::privileged("daemon_runs_a_call_with_only_bpf_net_admin_and_perfmon") {
        return;
    }
    let t = relay_tests::topology::Topology::new().unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let pin_dir = bpffs.path().join("relay");
    // The state directory the unit's StateDirectory= would give the user.
    let state_dir = std::env::temp_dir().join(format!("{}-state", t.prefix));
    std::fs::create_dir_all(&state_dir).unwrap();
    relay_tests::run("chown", &["nobody:nogroup", state_dir.to_str().unwrap()]).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(state_dir.clone());
    // What ExecStartPre does as root.
    let out = Command::new(relay_ctl_bin().unwrap())
        .args([
            "prepare",
            "--config",
            "/nonexistent.toml",
            "--user",
            "nobody",
            "--pin-dir",
        ])
        .arg(&pin_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args: Vec<String> = t.daemon_args();
    args.extend([
        "--pin-dir".into(),
        pin_dir.display().to_string(),
        "--state-file".into(),
        state_dir.join("sessions.json").display().to_string(),
        "--detach".into(),
    ]);

    // Without CAP_PERFMON the verifier refuses the program, and nothing is attached.
    let out = as_nobody(&t.relay, "+bpf,+net_admin")
        .arg("daemon")
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("loading the XDP program"), "{err}");
    for dev in t.relay_devices() {
        assert!(
            !t.relay
                .ip(&["link", "show", "dev", dev])
                .unwrap()
                .contains("xdp")
        );
    }

    let log = TempFile::new(&format!("{}-caps.log", t.prefix), "");
    let child = as_nobody(&t.relay, "+bpf,+net_admin,+perfmon")
        .arg("daemon")
        .args(&args)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log.0).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let d = Stop(child);
    let t0 = Instant::now();
    while ng_call(&t.relay, json!({"command": "ping"})).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{}",
            std::fs::read_to_string(&log.0).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let caps = relay_tests::service::capabilities(pid).unwrap();
    assert_eq!(
        caps["CapEff"],
        (1 << 39) | (1 << 38) | (1 << 12),
        "{caps:?}"
    );
    assert_eq!(relay_tests::service::uid(pid).unwrap(), 65534);

    let caller = bind(&t.caller.ns, "10.1.1.2:4000");
    let callee = bind(&t.callee.ns, "10.1.2.2:5000");
    let ng = |r: serde_json::Value| ng_call(&t.relay, r).unwrap();
    let offer = ng(
        json!({"command": "offer", "call-id": "caps", "from-tag": "a", "sdp": sdp("10.1.1.2", 4000, &[])}),
    );
    let answer = ng(
        json!({"command": "answer", "call-id": "caps", "from-tag": "a", "to-tag": "b", "sdp": sdp("10.1.2.2", 5000, &[])}),
    );
    let (relay_a, relay_b) = (
        media_addr(answer["sdp"].as_str().unwrap()),
        media_addr(offer["sdp"].as_str().unwrap()),
    );
    burst(&caller, relay_a, &callee, relay_b, 20, rtp(0));
    burst(&callee, relay_b, &caller, relay_a, 20, rtp(100));
    let q = ng(json!({"command": "query", "call-id": "caps"}));
    let (fast, _) = relay_tests::call::packets(&q, "a", 0);
    let (fast_b, _) = relay_tests::call::packets(&q, "b", 0);
    assert!(fast + fast_b > 0, "media through XDP: {q:#?}");
    drop(d);
    assert!(!pin_dir.exists(), "--detach as the user removed the pins");
}
