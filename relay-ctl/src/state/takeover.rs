//! Ownership of calls between relays sharing a store, sans-IO: what a relay does with a record
//! it reads, which foreign calls it may take over, and when a write may replace a stored record.
//!
//! The rules (rtpengine's users' complaints in mind: calls not failed over, old actives fighting,
//! SET/DEL loops):
//! - Every record names its owner and a takeover epoch. Only the owner installs media.
//! - A relay writes a record only for calls it owns, and the store refuses the write when the
//!   stored record belongs to another relay with an epoch at least as high ([`may_overwrite`],
//!   also enforced atomically in Redis by a script). A returning old active is refused, learns it
//!   lost the call and demotes it to foreign: it never fights.
//! - Taking over raises the epoch by one ([`taken_over`]); it happens for foreign calls whose
//!   bind addresses are all on this host ([`takeover_candidates`]), on command or when the
//!   floating address appears ([`AddrWatch`]).
//! - Receiving a notification never causes a write for a foreign call (no loops); a deleted key
//!   removes the foreign call and nothing else.

use std::{collections::BTreeSet, net::IpAddr};

use super::record::CallRecord;

/// How this relay holds a call right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub own: bool,
    pub epoch: u64,
}

/// What to do with a record read from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: our own write coming back, or an older record than the one we hold.
    Ignore,
    /// Keep (or replace) the call as foreign: ports reserved, nothing installed.
    HoldForeign,
    /// Another relay took our call over: uninstall it and keep it as foreign.
    Demote,
    /// A record of ours that we do not hold (our state file lost it): hold it as own.
    RestoreOwn,
}

pub fn on_record(me: &str, held: Option<Held>, rec: &CallRecord) -> Verdict {
    let mine = rec.owner == me;
    match (held, mine) {
        (None, true) => Verdict::RestoreOwn,
        (None, false) => Verdict::HoldForeign,
        (Some(h), true) if h.own => Verdict::Ignore,
        // Ours in the store but foreign here: only if we took it over and then demoted; the
        // store is the truth.
        (Some(h), true) => {
            if rec.epoch >= h.epoch {
                Verdict::RestoreOwn
            } else {
                Verdict::Ignore
            }
        }
        (Some(h), false) if h.own => {
            if rec.epoch >= h.epoch {
                Verdict::Demote
            } else {
                Verdict::Ignore
            }
        }
        (Some(h), false) => {
            if rec.epoch >= h.epoch {
                Verdict::HoldForeign
            } else {
                Verdict::Ignore
            }
        }
    }
}

/// Whether `me` writing a record of `epoch` may replace what the store holds. The Redis
/// script [`super::redis`] runs is this function.
pub fn may_overwrite(me: &str, epoch: u64, stored: Option<(&str, u64)>) -> bool {
    match stored {
        None => true,
        Some((owner, _)) if owner == me => true,
        Some((_, stored_epoch)) => stored_epoch < epoch,
    }
}

/// The record after `me` took the call over.
pub fn taken_over(rec: &CallRecord, me: &str, now_ms: u64) -> CallRecord {
    let mut r = rec.clone();
    r.owner = me.to_owned();
    r.epoch = rec.epoch + 1;
    r.updated_ms = now_ms;
    r
}

/// Foreign calls this relay can take over: every bind address of the call is on this host.
pub fn takeover_candidates<'a>(
    foreign: impl IntoIterator<Item = &'a CallRecord>,
    present: &BTreeSet<IpAddr>,
) -> Vec<String> {
    foreign
        .into_iter()
        .filter(|r| {
            super::record::binds(&r.call)
                .iter()
                .all(|a| present.contains(a))
        })
        .map(|r| r.call_id.clone())
        .collect()
}

/// Which of the watched (floating) addresses are on this host, fed with the host's address set
/// ([`super::host_addrs`]). Level-triggered:
/// the daemon takes over foreign calls whenever their addresses are present, so a record that
/// arrives after the address moved is taken over too.
#[derive(Debug, Default)]
pub struct AddrWatch {
    watched: BTreeSet<IpAddr>,
    present: BTreeSet<IpAddr>,
}

impl AddrWatch {
    pub fn new(watched: impl IntoIterator<Item = IpAddr>) -> AddrWatch {
        AddrWatch {
            watched: watched.into_iter().collect(),
            present: BTreeSet::new(),
        }
    }

    /// Records the host's addresses; returns the watched ones that appeared since last time.
    pub fn update(&mut self, host: &BTreeSet<IpAddr>) -> Vec<IpAddr> {
        let now: BTreeSet<IpAddr> = self.watched.intersection(host).copied().collect();
        let appeared = now.difference(&self.present).copied().collect();
        self.present = now;
        appeared
    }

    pub fn present(&self) -> &BTreeSet<IpAddr> {
        &self.present
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::tests::record;

    #[test]
    fn records_from_others_become_foreign_and_own_echoes_are_ignored() {
        let r = record("b", 0);
        assert_eq!(on_record("a", None, &r), Verdict::HoldForeign);
        assert_eq!(on_record("b", None, &r), Verdict::RestoreOwn);
        let own = Held {
            own: true,
            epoch: 0,
        };
        assert_eq!(on_record("b", Some(own), &r), Verdict::Ignore);
        let foreign = Held {
            own: false,
            epoch: 0,
        };
        assert_eq!(on_record("a", Some(foreign), &r), Verdict::HoldForeign);
    }

    #[test]
    fn a_returning_old_active_demotes_and_never_overwrites() {
        // a owned the call at epoch 0; b took it over (epoch 1) while a was down.
        let taken = taken_over(&record("a", 0), "b", 5);
        assert_eq!((taken.owner.as_str(), taken.epoch), ("b", 1));
        let a_view = Held {
            own: true,
            epoch: 0,
        };
        assert_eq!(on_record("a", Some(a_view), &taken), Verdict::Demote);
        assert!(!may_overwrite("a", 0, Some(("b", 1))));
        assert!(may_overwrite("b", 1, Some(("b", 1))));
        // a takes it back later: epoch 2 beats b's 1; an older notification changes nothing.
        assert!(may_overwrite("a", 2, Some(("b", 1))));
        let back = Held {
            own: true,
            epoch: 2,
        };
        assert_eq!(on_record("a", Some(back), &taken), Verdict::Ignore);
        // Two standbys racing from the same epoch: the second is refused.
        assert!(!may_overwrite("c", 1, Some(("b", 1))));
        assert!(may_overwrite("a", 0, None));
    }

    #[test]
    fn only_calls_whose_addresses_are_here_are_taken_over() {
        let r = record("b", 0); // bound to 10.0.0.1
        let here: BTreeSet<IpAddr> = ["10.0.0.1".parse().unwrap()].into();
        let elsewhere: BTreeSet<IpAddr> = ["10.0.0.2".parse().unwrap()].into();
        assert_eq!(takeover_candidates([&r], &here), vec!["c1".to_owned()]);
        assert!(takeover_candidates([&r], &elsewhere).is_empty());
    }

    #[test]
    fn address_watch_reports_appearances_once() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.9.9.9".parse().unwrap();
        let mut w = AddrWatch::new([a]);
        assert!(w.update(&[other].into()).is_empty());
        assert_eq!(w.update(&[a, other].into()), vec![a]);
        assert!(w.update(&[a].into()).is_empty());
        assert!(w.present().contains(&a));
        assert!(w.update(&BTreeSet::new()).is_empty());
        assert_eq!(w.update(&[a].into()), vec![a]);
    }
}
