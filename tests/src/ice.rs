//! A full ICE agent on a host, from str0m's `is` crate (an implementation nobody here wrote),
//! checking against the relay until it nominates a pair.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use is::{
    Candidate, IceAgent, IceAgentEvent, IceCreds, Protocol,
    stun::{StunMessage, StunPacket},
};

/// The value of the first `a=NAME:` line of an SDP body.
pub fn attr<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.strip_prefix(&format!("a={name}:")))
        .unwrap_or_else(|| panic!("no a={name} in\n{sdp}"))
        .trim()
}

/// The ICE credentials an SDP body carries.
pub fn creds(sdp: &str) -> IceCreds {
    IceCreds {
        ufrag: attr(sdp, "ice-ufrag").to_owned(),
        pass: attr(sdp, "ice-pwd").to_owned(),
    }
}

/// Component-1 candidates of an SDP body: (address, type).
pub fn candidates(sdp: &str) -> Vec<(SocketAddr, String)> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter_map(|c| {
            let f: Vec<&str> = c.split_ascii_whitespace().collect();
            let addr = format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok()?;
            (f.get(1) == Some(&"1") && f.get(6) == Some(&"typ"))
                .then(|| (addr, f.get(7).unwrap_or(&"").to_string()))
        })
        .collect()
}

/// An agent's outcome: the pair it nominated (remote side), and its socket for the media.
pub struct Checked {
    pub nominated: Option<SocketAddr>,
    pub controlling: bool,
    pub sock: UdpSocket,
}

/// Runs one agent on `sock` (bound to `local`, in the caller's namespace thread) against the
/// `remote` candidates until it nominates a pair or `limit` passes. Send errors (a candidate
/// with no route) are what a real agent sees too: that pair just fails.
pub fn check(
    sock: UdpSocket,
    local: SocketAddr,
    own: IceCreds,
    peer: IceCreds,
    remote: &[SocketAddr],
    controlling: bool,
    limit: Duration,
) -> Checked {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut agent = IceAgent::new(own);
    agent.set_controlling(controlling);
    agent.set_remote_credentials(peer);
    agent.add_local_candidate(Candidate::host(local, "udp").unwrap());
    for r in remote {
        agent.add_remote_candidate(Candidate::host(*r, "udp").unwrap());
    }
    let deadline = Instant::now() + limit;
    let mut nominated = None;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline && nominated.is_none() {
        agent.handle_timeout(Instant::now());
        while let Some(tx) = agent.poll_transmit() {
            let _ = sock.send_to(&tx.contents, tx.destination);
        }
        while let Some(e) = agent.poll_event() {
            if let IceAgentEvent::NominatedSend { destination, .. } = e {
                nominated = Some(destination);
            }
        }
        if let Ok((n, src)) = sock.recv_from(&mut buf)
            && let Ok(message) = StunMessage::parse(&buf[..n])
        {
            let pkt = StunPacket {
                proto: Protocol::Udp,
                source: src,
                destination: local,
                message,
            };
            agent.handle_packet(Instant::now(), pkt);
        }
    }
    // The final response to the nominating check may still be in flight to the relay.
    while let Some(tx) = agent.poll_transmit() {
        let _ = sock.send_to(&tx.contents, tx.destination);
    }
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    Checked {
        nominated,
        controlling: agent.controlling(),
        sock,
    }
}
