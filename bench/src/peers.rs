//! rtpengine on the same topology (userspace forwarding, driven over NG), and the control-plane
//! rate: offer+answer pairs per second over NG, ours and rtpengine's.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use indicatif::ProgressBar;
use relay_ctl::client::NgClient;
use relay_tests::{
    netns::Netns,
    rtpengine::{Rtpengine, RtpengineConfig},
    topology::media_addr,
};
use serde_json::{Map, Value, json};

use crate::{
    topo::{GEN_ADDR, GEN_PORT, SERVICE, SINK_ADDR, Topo},
    traffic::{Fresh, Search, SearchSpec, Sink, gen_config, search},
};

pub const RTPENGINE_NG: &str = "127.0.0.1:2224";
pub const OUR_NG: &str = "127.0.0.1:2223";

fn sdp(addr: [u8; 4], port: u16) -> String {
    relay_tests::call::sdp(&Ipv4Addr::from(addr).to_string(), port, &["a=sendrecv"])
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Offer (the generator as caller) and answer (the sink as callee); returns the relay endpoint
/// the caller must send to.
fn call(c: &NgClient, call_id: &str) -> Result<SocketAddr> {
    c.call(&obj(json!({
        "command": "offer", "call-id": call_id, "from-tag": "caller",
        "sdp": sdp(GEN_ADDR, GEN_PORT),
    })))?;
    let answer = c.call(&obj(json!({
        "command": "answer", "call-id": call_id, "from-tag": "caller", "to-tag": "callee",
        "sdp": sdp(SINK_ADDR, 5000),
    })))?;
    let sdp = answer
        .get("sdp")
        .and_then(Value::as_str)
        .context("answer reply without SDP")?;
    Ok(media_addr(sdp))
}

/// A new call for each trial through the NG server at `ng`, set up by `make` (which returns
/// where to send): call-ids `PREFIX-SEARCH-N`, unique across searches (a repeated id would be a
/// re-offer of a blocked call); each trial's call is deleted when the next is made.
fn fresh_calls(
    t: &Topo,
    ng: SocketAddr,
    prefix: String,
    make: fn(&NgClient, &str) -> Result<SocketAddr>,
) -> Result<Fresh> {
    // The client's socket is made in the relay's namespace and keeps it when used elsewhere.
    let client = t
        .relay
        .run(move || NgClient::new(ng, Duration::from_secs(1), 3))??;
    static SEARCH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let search_id = SEARCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut n = 0u32;
    Ok(Box::new(move || -> Result<SocketAddrV4> {
        if n > 0 {
            let _ = client.call(&obj(json!({
                "command": "delete", "call-id": format!("{prefix}-{search_id}-{}", n - 1),
            })));
        }
        let to = make(&client, &format!("{prefix}-{search_id}-{n}"))?;
        n += 1;
        match to {
            SocketAddr::V4(v4) => Ok(v4),
            other => bail!("{prefix}: the answer's media address {other} is not IPv4"),
        }
    }))
}

pub fn rtpengine_start(t: &Topo) -> Result<Rtpengine> {
    let iface = format!("pub/{SERVICE}");
    Rtpengine::start(
        &t.relay,
        &RtpengineConfig {
            interfaces: &[&iface],
            ng: RTPENGINE_NG.parse()?,
            port_min: 10_000,
            port_max: 19_999,
            extra: &[],
        },
    )
}

/// One call through rtpengine, then the same zero-loss search as for the relay.
pub fn rtpengine_rate(
    t: &Topo,
    sink: &Arc<Sink>,
    trial: Duration,
    steps: u32,
    repeats: u32,
    pktgen: bool,
    bar: &ProgressBar,
) -> Result<Search> {
    let spec = rtpengine_spec(t, trial, steps, repeats, pktgen)?;
    search(t, sink, spec, bar)
}

/// The generator's set-up for rtpengine: a fresh call (and relay port) for every trial.
pub fn rtpengine_spec(
    t: &Topo,
    trial: Duration,
    steps: u32,
    repeats: u32,
    pktgen: bool,
) -> Result<SearchSpec> {
    // rtpengine stops forwarding a stream whose socket queue overflowed a few times, which
    // every trial above its rate does: each trial gets a call of its own.
    let fresh = fresh_calls(t, RTPENGINE_NG.parse()?, "bench-rtpengine".into(), call)?;
    let (config, frame) = gen_config(t, [10, 99, 0, 1], 1, 1, 1);
    let spec = SearchSpec {
        label: "rtpengine".into(),
        config,
        frame,
        trial,
        // A userspace relay holds packets in socket buffers: give them time to come out.
        drain: Duration::from_millis(200),
        steps,
        repeats,
        fresh: Some(fresh),
        pktgen,
    };
    Ok(spec)
}

/// Offer+answer pairs per second against the NG server at `server` (from inside `ns`):
/// `clients` clients, each waiting for every reply before its next request (as Kamailio's
/// workers do), `calls` pairs in all or 10 s, whichever ends first; the calls are deleted
/// afterwards. One client shows the latency of a request; several show what group commit
/// shares between them.
pub fn ng_pairs_per_second(
    ns: &Netns,
    server: &str,
    calls: u32,
    clients: u32,
    tag: &'static str,
) -> Result<f64> {
    let server: SocketAddr = server.parse()?;
    ns.run(move || -> Result<f64> {
        let t0 = Instant::now();
        let per_client = calls.div_ceil(clients);
        let done: Vec<u32> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..clients)
                .map(|k| {
                    s.spawn(move || -> Result<u32> {
                        let c = NgClient::new(server, Duration::from_secs(1), 3)?;
                        let mut done = 0u32;
                        while done < per_client && t0.elapsed() < Duration::from_secs(10) {
                            call(&c, &format!("bench-{tag}-{clients}-{k}-{done}"))?;
                            done += 1;
                        }
                        Ok(done)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .map_err(|_| anyhow::anyhow!("NG client panicked"))?
                })
                .collect::<Result<Vec<u32>>>()
        })?;
        let rate = f64::from(done.iter().sum::<u32>()) / t0.elapsed().as_secs_f64();
        let c = NgClient::new(server, Duration::from_secs(1), 3)?;
        for (k, n) in done.iter().enumerate() {
            for i in 0..*n {
                let _ = c.call(&obj(json!({
                    "command": "delete", "call-id": format!("bench-{tag}-{clients}-{k}-{i}"),
                    "from-tag": "caller",
                })));
            }
        }
        Ok(rate)
    })?
}

/// The kernel's own forwarding path as the peer an rtpengine kernel-module user knows (that
/// module forwards from a netfilter hook; it cannot be loaded here): no XDP or TC program, the
/// relay namespace routes the generator's stream and nftables rewrites the same 5-tuple the
/// relay would. Stateless payload statements, not NAT: rtpengine's module rewrites per packet
/// from its own per-stream table without conntrack, and stateless rules cost no conntrack
/// entry or lookup per flow. Destination address and port are set in prerouting (before the
/// route lookup), the source in postrouting (a local source would be refused as martian on
/// input); nftables updates the IPv4 and UDP checksums. Removed on drop.
pub struct KernelPath {
    ns: String,
}

const NFT_TABLE: &str = "relay_bench_kernel_path";

impl KernelPath {
    /// Rewrites UDP to `stream` (the generator's stream 0) as the relay would: from
    /// `out:port` to the sink's `SINK_ADDR:5000`.
    pub fn start(t: &Topo, stream: SocketAddrV4, out: [u8; 4]) -> Result<KernelPath> {
        let rules = format!(
            "table ip {NFT_TABLE} {{\n\
             chain pre {{ type filter hook prerouting priority -300; policy accept;\n\
               ip daddr {d} udp dport {p} ip daddr set {sink} udp dport set 5000\n\
             }}\n\
             chain post {{ type filter hook postrouting priority 100; policy accept;\n\
               ip saddr {g} udp sport {gp} ip daddr {sink} ip saddr set {o} udp sport set {op}\n\
             }}\n\
             }}\n",
            d = stream.ip(),
            p = stream.port(),
            sink = Ipv4Addr::from(SINK_ADDR),
            g = Ipv4Addr::from(GEN_ADDR),
            gp = GEN_PORT,
            o = Ipv4Addr::from(out),
            op = stream.port() + 1,
        );
        let path = std::env::temp_dir().join(format!("{}-{NFT_TABLE}.nft", t.relay.name));
        std::fs::write(&path, rules)?;
        let guard = KernelPath {
            ns: t.relay.name.clone(),
        };
        relay_tests::run(
            "ip",
            &[
                "netns",
                "exec",
                &t.relay.name,
                "nft",
                "-f",
                &path.to_string_lossy(),
            ],
        )
        .context("loading the nftables rules (Debian package nftables)")?;
        let _ = std::fs::remove_file(&path);
        Ok(guard)
    }
}

impl Drop for KernelPath {
    fn drop(&mut self) {
        let _ = relay_tests::run(
            "ip",
            &[
                "netns", "exec", &self.ns, "nft", "delete", "table", "ip", NFT_TABLE,
            ],
        );
    }
}
