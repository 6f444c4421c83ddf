//! The daemon's event loop: one task owns all state (the [`Engine`]); sockets feed it through
//! channels, so there are no locks and every state change happens in one place.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, UdpSocket},
    sync::{mpsc, oneshot},
};

use crate::{
    config::Config,
    engine::{Engine, Now},
    metrics,
    ports::{Inbound, PortSockets},
    xdp,
};

/// Bound on queued relay-port datagrams: a flood of unknown-stream packets fills this queue
/// and the kernel drops the rest, while NG requests keep their own socket and get served.
const INBOUND_QUEUE: usize = 4096;
/// NG requests handled per journal sync at most, besides the one that woke the loop.
const NG_BATCH: usize = 63;

/// The clocks the engine runs on, read here and nowhere in the engine.
pub fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: SystemTime::now(),
        fast_path_ns: xdp::monotonic_ns(),
    }
}

pub async fn run(
    cfg: Config,
    engine_init: impl FnOnce(PortSockets, Now) -> Result<Engine>,
) -> Result<()> {
    raise_fd_limit(&cfg);
    let ng = UdpSocket::bind(cfg.ng_listen)
        .await
        .with_context(|| format!("binding the NG control socket {}", cfg.ng_listen))?;
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let mut engine = engine_init(PortSockets::new(in_tx), now())?;

    let (mreq_tx, mut mreq_rx) = mpsc::channel::<oneshot::Sender<String>>(8);
    if let Some(addr) = cfg.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        tokio::spawn(serve_metrics(listener, mreq_tx));
    }
    tracing::info!(ng = %cfg.ng_listen, metrics = ?cfg.metrics_listen, "relay daemon running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut buf = vec![0u8; 65_536];
    loop {
        // The engine's earliest deadline: an agent's, a delayed delete, the media-timeout
        // sweep or the batched state write.
        let deadline = tokio::time::Instant::from_std(engine.poll_timeout());
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            () = tokio::time::sleep_until(deadline) => {
                engine.handle_timeout(now());
                engine.commit();
            }
            r = ng.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    // Group commit: the requests already waiting are handled too, and their
                    // changes made durable with one journal sync before any reply goes out.
                    let mut replies = Vec::new();
                    replies.extend(engine.handle_ng(now(), from, &buf[..n]).map(|r| (from, r)));
                    for _ in 0..NG_BATCH {
                        match ng.try_recv_from(&mut buf) {
                            Ok((n, from)) => replies
                                .extend(engine.handle_ng(now(), from, &buf[..n]).map(|r| (from, r))),
                            Err(_) => break,
                        }
                    }
                    engine.commit();
                    for (to, reply) in replies {
                        if let Err(e) = ng.send_to(&reply, to).await {
                            tracing::warn!(%to, error = %e, "sending NG reply");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "NG socket receive"),
            },
            Some(reply) = mreq_rx.recv() => {
                let _ = reply.send(metrics::render(&engine.metrics()));
            }
            Some(inbound) = in_rx.recv() => {
                engine.handle_inbound(now(), inbound);
                engine.commit();
            }
        }
    }
    engine.shutdown();
    Ok(())
}

/// Every relay port is a socket: the descriptor limit, not the port range, would otherwise cap the
/// calls (at about 250 with the usual 1024).
fn raise_fd_limit(cfg: &Config) {
    let ports = u64::from(cfg.port_max.saturating_sub(cfg.port_min)) + 1;
    let needed = crate::fd_limit::needed(ports, cfg.interfaces.len() as u64);
    match crate::fd_limit::raise_for_ports(needed) {
        Ok(l) if l.enough() => {
            tracing::info!(
                limit = l.soft,
                needed,
                "file descriptor limit fits the port range"
            )
        }
        Ok(l) => tracing::warn!(
            limit = l.soft,
            hard = l.hard,
            needed,
            calls = l.calls(),
            "the file descriptor limit is below what the relay port range needs: about {} plain calls fit; raise LimitNOFILE (or run with CAP_SYS_RESOURCE)",
            l.calls()
        ),
        Err(e) => tracing::warn!(error = %e, "reading the file descriptor limit"),
    }
}

async fn serve_metrics(listener: TcpListener, req: mpsc::Sender<oneshot::Sender<String>>) {
    loop {
        let Ok((mut conn, peer)) = listener.accept().await else {
            continue;
        };
        let req = req.clone();
        tokio::spawn(async move {
            // Read the whole request head (it may arrive in pieces), bounded in size and time.
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            let read_head = async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read_head)
                .await
                .is_err()
            {
                return;
            }
            let (tx, rx) = oneshot::channel();
            let body = if req.send(tx).await.is_ok() {
                rx.await.unwrap_or_default()
            } else {
                String::new()
            };
            let resp = metrics::http_response(&head, || body);
            if let Err(e) = conn.write_all(&resp).await {
                tracing::debug!(%peer, error = %e, "metrics response");
            }
        });
    }
}
