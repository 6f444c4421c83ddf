//! Lossless SDP line model (RFC 8866) plus parsing of the few fields the relay needs.
//!
//! Every line keeps its raw text and its own line ending, so lines the relay does not rewrite come
//! out byte-identical. Only v=, o=, c=, m= and the attributes named below are interpreted; anything
//! else (a=crypto, b=, codecs, unknown attributes) is carried as opaque text.

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

use crate::creds::Credentials;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP is empty")]
    Empty,
    #[error("SDP does not start with v=0")]
    NoVersion,
    #[error("SDP line {line}: bare CR inside a line")]
    BareCr { line: usize },
    #[error("SDP line {line}: expected `<letter>=<value>`")]
    BadLine { line: usize },
    #[error("SDP line {line}: malformed {what}")]
    Malformed { line: usize, what: &'static str },
    #[error("SDP has no o= line")]
    NoOrigin,
    #[error("m= line {index}: no connection address at session or media level")]
    NoConnection { index: usize },
}

/// The terminator a line had in the input; inserted lines copy their neighbour's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LineEnding {
    CrLf,
    Lf,
    /// Last line of a body that does not end in a newline.
    None,
}

impl LineEnding {
    pub fn as_str(self) -> &'static str {
        match self {
            LineEnding::CrLf => "\r\n",
            LineEnding::Lf => "\n",
            LineEnding::None => "",
        }
    }
}

/// One raw SDP line without its terminator.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Line {
    pub text: String,
    pub ending: LineEnding,
}

impl Line {
    pub fn new(text: impl Into<String>, ending: LineEnding) -> Line {
        Line {
            text: text.into(),
            ending,
        }
    }

    /// The field letter (`v`, `o`, `a`, ...), or None for a blank line.
    pub fn kind(&self) -> Option<u8> {
        let b = self.text.as_bytes();
        (b.len() >= 2 && b[1] == b'=').then(|| b[0])
    }

    pub fn value(&self) -> &str {
        self.text.get(2..).unwrap_or("")
    }

    /// `a=name:value` -> (name, Some(value)); `a=flag` -> (flag, None).
    pub fn attr(&self) -> Option<(&str, Option<&str>)> {
        if self.kind() != Some(b'a') {
            return None;
        }
        let v = self.value();
        Some(match v.split_once(':') {
            Some((n, val)) => (n, Some(val)),
            None => (v, None),
        })
    }

    pub fn is_attr(&self, name: &str) -> bool {
        self.attr()
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// A whole SDP body as lines: the session section, then one section per m= line (m= first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sdp {
    pub session: Vec<Line>,
    pub media: Vec<Vec<Line>>,
}

impl Sdp {
    /// Splits and checks the structure; see [`Sdp::describe`] for field-level validation.
    pub fn parse(input: &str) -> Result<Sdp, SdpError> {
        let mut session = Vec::new();
        let mut media: Vec<Vec<Line>> = Vec::new();
        for (i, piece) in input.split_inclusive('\n').enumerate() {
            let n = i + 1;
            let (text, ending) = if let Some(t) = piece.strip_suffix("\r\n") {
                (t, LineEnding::CrLf)
            } else if let Some(t) = piece.strip_suffix('\n') {
                (t, LineEnding::Lf)
            } else {
                (piece, LineEnding::None)
            };
            if text.contains('\r') {
                return Err(SdpError::BareCr { line: n });
            }
            let line = Line::new(text, ending);
            // Blank lines are tolerated (some devices send a trailing one) and kept verbatim.
            if !text.is_empty() {
                let b = text.as_bytes();
                if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
                    return Err(SdpError::BadLine { line: n });
                }
            }
            if line.kind() == Some(b'm') {
                media.push(vec![line]);
            } else if let Some(m) = media.last_mut() {
                m.push(line);
            } else {
                session.push(line);
            }
        }
        let first = session.iter().find(|l| !l.text.is_empty());
        match first {
            None if media.is_empty() => return Err(SdpError::Empty),
            Some(l) if l.text == "v=0" => {}
            _ => return Err(SdpError::NoVersion),
        }
        Ok(Sdp { session, media })
    }

    /// Ending used for inserted lines: that of the first line, CRLF if there is none.
    pub fn ending(&self) -> LineEnding {
        match self.session.first().map(|l| l.ending) {
            Some(LineEnding::Lf) => LineEnding::Lf,
            _ => LineEnding::CrLf,
        }
    }

    pub fn lines(&self) -> impl Iterator<Item = &Line> {
        self.session.iter().chain(self.media.iter().flatten())
    }

    /// Parses and validates everything the relay interprets. Fails on anything it would need.
    pub fn describe(&self) -> Result<SessionDesc, SdpError> {
        let mut line_no = 0usize;
        let mut sess = SessionDesc::default();
        let mut saw_origin = false;
        let mut s_ufrag = None;
        let mut s_pwd = None;
        for l in &self.session {
            line_no += 1;
            match l.kind() {
                Some(b'o') => {
                    saw_origin = true;
                    origin_addr(l.value()).ok_or(SdpError::Malformed {
                        line: line_no,
                        what: "o= line",
                    })?;
                }
                Some(b'c') => {
                    sess.connection =
                        Some(parse_connection(l.value()).ok_or(SdpError::Malformed {
                            line: line_no,
                            what: "c= line",
                        })?);
                }
                Some(b'a') => match l.attr() {
                    Some(("ice-lite", _)) => sess.ice_lite = true,
                    Some(("ice-ufrag", Some(v))) => s_ufrag = Some(v.trim().to_owned()),
                    Some(("ice-pwd", Some(v))) => s_pwd = Some(v.trim().to_owned()),
                    Some((n, _)) => {
                        if let Some(d) = Direction::from_attr(n) {
                            sess.direction = Some(d);
                        }
                    }
                    None => {}
                },
                _ => {}
            }
        }
        if !saw_origin {
            return Err(SdpError::NoOrigin);
        }
        for (index, section) in self.media.iter().enumerate() {
            let mut ufrag = s_ufrag.clone();
            let mut pwd = s_pwd.clone();
            let mut m = MediaDesc {
                index,
                media: String::new(),
                port: 0,
                proto: String::new(),
                connection: sess.connection,
                direction: sess.direction.unwrap_or(Direction::SendRecv),
                rtcp: None,
                rtcp_mux: false,
                creds: None,
                candidates: Vec::new(),
            };
            for (j, l) in section.iter().enumerate() {
                line_no += 1;
                match l.kind() {
                    Some(b'm') if j == 0 => {
                        let (media, port, proto) =
                            parse_media(l.value()).ok_or(SdpError::Malformed {
                                line: line_no,
                                what: "m= line",
                            })?;
                        m.media = media.to_owned();
                        m.port = port;
                        m.proto = proto.to_owned();
                    }
                    Some(b'c') => {
                        m.connection =
                            Some(parse_connection(l.value()).ok_or(SdpError::Malformed {
                                line: line_no,
                                what: "c= line",
                            })?);
                    }
                    Some(b'a') => match l.attr() {
                        Some(("rtcp", Some(v))) => {
                            m.rtcp = Some(parse_rtcp(v).ok_or(SdpError::Malformed {
                                line: line_no,
                                what: "a=rtcp",
                            })?);
                        }
                        Some(("rtcp-mux", None)) => m.rtcp_mux = true,
                        Some(("ice-ufrag", Some(v))) => {
                            ufrag = Some(v.trim().to_owned());
                        }
                        Some(("ice-pwd", Some(v))) => {
                            pwd = Some(v.trim().to_owned());
                        }
                        // Candidates the relay cannot read are still passed through or dropped
                        // per mode; they never fail a call.
                        Some(("candidate", Some(v))) => {
                            if let Some(c) = Candidate::parse(v) {
                                m.candidates.push(c);
                            }
                        }
                        Some((n, _)) => {
                            if let Some(d) = Direction::from_attr(n) {
                                m.direction = d;
                            }
                        }
                        None => {}
                    },
                    _ => {}
                }
            }
            if let (Some(u), Some(p)) = (ufrag, pwd) {
                m.creds = Some(Credentials::new(u, p));
            }
            if m.port != 0 && m.connection.is_none() {
                return Err(SdpError::NoConnection { index });
            }
            sess.media.push(m);
        }
        Ok(sess)
    }
}

impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in self.lines() {
            f.write_str(&l.text)?;
            f.write_str(l.ending.as_str())?;
        }
        Ok(())
    }
}

/// Media direction (RFC 3264 s.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attr(name: &str) -> Option<Direction> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

/// What the relay reads from one SDP body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionDesc {
    pub connection: Option<IpAddr>,
    pub direction: Option<Direction>,
    pub ice_lite: bool,
    pub media: Vec<MediaDesc>,
}

impl SessionDesc {
    /// The body carries ICE (RFC 8839): credentials on any stream.
    pub fn has_ice(&self) -> bool {
        self.media.iter().any(|m| m.creds.is_some())
    }
}

/// What the relay reads from one m= section.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MediaDesc {
    pub index: usize,
    pub media: String,
    /// 0 = rejected/disabled stream.
    pub port: u16,
    pub proto: String,
    /// Media-level c= or else session-level c=.
    pub connection: Option<IpAddr>,
    pub direction: Direction,
    pub rtcp: Option<RtcpAttr>,
    pub rtcp_mux: bool,
    /// ice-ufrag/ice-pwd, media level overriding session level.
    pub creds: Option<Credentials>,
    pub candidates: Vec<Candidate>,
}

impl MediaDesc {
    /// Signalled RTCP address: a=rtcp (RFC 3605), RTP port + 1, or the RTP address under rtcp-mux.
    pub fn rtcp_addr(&self) -> Option<(IpAddr, u16)> {
        let ip = self.connection?;
        if self.rtcp_mux {
            return Some((ip, self.port));
        }
        match &self.rtcp {
            Some(r) => Some((r.addr.unwrap_or(ip), r.port)),
            None => Some((ip, self.port.checked_add(1)?)),
        }
    }
}

/// `a=rtcp:port [IN IP4|IP6 addr]` (RFC 3605).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RtcpAttr {
    pub port: u16,
    pub addr: Option<IpAddr>,
}

/// One `a=candidate` (RFC 8839 s.5.1), the fields the relay uses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    pub foundation: String,
    pub component: u16,
    pub transport: String,
    pub priority: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub typ: String,
}

impl Candidate {
    /// Parses the value after `a=candidate:`; None if it is not one the relay can use.
    pub fn parse(v: &str) -> Option<Candidate> {
        let mut it = v.split_ascii_whitespace();
        let foundation = it.next()?.to_owned();
        let component = it.next()?.parse().ok()?;
        let transport = it.next()?.to_owned();
        let priority = it.next()?.parse().ok()?;
        let addr = it.next()?.parse().ok()?;
        let port = it.next()?.parse().ok()?;
        if it.next()? != "typ" {
            return None;
        }
        let typ = it.next()?.to_owned();
        Some(Candidate {
            foundation,
            component,
            transport,
            priority,
            addr,
            port,
            typ,
        })
    }
}

/// Attributes that belong to ICE (RFC 8839 s.5); stripped when the relay terminates or removes ICE.
pub const ICE_ATTRS: &[&str] = &[
    "ice-ufrag",
    "ice-pwd",
    "ice-lite",
    "ice-options",
    "ice-mismatch",
    "ice-pacing",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
];

pub fn is_ice_attr(l: &Line) -> bool {
    l.attr()
        .is_some_and(|(n, _)| ICE_ATTRS.iter().any(|a| a.eq_ignore_ascii_case(n)))
}

/// `IN IP4 addr[/ttl[/n]]` -> addr.
pub fn parse_connection(v: &str) -> Option<IpAddr> {
    let mut it = v.split_ascii_whitespace();
    if it.next()? != "IN" {
        return None;
    }
    let fam = it.next()?;
    let addr = it.next()?.split('/').next()?;
    let ip: IpAddr = addr.parse().ok()?;
    match (fam, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(ip),
        _ => None,
    }
}

/// o=<user> <sess-id> <sess-version> IN <addrtype> <addr>: returns the byte offset of the
/// `<addrtype> <addr>` part. The address may be an FQDN, so it is not parsed as IP.
fn origin_addr(v: &str) -> Option<usize> {
    let parts: Vec<&str> = v.split(' ').collect();
    if parts.len() != 6 || parts[3] != "IN" {
        return None;
    }
    let prefix: usize = parts[..4].iter().map(|p| p.len() + 1).sum();
    Some(prefix)
}

/// `o=` value with its address replaced; None if the line is malformed.
pub fn replace_origin(v: &str, ip: IpAddr) -> Option<String> {
    let off = origin_addr(v)?;
    Some(format!("{}{} {}", &v[..off], family(ip), ip))
}

/// m=<media> <port>[/<n>] <proto> <fmt>...
fn parse_media(v: &str) -> Option<(&str, u16, &str)> {
    let mut it = v.split(' ');
    let media = it.next().filter(|s| !s.is_empty())?;
    let port = it.next()?.split('/').next()?.parse().ok()?;
    let proto = it.next().filter(|s| !s.is_empty())?;
    Some((media, port, proto))
}

/// The m= value with only its port replaced (the `/n` suffix, proto and formats kept verbatim).
pub fn replace_media_port(v: &str, port: u16) -> Option<String> {
    let (media, rest) = v.split_once(' ')?;
    let end = rest.find([' ', '/']).unwrap_or(rest.len());
    Some(format!("{media} {port}{}", &rest[end..]))
}

fn parse_rtcp(v: &str) -> Option<RtcpAttr> {
    let mut it = v.split_ascii_whitespace();
    let port = it.next()?.parse().ok()?;
    let addr = match it.next() {
        None => None,
        Some(_) => {
            let rest: Vec<&str> = v.split_ascii_whitespace().skip(1).collect();
            Some(parse_connection(&rest.join(" "))?)
        }
    };
    Some(RtcpAttr { port, addr })
}

pub fn family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_byte_identical_with_mixed_endings() {
        let s = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=x-unknown:1 2\r\n\r\na=last";
        let sdp = Sdp::parse(s).unwrap();
        assert_eq!(sdp.to_string(), s);
        assert_eq!(sdp.media.len(), 1);
        assert_eq!(sdp.media[0][3].text, "a=last");
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert_eq!(Sdp::parse(""), Err(SdpError::Empty));
        assert_eq!(Sdp::parse("o=x\r\n"), Err(SdpError::NoVersion));
        assert_eq!(
            Sdp::parse("v=0\r\nfoo\r\n"),
            Err(SdpError::BadLine { line: 2 })
        );
        assert_eq!(
            Sdp::parse("v=0\ra=1\r\n"),
            Err(SdpError::BareCr { line: 1 })
        );
        let d = Sdp::parse("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n")
            .unwrap()
            .describe();
        assert_eq!(
            d,
            Err(SdpError::Malformed {
                line: 3,
                what: "m= line"
            })
        );
        let d = Sdp::parse("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 0\r\n")
            .unwrap()
            .describe();
        assert_eq!(d, Err(SdpError::NoConnection { index: 0 }));
    }

    #[test]
    fn field_helpers() {
        assert_eq!(
            replace_media_port("audio 4000/2 RTP/AVP 0 8", 30000).unwrap(),
            "audio 30000/2 RTP/AVP 0 8"
        );
        assert_eq!(
            replace_origin("- 1 2 IN IP4 host.example", "::1".parse().unwrap()).unwrap(),
            "- 1 2 IN IP6 ::1"
        );
        assert_eq!(
            parse_rtcp("5001 IN IP4 1.2.3.4"),
            Some(RtcpAttr {
                port: 5001,
                addr: Some("1.2.3.4".parse().unwrap())
            })
        );
        assert_eq!(parse_connection("IN IP4 ::1"), None);
        let c = Candidate::parse("1 1 UDP 2130706431 10.0.0.1 8998 typ host").unwrap();
        assert_eq!((c.component, c.port, c.typ.as_str()), (1, 8998, "host"));
    }
}
