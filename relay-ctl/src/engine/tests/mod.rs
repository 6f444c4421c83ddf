//! The engine on fakes: an in-memory stream table that behaves as the XDP program does (media
//! matching an entry never reaches the daemon) and sockets that record what was sent. Time is
//! injected and advanced by hand.

mod calls;
mod compat;
mod crypto;
mod ice;
mod next_hops;
mod ng;
mod state;

use std::{
    cell::RefCell,
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
    rc::Rc,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime},
};

use relay_common::stream::{Endpoint, FLAG_SOURCE_ANY, StreamCounters, StreamEntry, StreamKey};
use relay_core::{
    creds::Credentials,
    session::PortCheck,
    stun::{Class, IntegrityKey, MessageBuilder, StunMessage, TransactionId},
};
use serde_json::{Value, json};

use super::{Engine, FastPath, FastPathError, Now, RelaySockets};
use crate::{config::Config, ports::Inbound, xdp::Totals};

/// The stream table and counters as the fake fast path holds them.
#[derive(Default)]
pub struct TableState {
    pub entries: HashMap<StreamKey, StreamEntry>,
    pub counters: HashMap<u32, StreamCounters>,
    /// Inserts per relay endpoint, to see that an entry went in once.
    pub inserts: HashMap<StreamKey, u32>,
    /// The next-hop array.
    pub next_hops: HashMap<u32, relay_common::stream::NextHop>,
    /// Every next-hop write, in order.
    pub next_hop_writes: Vec<u32>,
}

struct FakeFastPath(Rc<RefCell<TableState>>);

const CAPACITY: u32 = 1024;

impl FastPath for FakeFastPath {
    fn insert(&mut self, key: StreamKey, entry: StreamEntry) -> Result<(), FastPathError> {
        let mut t = self.0.borrow_mut();
        if t.entries.len() as u32 >= CAPACITY && !t.entries.contains_key(&key) {
            return Err(FastPathError::Full);
        }
        t.entries.insert(key, entry);
        *t.inserts.entry(key).or_default() += 1;
        Ok(())
    }

    fn remove(&mut self, key: &StreamKey) -> Result<(), FastPathError> {
        self.0.borrow_mut().entries.remove(key);
        Ok(())
    }

    fn counters(&self, slot: u32) -> Result<StreamCounters, FastPathError> {
        Ok(self
            .0
            .borrow()
            .counters
            .get(&slot)
            .copied()
            .unwrap_or_default())
    }

    fn reset_counters(&mut self, slot: u32) -> Result<(), FastPathError> {
        self.0.borrow_mut().counters.remove(&slot);
        Ok(())
    }

    fn verdict_totals(&self) -> Result<Totals, FastPathError> {
        Ok(Totals::default())
    }

    fn capacity(&self) -> Result<u32, FastPathError> {
        Ok(CAPACITY)
    }

    fn keys(&mut self) -> Result<Vec<StreamKey>, FastPathError> {
        Ok(self.0.borrow().entries.keys().copied().collect())
    }

    fn set_next_hop(
        &mut self,
        slot: u32,
        hop: relay_common::stream::NextHop,
    ) -> Result<(), FastPathError> {
        let mut t = self.0.borrow_mut();
        t.next_hops.insert(slot, hop);
        t.next_hop_writes.push(slot);
        Ok(())
    }

    fn events(&self) -> Result<Vec<(relay_common::stats::Event, u64)>, FastPathError> {
        Ok(Vec::new())
    }
}

#[derive(Default)]
pub struct SocketState {
    pub bound: BTreeSet<SocketAddr>,
    /// (from, to, datagram)
    pub sent: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// The process is out of file descriptors: every port test fails with EMFILE.
    pub out_of_descriptors: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct FakeSockets(Rc<RefCell<SocketState>>);

impl RelaySockets for FakeSockets {
    fn bind(&mut self, local: SocketAddr) -> std::io::Result<()> {
        self.0.borrow_mut().bound.insert(local);
        Ok(())
    }

    fn unbind(&mut self, local: &SocketAddr) {
        self.0.borrow_mut().bound.remove(local);
    }

    fn send(&self, local: &SocketAddr, to: SocketAddr, data: &[u8]) -> bool {
        let mut s = self.0.borrow_mut();
        if !s.bound.contains(local) {
            return false;
        }
        s.sent.push((*local, to, data.to_vec()));
        true
    }

    fn port_check(&self) -> PortCheck {
        let out = std::sync::Arc::clone(&self.0.borrow().out_of_descriptors);
        Box::new(move |_, _| !out.load(Ordering::Relaxed))
    }

    fn descriptors_exhausted(&self) -> bool {
        self.0.borrow().out_of_descriptors.load(Ordering::Relaxed)
    }
}

pub const RELAY_IP: &str = "203.0.113.1";

pub struct Harness {
    pub engine: Engine,
    pub table: Rc<RefCell<TableState>>,
    pub sockets: Rc<RefCell<SocketState>>,
    pub now: Now,
    dir: PathBuf,
    cookie: u32,
}

impl Harness {
    pub fn new() -> Harness {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "relay-engine-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let cfg = Config {
            interfaces: vec![format!("pub/{RELAY_IP}").parse().unwrap()],
            xdp_devices: Vec::new(),
            port_min: 30000,
            port_max: 30999,
            media_timeout: Duration::from_secs(60),
            silent_timeout: Duration::from_secs(3600),
            final_timeout: Duration::ZERO,
            max_streams: CAPACITY,
            max_sessions: None,
            latch_handover: std::time::Duration::from_secs(2),
            ice_default: "default".into(),
            latching: "auto".into(),
            ng_listen: "127.0.0.1:2223".parse().unwrap(),
            metrics_listen: None,
            pin_dir: dir.join("pins"),
            state_file: dir.join("sessions.json"),
            log_level: None,
            detach: false,
            datapath: crate::datapath::Choice::Auto,
            ha: Default::default(),
            dtls_cert: dir.join("dtls-cert.pem"),
        };
        let table = Rc::new(RefCell::new(TableState::default()));
        let sockets = Rc::new(RefCell::new(SocketState::default()));
        let now = Now {
            instant: Instant::now(),
            wall: SystemTime::now(),
            fast_path_ns: 1_000_000_000_000,
        };
        let engine = Engine::new(
            cfg,
            Box::new(FakeFastPath(Rc::clone(&table))),
            Box::new(FakeSockets(Rc::clone(&sockets))),
            now,
        )
        .unwrap();
        Harness {
            engine,
            table,
            sockets,
            now,
            dir,
            cookie: 0,
        }
    }

    /// One NG request (JSON) with a fresh cookie; the reply dictionary.
    pub fn ng(&mut self, req: Value) -> Value {
        self.cookie += 1;
        let cookie = format!("c{}", self.cookie);
        self.ng_raw(&cookie, &req)
    }

    pub fn ng_raw(&mut self, cookie: &str, req: &Value) -> Value {
        let datagram = format!("{cookie} {req}");
        let from = "127.0.0.1:5000".parse().unwrap();
        let reply = self
            .engine
            .handle_ng(self.now, from, datagram.as_bytes())
            .unwrap();
        self.engine.commit();
        let body = reply.strip_prefix(format!("{cookie} ").as_bytes()).unwrap();
        serde_json::from_slice(body).unwrap()
    }

    /// An NG request that must succeed; its SDP.
    pub fn ok_sdp(&mut self, req: Value) -> String {
        let r = self.ng(req);
        assert_eq!(r["result"], "ok", "{r}");
        r["sdp"].as_str().unwrap().to_owned()
    }

    /// Time passes; the engine's timers run at every deadline it asks for on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now.after(d);
        loop {
            let next = self.engine.poll_timeout();
            if next > end.instant {
                break;
            }
            let step = next.saturating_duration_since(self.now.instant);
            self.now = self.now.after(step);
            self.engine.handle_timeout(self.now);
            self.engine.commit();
        }
        self.now = end;
    }

    /// A datagram arrives on a relay endpoint. As in the XDP program, media matching an entry
    /// is forwarded by the fast path (counted, not passed up); everything else reaches the
    /// engine.
    pub fn packet(&mut self, local: SocketAddr, source: SocketAddr, data: &[u8]) {
        let is_media = matches!(data.first(), Some(128..=191));
        if is_media {
            let mut t = self.table.borrow_mut();
            if let Some(e) = t.entries.get(&StreamKey::from(local)).copied()
                && (e.flags & FLAG_SOURCE_ANY != 0 || e.expected == Endpoint::from(source))
            {
                let c = t.counters.entry(e.counter_slot).or_default();
                c.packets += 1;
                c.bytes += data.len() as u64;
                c.last_seen_ns = self.now.fast_path_ns;
                return;
            }
        }
        self.engine.handle_inbound(
            self.now,
            Inbound {
                local,
                source,
                data: data.to_vec(),
            },
        );
        self.engine.commit();
    }

    /// What the engine sent since the last call.
    pub fn sent(&mut self) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.sockets.borrow_mut().sent)
    }

    pub fn entry(&self, local: SocketAddr) -> Option<StreamEntry> {
        self.table
            .borrow()
            .entries
            .get(&StreamKey::from(local))
            .copied()
    }

    /// A call's relay endpoints for `tag`, from `query`: (RTP, RTCP) ports per media.
    pub fn ports(&mut self, call_id: &str, tag: &str) -> Vec<u16> {
        let q = self.ng(json!({"command": "query", "call-id": call_id}));
        q["tags"][tag]["medias"][0]["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["local port"].as_u64().unwrap() as u16)
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn relay(port: u16) -> SocketAddr {
    SocketAddr::new(RELAY_IP.parse().unwrap(), port)
}

/// An SDP body with one audio stream and no attributes.
pub fn plain(ip: &str, port: u16) -> String {
    sdp::<&str>(ip, port, &[])
}

/// An SDP body with one audio stream, CRLF line ends, `extra` as media-level lines.
pub fn sdp<S: AsRef<str>>(ip: &str, port: u16, extra: &[S]) -> String {
    let mut lines = vec![
        "v=0".to_owned(),
        format!("o=x 1 1 IN IP4 {ip}"),
        "s=-".to_owned(),
        format!("c=IN IP4 {ip}"),
        "t=0 0".to_owned(),
        format!("m=audio {port} RTP/AVP 0"),
    ];
    lines.extend(extra.iter().map(|l| l.as_ref().to_owned()));
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}

/// a=ice-ufrag/a=ice-pwd lines for a peer's credentials.
pub fn ice_lines(c: &Credentials) -> [String; 2] {
    [
        format!("a=ice-ufrag:{}", c.ufrag),
        format!("a=ice-pwd:{}", c.pwd),
    ]
}

/// The relay's ICE credentials in an SDP it wrote.
pub fn relay_creds(sdp: &str) -> Credentials {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {sdp}"))
            .trim()
            .to_owned()
    };
    Credentials::new(find("a=ice-ufrag:"), find("a=ice-pwd:"))
}

/// The relay port of the first m= line of an SDP it wrote.
pub fn media_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap()
}

/// A connectivity check from a full agent (controlling, as a lite peer's partner is), signed
/// with the relay's password: USERNAME "<relay ufrag>:<peer ufrag>" (RFC 8445 s.7.2.2).
pub fn check(relay: &Credentials, peer_ufrag: &str, nominate: bool) -> Vec<u8> {
    let mut b = MessageBuilder::new(
        Class::Request,
        relay_core::stun::BINDING,
        TransactionId::random(),
    )
    .username(&format!("{}:{peer_ufrag}", relay.ufrag))
    .priority(1000)
    .ice_controlling(42);
    if nominate {
        b = b.use_candidate();
    }
    b.integrity(&IntegrityKey::new(relay.pwd.as_bytes()))
        .fingerprint()
        .build()
        .unwrap()
}

/// A Binding Indication keepalive (RFC 8445 s.11): no USERNAME, no integrity.
pub fn indication() -> Vec<u8> {
    MessageBuilder::new(
        Class::Indication,
        relay_core::stun::BINDING,
        TransactionId::random(),
    )
    .fingerprint()
    .build()
    .unwrap()
}

/// The class and error code of a STUN response.
pub fn response(bytes: &[u8]) -> (Class, Option<u16>) {
    let m = StunMessage::parse(bytes).unwrap();
    (m.class, m.attributes.error_code.map(|e| e.code))
}

/// 12-byte RTP header and a payload.
pub fn rtp(seq: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, seq, 0, 0, 0, 1, 0, 0, 0, 2];
    p.extend_from_slice(&[0xab; 20]);
    p
}
