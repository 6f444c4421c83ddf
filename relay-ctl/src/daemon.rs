//! The daemon's event loop: one task owns all state (the [`Engine`]); sockets feed it through
//! channels, so there are no locks and every state change happens in one place.

use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, UdpSocket},
    sync::{mpsc, oneshot},
};

use crate::{
    config::Config,
    engine::{self, Engine},
    metrics,
    ports::{Inbound, PortSockets},
};

/// Bound on queued relay-port datagrams: a flood of unknown-stream packets fills this queue
/// and the kernel drops the rest, while NG requests keep their own socket and get served.
const INBOUND_QUEUE: usize = 4096;
const TICK: Duration = Duration::from_secs(1);
/// How often the host's addresses are read for the automatic takeover (getifaddrs).
const ADDRESS_POLL: Duration = Duration::from_millis(200);

pub async fn run(
    cfg: Config,
    engine_init: impl FnOnce(PortSockets) -> Result<Engine>,
) -> Result<()> {
    let ng = UdpSocket::bind(cfg.ng_listen)
        .await
        .with_context(|| format!("binding the NG control socket {}", cfg.ng_listen))?;
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let mut engine = engine_init(PortSockets::new(in_tx))?;
    let mut remote = engine.take_remote_events();
    let mut addr_poll = tokio::time::interval(ADDRESS_POLL);
    addr_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let (mreq_tx, mut mreq_rx) = mpsc::channel::<oneshot::Sender<String>>(8);
    if let Some(addr) = cfg.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        tokio::spawn(serve_metrics(listener, mreq_tx));
    }
    tracing::info!(ng = %cfg.ng_listen, metrics = ?cfg.metrics_listen, "relay daemon running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(TICK);
    let mut buf = vec![0u8; 65_536];
    let flush = tokio::time::sleep(engine::STATE_FLUSH_DELAY);
    tokio::pin!(flush);
    let mut flush_armed = false;
    loop {
        // The first change after a write starts the flush timer; later ones ride along.
        if engine.state_dirty() && !flush_armed {
            flush
                .as_mut()
                .reset(tokio::time::Instant::now() + engine::STATE_FLUSH_DELAY);
            flush_armed = true;
        }
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            () = &mut flush, if flush_armed => {
                flush_armed = false;
                engine.flush_state();
            }
            r = ng.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    if let Some(reply) = engine.handle_ng(std::time::Instant::now(), from, &buf[..n])
                        && let Err(e) = ng.send_to(&reply, from).await
                    {
                        tracing::warn!(%from, error = %e, "sending NG reply");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "NG socket receive"),
            },
            Some(reply) = mreq_rx.recv() => {
                let _ = reply.send(metrics::render(&engine.metrics()));
            }
            _ = tick.tick() => engine.handle_tick(std::time::Instant::now()),
            Some(ev) = async {
                match remote.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => engine.handle_remote(std::time::Instant::now(), ev),
            _ = addr_poll.tick(), if engine.ha_enabled() => {
                engine.poll_addresses(std::time::Instant::now());
            }
            Some(inbound) = in_rx.recv() => engine.handle_inbound(std::time::Instant::now(), inbound),
        }
    }
    engine.shutdown();
    Ok(())
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
