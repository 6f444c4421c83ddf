//! Crash consistency (write-ahead state): the daemon is killed with SIGKILL 0, 1, 5, 20 and 50 ms
//! after each kind of NG reply (offer, answer, re-offer moving an endpoint, delete) and started
//! again. After every restart each acknowledged change is there, no entry points at a superseded
//! endpoint, the table holds no entry of a call the daemon does not know, and media flows where
//! the last acknowledged SDP says.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use relay_tests::{
    call::{bind, pinned_streams, recv, sdp, silent},
    daemon::{Daemon, ng_call},
    frames::rtp_payload,
    netns::Bpffs,
    topology::{Topology, media_addr},
};
use serde_json::{Value, json};

const DELAYS_MS: [u64; 5] = [0, 1, 5, 20, 50];

struct Rig {
    t: Topology,
    pin_dir: PathBuf,
    state_arg: String,
    state: PathBuf,
    daemon: Option<Daemon>,
    kills: u32,
}

impl Rig {
    fn start(&mut self) {
        self.daemon = Some(
            self.t
                .start_daemon(
                    &self.pin_dir,
                    &[&self.state_arg, "--port-min=30000", "--port-max=30999"],
                )
                .expect("daemon starts"),
        );
    }

    /// SIGKILL `delay` after the reply just received, then a fresh daemon on the same state.
    fn crash(&mut self, delay: Duration) {
        std::thread::sleep(delay);
        self.daemon.as_mut().unwrap().kill().unwrap();
        self.daemon = None;
        self.kills += 1;
        self.start();
    }

    fn ng(&self, req: Value) -> serde_json::Map<String, Value> {
        ng_call(&self.t.relay, req.clone()).unwrap_or_else(|e| panic!("{req}: {e:#}"))
    }

    fn calls(&self) -> BTreeSet<String> {
        let l = self.ng(json!({"command": "list", "limit": 1000}));
        l["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect()
    }

    /// Every entry of the pinned table belongs to a relay endpoint of a call the daemon knows.
    fn assert_no_orphans(&self, why: &str) {
        let mut ours = BTreeSet::new();
        for c in self.calls() {
            let q = self.ng(json!({"command": "query", "call-id": c}));
            for tag in q["tags"].as_object().unwrap().values() {
                for m in tag["medias"].as_array().unwrap() {
                    for s in m["streams"].as_array().unwrap() {
                        let e = &s["local endpoint"];
                        let a: SocketAddr = format!(
                            "{}:{}",
                            e["address"].as_str().unwrap(),
                            e["port"].as_u64().unwrap()
                        )
                        .parse()
                        .unwrap();
                        ours.insert(a);
                    }
                }
            }
        }
        let table = pinned_streams(&self.pin_dir).unwrap();
        for local in table.keys() {
            assert!(
                ours.contains(local),
                "{why}: orphan entry {local} in {table:?}"
            );
        }
    }
}

/// A media exchange both ways, each packet checked byte for byte at the receiving socket.
fn exchange(a: &UdpSocket, relay_a: SocketAddr, b: &UdpSocket, relay_b: SocketAddr, base: u16) {
    for i in 0..3 {
        let p = rtp_payload(base + i);
        a.send_to(&p, relay_a).unwrap();
        assert_eq!(recv(b).expect("callee receives").0, p);
        b.send_to(&p, relay_b).unwrap();
        assert_eq!(recv(a).expect("caller receives").0, p);
    }
}

#[test]
fn sigkill_after_any_reply_loses_no_acknowledged_change() {
    if !relay_tests::privileged("sigkill_after_any_reply_loses_no_acknowledged_change") {
        return;
    }
    let t = Topology::new().unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let pin_dir = bpffs.path().join("relay");
    let state = std::env::temp_dir().join(format!("{}-crash-state.json", t.prefix));
    let mut rig = Rig {
        state_arg: format!("--state-file={}", state.display()),
        state,
        pin_dir,
        t,
        daemon: None,
        kills: 0,
    };
    rig.start();
    let callee = bind(&rig.t.callee.ns, "10.1.2.2:5000");
    for (round, delay_ms) in DELAYS_MS.into_iter().enumerate() {
        let delay = Duration::from_millis(delay_ms);
        let call = format!("crash-{delay_ms}");
        let why = |kind: &str| format!("SIGKILL {delay_ms} ms after the {kind} reply");
        let a_port = 4000 + 10 * round as u16;
        let caller = bind(&rig.t.caller.ns, &format!("10.1.1.2:{a_port}"));

        // Offer: the call and its ports are kept.
        let offer = rig.ng(json!({"command": "offer", "call-id": call, "from-tag": "a",
            "sdp": sdp("10.1.1.2", a_port, &[])}));
        let relay_b = media_addr(offer["sdp"].as_str().unwrap());
        rig.crash(delay);
        assert!(rig.calls().contains(&call), "{}", why("offer"));

        // Answer: media flows both ways through the restarted relay.
        let answer = rig.ng(
            json!({"command": "answer", "call-id": call, "from-tag": "a",
            "to-tag": "b", "sdp": sdp("10.1.2.2", 5000, &[])}),
        );
        let relay_a = media_addr(answer["sdp"].as_str().unwrap());
        rig.crash(delay);
        exchange(&caller, relay_a, &callee, relay_b, 100);
        rig.assert_no_orphans(&why("answer"));

        // Re-offer moving A to a new port (answered): B's media goes there, never to the old one.
        let moved = bind(&rig.t.caller.ns, &format!("10.1.1.2:{}", a_port + 2));
        rig.ng(json!({"command": "offer", "call-id": call, "from-tag": "a",
            "sdp": sdp("10.1.1.2", a_port + 2, &[])}));
        rig.ng(
            json!({"command": "answer", "call-id": call, "from-tag": "a",
            "to-tag": "b", "sdp": sdp("10.1.2.2", 5000, &[])}),
        );
        rig.crash(delay);
        for i in 0..3 {
            let p = rtp_payload(200 + i);
            callee.send_to(&p, relay_b).unwrap();
            assert_eq!(
                recv(&moved)
                    .unwrap_or_else(|| panic!("{}: B's media lost", why("re-offer")))
                    .0,
                p
            );
        }
        assert!(
            silent(&caller, Duration::from_millis(100)),
            "{}: media went to the superseded endpoint",
            why("re-offer")
        );
        rig.assert_no_orphans(&why("re-offer"));

        // Delete: the call, its entries and its forwarding are gone.
        rig.ng(json!({"command": "delete", "call-id": call}));
        rig.crash(delay);
        assert!(!rig.calls().contains(&call), "{}", why("delete"));
        rig.assert_no_orphans(&why("delete"));
        let table = pinned_streams(&rig.pin_dir).unwrap();
        assert!(
            !table.contains_key(&relay_a) && !table.contains_key(&relay_b),
            "{}: entries left {table:?}",
            why("delete")
        );
        moved.send_to(&rtp_payload(300), relay_a).unwrap();
        assert!(
            silent(&callee, Duration::from_millis(100)),
            "{}: still forwarded",
            why("delete")
        );
    }
    assert_eq!(rig.kills, 4 * DELAYS_MS.len() as u32);
    if let Some(mut d) = rig.daemon.take() {
        let _ = d.stop();
    }
    let _ = std::fs::remove_file(&rig.state);
    let _ = std::fs::remove_file(relay_ctl::journal::journal_path(&rig.state));
    relay_ctl::pins::detach_all(&rig.pin_dir).unwrap();
}
