//! The ICE-lite agents: one per ICE leg (call, tag, stream), as quinn-proto's endpoint holds its
//! connections. Each relay endpoint maps to the agents that share it: a forked call's answers
//! share the B-side endpoint and local credentials, one agent per fork (RFC 7584 s.4.4). A STUN
//! request goes to the agent whose remote ufrag its USERNAME names (str0m's `accepts_message`);
//! only when none matches (remote credentials not known yet, or a stranger) it goes to the
//! active fork's agent, which then answers or refuses it by its own checks.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    time::Instant,
};

use relay_core::{
    forwarding::StreamId,
    ice::{Component, IceEvent, IceLiteAgent, Transmit},
    session::{IceLeg, IceRole},
    stun::StunMessage,
};

/// One ICE leg: a call, the tag of the party on the other end, a media stream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentKey {
    pub call_id: String,
    pub tag: String,
    pub stream: StreamId,
}

/// The agents sharing one relay endpoint, and the one for the active fork.
#[derive(Default)]
struct Route {
    agents: Vec<(AgentKey, Component)>,
    active: Option<AgentKey>,
}

/// What one STUN datagram led to.
pub struct StunOutcome {
    /// The response to send, from the endpoint the request arrived on.
    pub transmit: Option<Transmit>,
    /// For the `relay_ice_checks_total` counter.
    pub outcome: &'static str,
    pub events: Vec<(AgentKey, IceEvent)>,
}

#[derive(Default)]
pub struct IceRegistry {
    /// Ordered by call first, so one call's agents are a range.
    agents: BTreeMap<AgentKey, IceLiteAgent>,
    routes: HashMap<SocketAddr, Route>,
    routes_of: HashMap<String, Vec<SocketAddr>>,
    /// Each agent's `poll_timeout`, so the earliest is found without visiting every agent.
    deadlines: BTreeSet<(Instant, AgentKey)>,
    deadline_of: HashMap<AgentKey, Instant>,
}

impl IceRegistry {
    /// Creates, updates (new remote credentials, ICE restart, components) or drops the agents
    /// of `call_id` to match `legs`; `active_tags` names the active fork on each endpoint.
    pub fn sync(
        &mut self,
        call_id: &str,
        legs: &[IceLeg],
        active_tags: &BTreeMap<SocketAddr, String>,
    ) {
        for local in self.routes_of.remove(call_id).unwrap_or_default() {
            self.routes.remove(&local);
        }
        let mut keep = BTreeSet::new();
        let mut endpoints = Vec::new();
        for leg in legs.iter().filter(|l| l.role != IceRole::None) {
            let key = AgentKey {
                call_id: call_id.to_owned(),
                tag: leg.tag.clone(),
                stream: leg.stream,
            };
            let components = leg.local_endpoints.len().clamp(1, 2) as u8;
            let agent = self
                .agents
                .entry(key.clone())
                .or_insert_with(|| IceLiteAgent::new(leg.local.clone(), components));
            if agent.local_credentials() != &leg.local {
                agent.restart(leg.local.clone(), leg.remote.clone());
            } else if let Some(r) = &leg.remote {
                agent.set_remote_credentials(r.clone());
            }
            // A re-offer may have added or dropped rtcp-mux since the agent was created.
            agent.set_components(components);
            for c in &leg.remote_candidates {
                let comp = Component::from_id(c.component).unwrap_or(Component::Rtp);
                agent.add_remote_candidate(comp, SocketAddr::new(c.addr, c.port));
            }
            for (i, local) in leg.local_endpoints.iter().enumerate() {
                let comp = Component::nth(i);
                let route = self.routes.entry(*local).or_default();
                if route.agents.is_empty() {
                    endpoints.push(*local);
                }
                if active_tags.get(local) == Some(&leg.tag) {
                    route.active = Some(key.clone());
                }
                route.agents.push((key.clone(), comp));
            }
            keep.insert(key);
        }
        let gone: Vec<AgentKey> = self
            .call_agents(call_id)
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.agents.remove(&key);
            self.unschedule(&key);
        }
        for key in keep {
            self.reschedule(&key);
        }
        if !endpoints.is_empty() {
            self.routes_of.insert(call_id.to_owned(), endpoints);
        }
    }

    fn call_agents<'a>(&'a self, call_id: &'a str) -> impl Iterator<Item = &'a AgentKey> + 'a {
        let start = AgentKey {
            call_id: call_id.to_owned(),
            tag: String::new(),
            stream: StreamId(0),
        };
        self.agents
            .range(start..)
            .map(|(k, _)| k)
            .take_while(move |k| k.call_id == call_id)
    }

    /// The agent a STUN datagram on `local` is for, and the component of `local` for it.
    fn route(&self, local: SocketAddr, data: &[u8]) -> Option<(AgentKey, Component)> {
        let route = self.routes.get(&local)?;
        let is_active = |k: &AgentKey| route.active.as_ref() == Some(k);
        if let Ok(msg) = StunMessage::parse(data) {
            let mut own = route
                .agents
                .iter()
                .filter(|(k, _)| self.agents.get(k).is_some_and(|a| a.accepts_message(&msg)));
            if let Some(first) = own.next() {
                // Two forks with the same ufrag (a misbehaving UA): the active one wins.
                let pick = std::iter::once(first)
                    .chain(own)
                    .find(|(k, _)| is_active(k))
                    .unwrap_or(first);
                return Some(pick.clone());
            }
        }
        route
            .agents
            .iter()
            .find(|(k, _)| is_active(k))
            .or_else(|| route.agents.first())
            .cloned()
    }

    /// A STUN datagram on a relay endpoint: its agent answers (or not).
    pub fn handle_stun(
        &mut self,
        now: Instant,
        local: SocketAddr,
        source: SocketAddr,
        data: &[u8],
    ) -> StunOutcome {
        let Some((key, comp)) = self.route(local, data) else {
            tracing::debug!(%local, %source, "STUN on a relay port without an ICE agent");
            return StunOutcome {
                transmit: None,
                outcome: "no_agent",
                events: Vec::new(),
            };
        };
        let Some(agent) = self.agents.get_mut(&key) else {
            return StunOutcome {
                transmit: None,
                outcome: "no_agent",
                events: Vec::new(),
            };
        };
        let (transmit, outcome) = match agent.handle_stun(now, comp, local, source, data) {
            Ok(Some(t)) => (Some(t), "answered"),
            Ok(None) => (None, "ignored"),
            Err(e) => {
                tracing::debug!(call_id = %key.call_id, %local, %source, error = %e, "STUN dropped");
                (None, "dropped")
            }
        };
        let events = self.drain(&key);
        self.reschedule(&key);
        StunOutcome {
            transmit,
            outcome,
            events,
        }
    }

    /// The earliest time an agent has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Runs the timers of every agent that is due.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(AgentKey, IceEvent)> {
        let mut events = Vec::new();
        while let Some((t, key)) = self.deadlines.first().cloned()
            && t <= now
        {
            if let Some(a) = self.agents.get_mut(&key) {
                a.handle_timeout(now);
            }
            events.extend(self.drain(&key));
            self.reschedule(&key);
            if self.deadline_of.get(&key) == Some(&t) {
                // The agent asked again for a time already past: do not spin on it.
                self.unschedule(&key);
            }
        }
        events
    }

    fn drain(&mut self, key: &AgentKey) -> Vec<(AgentKey, IceEvent)> {
        let mut out = Vec::new();
        if let Some(a) = self.agents.get_mut(key) {
            while let Some(ev) = a.poll_event() {
                out.push((key.clone(), ev));
            }
        }
        out
    }

    fn unschedule(&mut self, key: &AgentKey) {
        if let Some(t) = self.deadline_of.remove(key) {
            self.deadlines.remove(&(t, key.clone()));
        }
    }

    fn reschedule(&mut self, key: &AgentKey) {
        let next = self.agents.get(key).and_then(IceLiteAgent::poll_timeout);
        if next.is_some() && self.deadline_of.get(key).copied() == next {
            return;
        }
        self.unschedule(key);
        if let Some(t) = next {
            self.deadlines.insert((t, key.clone()));
            self.deadline_of.insert(key.clone(), t);
        }
    }
}
