//! ICE-lite agent for one leg (RFC 8445 s.2.5, RFC 7584 termination), sans-IO.
//!
//! It never sends checks; it answers them and decides which remote address media may use.
//! Time comes in as `now`; replies come out as `Transmit`; state changes come out as `IceEvent`s.
//!
//! Consent (RFC 7675) is verified by the agent that sends checks, the full agent: it stops
//! sending when its checks go unanswered. A lite agent sends none, so it has nothing to verify
//! and must not revoke a nominated pair because checks stopped: RFC 8445 s.11 lets a full peer
//! keep the pair alive with Binding Indications or media alone (SIP softphones do), neither of
//! which carries integrity. [`IceEvent::ConsentExpired`] is therefore informational; media
//! liveness is the daemon's media timeout.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use crate::component::Component;
use crate::creds::Credentials;
use crate::stun::{self, Class, IntegrityKey, MessageBuilder, StunError, StunMessage};

/// RFC 7675 s.5.1's 30 s: after this long without a valid check on the nominated pair the agent
/// reports [`IceEvent::ConsentExpired`] (informational, see the module docs).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on remembered pairs; only authenticated checks create them.
const MAX_PAIRS: usize = 32;

/// A datagram to send from `source` (the local address the request arrived on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub component: Component,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceEvent {
    /// First valid check on this pair (since restart or expiry).
    PairValidated {
        component: Component,
        local: SocketAddr,
        remote: SocketAddr,
        peer_reflexive: bool,
    },
    /// The component's first nominated pair: becomes a forwarding entry.
    PairNominated {
        component: Component,
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// A later nomination replaced the forwarding entry.
    NominatedPairChanged {
        component: Component,
        local: SocketAddr,
        old_remote: SocketAddr,
        remote: SocketAddr,
    },
    /// No valid check on the nominated pair for `CONSENT_TIMEOUT`; the agent forgets the pair, so
    /// the next nomination is a [`IceEvent::PairNominated`] again. Informational: forwarding must
    /// go on (a lite agent does not own consent, see the module docs).
    ConsentExpired {
        component: Component,
        local: SocketAddr,
        remote: SocketAddr,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceError {
    #[error("malformed STUN: {0}")]
    Stun(#[from] StunError),
    #[error("Binding request without FINGERPRINT")]
    MissingFingerprint,
    #[error("STUN method 0x{0:03x} is not Binding")]
    UnsupportedMethod(u16),
    #[error("component {0:?} is not in use on this leg")]
    UnknownComponent(Component),
}

#[derive(Debug, Clone)]
struct Pair {
    component: Component,
    local: SocketAddr,
    remote: SocketAddr,
    priority: u32,
    last_valid: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Nominated {
    local: SocketAddr,
    remote: SocketAddr,
    priority: u32,
    last_valid: Instant,
}

#[derive(Debug)]
pub struct IceLiteAgent {
    local: Credentials,
    key: IntegrityKey,
    remote: Option<Credentials>,
    components: u8,
    remote_candidates: Vec<(Component, SocketAddr)>,
    pairs: Vec<Pair>,
    nominated: [Option<Nominated>; 2],
    events: VecDeque<IceEvent>,
}

enum Verdict {
    Success,
    Error(u16, &'static str, bool),
}

impl IceLiteAgent {
    /// `components`: 1 with rtcp-mux, 2 otherwise.
    pub fn new(local: Credentials, components: u8) -> IceLiteAgent {
        IceLiteAgent {
            key: IntegrityKey::new(local.pwd.as_bytes()),
            local,
            remote: None,
            components: components.clamp(1, 2),
            remote_candidates: Vec::new(),
            pairs: Vec::new(),
            nominated: [None, None],
            events: VecDeque::new(),
        }
    }

    pub fn local_credentials(&self) -> &Credentials {
        &self.local
    }

    pub fn set_remote_credentials(&mut self, remote: Credentials) {
        self.remote = Some(remote);
    }

    /// Signalled remote candidate (from SDP); sources not signalled are peer-reflexive.
    pub fn add_remote_candidate(&mut self, component: Component, addr: SocketAddr) {
        if !self.remote_candidates.contains(&(component, addr)) {
            self.remote_candidates.push((component, addr));
        }
    }

    /// ICE restart (RFC 8445 s.9): new credentials, pairs must validate again. Nominated pairs
    /// keep forwarding until a new nomination replaces them.
    pub fn restart(&mut self, local: Credentials, remote: Option<Credentials>) {
        self.key = IntegrityKey::new(local.pwd.as_bytes());
        self.local = local;
        self.remote = remote;
        self.remote_candidates.clear();
        self.pairs.clear();
    }

    /// The leg's relay endpoints changed: 1 component with rtcp-mux, 2 without (a re-offer may
    /// add or drop rtcp-mux). State of a dropped component goes with it.
    pub fn set_components(&mut self, components: u8) {
        self.components = components.clamp(1, 2);
        if self.components == 1 {
            self.nominated[Component::Rtcp.index()] = None;
            self.pairs.retain(|p| p.component == Component::Rtp);
        }
    }

    /// Whether a STUN message is this agent's: its USERNAME is "<our ufrag>:<peer ufrag>"
    /// (RFC 8445 s.7.2.2) with the peer's ufrag known and equal. Forks share one relay endpoint
    /// and local credentials; this tells their checks apart (as str0m's `accepts_message`).
    pub fn accepts_message(&self, msg: &StunMessage<'_>) -> bool {
        let (Some(remote), Some(username)) = (&self.remote, msg.attributes.username) else {
            return false;
        };
        username
            .split_once(':')
            .is_some_and(|(ours, theirs)| ours == self.local.ufrag && theirs == remote.ufrag)
    }

    pub fn nominated(&self, component: Component) -> Option<SocketAddr> {
        self.nominated[component.index()].map(|n| n.remote)
    }

    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nominated
            .iter()
            .flatten()
            .map(|n| n.last_valid)
            .chain(self.pairs.iter().map(|p| p.last_valid))
            .min()
            .map(|t| t + CONSENT_TIMEOUT)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = |t: Instant| now.saturating_duration_since(t) >= CONSENT_TIMEOUT;
        self.pairs.retain(|p| !expired(p.last_valid));
        for (i, slot) in self.nominated.iter_mut().enumerate() {
            if let Some(n) = *slot
                && expired(n.last_valid)
            {
                *slot = None;
                self.events.push_back(IceEvent::ConsentExpired {
                    component: if i == 0 {
                        Component::Rtp
                    } else {
                        Component::Rtcp
                    },
                    local: n.local,
                    remote: n.remote,
                });
            }
        }
    }

    /// Handles one STUN datagram received on `local_addr` from `source`.
    ///
    /// `Err`: dropped, no reply, no state change. `Ok(None)`: nothing to send (indications,
    /// stray responses). `Ok(Some)`: a success or error response; only success changes state.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        component: Component,
        local_addr: SocketAddr,
        source: SocketAddr,
        datagram: &[u8],
    ) -> Result<Option<Transmit>, IceError> {
        if component as u8 > self.components {
            return Err(IceError::UnknownComponent(component));
        }
        let msg = StunMessage::parse(datagram)?;
        if msg.method != stun::BINDING {
            return Err(IceError::UnsupportedMethod(msg.method));
        }
        if msg.class != Class::Request {
            // Indications refresh NAT bindings; a lite agent sends no requests, so responses are stray.
            return Ok(None);
        }
        if !msg.has_fingerprint() {
            return Err(IceError::MissingFingerprint);
        }
        let verdict = self.check(&msg);
        let reply = self.respond(&msg, source, &verdict)?;
        if let Verdict::Success = verdict {
            let a = &msg.attributes;
            self.on_valid_check(
                now,
                component,
                local_addr,
                source,
                a.priority.unwrap_or(0),
                a.use_candidate,
            );
        }
        Ok(Some(Transmit {
            component,
            source: local_addr,
            destination: source,
            bytes: reply,
        }))
    }

    /// The checks, in the order the issue and RFC 8489 s.9.1.3 / RFC 8445 s.7.3 require.
    fn check(&self, msg: &StunMessage<'_>) -> Verdict {
        let a = &msg.attributes;
        let Some(username) = a.username else {
            return Verdict::Error(400, "Bad Request", false);
        };
        if !msg.has_integrity() && !msg.has_integrity_sha256() {
            return Verdict::Error(400, "Bad Request", false);
        }
        let (lfrag, rfrag) = username.split_once(':').unwrap_or((username, ""));
        let rfrag_ok = self.remote.as_ref().is_none_or(|r| r.ufrag == rfrag);
        let mac_ok = if msg.has_integrity_sha256() {
            msg.verify_integrity_sha256(&self.key)
        } else {
            msg.verify_integrity(&self.key)
        };
        if lfrag != self.local.ufrag || !rfrag_ok || !mac_ok {
            return Verdict::Error(401, "Unauthenticated", false);
        }
        if !msg.unknown_required.is_empty() {
            return Verdict::Error(420, "Unknown Attribute", true);
        }
        if a.ice_controlled.is_some() {
            // A lite agent is always controlled (RFC 8445 s.7.3.1.1).
            return Verdict::Error(487, "Role Conflict", true);
        }
        if a.priority.is_none() {
            return Verdict::Error(400, "Bad Request", true);
        }
        Verdict::Success
    }

    fn respond(
        &self,
        msg: &StunMessage<'_>,
        source: SocketAddr,
        verdict: &Verdict,
    ) -> Result<Vec<u8>, StunError> {
        let sign = |b: MessageBuilder| {
            if msg.has_integrity_sha256() {
                b.integrity_sha256(&self.key)
            } else {
                b.integrity(&self.key)
            }
        };
        let b = match verdict {
            Verdict::Success => sign(
                MessageBuilder::new(Class::Success, stun::BINDING, msg.transaction_id)
                    .xor_mapped_address(source),
            ),
            Verdict::Error(code, reason, signed) => {
                let mut b = MessageBuilder::new(Class::Error, stun::BINDING, msg.transaction_id)
                    .error_code(*code, reason);
                if *code == 420 {
                    b = b.unknown_attributes(&msg.unknown_required);
                }
                if *signed { sign(b) } else { b }
            }
        };
        b.fingerprint().build()
    }

    fn on_valid_check(
        &mut self,
        now: Instant,
        component: Component,
        local: SocketAddr,
        remote: SocketAddr,
        priority: u32,
        use_candidate: bool,
    ) {
        match self
            .pairs
            .iter_mut()
            .find(|p| p.component == component && p.local == local && p.remote == remote)
        {
            Some(p) => {
                p.last_valid = now;
                p.priority = priority;
            }
            None => {
                if self.pairs.len() >= MAX_PAIRS {
                    // Evict the pair checked longest ago.
                    if let Some(i) = (0..self.pairs.len()).min_by_key(|&i| self.pairs[i].last_valid)
                    {
                        self.pairs.swap_remove(i);
                    }
                }
                self.pairs.push(Pair {
                    component,
                    local,
                    remote,
                    priority,
                    last_valid: now,
                });
                self.events.push_back(IceEvent::PairValidated {
                    component,
                    local,
                    remote,
                    peer_reflexive: !self.remote_candidates.contains(&(component, remote)),
                });
            }
        }

        let slot = &mut self.nominated[component.index()];
        if let Some(n) = slot
            && n.local == local
            && n.remote == remote
        {
            // Any valid check on the nominated pair refreshes consent.
            n.last_valid = now;
            n.priority = priority;
            return;
        }
        if !use_candidate {
            return;
        }
        let new = Nominated {
            local,
            remote,
            priority,
            last_valid: now,
        };
        match *slot {
            None => {
                *slot = Some(new);
                self.events.push_back(IceEvent::PairNominated {
                    component,
                    local,
                    remote,
                });
            }
            // Equal priority moves (NAT rebinding); a late lower-priority aggressive nomination does not.
            Some(old) if priority >= old.priority => {
                *slot = Some(new);
                self.events.push_back(IceEvent::NominatedPairChanged {
                    component,
                    local,
                    old_remote: old.remote,
                    remote,
                });
            }
            Some(_) => {}
        }
    }
}
