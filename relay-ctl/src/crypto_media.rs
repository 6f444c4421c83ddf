//! Media of one stream whose SRTP the relay terminates on at least one leg: the per-leg DTLS
//! endpoint and SRTP contexts, and the conversion SRTP <-> RTP, SRTCP <-> RTCP (or SRTP <-> SRTP
//! with other keys) of every packet the daemon forwards. Sans-IO: packets and time in, packets out.
//!
//! Legs are numbered as in [`StreamCrypto`]: 0 is the offerer's, 1 the answerer's. A packet that
//! fails authentication or replays is refused ([`MediaDrop`]) and never forwarded; media from
//! or to a DTLS leg whose handshake has not finished is held back (`NotReady`).

use std::time::Instant;

use relay_core::session_crypto::{LegCrypto, StreamCrypto};
use relay_core::srtp_sdp::Setup;

use crate::dtls::{DtlsEndpoint, DtlsError, DtlsIdentity, DtlsRole, DtlsState, SrtpKeys};
use crate::srtp::{Direction, SrtpContext, SrtpError};

/// Why a media packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MediaDrop {
    #[error("SRTP authentication failed")]
    Auth,
    #[error("SRTP replay")]
    Replay,
    #[error("malformed packet")]
    Malformed,
    #[error("DTLS-SRTP keys not negotiated yet")]
    NotReady,
    #[error("DTLS handshake failed on this leg")]
    DtlsFailed,
}

impl From<SrtpError> for MediaDrop {
    fn from(e: SrtpError) -> MediaDrop {
        match e {
            SrtpError::Auth => MediaDrop::Auth,
            SrtpError::Replay => MediaDrop::Replay,
            _ => MediaDrop::Malformed,
        }
    }
}

/// What one DTLS datagram did.
#[derive(Debug, Default)]
pub struct DtlsOutcome {
    /// Records to send back to the peer on the same leg.
    pub replies: Vec<Vec<u8>>,
    /// Keys now in place (count a successful handshake).
    pub connected: bool,
    /// The handshake failed (count it; `fingerprint` when the peer's certificate was wrong).
    pub failed: Option<DtlsError>,
}

struct Contexts {
    tx: SrtpContext,
    rx: SrtpContext,
}

impl Contexts {
    fn new(keys: &SrtpKeys) -> Result<Contexts, SrtpError> {
        Ok(Contexts {
            tx: SrtpContext::new(keys.suite, &keys.local, Direction::Outbound)?,
            rx: SrtpContext::new(keys.suite, &keys.remote, Direction::Inbound)?,
        })
    }
}

enum Leg {
    Plain,
    Srtp {
        ctx: Contexts,
        /// Kept so a restarted daemon can rebuild the contexts without a new handshake.
        keys: SrtpKeys,
        dtls: Option<DtlsEndpoint>,
        /// Keyed by DTLS (now or before a restart): DTLS records stay the relay's.
        from_dtls: bool,
    },
    Dtls(DtlsEndpoint),
    Failed,
}

/// The crypto side of one stream.
pub struct CryptoStream {
    legs: [Leg; 2],
    label: String,
}

impl std::fmt::Debug for CryptoStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CryptoStream({})", self.label)
    }
}

/// RFC 5761 s.4: on a muxed port, RTCP packet types 192-223 in the second byte.
pub fn is_rtcp(pkt: &[u8]) -> bool {
    pkt.get(1).is_some_and(|b| (192..=223).contains(b))
}

impl CryptoStream {
    /// Sets up both legs. `restored` holds keys a previous daemon exported (by leg) so a
    /// DTLS leg resumes without a handshake.
    pub fn new(
        crypto: &StreamCrypto,
        identity: &DtlsIdentity,
        restored: [Option<SrtpKeys>; 2],
        now: Instant,
    ) -> Result<CryptoStream, DtlsError> {
        let mut legs = [Leg::Plain, Leg::Plain];
        for (i, (leg, saved)) in crypto.legs.iter().zip(restored).enumerate() {
            legs[i] = match (leg, saved) {
                (LegCrypto::None, _) => Leg::Plain,
                (LegCrypto::Dtls { .. }, Some(keys)) => srtp_leg(keys, true),
                (LegCrypto::Dtls { setup, remote }, None) => {
                    let role = match setup {
                        Setup::Active => DtlsRole::Active,
                        _ => DtlsRole::Passive,
                    };
                    Leg::Dtls(DtlsEndpoint::new(identity, role, remote.clone(), now)?)
                }
                (
                    LegCrypto::Sdes {
                        suite,
                        local,
                        remote,
                        ..
                    },
                    _,
                ) => srtp_leg(
                    SrtpKeys {
                        suite: *suite,
                        local: local.clone(),
                        remote: remote.clone(),
                    },
                    false,
                ),
            };
        }
        Ok(CryptoStream {
            legs,
            label: crypto.describe().unwrap_or_default(),
        })
    }

    /// "DTLS-SRTP<->RTP" etc.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether DTLS on `leg` is the relay's to answer (else it passes through).
    pub fn terminates_dtls(&self, leg: usize) -> bool {
        match &self.legs[leg] {
            Leg::Dtls(_) | Leg::Failed => true,
            Leg::Srtp { from_dtls, .. } => *from_dtls,
            Leg::Plain => false,
        }
    }

    /// Keys negotiated by DTLS per leg, for the state file.
    pub fn dtls_keys(&self) -> [Option<SrtpKeys>; 2] {
        let k = |l: &Leg| match l {
            Leg::Srtp {
                keys,
                from_dtls: true,
                ..
            } => Some(keys.clone()),
            _ => None,
        };
        [k(&self.legs[0]), k(&self.legs[1])]
    }

    /// Records an active DTLS endpoint wants to send right away (its ClientHello), by leg.
    pub fn poll_transmit(&mut self) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        for (i, l) in self.legs.iter_mut().enumerate() {
            if let Some(ep) = endpoint(l) {
                while let Some(d) = ep.poll_transmit() {
                    out.push((i, d));
                }
            }
        }
        out
    }

    /// The earliest DTLS retransmission deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.legs
            .iter()
            .filter_map(|l| match l {
                Leg::Dtls(ep) => ep.poll_timeout(),
                _ => None,
            })
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(usize, Vec<u8>)> {
        for l in &mut self.legs {
            if let Leg::Dtls(ep) = l {
                ep.handle_timeout(now);
            }
        }
        self.poll_transmit()
    }

    /// One DTLS datagram from the peer on `leg` (which terminates DTLS).
    pub fn dtls(&mut self, leg: usize, now: Instant, data: &[u8]) -> DtlsOutcome {
        let mut out = DtlsOutcome::default();
        let slot = &mut self.legs[leg];
        let result = match endpoint(slot) {
            Some(ep) => ep.handle_input(now, data),
            None => return out,
        };
        if let Some(ep) = endpoint(slot) {
            while let Some(d) = ep.poll_transmit() {
                out.replies.push(d);
            }
        }
        match result {
            Ok(Some(keys)) => {
                let old = std::mem::replace(slot, Leg::Plain);
                let Leg::Dtls(ep) = old else {
                    *slot = old;
                    return out;
                };
                match Contexts::new(&keys) {
                    Ok(ctx) => {
                        *slot = Leg::Srtp {
                            ctx,
                            keys,
                            dtls: Some(ep),
                            from_dtls: true,
                        };
                        out.connected = true;
                    }
                    Err(e) => {
                        *slot = Leg::Failed;
                        out.failed = Some(DtlsError::Handshake(e.to_string()));
                    }
                }
            }
            Ok(None) | Err(DtlsError::Ignored) => {}
            Err(e) => {
                if matches!(slot, Leg::Dtls(ep) if ep.state() == DtlsState::Failed) {
                    *slot = Leg::Failed;
                    out.failed = Some(e);
                }
            }
        }
        out
    }

    /// A media packet from the peer on `from`, converted for the other leg's peer.
    pub fn media(&mut self, from: usize, pkt: &[u8]) -> Result<Vec<u8>, MediaDrop> {
        if pkt.len() < 8 || pkt[0] >> 6 != 2 {
            return Err(MediaDrop::Malformed);
        }
        let rtcp = is_rtcp(pkt);
        let to = 1 - from;
        // Nothing is decrypted for a leg that could not send it on.
        ready(&self.legs[to])?;
        let mut buf = pkt.to_vec();
        match &mut self.legs[from] {
            Leg::Plain => {}
            Leg::Srtp { ctx, .. } => {
                if rtcp {
                    ctx.rx.unprotect_rtcp(&mut buf)?;
                } else {
                    ctx.rx.unprotect_rtp(&mut buf)?;
                }
            }
            Leg::Dtls(_) => return Err(MediaDrop::NotReady),
            Leg::Failed => return Err(MediaDrop::DtlsFailed),
        }
        if let Leg::Srtp { ctx, .. } = &mut self.legs[to] {
            if rtcp {
                ctx.tx.protect_rtcp(&mut buf)?;
            } else {
                ctx.tx.protect_rtp(&mut buf)?;
            }
        }
        Ok(buf)
    }
}

fn ready(l: &Leg) -> Result<(), MediaDrop> {
    match l {
        Leg::Plain | Leg::Srtp { .. } => Ok(()),
        Leg::Dtls(_) => Err(MediaDrop::NotReady),
        Leg::Failed => Err(MediaDrop::DtlsFailed),
    }
}

fn endpoint(l: &mut Leg) -> Option<&mut DtlsEndpoint> {
    match l {
        Leg::Dtls(ep) => Some(ep),
        Leg::Srtp { dtls, .. } => dtls.as_mut(),
        _ => None,
    }
}

fn srtp_leg(keys: SrtpKeys, from_dtls: bool) -> Leg {
    match Contexts::new(&keys) {
        Ok(ctx) => Leg::Srtp {
            ctx,
            keys,
            dtls: None,
            from_dtls,
        },
        Err(_) => Leg::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::srtp_sdp::SrtpSuite;

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 1, 0, 0xca, 0xfe, 0xba, 0xbe]);
        p.extend_from_slice(&[seq as u8; 160]);
        p
    }

    const RTCP: [u8; 12] = [0x80, 0xc8, 0, 2, 0xca, 0xfe, 0xba, 0xbe, 1, 2, 3, 4];

    struct Browser {
        ep: DtlsEndpoint,
        tx: Option<SrtpContext>,
        rx: Option<SrtpContext>,
    }

    /// A browser (DTLS active) against leg 0 of `cs`; runs the handshake to its end.
    fn handshake(
        cs: &mut CryptoStream,
        me: &DtlsIdentity,
        relay_fp: &DtlsIdentity,
    ) -> (Browser, Vec<DtlsOutcome>) {
        let now = Instant::now();
        let mut b = Browser {
            ep: DtlsEndpoint::new(me, DtlsRole::Active, relay_fp.fingerprint.clone(), now).unwrap(),
            tx: None,
            rx: None,
        };
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            let Some(d) = b.ep.poll_transmit() else { break };
            let o = cs.dtls(0, now, &d);
            for r in &o.replies {
                if let Ok(Some(k)) = b.ep.handle_input(now, r) {
                    b.tx = Some(SrtpContext::new(k.suite, &k.local, Direction::Outbound).unwrap());
                    b.rx = Some(SrtpContext::new(k.suite, &k.remote, Direction::Inbound).unwrap());
                }
            }
            outcomes.push(o);
        }
        (b, outcomes)
    }

    fn dtls_plain(remote: &DtlsIdentity) -> StreamCrypto {
        StreamCrypto {
            legs: [
                LegCrypto::Dtls {
                    setup: Setup::Passive,
                    remote: remote.fingerprint.clone(),
                },
                LegCrypto::None,
            ],
            ..StreamCrypto::default()
        }
    }

    #[test]
    fn dtls_to_plain_both_ways_with_replay_and_tamper_refused() {
        let (relay, browser) = (
            DtlsIdentity::generate().unwrap(),
            DtlsIdentity::generate().unwrap(),
        );
        let sc = dtls_plain(&browser);
        let mut cs = CryptoStream::new(&sc, &relay, [None, None], Instant::now()).unwrap();
        assert_eq!(cs.label(), "DTLS-SRTP<->RTP");
        assert!(cs.terminates_dtls(0) && !cs.terminates_dtls(1));
        assert_eq!(
            cs.media(1, &rtp(1)),
            Err(MediaDrop::NotReady),
            "no keys yet"
        );
        let (mut b, outcomes) = handshake(&mut cs, &browser, &relay);
        assert_eq!(outcomes.iter().filter(|o| o.connected).count(), 1);
        assert!(outcomes.iter().all(|o| o.failed.is_none()));
        let (tx, rx) = (b.tx.as_mut().unwrap(), b.rx.as_mut().unwrap());
        // Browser -> SIP: SRTP in, RTP out.
        for seq in 10..20 {
            let mut p = rtp(seq);
            tx.protect_rtp(&mut p).unwrap();
            assert_eq!(cs.media(0, &p).unwrap(), rtp(seq));
            if seq == 19 {
                assert_eq!(cs.media(0, &p), Err(MediaDrop::Replay));
                let mut bad = rtp(20);
                tx.protect_rtp(&mut bad).unwrap();
                bad[30] ^= 4;
                assert_eq!(cs.media(0, &bad), Err(MediaDrop::Auth));
            }
        }
        // SIP -> browser: RTP in, SRTP out.
        for seq in 500..505 {
            let mut p = cs.media(1, &rtp(seq)).unwrap();
            assert_ne!(p, rtp(seq));
            rx.unprotect_rtp(&mut p).unwrap();
            assert_eq!(p, rtp(seq));
        }
        // RTCP both ways (RFC 5761 demux by packet type).
        let mut c = cs.media(1, &RTCP).unwrap();
        rx.unprotect_rtcp(&mut c).unwrap();
        assert_eq!(c, RTCP);
        let mut c = RTCP.to_vec();
        tx.protect_rtcp(&mut c).unwrap();
        assert_eq!(cs.media(0, &c).unwrap(), RTCP);
        assert_eq!(cs.media(0, &[0x80, 0]), Err(MediaDrop::Malformed));
        assert_eq!(cs.media(0, &[0x80; 13]), Err(MediaDrop::Malformed));

        // A restarted daemon rebuilds the leg from the saved keys: the call goes on.
        let saved = cs.dtls_keys();
        assert!(saved[0].is_some() && saved[1].is_none());
        let mut again = CryptoStream::new(&sc, &relay, saved, Instant::now()).unwrap();
        assert!(again.terminates_dtls(0));
        let mut p = rtp(21);
        b.tx.as_mut().unwrap().protect_rtp(&mut p).unwrap();
        assert_eq!(again.media(0, &p).unwrap(), rtp(21));
        let mut p = again.media(1, &rtp(600)).unwrap();
        b.rx.as_mut().unwrap().unprotect_rtp(&mut p).unwrap();
        assert_eq!(p, rtp(600));
    }

    #[test]
    fn wrong_fingerprint_fails_the_leg_and_nothing_flows() {
        let (relay, browser, other) = (
            DtlsIdentity::generate().unwrap(),
            DtlsIdentity::generate().unwrap(),
            DtlsIdentity::generate().unwrap(),
        );
        let mut cs =
            CryptoStream::new(&dtls_plain(&other), &relay, [None, None], Instant::now()).unwrap();
        let (b, outcomes) = handshake(&mut cs, &browser, &relay);
        assert!(b.tx.is_none());
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o.failed, Some(DtlsError::Fingerprint)))
        );
        assert!(outcomes.iter().all(|o| !o.connected));
        assert_eq!(cs.media(1, &rtp(1)), Err(MediaDrop::DtlsFailed));
        assert_eq!(cs.media(0, &rtp(1)), Err(MediaDrop::DtlsFailed));
    }

    #[test]
    fn sdes_to_sdes_with_other_keys() {
        let s = SrtpSuite::AesCm128HmacSha1_80;
        let key = |b: u8| vec![b; 30];
        let sc = StreamCrypto {
            legs: [
                LegCrypto::Sdes {
                    suite: s,
                    tag: 1,
                    local: key(1),
                    remote: key(2),
                },
                LegCrypto::Sdes {
                    suite: SrtpSuite::AeadAes128Gcm,
                    tag: 1,
                    local: vec![3; 28],
                    remote: vec![4; 28],
                },
            ],
            ..StreamCrypto::default()
        };
        let relay = DtlsIdentity::generate().unwrap();
        let mut cs = CryptoStream::new(&sc, &relay, [None, None], Instant::now()).unwrap();
        assert_eq!(cs.label(), "SDES-SRTP<->SDES-SRTP");
        assert!(!cs.terminates_dtls(0) && !cs.terminates_dtls(1));
        let mut a_tx = SrtpContext::new(s, &key(2), Direction::Outbound).unwrap();
        let mut b_rx =
            SrtpContext::new(SrtpSuite::AeadAes128Gcm, &[3; 28], Direction::Inbound).unwrap();
        let mut p = rtp(7);
        a_tx.protect_rtp(&mut p).unwrap();
        let mut out = cs.media(0, &p).unwrap();
        b_rx.unprotect_rtp(&mut out).unwrap();
        assert_eq!(out, rtp(7));
        assert_eq!(cs.dtls_keys(), [None, None]);
    }
}
