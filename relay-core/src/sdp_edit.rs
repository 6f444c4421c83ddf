//! Edits of an incoming SDP that rtpengine options ask for before the relay reads it:
//! `media address` / `SIP source address` (the endpoint's media address is not the one in c=) and
//! `loop protect` (an `a=rtpengine:ID` marker so the relay leaves SDP it already rewrote alone).

use std::net::IpAddr;

use crate::sdp::{Line, Sdp, family, parse_connection};

/// The attribute rtpengine's `loop protect` adds at session level.
pub const LOOP_ATTR: &str = "rtpengine";

/// Replaces the address of every c= line (session and media level) with `ip`, except unspecified
/// ones (`0.0.0.0`, `::`: old-style hold stays hold). Returns whether anything changed.
pub fn override_connection(sdp: &mut Sdp, ip: IpAddr) -> bool {
    let mut changed = false;
    let new = format!("c=IN {} {}", family(ip), ip);
    for l in sdp.session.iter_mut().chain(sdp.media.iter_mut().flatten()) {
        if l.kind() != Some(b'c') {
            continue;
        }
        match parse_connection(l.value()) {
            Some(old) if old.is_unspecified() || old == ip => {}
            _ => {
                l.text.clone_from(&new);
                changed = true;
            }
        }
    }
    // An m= section with no c= of its own and no session-level c= would have no address at all.
    if !sdp.session.iter().any(|l| l.kind() == Some(b'c')) {
        let ending = sdp.ending();
        for m in &mut sdp.media {
            if !m.iter().any(|l| l.kind() == Some(b'c')) {
                m.insert(1, Line::new(new.clone(), ending));
                changed = true;
            }
        }
    }
    changed
}

/// Whether the session section carries our loop-protection marker `id`.
pub fn is_own(sdp: &Sdp, id: &str) -> bool {
    sdp.session.iter().any(|l| {
        matches!(l.attr(), Some((n, Some(v))) if n.eq_ignore_ascii_case(LOOP_ATTR) && v.trim() == id)
    })
}

/// Adds `a=rtpengine:ID` at the end of the session section (before the first m=), once.
pub fn mark(sdp: &mut Sdp, id: &str) {
    if is_own(sdp, id) {
        return;
    }
    let ending = sdp.ending();
    let at = sdp
        .session
        .iter()
        .rposition(|l| !l.text.is_empty())
        .map_or(sdp.session.len(), |i| i + 1);
    if let Some(prev) = at.checked_sub(1).and_then(|i| sdp.session.get_mut(i))
        && prev.ending == crate::sdp::LineEnding::None
    {
        prev.ending = ending;
    }
    sdp.session
        .insert(at, Line::new(format!("a={LOOP_ATTR}:{id}"), ending));
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n";

    #[test]
    fn connection_override_keeps_hold_and_origin() {
        let mut s = Sdp::parse(S).unwrap();
        assert!(override_connection(&mut s, "2001:db8::5".parse().unwrap()));
        let out = s.to_string();
        assert!(out.contains("o=- 1 1 IN IP4 10.0.0.1\r\n"));
        assert!(out.contains("\r\nc=IN IP6 2001:db8::5\r\nt=0 0"));
        assert!(out.ends_with("c=IN IP4 0.0.0.0\r\n"));
        assert!(!override_connection(&mut s, "2001:db8::5".parse().unwrap()));
    }

    #[test]
    fn loop_marker_round_trip() {
        let mut s = Sdp::parse(S).unwrap();
        assert!(!is_own(&s, "abc123"));
        mark(&mut s, "abc123");
        mark(&mut s, "abc123");
        let out = s.to_string();
        assert_eq!(out.matches("a=rtpengine:abc123\r\n").count(), 1);
        assert!(out.contains("t=0 0\r\na=rtpengine:abc123\r\nm=audio"));
        let again = Sdp::parse(&out).unwrap();
        assert!(is_own(&again, "abc123") && !is_own(&again, "other"));
    }
}
