//! Per-CPU verdict/reason counters: one slot per [`Reason`], each a [`StatEntry`].

/// Why the program returned what it returned. Every frame the program sees is counted in
/// exactly one slot. Values are indices into the per-CPU stats array and never change meaning.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passed to the stack.
    PassNotIp = 0,
    /// IP but not UDP (TCP, ICMP, ...): passed.
    PassNotUdp = 1,
    /// A header did not fit in the frame: passed untouched, never forwarded.
    PassTruncated = 2,
    /// IPv4 IHL < 5, wrong IP version, UDP length inconsistent with the frame: passed.
    PassMalformed = 3,
    /// IPv4 fragment (MF set or offset != 0): the UDP header is not reliable, passed.
    PassFragment = 4,
    /// UDP, not to a relay port: passed.
    PassNotRelayPort = 5,
    /// UDP to a relay port with no payload to classify.
    PassEmpty = 6,
    /// STUN (first byte 0-3 and the magic cookie, RFC 7983): to the daemon's ICE agent.
    PassStun = 7,
    /// DTLS (first byte 20-63, RFC 7983): to the daemon.
    PassDtls = 8,
    /// Neither STUN, DTLS nor RTP/RTCP: to the daemon, which drops it.
    PassOtherPayload = 9,
    /// RTP/RTCP on a relay endpoint with no stream entry yet: the daemon latches.
    PassUnknownStream = 10,
    /// Source is not the expected peer and the stream's policy drops.
    DropSourceMismatch = 11,
    /// Source is not the expected peer; the daemon decides (media handover).
    PassSourceMismatch = 12,
    /// No route or no neighbour for the rewritten destination: the daemon forwards it.
    PassFibMiss = 13,
    /// The entry cannot be translated here (its rewrite mixes families, or the frame has no
    /// headroom for the larger header: a driver without bpf_xdp_adjust_head; on TC, an IPv4
    /// header with options or VLAN tags left in the frame): the daemon forwards it.
    PassFamilyChange = 14,
    /// Forwarded out of the interface it came in on (XDP_TX, or on TC a redirect to it).
    TxForward = 15,
    /// Forwarded out of another interface through the devmap.
    RedirectForward = 16,
    /// The egress device left the devmap between lookup and redirect: the rewritten frame is dropped.
    DropRedirectFailed = 17,
    /// An IPv4<->IPv6 translation moved the headers and then failed a bounds check: the frame
    /// is no longer intact, so it is dropped. Not expected to happen; counted to be seen.
    DropTranslateFailed = 18,
    /// The rewritten packet is larger than the egress MTU (an IPv4 packet grown by
    /// translation to IPv6): the daemon sends it, and the kernel fragments or reports it.
    PassTooBig = 19,
}

impl Reason {
    /// Number of slots; the map is sized by this.
    pub const COUNT: u32 = 20;

    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::PassNotIp,
        Reason::PassNotUdp,
        Reason::PassTruncated,
        Reason::PassMalformed,
        Reason::PassFragment,
        Reason::PassNotRelayPort,
        Reason::PassEmpty,
        Reason::PassStun,
        Reason::PassDtls,
        Reason::PassOtherPayload,
        Reason::PassUnknownStream,
        Reason::DropSourceMismatch,
        Reason::PassSourceMismatch,
        Reason::PassFibMiss,
        Reason::PassFamilyChange,
        Reason::TxForward,
        Reason::RedirectForward,
        Reason::DropRedirectFailed,
        Reason::DropTranslateFailed,
        Reason::PassTooBig,
    ];

    /// Stable snake_case name, used in `relay-ctl stats` and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotUdp => "pass_not_udp",
            Reason::PassTruncated => "pass_truncated",
            Reason::PassMalformed => "pass_malformed",
            Reason::PassFragment => "pass_fragment",
            Reason::PassNotRelayPort => "pass_not_relay_port",
            Reason::PassEmpty => "pass_empty",
            Reason::PassStun => "pass_stun",
            Reason::PassDtls => "pass_dtls",
            Reason::PassOtherPayload => "pass_other_payload",
            Reason::PassUnknownStream => "pass_unknown_stream",
            Reason::DropSourceMismatch => "drop_source_mismatch",
            Reason::PassSourceMismatch => "pass_source_mismatch",
            Reason::PassFibMiss => "pass_fib_miss",
            Reason::PassFamilyChange => "pass_family_change",
            Reason::TxForward => "tx_forward",
            Reason::RedirectForward => "redirect_forward",
            Reason::DropRedirectFailed => "drop_redirect_failed",
            Reason::DropTranslateFailed => "drop_translate_failed",
            Reason::PassTooBig => "pass_too_big",
        }
    }

    /// The XDP action this reason ends in (on TC: pass = TC_ACT_OK, drop = TC_ACT_SHOT,
    /// tx and redirect = TC_ACT_REDIRECT after bpf_redirect).
    pub const fn verdict(self) -> Verdict {
        match self {
            Reason::PassNotIp
            | Reason::PassNotUdp
            | Reason::PassTruncated
            | Reason::PassMalformed
            | Reason::PassFragment
            | Reason::PassNotRelayPort
            | Reason::PassEmpty
            | Reason::PassStun
            | Reason::PassDtls
            | Reason::PassOtherPayload
            | Reason::PassUnknownStream
            | Reason::PassSourceMismatch
            | Reason::PassFibMiss
            | Reason::PassFamilyChange => Verdict::Pass,
            Reason::DropSourceMismatch
            | Reason::DropRedirectFailed
            | Reason::DropTranslateFailed => Verdict::Drop,
            Reason::PassTooBig => Verdict::Pass,
            Reason::TxForward => Verdict::Tx,
            Reason::RedirectForward => Verdict::Redirect,
        }
    }

    pub const fn from_index(i: u32) -> Option<Reason> {
        if i < Self::COUNT {
            Some(Self::ALL[i as usize])
        } else {
            None
        }
    }
}

/// XDP actions, numbered as the kernel's `enum xdp_action`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Verdict {
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Aborted => "aborted",
            Verdict::Drop => "drop",
            Verdict::Pass => "pass",
            Verdict::Tx => "tx",
            Verdict::Redirect => "redirect",
        }
    }

    pub const fn from_u32(v: u32) -> Option<Verdict> {
        match v {
            0 => Some(Verdict::Aborted),
            1 => Some(Verdict::Drop),
            2 => Some(Verdict::Pass),
            3 => Some(Verdict::Tx),
            4 => Some(Verdict::Redirect),
            _ => None,
        }
    }
}

/// Per-CPU counters of things a frame may meet on its way, besides the one [`Reason`] it ends
/// in (so they do not add up to the frames seen). Indices into the events array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A forwarded stream's next hop came from the kernel FIB lookup, not from the daemon
    /// (no next-hop slot, or one not resolved: no neighbour entry yet, policy routing, a route
    /// the daemon does not follow).
    FibLookup = 0,
}

impl Event {
    pub const COUNT: u32 = 1;
    pub const ALL: [Event; Self::COUNT as usize] = [Event::FibLookup];

    /// Stable snake_case name, used in `relay-ctl stats` and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Event::FibLookup => "fib_lookup",
        }
    }
}

/// One counter slot: frames and bytes (whole frame, as XDP saw it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatEntry {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<StatEntry>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64, no padding.
unsafe impl aya::Pod for StatEntry {}
