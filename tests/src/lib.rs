//! Harness for the privileged tests: a root/BPF gate, throwaway network namespaces and veth
//! pairs with unique names, and a private bpffs mount. Everything is removed on drop, so on
//! every exit path including panics.

pub mod call;
pub mod daemon;
pub mod frames;
pub mod ha;
pub mod ice;
pub mod kamailio;
pub mod netns;
pub mod redis;
pub mod rtpengine;
pub mod service;
pub mod sniff;
pub mod topology;
pub mod webrtc;

use std::sync::atomic::{AtomicU32, Ordering};

/// Runs end-to-end scenarios `fn NAME(wire: Wire)` on both wire models, as two tests each:
/// `NAME::nic` (NIC-like, XDP) and `NAME::container` (container-like, one shared veth, TC).
#[macro_export]
macro_rules! on_both_wires {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[test]
            fn nic() {
                super::$scenario($crate::topology::Wire::Nic)
            }
            #[test]
            fn container() {
                super::$scenario($crate::topology::Wire::Container)
            }
        }
    )+};
}

/// True when privileged tests can run. Under `CI=true` a missing privilege is a failure, not a
/// skip; elsewhere the test prints why it skips and returns.
pub fn privileged(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let why = if !root {
        Some("needs root (BPF, network namespaces)")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("needs a kernel with BTF (/sys/kernel/btf/vmlinux)")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: privileged test cannot run under CI=true: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// A name prefix unique to this process and call, short enough for interface names (15 bytes).
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("rt{:x}{n}", std::process::id() % 0xfffff)
}

/// Runs a command, returning an error with its stderr when it fails.
pub fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
