//! SIP message handling for the relay: rewrite the SDP body of a whole SIP message and apply
//! RFC 3581 rport/received to its top Via.
//!
//! Losslessness: the message is framed into byte ranges (start line, headers with their folded
//! lines, body) and every output is the input with a few splices (the body, the Content-Length
//! value, parameters of the top Via). Nothing is re-serialised, so headers the relay does not
//! touch come out byte-for-byte, whatever their case, compact form, folding or spacing.
//! rsip 0.4 is used to validate a normalised copy of the header section (unfolded, long names,
//! `Name: value`); its own Display output is never sent, as it rewrites header text.
//!
//! Framing (RFC 3261 s.18.3): with [`Framing::Datagram`] (UDP, and the default) a missing
//! Content-Length means the body runs to the end, and bytes after Content-Length are dropped
//! from the output; with [`Framing::Stream`] Content-Length is required and extra bytes are an
//! error, since the caller should have framed one message. Content-Length larger than the bytes
//! present is an error in both.
//!
//! Bodies: `application/sdp` is rewritten whole; `multipart/mixed` with exactly one
//! `application/sdp` part has that part rewritten in place (other parts and delimiters kept);
//! anything else (other types, several or no SDP parts, a Content-Encoding other than
//! identity, a body without Content-Type) is [`SipError::UnsupportedBody`], never guessed at.
//!
//! Validation is strict where RFC 4475 s.3.1.2 calls a message invalid (start line, From, To,
//! Contact, Via, CSeq, Max-Forwards, Date, duplicated single-value headers, Content-Length), so a
//! refused message is answered with a reason rather than half-understood.

mod grammar;
mod raw;

use std::net::{IpAddr, SocketAddr};

use raw::{RawMessage, splice};

/// How the message was carried, which decides what Content-Length means (RFC 3261 s.18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// One message per datagram: body to the end if no Content-Length, extra bytes dropped.
    #[default]
    Datagram,
    /// Stream transport: Content-Length required, bytes after the body are an error.
    Stream,
}

/// Why a message was refused. Every malformed input maps to one of these; nothing panics.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("empty message")]
    Empty,
    #[error("no empty line ends the header section")]
    NoHeaderEnd,
    #[error("malformed start line: {0}")]
    StartLine(String),
    #[error("malformed header line {line:?}: {reason}")]
    HeaderLine { line: String, reason: &'static str },
    #[error("header {0} is not UTF-8")]
    HeaderNotUtf8(String),
    #[error("header {0} appears more than once")]
    DuplicateHeader(&'static str),
    #[error("mandatory header {0} is missing")]
    MissingHeader(&'static str),
    #[error("invalid {header} header {value:?}: {reason}")]
    InvalidHeader {
        header: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid Content-Length {0:?}")]
    ContentLength(String),
    #[error("Content-Length {declared} exceeds the {available} body bytes present")]
    BodyTruncated { declared: usize, available: usize },
    #[error("{0} bytes after the body on a stream transport")]
    TrailingData(usize),
    #[error("CSeq method {cseq} does not match request method {method}")]
    CSeqMismatch { method: String, cseq: String },
    #[error("rsip rejected the message: {0}")]
    Rsip(String),
    #[error("message has no SDP body")]
    NoSdpBody,
    #[error("unsupported body: {0}")]
    UnsupportedBody(String),
    #[error("SDP body is not UTF-8")]
    BodyNotUtf8,
    #[error("body rewrite failed: {0}")]
    Rewrite(Box<dyn std::error::Error + Send + Sync>),
    #[error("rport/received applies to requests only")]
    NotARequest,
}

/// Request or status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// A validated SIP message and the fields an offer/answer driver needs. Borrows the input.
#[derive(Debug)]
pub struct SipMessage<'a> {
    raw: RawMessage<'a>,
    start: StartLine,
    call_id: String,
    from_tag: Option<String>,
    to_tag: Option<String>,
    cseq: (u32, String),
    top_via: grammar::ViaParm,
    content_type: Option<String>,
}

impl<'a> SipMessage<'a> {
    /// Parses one message received as a datagram.
    pub fn parse(msg: &'a [u8]) -> Result<Self, SipError> {
        Self::parse_framed(msg, Framing::Datagram)
    }

    pub fn parse_framed(msg: &'a [u8], framing: Framing) -> Result<Self, SipError> {
        let raw = RawMessage::frame(msg, framing)?;
        let start = start_line(raw.start_line_str()?)?;
        validate_with_rsip(&raw, &start)?;

        let need = |canon: &'static str, name: &'static str| {
            raw.single(canon)?.ok_or(SipError::MissingHeader(name))
        };
        let call_id_h = need("call-id", "Call-ID")?;
        if call_id_h.unfolded.is_empty() || call_id_h.unfolded.contains(char::is_whitespace) {
            return Err(invalid(
                "Call-ID",
                &call_id_h.unfolded,
                "empty or has whitespace",
            ));
        }
        let call_id = call_id_h.unfolded.clone();
        let tag = |canon: &'static str, name: &'static str| -> Result<Option<String>, SipError> {
            let h = need(canon, name)?;
            let (_, p) =
                grammar::name_addr(&h.unfolded).map_err(|r| invalid(name, &h.unfolded, r))?;
            Ok(grammar::param(&p, "tag").cloned().flatten())
        };
        let from_tag = tag("from", "From")?;
        let to_tag = tag("to", "To")?;
        let cseq_h = need("cseq", "CSeq")?;
        let cseq =
            grammar::cseq(&cseq_h.unfolded).map_err(|r| invalid("CSeq", &cseq_h.unfolded, r))?;
        if let StartLine::Request { method, .. } = &start
            && *method != cseq.1
        {
            return Err(SipError::CSeqMismatch {
                method: method.clone(),
                cseq: cseq.1,
            });
        }

        let mut top_via = None;
        for h in raw.all("via") {
            let parms = grammar::split_outside(&h.unfolded, b',')
                .map_err(|r| invalid("Via", &h.unfolded, r))?;
            for p in parms {
                let v = grammar::via_parm(p).map_err(|r| invalid("Via", &h.unfolded, r))?;
                top_via.get_or_insert(v);
            }
        }
        let top_via = top_via.ok_or(SipError::MissingHeader("Via"))?;

        for h in raw.all("contact") {
            if h.unfolded == "*" {
                continue;
            }
            for c in grammar::split_outside(&h.unfolded, b',')
                .map_err(|r| invalid("Contact", &h.unfolded, r))?
            {
                grammar::name_addr(c).map_err(|r| invalid("Contact", &h.unfolded, r))?;
            }
        }
        if let Some(h) = raw.single("max-forwards")? {
            let ok = !h.unfolded.is_empty()
                && h.unfolded.bytes().all(|c| c.is_ascii_digit())
                && h.unfolded.parse::<u8>().is_ok();
            if !ok {
                return Err(invalid("Max-Forwards", &h.unfolded, "not a number 0-255"));
            }
        }
        if let Some(h) = raw.single("date")? {
            grammar::sip_date(&h.unfolded).map_err(|r| invalid("Date", &h.unfolded, r))?;
        }
        let content_type = raw.single("content-type")?.map(|h| h.unfolded.clone());

        Ok(SipMessage {
            raw,
            start,
            call_id,
            from_tag,
            to_tag,
            cseq,
            top_via,
            content_type,
        })
    }

    pub fn start_line(&self) -> &StartLine {
        &self.start
    }
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// Request method, or None for a response.
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    /// Status code, or None for a request.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }
    pub fn call_id(&self) -> &str {
        &self.call_id
    }
    pub fn from_tag(&self) -> Option<&str> {
        self.from_tag.as_deref()
    }
    pub fn to_tag(&self) -> Option<&str> {
        self.to_tag.as_deref()
    }
    pub fn cseq(&self) -> (u32, &str) {
        (self.cseq.0, &self.cseq.1)
    }
    /// Branch of the top Via; None for RFC 2543 peers that send none.
    pub fn via_branch(&self) -> Option<&str> {
        grammar::param(&self.top_via.params, "branch").and_then(|v| v.as_deref())
    }
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }
    /// The body, bounded by Content-Length.
    pub fn body(&self) -> &'a [u8] {
        &self.raw.buf[self.raw.body.clone()]
    }

    /// The SDP in the body: the whole body for application/sdp, the SDP part of multipart/mixed.
    pub fn sdp(&self) -> Result<&'a str, SipError> {
        let r = self.sdp_range()?;
        std::str::from_utf8(&self.raw.buf[r]).map_err(|_| SipError::BodyNotUtf8)
    }

    fn sdp_range(&self) -> Result<std::ops::Range<usize>, SipError> {
        if let Some(h) = self.raw.single("content-encoding")?
            && !h.unfolded.eq_ignore_ascii_case("identity")
        {
            return Err(SipError::UnsupportedBody(format!(
                "Content-Encoding {}",
                h.unfolded
            )));
        }
        let Some(ct) = &self.content_type else {
            return if self.raw.body.is_empty() {
                Err(SipError::NoSdpBody)
            } else {
                Err(SipError::UnsupportedBody(
                    "body without Content-Type".into(),
                ))
            };
        };
        let (mime, params) = media_type(ct);
        if mime == "application/sdp" {
            if self.raw.body.is_empty() {
                return Err(SipError::NoSdpBody);
            }
            return Ok(self.raw.body.clone());
        }
        if mime == "multipart/mixed" {
            let boundary = grammar::param(&params, "boundary")
                .cloned()
                .flatten()
                .ok_or_else(|| SipError::UnsupportedBody("multipart without boundary".into()))?;
            let boundary = boundary.trim_matches('"');
            return multipart_sdp(self.raw.buf, self.raw.body.clone(), boundary);
        }
        Err(SipError::UnsupportedBody(format!("Content-Type {ct}")))
    }
}

fn invalid(header: &'static str, value: &str, reason: &'static str) -> SipError {
    SipError::InvalidHeader {
        header,
        value: value.to_owned(),
        reason,
    }
}

/// Lower-cased `type/subtype` and parameters of a Content-Type value.
fn media_type(ct: &str) -> (String, Vec<grammar::Param>) {
    let (mime, rest) = ct.split_once(';').map_or((ct, ""), |(m, r)| (m, r));
    let mime: String = mime.chars().filter(|c| !c.is_whitespace()).collect();
    let params = grammar::params(&format!(";{rest}")).unwrap_or_default();
    (
        mime.to_ascii_lowercase(),
        if rest.is_empty() { Vec::new() } else { params },
    )
}

/// Finds the one application/sdp part of a multipart body (RFC 2046 s.5.1.1) and returns the
/// range of its content. Zero or several SDP parts are unsupported rather than guessed at.
fn multipart_sdp(
    buf: &[u8],
    body: std::ops::Range<usize>,
    boundary: &str,
) -> Result<std::ops::Range<usize>, SipError> {
    let unsupported = |why: &str| SipError::UnsupportedBody(format!("multipart/mixed: {why}"));
    let delim = format!("--{boundary}");
    let b = &buf[body.clone()];
    // Delimiter lines: at the start of the body or after a line break.
    let mut delims = Vec::new();
    let mut i = 0;
    while let Some(p) = find(&b[i..], delim.as_bytes()) {
        let at = i + p;
        if at == 0 || b[at - 1] == b'\n' {
            delims.push(at);
        }
        i = at + delim.len();
    }
    let mut found = None;
    for w in delims.windows(2) {
        let (d, next) = (w[0], w[1]);
        if b[d + delim.len()..].starts_with(b"--") {
            break;
        }
        // Part starts after the delimiter line; ends before the line break preceding `next`.
        let line_end = find(&b[d..next], b"\n")
            .map(|p| d + p + 1)
            .ok_or_else(|| unsupported("bad delimiter"))?;
        let mut end = next;
        if end > 0 && b[end - 1] == b'\n' {
            end -= 1;
            if end > 0 && b[end - 1] == b'\r' {
                end -= 1;
            }
        }
        let part = &b[line_end..end.max(line_end)];
        let hdr_end = find(part, b"\r\n\r\n")
            .map(|p| p + 4)
            .or_else(|| find(part, b"\n\n").map(|p| p + 2))
            .or_else(|| part.starts_with(b"\r\n").then_some(2))
            .ok_or_else(|| unsupported("part without header end"))?;
        let headers = String::from_utf8_lossy(&part[..hdr_end]);
        let is_sdp = headers.lines().any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                let n = n.trim();
                (n.eq_ignore_ascii_case("content-type") || n.eq_ignore_ascii_case("c"))
                    && media_type(v.trim()).0 == "application/sdp"
            })
        });
        if is_sdp {
            if found.is_some() {
                return Err(unsupported("several application/sdp parts"));
            }
            let start = body.start + line_end + hdr_end;
            found = Some(start..body.start + end.max(line_end + hdr_end));
        }
    }
    found.ok_or_else(|| unsupported("no application/sdp part"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Method SP Request-URI SP SIP/2.0` or `SIP/2.0 SP 3DIGIT SP Reason-Phrase`, single spaces.
fn start_line(line: &str) -> Result<StartLine, SipError> {
    let bad = |why: &str| SipError::StartLine(format!("{why}: {line:?}"));
    if let Some(rest) = line.strip_prefix("SIP/") {
        let (version, rest) = rest.split_once(' ').ok_or_else(|| bad("no status code"))?;
        if version != "2.0" {
            return Err(bad("version is not SIP/2.0"));
        }
        let (code, reason) = rest
            .split_once(' ')
            .ok_or_else(|| bad("no reason phrase separator"))?;
        let code: u16 = (code.len() == 3 && code.bytes().all(|c| c.is_ascii_digit()))
            .then(|| code.parse().ok())
            .flatten()
            .filter(|c| (100..700).contains(c))
            .ok_or_else(|| bad("status code is not 100-699"))?;
        return Ok(StartLine::Response {
            code,
            reason: reason.to_owned(),
        });
    }
    let mut it = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad("not <method> SP <URI> SP SIP/2.0"));
    };
    if method.is_empty() || !method.bytes().all(raw::is_token_char) {
        return Err(bad("method is not a token"));
    }
    if version != "SIP/2.0" {
        return Err(bad("version is not SIP/2.0"));
    }
    if !grammar_uri_ok(uri) {
        return Err(bad("malformed Request-URI"));
    }
    let scheme = uri.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    // RFC 3261 s.19.1.5: a SIP Request-URI carries no headers component. `?` may appear in
    // the user part (RFC 4475 intmeth), so look after the last `@`.
    let hostpart = uri.rsplit_once('@').map_or(uri, |(_, h)| h);
    if matches!(scheme.as_deref(), Some("sip" | "sips")) && hostpart.contains('?') {
        return Err(bad("SIP Request-URI with headers"));
    }
    Ok(StartLine::Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
    })
}

fn grammar_uri_ok(uri: &str) -> bool {
    grammar::name_addr(&format!("<{uri}>")).is_ok()
}

/// rsip validates the header framing of the normalised copy. Its start-line parser rejects
/// extension methods and URI schemes RFC 3261 allows (RFC 4475 esc02, semiuri, unkscm), so the
/// start line is checked by [`start_line`] and rsip sees a fixed one of the same kind.
fn validate_with_rsip(raw: &RawMessage<'_>, start: &StartLine) -> Result<(), SipError> {
    let mut norm = String::from(match start {
        StartLine::Request { .. } => "OPTIONS sip:relay.invalid SIP/2.0\r\n",
        StartLine::Response { .. } => "SIP/2.0 200 OK\r\n",
    });
    norm.push_str(&raw.normalised_headers());
    rsip::SipMessage::try_from(norm.as_bytes())
        .map(|_| ())
        .map_err(|e| {
            // rsip quotes the rest of the input; keep the error short.
            let mut e = e.to_string();
            e.truncate(e.lines().next().unwrap_or_default().len().min(160));
            SipError::Rsip(e)
        })
}

/// Returns the message with its SDP body replaced by `rewrite(sdp)` and Content-Length set to
/// the new length in bytes. Everything else is kept byte-for-byte. See [`Framing::Datagram`].
pub fn rewrite_body<E>(
    msg: &[u8],
    rewrite: impl FnOnce(&str) -> Result<String, E>,
) -> Result<Vec<u8>, SipError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    rewrite_body_framed(msg, Framing::Datagram, rewrite)
}

pub fn rewrite_body_framed<E>(
    msg: &[u8],
    framing: Framing,
    rewrite: impl FnOnce(&str) -> Result<String, E>,
) -> Result<Vec<u8>, SipError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let m = SipMessage::parse_framed(msg, framing)?;
    let sdp_r = m.sdp_range()?;
    let sdp = std::str::from_utf8(&msg[sdp_r.clone()]).map_err(|_| SipError::BodyNotUtf8)?;
    let new_sdp = rewrite(sdp).map_err(|e| SipError::Rewrite(e.into()))?;
    let body = &m.raw.body;
    let new_len = body.len() - sdp_r.len() + new_sdp.len();
    let mut edits = vec![(sdp_r, new_sdp.into_bytes())];
    edits.push(match m.raw.single("content-length")? {
        Some(h) => (h.value.clone(), new_len.to_string().into_bytes()),
        None => {
            let mut line = format!("Content-Length: {new_len}").into_bytes();
            line.extend_from_slice(m.raw.eol);
            (m.raw.headers_end..m.raw.headers_end, line)
        }
    });
    Ok(splice(msg, body.end, edits))
}

/// Applies RFC 3581 and RFC 3261 s.18.2.1 to the top Via of a request received from `source`:
/// `received=<source IP>` when the sent-by host differs or `rport` is present, and `rport=<port>`
/// when `rport` is present. Existing values are replaced. Responses are refused.
pub fn apply_rport(msg: &[u8], source: SocketAddr) -> Result<Vec<u8>, SipError> {
    apply_rport_framed(msg, Framing::Datagram, source)
}

pub fn apply_rport_framed(
    msg: &[u8],
    framing: Framing,
    source: SocketAddr,
) -> Result<Vec<u8>, SipError> {
    let m = SipMessage::parse_framed(msg, framing)?;
    if !m.is_request() {
        return Err(SipError::NotARequest);
    }
    let via = m
        .raw
        .all("via")
        .next()
        .ok_or(SipError::MissingHeader("Via"))?;
    let params = &m.top_via.params;
    let rport = grammar::param(params, "rport").is_some();
    let host_differs = match m.top_via.host.parse::<IpAddr>() {
        Ok(ip) => ip != source.ip(),
        Err(_) => true, // a name never equals an address
    };

    // Raw bytes of the first via-parm: up to the first comma outside quotes.
    let v = via.value.clone();
    let mut end = v.end;
    let mut in_q = false;
    let mut i = v.start;
    while i < v.end {
        match msg[i] {
            b'"' => in_q = !in_q,
            b'\\' if in_q => i += 1,
            b',' if !in_q => {
                end = i;
                break;
            }
            _ => {}
        }
        i += 1;
    }
    while end > v.start && msg[end - 1].is_ascii_whitespace() {
        end -= 1;
    }

    let mut edits = Vec::new();
    let mut have_received = false;
    // Each `;name[=value]` of the raw first via-parm; `;` inside quoted values is not a separator.
    let mut semis = Vec::new();
    let mut in_q = false;
    let mut i = v.start;
    while i < end {
        match msg[i] {
            b'"' => in_q = !in_q,
            b'\\' if in_q => i += 1,
            b';' if !in_q => semis.push(i),
            _ => {}
        }
        i += 1;
    }
    for (k, &s) in semis.iter().enumerate() {
        let pend = semis.get(k + 1).copied().unwrap_or(end);
        let p = &msg[s + 1..pend];
        let (name_part, eq) = match p.iter().position(|&c| c == b'=') {
            Some(e) => (&p[..e], Some(s + 1 + e)),
            None => (p, None),
        };
        let name = String::from_utf8_lossy(name_part)
            .trim()
            .to_ascii_lowercase();
        let value_r = |eq: Option<usize>| match eq {
            Some(e) => {
                // Keep the LWS around the old value.
                let (mut vs, mut ve) = (e + 1, pend);
                while vs < ve && msg[vs].is_ascii_whitespace() {
                    vs += 1;
                }
                while ve > vs && msg[ve - 1].is_ascii_whitespace() {
                    ve -= 1;
                }
                vs..ve
            }
            None => {
                let mut ne = pend;
                while ne > s + 1 && msg[ne - 1].is_ascii_whitespace() {
                    ne -= 1;
                }
                ne..ne
            }
        };
        let replace = |r: std::ops::Range<usize>, val: String| match eq {
            Some(_) => (r, val.into_bytes()),
            None => (r, format!("={val}").into_bytes()),
        };
        if name == "rport" {
            edits.push(replace(value_r(eq), source.port().to_string()));
        } else if name == "received" {
            have_received = true;
            if rport || host_differs {
                edits.push(replace(value_r(eq), source.ip().to_string()));
            }
        }
    }
    if (rport || host_differs) && !have_received {
        edits.push((end..end, format!(";received={}", source.ip()).into_bytes()));
    }
    Ok(splice(msg, m.raw.body.end, edits))
}
