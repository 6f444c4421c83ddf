//! Calls, monologues and media streams; offer/answer rewriting (RFC 3264) with the RFC 7584 ICE
//! modes; latching (RFC 7362); the forwarding entries the fast path needs.
//!
//! | module | owns |
//! |---|---|
//! | [`model`] | the call, its two [`Side`]s, monologues, streams; the versioned saved state |
//! | `options` | the NG options as types |
//! | `interfaces` | logical interfaces and which one each side of a new call uses |
//! | `negotiation` | offer and answer: ports (in a transaction), ICE roles, rtcp-mux |
//! | `forwarding` | the entries a call needs; latching and ICE nominations |
//! | `rewrite` | the SDP sent to each party |
//! | `views` | read-only views for `query` and the daemon's ICE agents |
//! | `records` | one call as a versioned record (journal, shared stores) |
//!
//! Every operation that changes a call returns a [`CallUpdate`]: the relay endpoints, forwarding
//! entries and ICE legs the call has now. The daemon makes its sockets, fast-path table and
//! agents match it, so no caller can forget a resync.

mod error;
mod forwarding;
mod interfaces;
pub mod model;
mod negotiation;
mod options;
mod records;
mod rewrite;
mod views;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub use error::SessionError;
pub use forwarding::{LatchOutcome, LatchTimers};
pub use interfaces::{AddressFamily, Config, LogicalInterface};
pub use model::{IceRole, STATE_VERSION, SessionsState, Side};
pub use options::{AnswerOptions, Flags, IceOption, OfferOptions, Replace, RtcpMuxOption};
pub use records::{CALL_RECORD_VERSION, CallRecord};
pub use rewrite::{foundation, priority};
pub use views::{IceLeg, LegInfo, StreamInfo};

use crate::component::Component;
use crate::creds::Credentials;
use crate::forwarding::ForwardingEntry;
use crate::ports::PortAllocator;
use model::{Call, EndpointRef};
use negotiation::{PortTxn, free_stream};

/// What a call needs now, after an operation changed it: bind these relay endpoints, install
/// these entries (the whole set: diff it against what is installed), run these ICE agents.
/// Empty for a call that is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallUpdate {
    /// Relay endpoints (sockets) of the call, sorted.
    pub endpoints: Vec<SocketAddr>,
    pub entries: Vec<ForwardingEntry>,
    pub ice_legs: Vec<IceLeg>,
}

/// Caps on one offer or answer, checked before anything is allocated. The defaults are far above
/// any real call (WebRTC conferences stay under a few dozen m= lines and a few KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_sdp_bytes: usize,
    pub max_media: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_sdp_bytes: 64 * 1024,
            max_media: 64,
        }
    }
}

/// An offer or answer done: the SDP to send on, and the call's [`CallUpdate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub sdp: String,
    pub update: CallUpdate,
}

type CredentialSource = Box<dyn FnMut() -> Credentials + Send>;

/// Whether a port can be used on a bind address right now (the daemon tries to bind it).
pub type PortCheck = Box<dyn FnMut(IpAddr, u16) -> bool + Send>;

/// All calls, the configured interfaces and their port allocators.
pub struct Sessions {
    interfaces: Vec<LogicalInterface>,
    allocators: HashMap<IpAddr, PortAllocator>,
    calls: BTreeMap<String, Call>,
    next_stream: u64,
    creds: CredentialSource,
    /// None: every free port can be used.
    port_check: Option<PortCheck>,
    /// Every relay endpoint and where it belongs: packets from the fast path are routed in O(1).
    endpoints: HashMap<SocketAddr, EndpointRef>,
    /// Each call's indexed endpoints, so re-indexing one call costs only its own.
    call_endpoints: HashMap<String, Vec<SocketAddr>>,
    /// Restored calls' ports outside the configured range (the range changed across a restart).
    outside_range: Vec<(String, SocketAddr)>,
    latch_timers: LatchTimers,
    limits: Limits,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("interfaces", &self.interfaces)
            .field("calls", &self.calls.len())
            .finish()
    }
}

impl Sessions {
    pub fn new(config: Config) -> Result<Sessions, SessionError> {
        Sessions::with_credentials(config, Credentials::random)
    }

    /// Like [`Sessions::new`] with an injected credential source (deterministic tests).
    pub fn with_credentials(
        config: Config,
        creds: impl FnMut() -> Credentials + Send + 'static,
    ) -> Result<Sessions, SessionError> {
        if config.interfaces.is_empty() {
            return Err(SessionError::NoInterfaces);
        }
        let mut allocators = HashMap::new();
        for i in &config.interfaces {
            allocators.insert(
                i.bind,
                PortAllocator::new(config.port_min, config.port_max)?,
            );
        }
        Ok(Sessions {
            interfaces: config.interfaces,
            allocators,
            calls: BTreeMap::new(),
            next_stream: 1,
            creds: Box::new(creds),
            port_check: None,
            endpoints: HashMap::new(),
            call_endpoints: HashMap::new(),
            outside_range: Vec::new(),
            latch_timers: LatchTimers::default(),
            limits: Limits::default(),
        })
    }

    pub fn snapshot(&self) -> SessionsState {
        SessionsState {
            version: STATE_VERSION,
            interfaces: self.interfaces.clone(),
            calls: self.calls.clone(),
            next_stream: self.next_stream,
        }
    }

    /// Sessions from a snapshot taken with the same logical interfaces as `config` (ports and
    /// addresses in the snapshot are only valid for those). The allocators are built for
    /// `config`'s port range, which may differ from the one the snapshot was taken with: restored
    /// calls keep their ports, and those outside the new range are listed by
    /// [`Sessions::ports_outside_range`].
    pub fn restore(config: Config, state: SessionsState) -> Result<Sessions, SessionError> {
        if state.version == 0 || state.version > STATE_VERSION {
            return Err(SessionError::StateVersion {
                found: state.version,
                supported: STATE_VERSION,
            });
        }
        let mut s = Sessions::new(config)?;
        if s.interfaces != state.interfaces {
            return Err(SessionError::StateMismatch);
        }
        s.calls = state.calls;
        s.next_stream = state.next_stream;
        let ids: Vec<String> = s.calls.keys().cloned().collect();
        for call_id in &ids {
            s.reindex(call_id);
            let ports = s.calls[call_id]
                .sides()
                .flat_map(|(_, side)| {
                    let bind = s.interfaces[side.iface].bind;
                    side.streams
                        .iter()
                        .flat_map(|st| [st.rtp, st.rtcp])
                        .flatten()
                        .map(move |p| SocketAddr::new(bind, p))
                })
                .collect::<Vec<_>>();
            for a in ports {
                let reserved = s
                    .allocators
                    .get_mut(&a.ip())
                    .is_some_and(|al| al.reserve(a.port()));
                if !reserved {
                    s.outside_range.push((call_id.clone(), a));
                }
            }
        }
        Ok(s)
    }

    /// Restored calls' relay endpoints outside the configured port range: still served (their
    /// sockets are bound), but the fast path only handles the configured range.
    pub fn ports_outside_range(&self) -> &[(String, SocketAddr)] {
        &self.outside_range
    }

    /// Sets the caps on one offer or answer.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Sets the learning window and handover interval of latching.
    pub fn set_latch_timers(&mut self, timers: LatchTimers) {
        self.latch_timers = timers;
    }

    /// Makes allocation skip ports `check` refuses, such as ports another program has bound:
    /// an offer then gets ports the daemon can really open.
    pub fn set_port_check(&mut self, check: PortCheck) {
        self.port_check = Some(check);
    }

    /// Ports in use on an interface's bind address.
    pub fn ports_in_use(&self, bind: IpAddr) -> usize {
        self.allocators.get(&bind).map_or(0, |a| a.in_use())
    }

    pub fn call_ids(&self) -> impl Iterator<Item = &str> {
        self.calls.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The call a relay endpoint belongs to, in O(1).
    pub fn call_of(&self, local: SocketAddr) -> Option<&str> {
        self.endpoints.get(&local).map(|e| e.call_id.as_str())
    }

    /// Whether the call exists and every given tag belongs to it (what a delete needs).
    pub fn check_tags(
        &self,
        call_id: &str,
        from_tag: Option<&str>,
        to_tag: Option<&str>,
    ) -> Result<(), SessionError> {
        let call = self.known_call(call_id)?;
        for tag in from_tag.iter().chain(to_tag.iter()) {
            side_of_tag(call, call_id, tag)?;
        }
        Ok(())
    }

    /// The call `call_id`, or `UnknownCall`.
    fn known_call(&self, call_id: &str) -> Result<&Call, SessionError> {
        self.calls
            .get(call_id)
            .ok_or_else(|| SessionError::UnknownCall(call_id.to_owned()))
    }

    /// Deletes a whole call, or with `to_tag` one fork of it while other forks remain. Returns
    /// what the call needs now (empty when it is gone).
    pub fn delete(
        &mut self,
        call_id: &str,
        from_tag: Option<&str>,
        to_tag: Option<&str>,
    ) -> Result<CallUpdate, SessionError> {
        self.check_tags(call_id, from_tag, to_tag)?;
        let call = self
            .calls
            .get_mut(call_id)
            .ok_or_else(|| SessionError::UnknownCall(call_id.to_owned()))?;
        // A fork goes alone while others remain; the last leg takes the call with it.
        if let Some(t) = to_tag
            && let Some(side) = call.side_of(t)
            && call[side].remotes.len() > 1
        {
            call[side].remove_fork(t);
            return Ok(self.reindex(call_id));
        }
        if let Some(call) = self.calls.remove(call_id) {
            let mut txn = PortTxn::default();
            for side in call.into_sides() {
                let bind = self.interfaces[side.iface].bind;
                for mut st in side.streams {
                    free_stream(&mut st, bind, &mut txn);
                }
            }
            self.commit(&txn);
            self.outside_range.retain(|(c, _)| c != call_id);
        }
        Ok(self.reindex(call_id))
    }

    /// What a call needs now: its endpoints, entries and ICE legs (empty if it is gone).
    pub fn call_update(&self, call_id: &str) -> CallUpdate {
        let mut endpoints = self
            .call_endpoints
            .get(call_id)
            .cloned()
            .unwrap_or_default();
        endpoints.sort();
        CallUpdate {
            endpoints,
            entries: self.call_entries(call_id),
            ice_legs: self.ice_legs(call_id),
        }
    }

    /// Re-indexes a call's relay endpoints after it changed; returns its [`CallUpdate`].
    fn reindex(&mut self, call_id: &str) -> CallUpdate {
        let fresh: Vec<(SocketAddr, EndpointRef)> = self.endpoints_of(call_id).collect();
        for old in self.call_endpoints.remove(call_id).unwrap_or_default() {
            self.endpoints.remove(&old);
        }
        if !fresh.is_empty() {
            self.call_endpoints
                .insert(call_id.to_owned(), fresh.iter().map(|(a, _)| *a).collect());
        }
        self.endpoints.extend(fresh);
        self.call_update(call_id)
    }

    fn endpoints_of<'a>(
        &'a self,
        call_id: &'a str,
    ) -> impl Iterator<Item = (SocketAddr, EndpointRef)> + 'a {
        self.calls.get(call_id).into_iter().flat_map(move |call| {
            call.sides().flat_map(move |(side, cs)| {
                let bind = self.interfaces[cs.iface].bind;
                cs.streams.iter().enumerate().flat_map(move |(i, st)| {
                    st.ports().map(move |(component, p)| {
                        (
                            SocketAddr::new(bind, p),
                            EndpointRef {
                                call_id: call_id.to_owned(),
                                side,
                                stream: i,
                                component,
                            },
                        )
                    })
                })
            })
        })
    }

    /// Where a relay endpoint belongs, in O(1).
    fn locate(&self, local: SocketAddr) -> Result<&EndpointRef, SessionError> {
        self.endpoints
            .get(&local)
            .ok_or(SessionError::UnknownEndpoint(local))
    }

    /// The component a relay endpoint serves, if it is one.
    pub fn component_of(&self, local: SocketAddr) -> Option<Component> {
        self.endpoints.get(&local).map(|e| e.component)
    }
}

/// The side of `call` that `tag` belongs to, or `UnknownTag`.
fn side_of_tag(call: &Call, call_id: &str, tag: &str) -> Result<Side, SessionError> {
    call.side_of(tag).ok_or_else(|| SessionError::UnknownTag {
        call_id: call_id.to_owned(),
        tag: tag.to_owned(),
    })
}
