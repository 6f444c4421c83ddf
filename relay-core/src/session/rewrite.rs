//! SDP rewriting per RFC 7584: the relay's address and ports in c=/m=/a=rtcp, rtcp-mux, ICE
//! attributes and candidates for the party a description is sent to. Every other line is kept
//! byte for byte.

use std::net::IpAddr;

use super::Sessions;
use super::model::{Call, IceRole, Side, unspecified};
use super::options::{IceOption, Replace};
use crate::sdp::{self, Candidate, Line, LineEnding, Sdp, SessionDesc, is_ice_attr};

impl Sessions {
    /// Rewrites `sdp` (as the other side's party sent it) for the party facing side `to`;
    /// `mux[i]`: stream `i` carries a=rtcp-mux towards that party.
    pub(super) fn rewrite(
        &self,
        sdp: &mut Sdp,
        desc: &SessionDesc,
        call: &Call,
        to: Side,
        replace: Replace,
        mux: &[bool],
    ) -> String {
        let side = &call[to];
        let iface = &self.interfaces[side.iface];
        let adv = iface.advertised;
        let eol = sdp.ending();
        let terminated = side.streams.iter().any(|st| st.ice == IceRole::Terminated);
        let optional = side.streams.iter().any(|st| st.ice == IceRole::Optional);
        let keep_addr = optional && !replace.session_connection;
        let strip_ice = !optional;
        let force_relay = call.ice_option == IceOption::ForceRelay;
        let conn = |l: &mut Line| {
            if let Some(ip) = sdp::parse_connection(l.value()) {
                let to_ip = if ip.is_unspecified() {
                    unspecified(adv)
                } else {
                    adv
                };
                l.text = format!("c=IN {} {}", sdp::family(to_ip), to_ip);
            }
        };
        sdp.session.retain(|l| !(strip_ice && is_ice_attr(l)));
        for l in &mut sdp.session {
            match l.kind() {
                Some(b'o') if replace.origin => {
                    if let Some(v) = sdp::replace_origin(l.value(), adv) {
                        l.text = format!("o={v}");
                    }
                }
                Some(b'c') if !keep_addr => conn(l),
                _ => {}
            }
        }
        if terminated && let Some(c) = &side.creds {
            append(
                &mut sdp.session,
                vec![
                    "a=ice-lite".to_owned(),
                    format!("a=ice-ufrag:{}", c.ufrag),
                    format!("a=ice-pwd:{}", c.pwd),
                ],
                eol,
            );
        }
        for (i, section) in sdp.media.iter_mut().enumerate() {
            let (Some(st), Some(m)) = (side.streams.get(i), desc.media.get(i)) else {
                continue;
            };
            let live = m.port != 0 && st.rtp.is_some();
            let st_mux = mux.get(i).copied().unwrap_or(false);
            let strip = st.ice != IceRole::Optional;
            section.retain(|l| {
                let ice_gone = strip && is_ice_attr(l);
                let mux_gone = l.is_attr("rtcp-mux") && !st_mux;
                // force-relay: the endpoint's own relay candidates give way to the relay's.
                let relay_gone = force_relay
                    && st.ice == IceRole::Optional
                    && l.is_attr("candidate")
                    && l.attr()
                        .and_then(|(_, v)| Candidate::parse(v?))
                        .is_some_and(|c| c.typ == "relay");
                !(ice_gone || mux_gone || relay_gone)
            });
            let had_mux = section.iter().any(|l| l.is_attr("rtcp-mux"));
            // Under rtcp-mux a=rtcp names the RTP port (RFC 5761 s.5.1.3); a pair keeps its own.
            let rtcp_port = if st.mux { st.rtp } else { st.rtcp.or(st.rtp) };
            for l in section.iter_mut() {
                match l.kind() {
                    Some(b'm') if live && !keep_addr => {
                        if let Some(v) = st.rtp.and_then(|p| sdp::replace_media_port(l.value(), p))
                        {
                            l.text = format!("m={v}");
                        }
                    }
                    Some(b'c') if live && !keep_addr => conn(l),
                    Some(b'a') if live && !keep_addr && l.is_attr("rtcp") => {
                        if let (Some((_, Some(v))), Some(p)) = (l.attr(), rtcp_port) {
                            let with_addr = v.split_ascii_whitespace().nth(1).is_some();
                            l.text = if with_addr {
                                format!("a=rtcp:{p} IN {} {adv}", sdp::family(adv))
                            } else {
                                format!("a=rtcp:{p}")
                            };
                        }
                    }
                    _ => {}
                }
            }
            if !live {
                continue;
            }
            let mut add = Vec::new();
            // One port for RTP and RTCP: say so, or an endpoint that ignores rtcp-mux would send
            // RTCP to RTP + 1, which is not ours (RFC 5761 s.5.1.3; rtpengine does the same).
            let had_rtcp = section.iter().any(|l| l.is_attr("rtcp"));
            if st.mux
                && !keep_addr
                && !had_rtcp
                && let Some(p) = st.rtp
            {
                add.push(format!("a=rtcp:{p}"));
            }
            if st_mux && !had_mux {
                add.push("a=rtcp-mux".to_owned());
            }
            let (typ, type_pref) = match st.ice {
                IceRole::None => ("", None),
                IceRole::Terminated => ("host", Some(126)),
                IceRole::Optional => ("relay", Some(0)),
            };
            if let Some(tp) = type_pref {
                let f = foundation(typ, iface.bind);
                for (component, p) in st.ports() {
                    let c = component.id();
                    // Optional termination: local preference 0 puts the relay below every endpoint candidate.
                    let local_pref = if st.ice == IceRole::Optional {
                        0
                    } else {
                        65535
                    };
                    let prio = priority(tp, local_pref, c);
                    let raddr = if typ == "relay" {
                        format!(" raddr {adv} rport {p}")
                    } else {
                        String::new()
                    };
                    add.push(format!(
                        "a=candidate:{f} {c} UDP {prio} {adv} {p} typ {typ}{raddr}"
                    ));
                }
            }
            append(section, add, eol);
        }
        sdp.to_string()
    }
}

/// Appends lines to a section; the section's last line gives up a missing terminator to the new
/// last line, so a body without a final newline still ends without one.
fn append(section: &mut Vec<Line>, texts: Vec<String>, eol: LineEnding) {
    if texts.is_empty() {
        return;
    }
    let mut last_ending = eol;
    if let Some(l) = section.last_mut() {
        if l.ending == LineEnding::None {
            last_ending = LineEnding::None;
            l.ending = eol;
        } else {
            last_ending = l.ending;
        }
    }
    let n = texts.len();
    for (k, t) in texts.into_iter().enumerate() {
        let ending = if k + 1 == n {
            last_ending
        } else if last_ending == LineEnding::None {
            eol
        } else {
            last_ending
        };
        section.push(Line::new(t, ending));
    }
}

/// RFC 8445 s.5.1.2.1.
pub fn priority(type_pref: u32, local_pref: u32, component: u16) -> u32 {
    (type_pref << 24) + (local_pref << 8) + (256 - u32::from(component.min(256)))
}

/// RFC 8445 s.5.1.1.3: equal for equal (type, base address, transport); FNV-1a keeps it stable.
pub fn foundation(typ: &str, base: IpAddr) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in typ.bytes().chain(base.to_string().bytes()).chain(*b"udp") {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_priority_and_foundation_per_rfc8445() {
        // host, local preference 65535, component 1: 126 * 2^24 + 65535 * 2^8 + 255.
        assert_eq!(priority(126, 65535, 1), 2_130_706_431);
        assert_eq!(priority(126, 65535, 2), 2_130_706_430);
        assert_eq!(priority(0, 0, 1), 255);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(foundation("host", ip), foundation("host", ip));
        assert_ne!(foundation("host", ip), foundation("relay", ip));
        assert_ne!(
            foundation("host", ip),
            foundation("host", "192.0.2.2".parse().unwrap())
        );
    }
}
