//! What a reload (SIGHUP) changes: the settings applied at once, and those that need a restart.

use super::Config;

/// What a reload (SIGHUP) does with a new, valid configuration: the changed settings that take
/// effect at once, and those that only a restart applies (sockets, maps and attachments stay
/// as they are, so a reload never touches running calls).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    pub applied: Vec<&'static str>,
    pub needs_restart: Vec<&'static str>,
}

pub fn reload_plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut p = ReloadPlan::default();
    let mut cmp = |changed: bool, key: &'static str, live: bool| {
        if changed {
            if live {
                p.applied.push(key);
            } else {
                p.needs_restart.push(key);
            }
        }
    };
    cmp(old.media_timeout != new.media_timeout, "timeout", true);
    cmp(
        old.latch_handover != new.latch_handover,
        "latch-handover",
        true,
    );
    cmp(
        old.silent_timeout != new.silent_timeout,
        "silent-timeout",
        true,
    );
    cmp(
        old.final_timeout != new.final_timeout,
        "final-timeout",
        true,
    );
    cmp(old.log_level != new.log_level, "log-level", true);
    cmp(old.detach != new.detach, "detach", true);
    cmp(
        format!("{:?}", old.interfaces) != format!("{:?}", new.interfaces),
        "listen",
        false,
    );
    cmp(old.xdp_devices != new.xdp_devices, "interface", false);
    cmp(old.port_min != new.port_min, "port-min", false);
    cmp(old.port_max != new.port_max, "port-max", false);
    cmp(old.max_streams != new.max_streams, "max-streams", false);
    cmp(old.ice_default != new.ice_default, "ice", false);
    cmp(old.latching != new.latching, "latching", false);
    cmp(old.ng_listen != new.ng_listen, "ng-listen", false);
    cmp(
        old.metrics_listen != new.metrics_listen,
        "metrics-listen",
        false,
    );
    cmp(old.pin_dir != new.pin_dir, "pin-dir", false);
    cmp(old.state_file != new.state_file, "state-file", false);
    cmp(
        format!("{:?}", old.ha) != format!("{:?}", new.ha),
        "redis",
        false,
    );
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, flags};

    #[test]
    fn reload_applies_timeouts_and_log_level_and_names_the_rest() {
        let base = || flags(&["a/192.0.2.1"]);
        let old = FileConfig::default().merge(base()).unwrap();
        let mut f = base();
        f.timeout = Some(5);
        f.log_level = Some("debug".into());
        f.port_min = Some(20000);
        f.ng_listen = Some("127.0.0.1:2224".parse().unwrap());
        let new = FileConfig::default().merge(f).unwrap();
        let p = reload_plan(&old, &new);
        assert_eq!(p.applied, ["timeout", "log-level"]);
        assert_eq!(p.needs_restart, ["port-min", "ng-listen"]);
        assert_eq!(reload_plan(&old, &old), ReloadPlan::default());
    }
}
