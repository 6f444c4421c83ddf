//! File descriptors for relay ports: each relay endpoint is a socket, four per plain call, so the
//! port range, not the usual 1024 descriptors, sets how many calls fit. The daemon raises its
//! limit at start-up to what the range needs, or says exactly how far short it is.

/// Descriptors the daemon uses besides relay sockets (NG, metrics, maps, state files, logs).
pub const RESERVED: u64 = 256;

/// What [`raise_for_ports`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// Descriptors the port range needs (one per port on every bind address, plus the reserve).
    pub needed: u64,
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit (raising past it needs CAP_SYS_RESOURCE or LimitNOFILE).
    pub hard: u64,
}

impl FdLimit {
    pub fn enough(&self) -> bool {
        self.soft >= self.needed
    }

    /// How many plain calls (four sockets each) fit in the limit.
    pub fn calls(&self) -> u64 {
        self.soft.saturating_sub(RESERVED) / 4
    }
}

/// Descriptors `ports` relay ports on each of `addresses` bind addresses need.
pub fn needed(ports: u64, addresses: u64) -> u64 {
    ports.saturating_mul(addresses.max(1)) + RESERVED
}

/// Raises RLIMIT_NOFILE towards `needed`: the soft limit up to the hard one, and the hard one too
/// where the process may (CAP_SYS_RESOURCE).
pub fn raise_for_ports(needed: u64) -> std::io::Result<FdLimit> {
    let (soft, hard) = get()?;
    if soft >= needed {
        return Ok(FdLimit { needed, soft, hard });
    }
    // Try the hard limit first; without the capability this fails and the hard limit stays.
    if hard < needed && set(needed, needed).is_ok() {
        return Ok(FdLimit {
            needed,
            soft: needed,
            hard: needed,
        });
    }
    let target = needed.min(hard);
    set(target, hard)?;
    let (soft, hard) = get()?;
    Ok(FdLimit { needed, soft, hard })
}

/// The soft limit in force.
pub fn current() -> Option<u64> {
    get().ok().map(|(soft, _)| soft)
}

fn get() -> std::io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

fn set(soft: u64, hard: u64) -> std::io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// True for the errors that mean "out of file descriptors", not "port in use".
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_sets_the_need_and_the_limit_is_raised_within_the_hard_limit() {
        assert_eq!(needed(40_001, 1), 40_001 + RESERVED);
        assert_eq!(needed(1000, 2), 2000 + RESERVED);
        let (_, hard) = get().unwrap();
        // A need within the hard limit is met.
        let small = hard.min(2048);
        let got = raise_for_ports(small).unwrap();
        assert!(got.enough(), "{got:?}");
        assert_eq!(got.calls(), (got.soft - RESERVED) / 4);
        assert!(is_exhaustion(&std::io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_exhaustion(&std::io::Error::from_raw_os_error(
            libc::EADDRINUSE
        )));
    }
}
