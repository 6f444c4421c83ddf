//! A packet socket on a host's device that checks the UDP checksum of every datagram the host
//! receives, in the state the kernel holds it. A complete checksum must verify. A partial one
//! (CHECKSUM_PARTIAL: a local sender's on veth, passed along by TC) is not verified by the
//! receiving kernel at all, so the check is made here: the field must hold the sum of the
//! pseudo-header the datagram now carries, which is what a NIC (or the kernel, on a device
//! without offload) completes the checksum from.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Result, bail};

use crate::netns::Netns;

const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const PACKET_AUXDATA: libc::c_int = 8;

#[repr(C)]
#[derive(Default)]
struct AuxData {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

pub struct Sniffer {
    fd: OwnedFd,
    pub dev: String,
}

/// What a drain found: UDP datagrams checked, and a line per bad one.
#[derive(Debug, Default)]
pub struct Report {
    pub complete: u64,
    pub partial: u64,
    pub bad: Vec<String>,
}

impl Sniffer {
    /// Opens a packet socket on `dev` in `ns` (incoming frames only are checked).
    pub fn open(ns: &Netns, dev: &str) -> Result<Sniffer> {
        let name = std::ffi::CString::new(dev)?;
        let fd = ns.run(move || -> Result<OwnedFd> {
            // SAFETY: plain socket calls on a descriptor we own; the structs outlive the calls.
            unsafe {
                let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    proto,
                );
                if fd < 0 {
                    bail!("packet socket: {}", std::io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let one: libc::c_int = 1;
                let big: libc::c_int = 8 << 20;
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    PACKET_AUXDATA,
                    (&one as *const libc::c_int).cast(),
                    4,
                );
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&big as *const libc::c_int).cast(),
                    4,
                );
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto as u16;
                sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
                if sll.sll_ifindex == 0
                    || libc::bind(
                        fd.as_raw_fd(),
                        (&sll as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    ) != 0
                {
                    bail!(
                        "binding the packet socket: {}",
                        std::io::Error::last_os_error()
                    );
                }
                Ok(fd)
            }
        })??;
        Ok(Sniffer {
            fd,
            dev: dev.to_owned(),
        })
    }

    /// Every queued incoming frame as it arrived (link header included), unchecked.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            // SAFETY: all-zero is a valid sockaddr_ll; recvfrom writes into live buffers.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n <= 0 {
                return out;
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                out.push(buf[..n as usize].to_vec());
            }
        }
    }

    /// Reads every queued frame and checks the incoming UDP ones.
    pub fn drain(&self) -> Report {
        let mut r = Report::default();
        let mut buf = vec![0u8; 65_536];
        loop {
            let mut aux = [0u8; 64];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            // SAFETY: msghdr points at live buffers for the duration of recvmsg.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = aux.as_mut_ptr().cast();
            msg.msg_controllen = aux.len();
            // SAFETY: as above.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            if n <= 0 {
                return r;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut status = 0;
            // SAFETY: walking the control messages recvmsg wrote into `aux`.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                        let a: AuxData = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        status = a.tp_status;
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            check(
                &buf[..n as usize],
                status & TP_STATUS_CSUMNOTREADY != 0,
                &mut r,
            );
        }
    }
}

fn sum(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Checks one Ethernet frame's UDP checksum, if it is UDP over IPv4 or IPv6.
fn check(f: &[u8], partial: bool, r: &mut Report) {
    if f.len() < 14 {
        return;
    }
    let (l3, et) = (14, u16::from_be_bytes([f[12], f[13]]));
    let (pseudo, l4) = match et {
        0x0800 if f.len() >= l3 + 20 && f[l3 + 9] == 17 => {
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            (sum(&f[l3 + 12..l3 + 20]) + 17, l3 + ihl)
        }
        0x86dd if f.len() >= l3 + 40 && f[l3 + 6] == 17 => (sum(&f[l3 + 8..l3 + 40]) + 17, l3 + 40),
        _ => return,
    };
    if f.len() < l4 + 8 {
        return;
    }
    let len = usize::from(u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]));
    if len < 8 || f.len() < l4 + len {
        r.bad
            .push(format!("truncated UDP datagram ({} bytes)", f.len()));
        return;
    }
    let field = u16::from_be_bytes([f[l4 + 6], f[l4 + 7]]);
    let pseudo = pseudo + len as u32;
    let what = |kind: &str| {
        format!(
            "{kind} checksum {field:#06x} wrong on a UDP datagram {:02x?}",
            &f[l3..l4 + 8]
        )
    };
    if partial {
        r.partial += 1;
        // The field holds the folded pseudo-header sum (either zero of one's complement).
        let want = fold(pseudo);
        if field != want && !(want == 0xffff && field == 0) && !(want == 0 && field == 0xffff) {
            r.bad.push(what("partial"));
        }
    } else {
        r.complete += 1;
        if et == 0x0800 && field == 0 {
            return;
        }
        if fold(pseudo + sum(&f[l4..l4 + len])) != 0xffff {
            r.bad.push(what("complete"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(check: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(&[0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x0f, 0xa0, 0x13, 0x88, 0, 12]);
        f.extend_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&[0x80, 0, 0, 1]);
        f
    }

    #[test]
    fn complete_and_partial_checksums_are_told_apart() {
        // Pseudo: 10.0.0.1 + 10.0.0.2 + 17 + 12; header and payload as above.
        let pseudo = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 12;
        let data = 0x0fa0 + 0x1388 + 12 + 0x8000 + 0x0001;
        let full = !fold(pseudo + data);
        let mut r = Report::default();
        check(&frame(full), false, &mut r);
        check(&frame(fold(pseudo)), true, &mut r);
        assert!(r.bad.is_empty(), "{:?}", r.bad);
        check(&frame(full ^ 1), false, &mut r);
        check(&frame(full), true, &mut r);
        assert_eq!((r.complete, r.partial, r.bad.len()), (2, 2, 2));
    }
}
