//! Configuration that does not change while the program runs, set by the loader as read-only
//! globals so the verifier can prune disabled branches.

/// Symbol of the [`RelayConfig`] global in the object file.
pub const CONFIG_SYMBOL: &str = "RELAY_CONFIG";

/// Read-only configuration of the XDP program.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// First relay UDP port (inclusive, host byte order).
    pub port_min: u16,
    /// Last relay UDP port (inclusive, host byte order).
    pub port_max: u16,
    /// `FLAG_*` bits.
    pub flags: u32,
}

/// `RelayConfig::flags`: never XDP_TX; send out of the ingress device through the devmap
/// instead. Set when XDP runs on a virtual device (veth), where XDP_TX is only delivered if the
/// peer runs an XDP program, while a redirect flushes the peer itself.
pub const FLAG_TX_VIA_REDIRECT: u32 = 1;

impl RelayConfig {
    /// No relay ports: everything is passed to the stack.
    pub const DISABLED: RelayConfig = RelayConfig {
        port_min: 1,
        port_max: 0,
        flags: 0,
    };

    pub const fn tx_via_redirect(&self) -> bool {
        self.flags & FLAG_TX_VIA_REDIRECT != 0
    }

    pub const fn is_relay_port(&self, port: u16) -> bool {
        port >= self.port_min && port <= self.port_max
    }
}

const _: () = assert!(core::mem::size_of::<RelayConfig>() == 8);

#[cfg(feature = "user")]
// SAFETY: repr(C), u16 + u16 + u32, no padding.
unsafe impl aya::Pod for RelayConfig {}
