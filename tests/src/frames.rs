//! Test frames built with etherparse, an implementation independent of ours.

use etherparse::{
    IpHeaders, Ipv4Extensions, Ipv4Header, Ipv4Options, PacketBuilder, VlanId, ip_number,
};

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// The `xdp_md` context for BPF_PROG_TEST_RUN's ctx_in: data 0, data_end = `len`, meta 0, the
/// ingress ifindex (XDP_TX leaves by it, the FIB starts from it), rx queue 0, egress 0.
pub fn xdp_md(len: usize, ingress: u32) -> Vec<u8> {
    [0u32, len as u32, 0, ingress, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

/// An RTP-looking payload: version 2, PT 0, the given sequence number, 160 bytes of audio.
pub fn rtp_payload(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5, 160));
    p
}

#[derive(Clone, Copy, Debug)]
pub enum Vlan {
    None,
    Single(u16),
    Double(u16, u16),
}

fn vid(v: u16) -> VlanId {
    VlanId::try_new(v).expect("test VLAN id")
}

pub fn udp4(
    vlan: Vlan,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let mut out = Vec::new();
    match vlan {
        Vlan::None => eth
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, payload),
        Vlan::Single(a) => eth
            .single_vlan(vid(a))
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, payload),
        Vlan::Double(a, b) => eth
            .double_vlan(vid(a), vid(b))
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, payload),
    }
    .expect("build frame");
    out
}

pub fn udp6(
    vlan: Vlan,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let mut out = Vec::new();
    match vlan {
        Vlan::None => eth
            .ipv6(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, payload),
        Vlan::Single(a) => eth
            .single_vlan(vid(a))
            .ipv6(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, payload),
        Vlan::Double(a, b) => eth
            .double_vlan(vid(a), vid(b))
            .ipv6(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, payload),
    }
    .expect("build frame");
    out
}

/// IPv4/UDP with `options` (a multiple of 4 bytes) in the IP header, so IHL > 5.
pub fn udp4_with_options(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 64, ip_number::UDP, src, dst).expect("ipv4 header");
    ip.options = Ipv4Options::try_from(options).expect("ipv4 options");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ip(IpHeaders::Ipv4(ip, Ipv4Extensions::default()))
        .udp(sport, dport)
        .write(&mut out, payload)
        .expect("build frame");
    out
}

pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 1024)
        .write(&mut out, b"hello")
        .expect("build frame");
    out
}

pub fn tcp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(src, dst, 64)
        .tcp(sport, dport, 1, 1024)
        .write(&mut out, b"hello")
        .expect("build frame");
    out
}

/// An ARP-ethertype frame (contents irrelevant to the relay).
pub fn arp() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0u8; 28]);
    f
}

/// Offset of the IPv4 header in an untagged frame.
pub const L3: usize = 14;

/// Recomputes the IPv4 header checksum after a test edited the header in place.
pub fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    frame[l3 + 10] = 0;
    frame[l3 + 11] = 0;
    let mut sum = 0u32;
    for c in frame[l3..l3 + ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let cs = !(sum as u16);
    frame[l3 + 10..l3 + 12].copy_from_slice(&cs.to_be_bytes());
}
